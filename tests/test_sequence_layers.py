"""The sequence layers transformers need: `posembed`, `classtoken`, `select`, `gelu approximate=true` and
`dense` on a (T, F) sequence. Counts against Keras references, every backend equal after weight
transfer (masks included), `.keras` files under safe_mode, the importers, and the checker's errors."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import layerdsl
from layerdsl import testing
from layerdsl.backends import numpy_runtime
from layerdsl.errors import LayerDSLError

#: A small ViT: 4x4 patches of a 16x16 image as 16 tokens, a class token, positions, one MLP, the token's head.
VIT_LIKE = (
    "input 16x16x3\n"
    "conv2d 16 4 stride=4 | reshape 16x16 | classtoken | posembed | layernorm | dense 32 | gelu approximate=true "
    "| select 0 | dense 10"
)

AGREE = {
    "vit_like": VIT_LIKE,
    "masked_posembed": "input 9 dtype=int32\nembedding 30 8 mask_zero=true | posembed | dense 6 | globalavgpool1d",
    "masked_classtoken": "input 7 dtype=int32\nembedding 20 8 mask_zero=true | classtoken init=normal "
    "| posembed init=glorot_uniform | dense 5 activation=tanh | globalavgpool1d",
    "masked_select": "input 6 dtype=int32\nembedding 20 8 mask_zero=true | posembed | lstm 5 return_sequences=true "
    "| dense 4 | select -1",
    "dense_after_lstm_sequences": "input 6x3\nlstm 4 return_sequences=true | dense 5 | relu | dense 3 | select 2",
    "gelu_forms": "input 5x3\ndense 4 | gelu approximate=true | dense 4 | gelu | activation gelu approximate=true",
    "masking_token": "input 6x4\nmasking | classtoken | dense 3 | gru 3",
    "conv1d_around": "input 8x3\nconv1d 4 3 | classtoken | posembed | dense 5 | conv1d 2 2 | maxpool1d 2 | select -1",
    "image_gelu": "input 4x4x2\nconv2d 3 1 | gelu approximate=true | flatten | dense 2",
}


def _targets() -> list[str]:
    targets = testing.available_targets()
    if len(targets) < 2:
        pytest.skip("needs torch or keras installed to compare against")
    return targets


@pytest.mark.parametrize("padding", ["pre", "random"])
@pytest.mark.parametrize("text", AGREE.values(), ids=AGREE)
def test_every_backend_computes_the_same_after_weight_transfer(text, padding):
    testing.assert_backends_agree(text, _targets(), batch=3, padding=padding)


def test_a_masked_sequence_gets_an_unmasked_class_token():
    """The token counts in a masked mean, the padding does not, in every backend."""
    model = layerdsl.parse("input 4 dtype=int32\nembedding 5 3 mask_zero=true | classtoken | globalavgpool1d")
    weights = testing.random_weights(model)
    weights["class_token.token"] = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    ids = np.array([[0, 0, 1, 2], [3, 4, 1, 2]], dtype=np.int32)
    table = weights["embedding.embeddings"]
    expected = np.stack([
        (weights["class_token.token"] + table[1] + table[2]) / 3,
        (weights["class_token.token"] + table[[3, 4, 1, 2]].sum(axis=0)) / 5,
    ])
    result = testing.compare(model, testing.available_targets(), weights=weights, x=ids)
    for target, y in result.outputs.items():
        np.testing.assert_allclose(y, expected, atol=testing.ATOL, rtol=testing.RTOL, err_msg=target)


def test_select_counts_negative_positions_from_the_end():
    model = layerdsl.parse("input 5x3\nselect -2")
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    for target in testing.available_targets():
        live = layerdsl.build(model, target)
        np.testing.assert_array_equal(testing.run(target, live, model, x), x[:, 3], err_msg=target)


# --- parameter counts ---------------------------------------------------------------------------


def test_posembed_counts_as_the_position_embedding_of_keras_io():
    """keras-io's TokenAndPositionEmbedding: Embedding(20000, 32) tokens plus Embedding(200, 32) positions."""
    keras = pytest.importorskip("keras")
    layers = keras.layers

    class TokenAndPositionEmbedding(layers.Layer):  # as keras-io's "Text classification with Transformer"
        def __init__(self, maxlen, vocab_size, embed_dim):
            super().__init__()
            self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):
            positions = keras.ops.arange(start=0, stop=keras.ops.shape(x)[-1], step=1)
            return self.token_emb(x) + self.pos_emb(positions)

    reference = TokenAndPositionEmbedding(200, 20_000, 32)
    reference(np.zeros((1, 200), dtype="int32"))
    assert reference.pos_emb.count_params() == 6_400
    model = layerdsl.parse("input 200 dtype=int32\nembedding 20000 32 | posembed")
    assert model.layers[1].params == reference.pos_emb.count_params()
    assert model.total_params == reference.count_params() == 646_400
    assert layerdsl.build(model, "keras").count_params() == 646_400


