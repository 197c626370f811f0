"""The torch backend's sequence layers compute what Keras computes, masks included.

The oracle is the same network built here from plain ``keras.layers`` with the
same canonical weights (Keras layout is canonical), never through layerdsl's
own backends. Masked batches have pre-padding, post-padding and arbitrary
(non-contiguous) masks, a row with no padding and, for recurrent layers, a row
that is all padding.
"""

from __future__ import annotations

import ast
import os
import re

import numpy as np
import pytest

import layerdsl
from layerdsl.testing import random_weights

torch = pytest.importorskip("torch")

ATOL, RTOL = 1e-5, 1e-4
PADDINGS = ("pre", "post", "arbitrary")


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("keras")


def recurrent_config(a) -> dict:
    config = {
        "return_sequences": a["return_sequences"],
        "go_backwards": a["go_backwards"],
        "activation": a["activation"],
        "use_bias": a["bias"],
    }
    if "recurrent_activation" in a:
        config["recurrent_activation"] = a["recurrent_activation"]
    if "reset_after" in a:
        config["reset_after"] = a["reset_after"]
    return config


def keras_layer(keras, layer: layerdsl.Layer):
    a, kind = layer.args, layer.kind
    recurrent = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simplernn": keras.layers.SimpleRNN}
    if kind in recurrent:
        return recurrent[kind](a["units"], **recurrent_config(a))
    if kind == "bidirectional":
        inner, config = recurrent[a["layer"]], recurrent_config(a["inner"])
        # Keras derives the backward layer only from a forward-reading one; otherwise pass both
        backward = inner(a["inner"]["units"], **{**config, "go_backwards": not config["go_backwards"]})
        return keras.layers.Bidirectional(
            inner(a["inner"]["units"], **config), merge_mode=a["merge"], backward_layer=backward
        )
    if kind == "embedding":
        return keras.layers.Embedding(a["vocab"], a["dim"], mask_zero=a["mask_zero"])
    if kind == "masking":
        return keras.layers.Masking(a["value"])
    if kind == "conv1d":
        return keras.layers.Conv1D(
            a["filters"], a["kernel"], strides=a["stride"], padding=a["pad"], dilation_rate=a["dilation"],
            use_bias=a["bias"], activation=a["activation"],
        )  # fmt: skip
    if kind == "dense":
        return keras.layers.Dense(a["units"], activation=a["activation"])
    if kind == "conv2d":
        return keras.layers.Conv2D(a["filters"], a["kernel"])
    pools = {
        "maxpool1d": keras.layers.MaxPooling1D,
        "avgpool1d": keras.layers.AveragePooling1D,
    }
    if kind in pools:
        return pools[kind](a["pool"], strides=a["stride"], padding=a["pad"])
    global_pools = {
        "globalmaxpool1d": keras.layers.GlobalMaxPooling1D,
        "globalavgpool1d": keras.layers.GlobalAveragePooling1D,
        "globalmaxpool": keras.layers.GlobalMaxPooling2D,
        "globalavgpool": keras.layers.GlobalAveragePooling2D,
    }
    if kind in global_pools:
        return global_pools[kind]()
    raise AssertionError(f"no Keras oracle for {kind}")


def keras_model(keras, model: layerdsl.Model, weights: dict[str, np.ndarray]):
    layers = [keras_layer(keras, layer) for layer in model.layers]
    net = keras.Sequential([keras.Input(model.input.shape, dtype=model.input.dtype), *layers])
    for layer, klayer in zip(model.layers, layers, strict=True):
        if layer.weights:
            klayer.set_weights([weights[f"{layer.name}.{w.name}"] for w in layer.weights])
    assert sum(int(np.prod(w.shape)) for w in net.trainable_weights) == model.trainable_params
    return net


