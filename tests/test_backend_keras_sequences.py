"""The Keras backend's sequence layers: counts, weights, configs, and masked outputs.

Two oracles: Keras models written by hand from plain ``keras.layers`` (the emitted
configs must compute what a person's model computes), and a NumPy recurrence written
here from the layer equations with Keras 3's mask rule, so the rule itself is tested:
at a masked step the state is kept and the output repeats the previous step's
(zeros before the first real step), except inside ``Bidirectional`` with
``return_sequences``, which zeroes masked steps.
"""

from __future__ import annotations

import ast
import math
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

from keras import layers  # noqa: E402

import layerdsl  # noqa: E402
from layerdsl.testing import ATOL, RTOL, random_input, random_weights  # noqa: E402

SENTIMENT = """
input 100 dtype=int32
embedding 10000 64 mask_zero=true
lstm 32
dense 1 | sigmoid
"""

STACKED_MASKED = """
input 50x8
masking 0.0
lstm 32 return_sequences=true
gru 16
dense 3 | softmax
"""

BIDIRECTIONAL = """
input 20 dtype=int64
embedding 500 16 mask_zero=true
bidirectional lstm 12 return_sequences=true
bidirectional gru 8 merge=sum
dense 2
"""

TEXT_CNN = """
input 40 dtype=int32
embedding 1000 32
conv1d 16 5 activation=relu
globalmaxpool1d
dense 1 | sigmoid
"""

PADDINGS = ("pre", "post", "random")


def _predict(live, x):
    return keras.ops.convert_to_numpy(live(x, training=False))


def _load_by_keras_order(hand, model, weights):
    """Give a hand-built model the canonical weights through Keras's own weight order."""
    for layer in model.layers:
        if layer.weights:
            hand.get_layer(layer.name).set_weights([weights[f"{layer.name}.{w.name}"] for w in layer.weights])


# --- parameter counts and weights ----------------------------------------------------------

COUNTED = {
    "embedding": ("input 7 dtype=int32\nembedding 30 4", 120),
    "masking": ("input 5x3\nmasking -1.0\nlstm 2", 4 * 2 * (3 + 2) + 8),
    "simplernn": ("input 5x3\nsimplernn 4 bias=false", 4 * (3 + 4)),
    "lstm": ("input 5x3\nlstm 4 return_sequences=true", 4 * 4 * (3 + 4) + 16),
    "gru": ("input 5x3\ngru 4", 3 * 4 * (3 + 4) + 6 * 4),
    "gru_reset_before": ("input 5x3\ngru 4 reset_after=false", 3 * 4 * (3 + 4) + 3 * 4),
    "bidirectional": ("input 5x3\nbidirectional simplernn 4 merge=ave", 2 * (4 * (3 + 4) + 4)),
    "conv1d": ("input 9x3\nconv1d 5 3 pad=causal dilation=2", 3 * 3 * 5 + 5),
    "pools_1d": ("input 9x3\nmaxpool1d 2\navgpool1d 2 pad=same\nglobalavgpool1d", 0),
    "globalmaxpool1d": ("input 9x3\nglobalmaxpool1d", 0),
    "global_pools_2d": ("input 6x6x3\nconv2d 2 3\nglobalmaxpool\ndense 4", 3 * 3 * 3 * 2 + 2 + 2 * 4 + 4),
    "global_avgpool_2d": ("input 6x6x3\nglobalavgpool", 0),
    "sentiment_example": (SENTIMENT, 10000 * 64 + (4 * 32 * (64 + 32) + 4 * 32) + 33),
    "stacked_masked_example": (STACKED_MASKED, (4 * 32 * (8 + 32) + 128) + (3 * 16 * (32 + 16) + 96) + 51),
    "bidirectional_example": (
        BIDIRECTIONAL,
        500 * 16 + 2 * (4 * 12 * (16 + 12) + 48) + 2 * (3 * 8 * (24 + 8) + 48) + 8 * 2 + 2,
    ),
    "text_cnn_example": (TEXT_CNN, 1000 * 32 + 5 * 32 * 16 + 16 + 17),
}


@pytest.mark.parametrize(("text", "expected"), COUNTED.values(), ids=COUNTED.keys())
def test_parameter_count_matches_the_ir(text, expected):
    model = layerdsl.parse(text)
    live = layerdsl.build(model, "keras")
    assert live.count_params() == model.total_params == expected
    trainable = sum(math.prod(v.shape) for v in live.trainable_weights)
    assert trainable == model.trainable_params