def test_the_vit_like_stack_counts_the_same_in_every_framework():
    model = layerdsl.parse(VIT_LIKE)
    patches = 4 * 4 * 3 * 16 + 16
    expected = patches + 16 + 17 * 16 + 2 * 16 + (16 * 32 + 32) + (32 * 10 + 10)
    assert model.total_params == model.trainable_params == expected == 1_978
    assert [layer.output_shape for layer in model.layers[1:4]] == [(16, 16), (17, 16), (17, 16)]
    assert model.layers[-2].output_shape == (32,)
    if "keras" in testing.available_targets():
        assert layerdsl.build(model, "keras").count_params() == expected
    if "torch" in testing.available_targets():
        assert sum(p.numel() for p in layerdsl.build(model, "torch").parameters()) == expected


# --- gelu ----------------------------------------------------------------------------------------

GELU_X = np.linspace(-6.0, 6.0, 241, dtype=np.float32)


def test_gelu_approximate_is_kerass_tanh_form_and_torchs():
    approximate = numpy_runtime.gelu_approximate(GELU_X)
    exact = numpy_runtime.gelu(GELU_X)
    assert np.abs(approximate - exact).max() > 1e-4  # the two forms differ: the option matters
    if "keras" in testing.available_targets():
        import keras

        kerass = np.asarray(keras.activations.gelu(GELU_X, approximate=True))
        np.testing.assert_allclose(approximate, kerass, atol=1e-6, rtol=1e-6)
    if "torch" in testing.available_targets():
        import torch

        torchs = torch.nn.functional.gelu(torch.from_numpy(GELU_X), approximate="tanh").numpy()
        np.testing.assert_allclose(approximate, torchs, atol=1e-6, rtol=1e-6)


def test_gelu_approximate_is_written_as_each_framework_spells_it():
    model = layerdsl.parse("input 4x3\ndense 5 | gelu approximate=true | dense 2 | gelu")
    keras_source = layerdsl.compile(model, "keras")
    assert "layers.Activation(gelu_approximate," in keras_source
    assert 'register_keras_serializable(package="layerdsl")\ndef gelu_approximate(x):' in keras_source
    assert 'activation="gelu"' in keras_source  # the exact form fuses into the dense as before
    torch_source = layerdsl.compile(model, "torch")
    assert 'F.gelu(self.dense(x), approximate="tanh")' in torch_source
    assert "F.gelu(self.dense_1(x))" in torch_source
    assert "gelu_approximate" in layerdsl.compile(model, "numpy")
    assert "approximate" not in layerdsl.compile("input 4\ndense 3 | gelu", "keras")


@pytest.mark.parametrize(
    "text, column, message",
    [
        ("relu approximate=true", 6, "unknown option `approximate` for `relu`"),
        ("activation tanh approximate=true", 29, "`approximate=true` is an option of `gelu` only, not of `tanh`"),
    ],
)
def test_approximate_is_an_option_of_gelu_alone(text, column, message):
    with pytest.raises(LayerDSLError) as info:
        layerdsl.parse(f"input 4x3\n{text}", "m.layers")
    assert str(info.value).splitlines()[0] == f"m.layers:2:{column}: error: {message}"


# --- the checker -----------------------------------------------------------------------------------