def padded_batch(model: layerdsl.Model, padding: str, empty_row: bool, seed: int = 1) -> np.ndarray:
    """Five rows with 0, 2, 4, 6 padded steps (and one all padding, when asked) out of seven."""
    rng = np.random.default_rng(seed)
    shape = (5, *model.input.shape)
    if model.input.dtype.startswith("int"):
        x = rng.integers(1, model.layers[0].args["vocab"], shape).astype(model.input.dtype)
    else:
        x = rng.normal(size=shape).astype(np.float32)
    steps = shape[1]
    for row, count in enumerate((0, 2, 4, 6, steps if empty_row else 3)):
        if padding == "pre":
            positions = np.arange(count)
        elif padding == "post":
            positions = np.arange(steps - count, steps)
        else:  # holes anywhere: masked steps between real ones
            positions = rng.choice(steps, size=count, replace=False)
        x[row, positions] = 0
    return x


def torch_output(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))
        return net.eval()(tensor).numpy()


def assert_matches_keras(keras, text: str, inputs: list[np.ndarray] | None = None, seed: int = 0) -> None:
    model = layerdsl.parse(text)
    weights = random_weights(model, seed)
    net = layerdsl.build(model, target="torch")
    layerdsl.set_weights(net, weights)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == model.trainable_params
    oracle = keras_model(keras, model, weights)
    if inputs is None:
        inputs = [np.random.default_rng(seed + 1).normal(size=(4, *model.input.shape)).astype(np.float32)]
    for x in inputs:
        expected = np.asarray(oracle(x, training=False))
        assert np.isfinite(expected).all()
        np.testing.assert_allclose(torch_output(net, x), expected, atol=ATOL, rtol=RTOL)


UNMASKED = {
    "lstm_last": "input 7x5\nlstm 6",
    "lstm_sequences": "input 7x5\nlstm 6 return_sequences=true",
    "lstm_backwards": "input 7x5\nlstm 6 go_backwards=true",
    "lstm_backwards_sequences": "input 7x5\nlstm 6 return_sequences=true go_backwards=true",
    "lstm_no_bias": "input 7x5\nlstm 6 bias=false",
    "lstm_other_activations": "input 7x5\nlstm 6 return_sequences=true activation=elu recurrent_activation=softsign",
    "gru_last": "input 7x5\ngru 6",
    "gru_sequences_backwards": "input 7x5\ngru 6 return_sequences=true go_backwards=true",
    "gru_no_bias": "input 7x5\ngru 6 bias=false",
    "gru_reset_before": "input 7x5\ngru 6 reset_after=false",
    "gru_reset_before_sequences": "input 7x5\ngru 6 reset_after=false return_sequences=true go_backwards=true",
    "gru_other_activation": "input 7x5\ngru 6 activation=relu",
    "simplernn_last": "input 7x5\nsimplernn 6",
    "simplernn_relu_sequences": "input 7x5\nsimplernn 6 activation=relu return_sequences=true",
    "simplernn_gelu_backwards": "input 7x5\nsimplernn 6 activation=gelu go_backwards=true",
    "stacked_lstm_gru": "input 7x5\nlstm 6 return_sequences=true\ngru 4",
    "bidirectional_concat": "input 7x5\nbidirectional lstm 6 return_sequences=true",
    "bidirectional_concat_last": "input 7x5\nbidirectional lstm 6",
    "bidirectional_sum": "input 7x5\nbidirectional gru 6 return_sequences=true merge=sum",
    "bidirectional_mul_last": "input 7x5\nbidirectional simplernn 6 merge=mul",
    "bidirectional_ave": "input 7x5\nbidirectional lstm 6 return_sequences=true merge=ave",
    "bidirectional_backwards_inner": "input 7x5\nbidirectional lstm 6 return_sequences=true go_backwards=true",
    "bidirectional_backwards_inner_last": "input 7x5\nbidirectional gru 6 go_backwards=true merge=sum",
    "bidirectional_reset_before": "input 7x5\nbidirectional gru 6 reset_after=false return_sequences=true merge=ave",
    "bidirectional_other_activation": "input 7x5\nbidirectional simplernn 6 activation=tanh merge=concat\ndense 2",
    "conv1d_valid": "input 9x3\nconv1d 4 3",
    "conv1d_same_odd": "input 9x3\nconv1d 4 3 pad=same",
    "conv1d_same_even_kernel": "input 9x3\nconv1d 4 4 pad=same activation=relu",
    "conv1d_same_stride": "input 9x3\nconv1d 4 3 stride=2 pad=same",
    "conv1d_valid_stride": "input 9x3\nconv1d 4 3 stride=2 bias=false",
    "conv1d_causal_dilated": "input 9x3\nconv1d 4 3 pad=causal dilation=2",
    "conv1d_same_dilated": "input 9x3\nconv1d 4 3 pad=same dilation=3",
    "conv1d_valid_dilated_softmax": "input 9x3\nconv1d 4 2 dilation=3 activation=softmax",
    "maxpool1d_valid": "input 9x3\nmaxpool1d 2",
    "maxpool1d_same_asymmetric": "input 9x3\nmaxpool1d 2 pad=same",
    "maxpool1d_same_symmetric": "input 9x3\nmaxpool1d 3 stride=1 pad=same",
    "avgpool1d_valid_stride": "input 9x3\navgpool1d 3 stride=2",
    "avgpool1d_same_asymmetric": "input 9x3\navgpool1d 2 pad=same",
    "avgpool1d_same_symmetric": "input 9x3\navgpool1d 3 stride=1 pad=same",
    "avgpool1d_same_wide": "input 9x3\navgpool1d 4 stride=3 pad=same",
    "globalmaxpool1d": "input 9x3\nconv1d 4 3\nglobalmaxpool1d",
    "globalavgpool1d": "input 9x3\nglobalavgpool1d",
    "globalmaxpool_images": "input 5x6x3\nconv2d 4 2\nglobalmaxpool",
    "globalavgpool_images": "input 5x6x3\nconv2d 4 2\nglobalavgpool",
}