@pytest.mark.parametrize("text", [COUNTED[k][0] for k in COUNTED], ids=COUNTED.keys())
def test_weights_round_trip_by_canonical_name(text):
    model = layerdsl.parse(text)
    live = layerdsl.build(model, "keras")
    assert list(layerdsl.get_weights(live)) == model.weight_names()
    fresh = random_weights(model, seed=5)
    layerdsl.set_weights(live, fresh)
    got = layerdsl.get_weights(live)
    for key, value in fresh.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_bidirectional_weights_map_to_each_direction_and_gru_bias_has_two_rows():
    model = layerdsl.parse("input 5x3\nbidirectional gru 4 return_sequences=true")
    live = layerdsl.build(model, "keras")
    weights = random_weights(model, seed=2)
    layerdsl.set_weights(live, weights)
    wrapper = live.get_layer("bidirectional")
    assert (wrapper.forward_layer.name, wrapper.backward_layer.name) == ("forward_gru", "backward_gru")
    np.testing.assert_array_equal(wrapper.forward_layer.cell.kernel.numpy(), weights["bidirectional.forward_kernel"])
    np.testing.assert_array_equal(wrapper.backward_layer.cell.bias.numpy(), weights["bidirectional.backward_bias"])
    assert weights["bidirectional.backward_bias"].shape == (2, 12)


def test_lstm_bias_starts_with_a_unit_forget_gate():
    live = layerdsl.build(
        "input 5x3\nlstm 2 bias_init=ones return_sequences=true\nlstm 2 unit_forget_bias=false", "keras"
    )
    weights = layerdsl.get_weights(live)
    np.testing.assert_array_equal(weights["lstm.bias"], np.ones(8))
    np.testing.assert_array_equal(weights["lstm_1.bias"], np.zeros(8))
    live = layerdsl.build("input 5x3\nlstm 2", "keras")
    np.testing.assert_array_equal(layerdsl.get_weights(live)["lstm.bias"], [0, 0, 1, 1, 0, 0, 0, 0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # NumPy 2 notice from inside Keras's saving
def test_model_with_two_bidirectional_layers_saves_and_loads(tmp_path):
    model = layerdsl.parse(BIDIRECTIONAL)
    live = layerdsl.build(model, "keras")
    layerdsl.set_weights(live, random_weights(model, seed=3))
    live.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x = random_input(model, batch=3, padding="random")
    np.testing.assert_allclose(_predict(loaded, x), _predict(live, x), atol=1e-6)


# --- hand-written Keras models ---------------------------------------------------------------


def _hand_sentiment():
    inputs = keras.Input(shape=(100,), dtype="int32")
    x = layers.Embedding(10000, 64, mask_zero=True, name="embedding")(inputs)
    x = layers.LSTM(32, name="lstm")(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="dense")(x))


def _hand_stacked_masked():
    inputs = keras.Input(shape=(50, 8))
    x = layers.Masking(0.0, name="masking")(inputs)
    x = layers.LSTM(32, return_sequences=True, name="lstm")(x)
    x = layers.GRU(16, name="gru")(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="dense")(x))


def _hand_bidirectional():
    inputs = keras.Input(shape=(20,), dtype="int64")
    x = layers.Embedding(500, 16, mask_zero=True, name="embedding")(inputs)
    x = layers.Bidirectional(layers.LSTM(12, return_sequences=True), name="bidirectional")(x)
    x = layers.Bidirectional(layers.GRU(8), merge_mode="sum", name="bidirectional_1")(x)
    return keras.Model(inputs, layers.Dense(2, name="dense")(x))


def _hand_text_cnn():
    inputs = keras.Input(shape=(40,), dtype="int32")
    x = layers.Embedding(1000, 32, name="embedding")(inputs)
    x = layers.Conv1D(16, 5, activation="relu", name="conv1d")(x)
    x = layers.GlobalMaxPooling1D(name="global_max_pooling1d")(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="dense")(x))