@pytest.mark.parametrize("index, column", [(8, 8), (-9, 8)])
def test_select_out_of_range_names_the_sequence_length(index, column):
    with pytest.raises(LayerDSLError) as info:
        layerdsl.parse(f"input 8x4\nselect {index}", "m.layers")
    lines = str(info.value).splitlines()
    assert lines[0] == f"m.layers:2:{column}: error: `select {index}` is out of range for a sequence of length 8"
    assert "hint: choose an index from -8 to 7" in lines


def test_dense_on_an_image_names_flatten_and_a_per_pixel_conv():
    with pytest.raises(LayerDSLError) as info:
        layerdsl.parse("input 8x8x3\nconv2d 4 3\ndense 10", "m.layers")
    text = str(info.value)
    assert text.splitlines()[0] == (
        "m.layers:3:1: error: `dense` needs a 1-D input (features) or a 2-D sequence (timesteps x features), "
        "but receives shape (6, 6, 4)"
    )
    assert "add `flatten` before `dense`" in text
    assert "use `conv2d N 1`" in text


@pytest.mark.parametrize(
    "text, message",
    [
        ("input 8\nposembed", "`posembed` needs a 2-D (timesteps x features) input, but receives shape (8,)"),
        ("input 4x4x2\nclasstoken", "`classtoken` needs a 2-D (timesteps x features) input, but receives shape (4, 4, 2)"),
        ("input 5x2\nlstm 3 | select 0", "`select` needs a 2-D (timesteps x features) input, but receives shape (3,)"),
    ],
)
def test_the_sequence_layers_refuse_other_ranks(text, message):
    with pytest.raises(LayerDSLError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layerdsl.parse(text)


def test_the_masks_flow_as_keras_passes_them():
    model = layerdsl.parse("input 6 dtype=int32\nembedding 9 4 mask_zero=true | posembed | classtoken | dense 3 | select 0")
    masked = {layer.kind: (layer.input_masked, layer.output_masked) for layer in model.layers}
    assert masked["posembed"] == masked["classtoken"] == masked["dense"] == (True, True)
    assert masked["select"] == (True, False)  # one position is no sequence: the mask goes


# --- torch's initial weights --------------------------------------------------------------------


def test_torch_draws_position_embeddings_from_kerass_fans():
    """he_uniform on a (10, 200) embedding: Keras's fan_in is 10, so the limit is sqrt(6 / 10); torch's
    own reading of the (1, 10, 200) tensor would give another."""
    torch = pytest.importorskip("torch")
    model = layerdsl.parse("input 10x200\nposembed init=he_uniform")
    torch.manual_seed(0)
    weights = layerdsl.get_weights(layerdsl.build(model, "torch"))["position_embedding.embeddings"]
    limit = math.sqrt(6 / 10)
    assert weights.shape == (10, 200)
    assert np.abs(weights).max() <= limit
    assert np.abs(weights).max() > 0.95 * limit


# --- Keras files and the importers --------------------------------------------------------------

ROUND_TRIP = (
    "input 7 dtype=int32\nembedding 20 8 mask_zero=true\nclasstoken init=normal\nposembed\ndense 6\n"
    "gelu approximate=true\nselect -1\nlayerscale 0.5\ndense 3\n"
)


def test_keras_files_with_the_generated_layers_load_under_safe_mode(tmp_path):
    keras = pytest.importorskip("keras")
    for text in (VIT_LIKE, ROUND_TRIP):
        model = layerdsl.parse(text)
        live = layerdsl.build(model, "keras")
        weights = testing.random_weights(model)
        layerdsl.set_weights(live, weights)
        live.save(tmp_path / "m.keras")
        loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
        x = testing.random_input(model, batch=3)
        np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(live(x)), atol=1e-6)
        kinds = {type(layer).__name__ for layer in loaded.layers}
        assert {"ClassToken", "PositionEmbedding"} <= kinds
        assert layerdsl.get_weights(loaded, model).keys() == weights.keys()