@pytest.mark.parametrize("text", UNMASKED.values(), ids=UNMASKED.keys())
def test_layer_matches_keras(keras, text):
    assert_matches_keras(keras, text)


def test_embedding_matches_keras(keras):
    model = layerdsl.parse("input 7 dtype=int32\nembedding 20 5\nglobalmaxpool1d")
    assert_matches_keras(keras, model.source_text, [padded_batch(model, "pre", empty_row=False)])


EMBEDDED = "input 7 dtype=int32\nembedding 20 5 mask_zero=true\n"
FLOATS = "input 7x4\nmasking 0.0\n"
MASKED = {
    "lstm_last": EMBEDDED + "lstm 6",
    "lstm_backwards_sequences": EMBEDDED + "lstm 6 return_sequences=true go_backwards=true",
    "lstm_other_activation": EMBEDDED + "lstm 6 activation=softsign",
    "gru_sequences": EMBEDDED + "gru 6 return_sequences=true",
    "gru_reset_before_backwards": EMBEDDED + "gru 6 reset_after=false go_backwards=true",
    "simplernn_relu_sequences": EMBEDDED + "simplernn 6 activation=relu return_sequences=true",
    "stacked_through_dense": EMBEDDED + "lstm 6 return_sequences=true\ndense 4 activation=tanh\ngru 3",
    "bidirectional_concat": EMBEDDED + "bidirectional lstm 6 return_sequences=true",
    "bidirectional_sum_last": EMBEDDED + "bidirectional gru 6 merge=sum",
    "bidirectional_mul_backwards": EMBEDDED
    + "bidirectional simplernn 6 go_backwards=true return_sequences=true merge=mul",
    "bidirectional_ave_backwards_last": EMBEDDED + "bidirectional lstm 6 go_backwards=true merge=ave",
    "masking_lstm": FLOATS + "lstm 6 return_sequences=true",
    "masking_bidirectional_gru": FLOATS + "bidirectional gru 5 merge=concat",
    "masking_simplernn_backwards": FLOATS + "simplernn 5 go_backwards=true",
}