NON_DEFAULT_RECURRENT = """
input 9x4
masking -1.0
simplernn 5 return_sequences=true activation=relu bias_init=ones
lstm 6 return_sequences=true go_backwards=true activation=softsign recurrent_activation=tanh unit_forget_bias=false
gru 4 return_sequences=true reset_after=false recurrent_activation=silu init=he_normal
gru 3 return_sequences=true go_backwards=true bias=false recurrent_init=lecun_normal
globalavgpool1d
"""


def _hand_non_default_recurrent():
    inputs = keras.Input(shape=(9, 4))
    x = layers.Masking(mask_value=-1.0, name="masking")(inputs)
    x = layers.SimpleRNN(5, return_sequences=True, activation="relu", bias_initializer="ones", name="simple_rnn")(x)
    x = layers.LSTM(
        6,
        return_sequences=True,
        go_backwards=True,
        activation="softsign",
        recurrent_activation="tanh",
        unit_forget_bias=False,
        name="lstm",
    )(x)
    x = layers.GRU(
        4,
        return_sequences=True,
        reset_after=False,
        recurrent_activation="silu",
        kernel_initializer="he_normal",
        name="gru",
    )(x)
    x = layers.GRU(
        3, return_sequences=True, go_backwards=True, use_bias=False, recurrent_initializer="lecun_normal", name="gru_1"
    )(x)
    return keras.Model(inputs, layers.GlobalAveragePooling1D(name="global_average_pooling1d")(x))


SEQUENCE_CNN = """
input 24x3
conv1d 6 3 pad=causal dilation=2 maxnorm=2 activation=tanh
maxpool1d 3 stride=2 pad=same
conv1d 5 4 stride=2 pad=same bias=false init=he_uniform
avgpool1d 2 pad=same
conv1d 4 2 bias_init=ones
globalavgpool1d
"""


def _hand_sequence_cnn():
    inputs = keras.Input(shape=(24, 3))
    x = layers.Conv1D(
        6,
        3,
        padding="causal",
        dilation_rate=2,
        activation="tanh",
        kernel_constraint=keras.constraints.MaxNorm(2.0, axis=[0, 1]),
        name="conv1d",
    )(inputs)
    x = layers.MaxPooling1D(3, strides=2, padding="same", name="max_pooling1d")(x)
    x = layers.Conv1D(
        5, 4, strides=2, padding="same", use_bias=False, kernel_initializer="he_uniform", name="conv1d_1"
    )(x)
    x = layers.AveragePooling1D(2, padding="same", name="average_pooling1d")(x)
    x = layers.Conv1D(4, 2, bias_initializer="ones", name="conv1d_2")(x)
    return keras.Model(inputs, layers.GlobalAveragePooling1D(name="global_average_pooling1d")(x))


IMAGE_GLOBAL_POOLS = "input 7x6x3\nconv2d 4 3\nglobalmaxpool\ndense 3\n"


def _hand_image_global_pools():
    inputs = keras.Input(shape=(7, 6, 3))
    x = layers.Conv2D(4, 3, name="conv2d")(inputs)
    x = layers.GlobalMaxPooling2D(name="global_max_pooling2d")(x)
    return keras.Model(inputs, layers.Dense(3, name="dense")(x))


HAND_WRITTEN = {
    "sentiment": (SENTIMENT, _hand_sentiment),
    "stacked_masked": (STACKED_MASKED, _hand_stacked_masked),
    "bidirectional": (BIDIRECTIONAL, _hand_bidirectional),
    "text_cnn": (TEXT_CNN, _hand_text_cnn),
    "non_default_recurrent": (NON_DEFAULT_RECURRENT, _hand_non_default_recurrent),
    "sequence_cnn": (SEQUENCE_CNN, _hand_sequence_cnn),
    "image_global_pools": (IMAGE_GLOBAL_POOLS, _hand_image_global_pools),
}


def _without_names(config):
    """A layer config with its (and its wrapped layers') names left out."""
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, list):
        return [_without_names(v) for v in config]
    return config