def test_a_saved_keras_file_loads_in_a_fresh_process_that_imports_the_generated_module(tmp_path):
    """What a user does: import the generated file (it registers the layers), then load under safe_mode."""
    pytest.importorskip("keras")
    model = layerdsl.parse(ROUND_TRIP)
    (tmp_path / "generated.py").write_text(layerdsl.compile(model, "keras"), encoding="utf-8")
    live = layerdsl.build(model, "keras")
    layerdsl.set_weights(live, testing.random_weights(model))
    live.save(tmp_path / "m.keras")
    x = testing.random_input(model, batch=3, padding="random")
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import generated  # registers PositionEmbedding, ClassToken, Select, gelu_approximate\n"
        "model = keras.saving.load_model(sys.argv[1] + '/m.keras', safe_mode=True)\n"
        "np.save(sys.argv[1] + '/y.npy', np.asarray(model(np.load(sys.argv[1] + '/x.npy'))))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.asarray(live(x)), atol=1e-6)


def test_from_keras_reads_the_generated_layers_back():
    pytest.importorskip("keras")
    model = layerdsl.parse(ROUND_TRIP)
    original = layerdsl.build(model, "keras")
    layerdsl.set_weights(original, testing.random_weights(model))
    imported = layerdsl.from_keras(original)
    assert [line for line in imported.text.splitlines() if not line.startswith("model ")] == ROUND_TRIP.splitlines()
    assert imported.model.total_params == model.total_params
    assert imported.notes == ()
    x = testing.random_input(model, batch=3, padding="random")
    fresh = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(fresh, imported.weights)
    expected = testing.run("keras", original, model, x)
    np.testing.assert_allclose(fresh(x), expected, atol=testing.ATOL, rtol=testing.RTOL)


def test_from_keras_reads_only_layerdsls_own_position_embedding():
    """Another library's `PositionEmbedding` (keras-hub's returns the embedding without adding it) is refused."""
    keras = pytest.importorskip("keras")

    @keras.saving.register_keras_serializable(package="elsewhere")
    class PositionEmbedding(keras.layers.Layer):
        def call(self, x):
            return x

    model = keras.Sequential([keras.Input((4, 3)), PositionEmbedding(), keras.layers.Dense(2)])
    with pytest.raises(layerdsl.ModelImportError, match="layerdsl has no positionembedding"):
        layerdsl.from_keras(model)
    fused = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation=_gelu_approximate(keras))])
    with pytest.raises(layerdsl.ModelImportError, match="gelu approximate=true"):
        layerdsl.from_keras(fused)


def _gelu_approximate(keras):
    """keras-nlp's registered `gelu_approximate`, as its GPT-2 passes it to Dense."""

    @keras.saving.register_keras_serializable(package="keras_nlp")
    def gelu_approximate(x):
        return keras.activations.gelu(x, approximate=True)

    return gelu_approximate


def test_from_torch_reads_the_tanh_gelu():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    module = nn.Sequential(nn.Linear(4, 5), nn.GELU(approximate="tanh"), nn.Linear(5, 3), nn.GELU())
    imported = layerdsl.from_torch(module, (7, 4))
    assert [line for line in imported.text.splitlines()[2:]] == ["dense 5", "gelu approximate=true", "dense 3", "gelu"]
    x = testing.random_input(imported.model, batch=2)
    live = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(live, imported.weights)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(live(x), expected, atol=testing.ATOL, rtol=testing.RTOL)


@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_dense_on_a_sequence_round_trips_through_the_importers(framework):
    pytest.importorskip(framework)
    text = "input 7x3\nlstm 4 return_sequences=true\ndense 5 activation=relu\ndense 2\n"
    model = layerdsl.parse(text)
    original = layerdsl.build(model, framework)
    layerdsl.set_weights(original, testing.random_weights(model))
    if framework == "keras":
        imported = layerdsl.from_keras(original)
    else:
        imported = layerdsl.from_torch(original, model.input.shape)
    assert [layer.output_shape for layer in imported.model.layers] == [(7, 4), (7, 5), (7, 2)]
    x = testing.random_input(model, batch=2)
    fresh = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(fresh, imported.weights)
    expected = testing.run(framework, original, model, x)
    np.testing.assert_allclose(fresh(x), expected, atol=testing.ATOL, rtol=testing.RTOL)