@pytest.mark.parametrize("text", MASKED.values(), ids=MASKED.keys())
def test_masked_recurrent_layer_matches_keras(keras, text):
    model = layerdsl.parse(text)
    inputs = [padded_batch(model, padding, empty_row=True) for padding in PADDINGS]
    assert_matches_keras(keras, text, inputs)


@pytest.mark.parametrize(
    "text",
    [
        EMBEDDED + "globalavgpool1d",
        EMBEDDED + "lstm 6 return_sequences=true\nglobalavgpool1d",
        FLOATS + "globalavgpool1d",
        FLOATS + "bidirectional lstm 3 return_sequences=true merge=sum\nglobalavgpool1d",
    ],
)
def test_masked_global_average_counts_only_unmasked_steps(keras, text):
    model = layerdsl.parse(text)
    inputs = [padded_batch(model, padding, empty_row=False) for padding in PADDINGS]
    assert_matches_keras(keras, text, inputs)


def test_masking_zeroes_masked_steps():
    net = layerdsl.build("input 3x2\nmasking 5.0", target="torch")
    x = np.array([[[5, 5], [5, 1], [2, 3]]], np.float32)
    np.testing.assert_array_equal(torch_output(net, x), [[[0, 0], [5, 1], [2, 3]]])


COUNTED = [
    "input 7x5\nlstm 6",
    "input 7x5\nlstm 6 bias=false",
    "input 7x5\ngru 6",
    "input 7x5\ngru 6 reset_after=false",
    "input 7x5\nsimplernn 6",
    "input 7x5\nbidirectional gru 6 reset_after=false",
    EMBEDDED + "bidirectional lstm 6 return_sequences=true\nsimplernn 3",
    "input 9x3\nconv1d 4 3 pad=causal bias=false\nmaxpool1d 2\nglobalavgpool1d",
]


@pytest.mark.parametrize("text", COUNTED)
def test_trainable_parameters_equal_the_ir(text):
    model = layerdsl.parse(text)
    net = layerdsl.build(model, target="torch")
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == model.trainable_params


def test_lstm_parameter_count_is_keras_formula():
    model = layerdsl.parse("input 7x5\nlstm 6 return_sequences=true\ngru 4 return_sequences=true\nsimplernn 3")
    assert [layer.trainable_params for layer in model.layers] == [
        4 * 6 * (5 + 6) + 4 * 6,
        3 * 4 * (6 + 4) + 6 * 4,
        3 * (4 + 3) + 3,
    ]


def test_torch_only_bias_stays_zero_and_untrained():
    net = layerdsl.build("input 7x5\nbidirectional lstm 6 merge=sum", target="torch")
    for name in ("bias_hh_l0", "bias_hh_l0_reverse"):
        bias = getattr(net.bidirectional, name)
        assert not bias.requires_grad
        assert not bias.any()
    net(torch.randn(2, 7, 5)).sum().backward()
    assert net.bidirectional.bias_ih_l0.grad is not None
    assert net.bidirectional.bias_hh_l0.grad is None


def test_weights_round_trip_exactly():
    text = "input 7 dtype=int32\nembedding 20 5\n" + (
        "conv1d 4 3 pad=causal\nbidirectional gru 5 return_sequences=true\nbidirectional lstm 3 return_sequences=true"
        "\ngru 4 reset_after=false return_sequences=true\nsimplernn 2 bias=false"
    )
    model = layerdsl.parse(text)
    weights = random_weights(model, seed=3)
    net = layerdsl.build(model, target="torch")
    layerdsl.set_weights(net, weights)
    back = layerdsl.get_weights(net)
    assert list(back) == model.weight_names()
    for key, array in weights.items():
        assert back[key].dtype == np.float32
        np.testing.assert_array_equal(back[key], array, err_msg=key)