@pytest.mark.parametrize(("text", "hand_written"), HAND_WRITTEN.values(), ids=HAND_WRITTEN.keys())
def test_outputs_and_configs_equal_a_hand_written_keras_model(text, hand_written):
    model = layerdsl.parse(text)
    live, hand = layerdsl.build(model, "keras"), hand_written()
    # `dense 1 | sigmoid` is one Dense with activation="sigmoid", as a person writes it (and so has no
    # Activation layer of its own): the two models have the same layers, by name, with the same configs
    assert [layer.name for layer in live.layers[1:]] == [layer.name for layer in hand.layers[1:]]
    for layer in live.layers[1:]:
        ours, theirs = layer.get_config(), hand.get_layer(layer.name).get_config()
        assert _without_names(ours) == _without_names(theirs), layer.name
    weights = random_weights(model, seed=7)
    layerdsl.set_weights(live, weights)
    _load_by_keras_order(hand, model, weights)
    for padding in PADDINGS:
        x = random_input(model, batch=4, seed=11, padding=padding)
        np.testing.assert_allclose(_predict(live, x), _predict(hand, x), atol=ATOL, rtol=RTOL, err_msg=padding)


MERGES = ("concat", "sum", "mul", "ave")


@pytest.mark.parametrize("merge", MERGES)
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forwards", "backwards"])
def test_bidirectional_matches_a_hand_written_wrapper(merge, return_sequences, go_backwards):
    rs = str(return_sequences).lower()
    gb = str(go_backwards).lower()
    text = f"input 7x3\nmasking 0.0\nbidirectional lstm 4 return_sequences={rs} go_backwards={gb} merge={merge}"
    model = layerdsl.parse(text)
    live = layerdsl.build(model, "keras")

    inputs = keras.Input(shape=(7, 3))
    masked = layers.Masking(0.0, name="masking")(inputs)
    inner = layers.LSTM(4, return_sequences=return_sequences, go_backwards=go_backwards)
    backward = layers.LSTM(4, return_sequences=return_sequences) if go_backwards else None
    wrapper = layers.Bidirectional(inner, merge_mode=merge, backward_layer=backward, name="bidirectional")
    hand = keras.Model(inputs, wrapper(masked))

    weights = random_weights(model, seed=4)
    layerdsl.set_weights(live, weights)
    _load_by_keras_order(hand, model, weights)
    for padding in PADDINGS:
        x = random_input(model, batch=5, seed=6, padding=padding)
        np.testing.assert_allclose(_predict(live, x), _predict(hand, x), atol=ATOL, rtol=RTOL, err_msg=padding)


# --- the NumPy recurrence: Keras 3's mask rule, written out ----------------------------------


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0.0),
    "softsign": lambda x: x / (1 + np.abs(x)),
}


def _cell(kind, args, w):
    """One step ``(x_t, (h, c)) -> (h, c)`` of the layer, from its equations."""
    act, units = ACTIVATIONS[args["activation"]], args["units"]
    rec_act = ACTIVATIONS[args.get("recurrent_activation", "sigmoid")]
    kernel, recurrent, bias = w["kernel"], w["recurrent_kernel"], w.get("bias")

    def split(z, parts):
        return [z[:, i * units : (i + 1) * units] for i in range(parts)]

    def simplernn(x, h, c):
        return act(x @ kernel + h @ recurrent + (0.0 if bias is None else bias)), c

    def lstm(x, h, c):
        i, f, g, o = split(x @ kernel + h @ recurrent + (0.0 if bias is None else bias), 4)
        c = rec_act(f) * c + rec_act(i) * act(g)
        return rec_act(o) * act(c), c

    def gru(x, h, c):
        if args["reset_after"]:
            x_bias, h_bias = (0.0, 0.0) if bias is None else (bias[0], bias[1])
            x_z, x_r, x_h = split(x @ kernel + x_bias, 3)
            r_z, r_r, r_h = split(h @ recurrent + h_bias, 3)
            z, r = rec_act(x_z + r_z), rec_act(x_r + r_r)
            candidate = act(x_h + r * r_h)
        else:
            x_z, x_r, x_h = split(x @ kernel + (0.0 if bias is None else bias), 3)
            r_z, r_r, _ = split(h @ recurrent, 3)
            z, r = rec_act(x_z + r_z), rec_act(x_r + r_r)
            candidate = act(x_h + (r * h) @ recurrent[:, 2 * units :])
        return z * h + (1 - z) * candidate, c

    return {"simplernn": simplernn, "lstm": lstm, "gru": gru}[kind]


def recurrent_reference(kind, args, w, x, mask, *, go_backwards=None, zero_masked_outputs=False):
    """The layer over ``x`` (N, T, F) with a boolean (N, T) mask, in float64.

    A masked step keeps (h, c), so its output repeats the last real step's. Outputs
    come in processing order: reversed when the layer goes backwards.
    """
    step = _cell(kind, args, w)
    backwards = args["go_backwards"] if go_backwards is None else go_backwards
    order = range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])
    h = np.zeros((x.shape[0], args["units"]))
    c = np.zeros_like(h)
    outputs = []
    for t in order:
        keep = mask[:, t, None]
        new_h, new_c = step(x[:, t], h, c)
        h, c = np.where(keep, new_h, h), np.where(keep, new_c, c)
        outputs.append(np.where(keep, h, 0.0) if zero_masked_outputs else h)
    if not args["return_sequences"]:
        return outputs[-1]
    return np.stack(outputs, axis=1)


def _masked_batch(steps, features, seed):
    """Float sequences padded with zeros: pre, post and scattered rows, one all-real row."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, steps, features)).astype(np.float32)
    mask = np.ones((5, steps), bool)
    mask[1, :3] = False  # pre-padding
    mask[2, -2:] = False  # post-padding
    mask[3, [0, 2, 3, steps - 1]] = False  # scattered
    mask[4, 1:] = False  # one real step, then padding
    x[~mask] = 0.0
    return x, mask


def _layer_weights(model, weights, name):
    return {k.split(".", 1)[1]: v.astype(np.float64) for k, v in weights.items() if k.startswith(name + ".")}


RECURRENT_CASES = {
    "lstm_sequences": "lstm 5 return_sequences=true",
    "lstm_last": "lstm 5",
    "lstm_backwards_sequences": "lstm 5 return_sequences=true go_backwards=true",
    "lstm_backwards_last_relu": "lstm 5 go_backwards=true activation=relu",
    "lstm_no_bias": "lstm 5 return_sequences=true bias=false recurrent_activation=tanh",
    "gru_sequences": "gru 4 return_sequences=true",
    "gru_last": "gru 4",
    "gru_backwards_sequences": "gru 4 return_sequences=true go_backwards=true",
    "gru_reset_before": "gru 4 return_sequences=true reset_after=false",
    "gru_reset_before_last_no_bias": "gru 4 reset_after=false bias=false",
    "simplernn_sequences_relu": "simplernn 3 return_sequences=true activation=relu",
    "simplernn_backwards_last": "simplernn 3 go_backwards=true",
}


@pytest.mark.parametrize("statement", RECURRENT_CASES.values(), ids=RECURRENT_CASES.keys())
def test_masked_recurrent_layer_matches_the_numpy_recurrence(statement):
    model = layerdsl.parse(f"input 8x3\nmasking 0.0\n{statement}")
    live = layerdsl.build(model, "keras")
    weights = random_weights(model, seed=9)
    layerdsl.set_weights(live, weights)
    x, mask = _masked_batch(8, 3, seed=10)
    layer = model.layers[-1]
    expected = recurrent_reference(layer.kind, layer.args, _layer_weights(model, weights, layer.name), x, mask)
    np.testing.assert_allclose(_predict(live, x), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("merge", MERGES)
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequences", "last"])
def test_masked_bidirectional_matches_the_numpy_recurrence(merge, return_sequences):
    rs = str(return_sequences).lower()
    model = layerdsl.parse(f"input 8x3\nmasking 0.0\nbidirectional gru 4 return_sequences={rs} merge={merge}")
    live = layerdsl.build(model, "keras")
    weights = random_weights(model, seed=12)
    layerdsl.set_weights(live, weights)
    x, mask = _masked_batch(8, 3, seed=13)
    layer = model.layers[-1]
    inner, w = layer.args["inner"], _layer_weights(model, weights, layer.name)
    forward, backward = (
        recurrent_reference(
            "gru",
            inner,
            {k.removeprefix(f"{direction}_"): v for k, v in w.items() if k.startswith(direction)},
            x,
            mask,
            go_backwards=direction == "backward",
            # Bidirectional forces Keras's zero_output_for_mask when it returns sequences
            zero_masked_outputs=return_sequences,
        )
        for direction in ("forward", "backward")
    )
    if return_sequences:
        backward = backward[:, ::-1]  # back to time order
    expected = {
        "concat": lambda f, b: np.concatenate([f, b], axis=-1),
        "sum": lambda f, b: f + b,
        "mul": lambda f, b: f * b,
        "ave": lambda f, b: (f + b) / 2,
    }[merge](forward, backward)
    got = _predict(live, x)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    if return_sequences:
        assert np.all(got[~mask] == 0.0)


def test_backwards_sequence_passes_on_the_mask_in_time_order():
    # Keras hands the input's mask on unchanged, though the outputs are in reversed order:
    # the pooled mean takes the outputs at the positions of the real steps, not of their results.
    model = layerdsl.parse(
        "input 6x2\nmasking 0.0\nsimplernn 3 return_sequences=true go_backwards=true\nglobalavgpool1d"
    )
    live = layerdsl.build(model, "keras")
    weights = random_weights(model, seed=14)
    layerdsl.set_weights(live, weights)
    x, mask = _masked_batch(6, 2, seed=15)
    layer = model.layers[1]
    outputs = recurrent_reference("simplernn", layer.args, _layer_weights(model, weights, layer.name), x, mask)
    expected = (outputs * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_predict(live, x), expected, atol=ATOL, rtol=RTOL)


def test_embedding_mask_zero_masks_padding_ids_like_masking():
    ids = layerdsl.parse("input 6 dtype=int32\nembedding 9 2 mask_zero=true\nlstm 3 return_sequences=true")
    live = layerdsl.build(ids, "keras")
    weights = random_weights(ids, seed=16)
    layerdsl.set_weights(live, weights)
    x = np.array([[0, 0, 3, 4, 5, 1], [2, 0, 7, 0, 8, 0]], np.int32)
    vectors = weights["embedding.embeddings"][x].astype(np.float64)
    layer = ids.layers[1]
    expected = recurrent_reference("lstm", layer.args, _layer_weights(ids, weights, "lstm"), vectors, x != 0)
    np.testing.assert_allclose(_predict(live, x), expected, atol=ATOL, rtol=RTOL)


# --- generated source ------------------------------------------------------------------------


def test_generated_source_reads_like_hand_written_keras():
    source = layerdsl.compile(SENTIMENT + "\n", "keras")
    ast.parse(source)
    assert 'inputs = keras.Input(shape=(100,), dtype="int32", name="input")' in source
    assert 'x = layers.Embedding(10000, 64, mask_zero=True, name="embedding")(inputs)' in source
    assert 'x = layers.LSTM(32, name="lstm")(x)' in source

    source = layerdsl.compile(STACKED_MASKED, "keras")
    ast.parse(source)
    assert 'x = layers.Masking(name="masking")(inputs)' in source
    assert 'x = layers.LSTM(32, return_sequences=True, name="lstm")(x)' in source


def test_generated_source_for_sequence_layers_spells_out_only_non_defaults():
    source = layerdsl.compile(
        "input 30 dtype=int64\n"
        "embedding 50 8 init=normal\n"
        "conv1d 4 3 pad=causal dilation=2 maxnorm=2\n"
        "maxpool1d 2 stride=1\n"
        "bidirectional lstm 6 return_sequences=true go_backwards=true activation=relu merge=ave\n"
        "gru 3 reset_after=false bias=false bias_init=ones\n",
        "keras",
    )
    tree = ast.parse(source)
    assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == ["build_model"]
    assert 'keras.Input(shape=(30,), dtype="int64", name="input")' in source
    assert 'layers.Embedding(50, 8, embeddings_initializer="normal", name="embedding")' in source
    assert "kernel_constraint=keras.constraints.MaxNorm(2.0, axis=[0, 1])" in source
    assert 'padding="causal"' in source and "dilation_rate=2" in source
    assert 'layers.MaxPooling1D(2, strides=1, name="max_pooling1d")' in source
    # go_backwards inside the wrapper: Keras needs the opposite direction spelled out
    assert 'layers.LSTM(6, return_sequences=True, go_backwards=True, activation="relu", name="lstm")' in source
    backward = source[source.index("backward_layer=layers.LSTM(") : source.index('name="backward_lstm"')]
    assert "go_backwards" not in backward and 'activation="relu"' in backward
    assert 'merge_mode="ave"' in source
    assert 'layers.GRU(3, use_bias=False, reset_after=False, name="gru")' in source  # no bias, no bias_init
    body = source[source.index("def build_model") :].splitlines()
    assert all(len(line) <= 100 for line in body if not line.lstrip().startswith("#"))