def test_gru_gates_are_reordered_for_torch():
    model = layerdsl.parse("input 3x2\ngru 1")
    net = layerdsl.build(model, target="torch")
    bias = np.array([[1, 2, 3], [4, 5, 6]], np.float32)  # Keras gates z, r, h
    layerdsl.set_weights(
        net, {"gru.kernel": np.zeros((2, 3)), "gru.recurrent_kernel": np.zeros((1, 3)), "gru.bias": bias}
    )
    assert net.gru.bias_ih_l0.tolist() == [2, 1, 3]  # torch gates r, z, n
    assert net.gru.bias_hh_l0.tolist() == [5, 4, 6]
    assert set(net.state_dict()) == {"gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0"}


def test_initializers_follow_keras():
    torch.manual_seed(0)
    model = layerdsl.parse("input 7 dtype=int32\nembedding 50 8\nlstm 6 return_sequences=true\nbidirectional gru 5")
    w = layerdsl.get_weights(layerdsl.build(model, target="torch"))
    assert np.abs(w["embedding.embeddings"]).max() <= 0.05
    for key in (
        "lstm.recurrent_kernel",
        "bidirectional.forward_recurrent_kernel",
        "bidirectional.backward_recurrent_kernel",
    ):
        kernel = w[key]  # Keras's orthogonal (units, gates * units): orthonormal rows
        np.testing.assert_allclose(kernel @ kernel.T, np.eye(kernel.shape[0]), atol=1e-5)
    np.testing.assert_array_equal(w["lstm.bias"], np.repeat([0.0, 1.0, 0.0, 0.0], 6))  # unit_forget_bias
    np.testing.assert_array_equal(w["bidirectional.forward_bias"], np.zeros((2, 15)))
    limit = (6 / (8 + 24)) ** 0.5  # glorot_uniform on Keras's (8, 4 * 6) kernel
    assert limit * 0.9 < np.abs(w["lstm.kernel"]).max() <= limit


def generated(text: str) -> tuple[str, set[str]]:
    source = layerdsl.compile(text, "torch")
    tree = ast.parse(source)
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    return source, {name.split(".")[0] for name in imported}


def test_generated_source_is_standalone_and_uses_torch_modules():
    source, imported = generated(
        "input 7 dtype=int32\nembedding 20 5\nconv1d 4 3 pad=causal\nbidirectional lstm 6 return_sequences=true"
        "\nglobalavgpool1d"
    )
    assert imported == {"torch"}
    assert "nn.Embedding(20, 5)" in source
    assert "nn.LSTM(4, 6, batch_first=True, bidirectional=True)" in source
    assert "nn.Conv1d(5, 4, 3)" in source and "nn.ZeroPad1d((2, 0))" in source
    assert "x.mean(dim=1)" in source
    namespace: dict = {}
    exec(compile(source, "<generated>", "exec"), namespace)  # runs with only torch
    assert isinstance(namespace["build_model"](), torch.nn.Module)


@pytest.mark.parametrize(
    ("text", "helpers"),
    [
        (
            "input 7x5\nlstm 6 return_sequences=true\ngru 5 go_backwards=true return_sequences=true\nsimplernn 3 activation=relu",
            set(),
        ),
        ("input 7x5\nbidirectional lstm 6 go_backwards=true merge=ave", set()),
        ("input 7x5\nlstm 6 recurrent_activation=tanh", {"lstm"}),
        ("input 7x5\ngru 6 reset_after=false return_sequences=true\ngru 3", {"gru"}),
        (FLOATS + "simplernn 6 return_sequences=true\nlstm 3", {"simplernn", "lstm"}),
        (EMBEDDED + "bidirectional gru 6", {"gru"}),
    ],
)
def test_step_helpers_appear_only_when_needed(text, helpers):
    source, _ = generated(text)
    found = set(re.findall(r'rnn_scan\("(\w+)"', source))  # one shared step helper, for every kind
    assert found == helpers
    assert ("def rnn_scan(" in source) == bool(helpers)
    if not helpers:
        assert "torch.where" not in source
