"""The importers read every layer the language has where the framework has the class: each kind round
trips (text -> framework model -> import -> the same layers, equal outputs), and so do the transformer
examples the Keras backend builds, a hand-written core-Keras encoder, and `layerdsl import model.keras`."""

import numpy as np
import pytest
from test_importers import assert_same_outputs, randomize, signature
from test_transformers import MASKED, TEXT, VIT, padded_ids, reduced, torchvision_vit

import layerdsl
from layerdsl import cli
from layerdsl.backends.torch_backend import torch_shape
from layerdsl.testing import ATOL, RTOL, random_input, random_weights, run

keras = pytest.importorskip("keras")
layers = keras.layers

#: One model per kind the importers newly read, with its options away from their defaults.
KERAS_KINDS = {
    "layernorm": "input 5x6\nlayernorm eps=1e-05 center=false\ndense 3\nlayernorm scale=false\nlayernorm\n",
    "layernorm_image": "input 4x4x3\nlayernorm eps=0.01\n",
    "reshape": "input 4x6\nreshape 3x8\nreshape 24\n",
    "permute": "input 4x6x2\npermute 2x3x1\n",
    "rescaling": "input 6\nrescaling 0.5 offset=-1.0\nrescaling 2.0\n",
    "normalization_constants": "input 4x3\nnormalization mean=0.5 variance=2.0\n",
    "normalization_weights": "input 4x3\nnormalization\n",
    "cropping2d": "input 8x9x2\ncropping2d 1x2\ncropping2d top=1 right=2\ncropping2d 1\n",
    "cropping1d": "input 8x3\ncropping1d 2\ncropping1d start=1 end=0\ncropping1d\n",
    "upsample2d": "input 3x4x2\nupsample2d\nupsample2d 2x3 interpolation=bilinear\n",
    "upsample1d": "input 3x2\nupsample1d 3\nupsample1d\n",
    "subtract_maximum_minimum": "input 5\nsubtract { dense 5 } { dense 5 activation=relu }\nmaximum { } { dense 5 }\n"
    "minimum { dense 5 } { }\n",
    "subtract_taps": "input 5\ndense 5\ntap a\ndense 5\ntap b\n@a\nsubtract @b\n",
    "depthwiseconv2d": "input 9x9x3\ndepthwiseconv2d 3 multiplier=2 stride=2 pad=same activation=relu\n"
    "depthwiseconv2d 3x2 dilation=2 bias=false init=he_normal\n",
    "separableconv2d": "input 7x7x3\nseparableconv2d 4 3 pad=same multiplier=2 bias_init=ones\n"
    "separableconv2d 2 3 stride=2 activation=tanh init=lecun_normal\n",
    "conv2dtranspose": "input 4x4x3\nconv2dtranspose 5 3 stride=2 pad=same\nconv2dtranspose 2 2 bias=false activation=relu\n",
}


@pytest.mark.parametrize("text", KERAS_KINDS.values(), ids=KERAS_KINDS)
def test_keras_round_trip_of_each_newly_importable_kind(text):
    model = layerdsl.parse(text)
    original = layerdsl.build(model, "keras")
    layerdsl.set_weights(original, random_weights(model))
    imported = layerdsl.from_keras(original)
    assert signature(imported.model) == signature(model)
    assert layerdsl.parse(imported.text) == imported.model
    assert imported.notes == ()
    x = random_input(model, batch=3)
    assert_same_outputs("keras", original, model, imported, x)
    fresh = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(fresh, imported.weights)
    np.testing.assert_allclose(fresh(x), run("keras", original, model, x), atol=ATOL, rtol=RTOL)


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
def test_keras_layers_the_language_cannot_express_are_refused_by_name():
    cases = [
        (layers.LayerNormalization(axis=1, name="norm_time"), (5, 6),
         "cannot import layer 'norm_time' (LayerNormalization): axis=[1]: layerdsl's layernorm acts on the last axis"),
        (layers.LayerNormalization(rms_scaling=True, name="rms"), (6,), "'rms' (LayerNormalization): rms_scaling=True"),
        (layers.Rescaling([1.0, 2.0], name="per_channel"), (3, 2), "'per_channel' (Rescaling): scale=[1.0, 2.0]"),
        (layers.Normalization(invert=True, mean=0.0, variance=1.0, name="inv"), (3,), "'inv' (Normalization): invert"),
        (layers.Conv2DTranspose(2, 3, output_padding=1, strides=2, name="tc"), (4, 4, 1), "'tc' (Conv2DTranspose): output_padding"),
        (layers.UpSampling2D(interpolation="bicubic", name="up"), (4, 4, 1), "'up' (UpSampling2D): interpolation='bicubic'"),
        (layers.DepthwiseConv2D(3, depthwise_regularizer="l2", name="dw"), (5, 5, 2), "depthwise_regularizer is set"),
    ]  # fmt: skip
    for layer, shape, message in cases:
        with pytest.raises(layerdsl.ModelImportError) as info:
            layerdsl.from_keras(keras.Sequential([keras.Input(shape), layer]))
        assert message in str(info.value)


def test_keras_normalization_with_per_channel_constants_imports_them_as_weights():
    keras.utils.clear_session()
    original = keras.Sequential([keras.Input((4, 3)), layers.Normalization(mean=[1.0, -2.0, 0.5], variance=[4.0, 0.25, 1.0])])
    imported = layerdsl.from_keras(original)
    assert imported.text == "model sequential\ninput 4x3\nnormalization\n"  # the weights hold the constants
    assert len(imported.notes) == 1 and "per-channel constant" in imported.notes[0]
    np.testing.assert_array_equal(imported.weights["normalization.mean"], [1.0, -2.0, 0.5])
    np.testing.assert_array_equal(imported.weights["normalization.variance"], [4.0, 0.25, 1.0])
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    live = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(live, imported.weights)
    np.testing.assert_allclose(live(x), original(x), atol=ATOL, rtol=RTOL)


# --- torch --------------------------------------------------------------------------------------

TORCH_KINDS = {
    "layernorm": "input 5x6\nlayernorm eps=1e-05\ndense 3\nlayernorm scale=false center=false\nlayernorm center=false\n",
    "layernorm_image": "input 4x4x3\nconv2d 3 1\nlayernorm eps=0.01\nlayernorm center=false scale=false\n",
    "upsample2d": "input 3x4x2\nconv2d 2 1\nupsample2d\nupsample2d 2x3 interpolation=bilinear\n",
    "subtract_maximum_minimum": "input 5\nsubtract { dense 5 } { dense 5 activation=relu }\nmaximum { } { dense 5 }\n"
    "minimum { dense 5 } { }\n",
    "sequences": "input 9x3\ndense 4\ncropping1d 2\ncropping1d start=1 end=0\nupsample1d 3\nselect -2\n",
    "select_first": "input 6x3\nlstm 4 return_sequences=true\nselect 0\n",
    "cropping2d": "input 8x9x2\nconv2d 3 1\ncropping2d 1x2\ncropping2d top=1 right=2\nconv2d 2 1\n",
    "reshape": "input 4x6\nreshape 3x8\nreshape 2x12\n",
    "reshape_image": "input 4x4x2\nconv2d 3 1\nreshape 8x6\n",
    "posembed_classtoken": "input 5x4\nclasstoken\nposembed\ndense 3\nselect -1\n",
    "rescaling": "input 6\nrescaling 0.5 offset=-1.0\nrescaling 2.0\ndense 2\n",
    "layerscale": "input 4x4x3\nconv2d 3 1\nlayerscale\n",
    "layerscale_sequence": "input 5x4\nlayerscale\ndense 2\n",
    "conv2dtranspose": "input 4x5x3\nconv2dtranspose 5 3 stride=2 pad=same\nconv2dtranspose 2 2 bias=false activation=relu\n"
    "conv2dtranspose 2 4 stride=2 pad=same\nconv2dtranspose 2 1 stride=3\n",
}


@pytest.mark.parametrize("text", TORCH_KINDS.values(), ids=TORCH_KINDS)
def test_torch_round_trip_of_each_newly_importable_kind(text):
    pytest.importorskip("torch")
    model = layerdsl.parse(text)
    original = layerdsl.build(model, "torch")
    layerdsl.set_weights(original, random_weights(model))
    imported = layerdsl.from_torch(original, torch_shape(model.input.shape))
    assert layerdsl.parse(imported.text) == imported.model
    assert [y.kind for y in imported.model.layers] == [y.kind for y in model.layers]
    assert imported.model.total_params == model.total_params
    assert_same_outputs("torch", original, model, imported, random_input(model, batch=3))


def _torch_refusals():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Scaled(nn.Module):
        def forward(self, x):
            return torch.sub(x, x.tanh(), alpha=2)

    return [
        (nn.Sequential(nn.LayerNorm((4, 3))), (4, 3), "normalized_shape=(4, 3): layerdsl's layernorm normalizes the last"),
        (nn.Sequential(nn.LayerNorm(5)), (3, 5, 5), "on (N, C, H, W) it normalizes the last axis, the width"),
        (nn.Sequential(nn.Upsample(scale_factor=2, mode="bicubic")), (1, 3, 3), "mode='bicubic'"),
        (nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)), (1, 3, 3), "align_corners=True"),
        (nn.Sequential(nn.Upsample(size=(5, 5))), (1, 3, 3), "its output 5x5 is not a whole multiple of its 3x3 input"),
        (Scaled(), (4,), "alpha=2: layerdsl's subtract has no scale"),
        (nn.Sequential(nn.ConvTranspose2d(1, 2, 3, padding=2)), (1, 5, 5), "give neither TensorFlow's `valid` nor `same`"),
        (nn.Sequential(nn.Flatten(), nn.Unflatten(1, (2, 4))), (8,), "layerdsl has no unflatten"),
    ]


def test_torch_modules_the_language_cannot_express_are_refused_with_the_reason():
    for module, shape, message in _torch_refusals():
        with pytest.raises(layerdsl.ModelImportError) as info:
            layerdsl.from_torch(module, shape)
        assert message in str(info.value)


# --- the transformer examples, as the Keras backend builds them -------------------------------------


def _kinds(model):
    """Layer kinds in order, an activation layer after a dense read as the dense's `activation=`
    (the Keras model holds `dense 2 | softmax` as one Dense(activation="softmax"))."""
    out = []
    for layer in model.layers:
        if layer.kind == "activation" and out and out[-1][0] == "dense":
            out[-1] = ("dense", layer.args["function"])
        else:
            out.append((layer.kind, layer.args["activation"] if layer.kind == "dense" else None))
    return out


def assert_keras_round_trip(text, x):
    model = layerdsl.parse(text)
    original = layerdsl.build(model, "keras")
    layerdsl.set_weights(original, random_weights(model))
    imported = layerdsl.from_keras(original)
    assert layerdsl.parse(imported.text) == imported.model
    assert imported.model.total_params == model.total_params
    assert _kinds(imported.model) == _kinds(model)
    assert imported.notes == ()
    assert_same_outputs("keras", original, model, imported, x)
    fresh = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(fresh, imported.weights)
    np.testing.assert_allclose(fresh(x), run("keras", original, model, x), atol=ATOL, rtol=RTOL)
    return imported


@pytest.mark.parametrize("text", [TEXT, MASKED], ids=["text_transformer", "mask_zero"])
def test_text_transformer_round_trips_through_from_keras(text):
    imported = assert_keras_round_trip(text, padded_ids(3, 200, 20000, seed=4))
    assert imported.model.total_params == 657_758
    assert ("mask_zero=true" in imported.text) == (text is MASKED)


def test_text_transformer_round_trips_through_from_torch():
    """Its attention (key_dim 32 on 32 features) is the torch backend's own MultiHeadAttention module,
    which from_torch reads as one `attention` layer."""
    pytest.importorskip("torch")
    model = layerdsl.parse(TEXT)
    original = layerdsl.build(model, "torch")
    layerdsl.set_weights(original, random_weights(model))
    imported = layerdsl.from_torch(original, torch_shape(model.input.shape))
    assert layerdsl.parse(imported.text) == imported.model
    assert imported.model.total_params == 657_758
    assert _kinds(imported.model) == _kinds(model)
    (attention,) = [y for y in imported.model.layers if y.kind == "attention"]
    assert attention.args == next(y for y in model.layers if y.kind == "attention").args
    x = padded_ids(3, 200, 20000, seed=4)
    assert_same_outputs("torch", original, model, imported, x)
    fresh = layerdsl.build(imported.model, "numpy")  # the canonical (Keras) layout of the weights
    layerdsl.set_weights(fresh, imported.weights)
    np.testing.assert_allclose(fresh(x), run("torch", original, model, x), atol=ATOL, rtol=RTOL)


def test_reduced_vit_round_trips_through_from_keras():
    x = np.random.default_rng(5).standard_normal((2, 32, 32, 3)).astype("float32")
    imported = assert_keras_round_trip(reduced(VIT), x)
    assert [y.kind for y in imported.model.layers][:4] == ["conv2d", "reshape", "classtoken", "posembed"]


def test_reduced_vit_round_trips_through_from_torch():
    pytest.importorskip("torch")
    model = layerdsl.parse(reduced(VIT))
    original = layerdsl.build(model, "torch")
    layerdsl.set_weights(original, random_weights(model))
    imported = layerdsl.from_torch(original, (3, 32, 32))
    assert layerdsl.parse(imported.text) == imported.model
    assert imported.model.total_params == model.total_params
    assert _kinds(imported.model) == _kinds(model)
    x = np.random.default_rng(6).standard_normal((2, 32, 32, 3)).astype("float32")
    assert_same_outputs("torch", original, model, imported, x)


def test_torchvision_style_vit_imports_with_equal_outputs():
    """torchvision's own forward: x.reshape(n, C, -1).permute(0, 2, 1), the class token expanded and
    prepended, `x + self.pos_embedding`, pre-norm blocks, x[:, 0]."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = torchvision_vit(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                                num_classes=10).eval()  # fmt: skip
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    imported = layerdsl.from_torch(reference, (3, 32, 32))
    assert imported.text.split("\n")[2:6] == ["conv2d 64 8 stride=8 name=conv_proj", "reshape 16x64", "classtoken",
                                              "posembed name=pos_embedding"]  # fmt: skip
    assert imported.model.total_params == sum(p.numel() for p in reference.parameters())
    x = np.random.default_rng(7).standard_normal((2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    for target in ("numpy", "keras"):
        live = layerdsl.build(imported.model, target)
        layerdsl.set_weights(live, imported.weights)
        np.testing.assert_allclose(run(target, live, imported.model, x), expected, atol=ATOL, rtol=RTOL)


def test_hand_written_core_keras_encoder_imports_with_equal_outputs():
    keras.utils.clear_session()
    ids = keras.Input((12,), dtype="int32", name="ids")
    x = layers.Embedding(50, 16, mask_zero=True)(ids)
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, attended]))
    hidden = layers.Dense(24, activation="relu")(x)
    x = layers.LayerNormalization(epsilon=1e-6)(layers.Add()([x, layers.Dense(16)(hidden)]))
    x = layers.GlobalAveragePooling1D()(x)
    original = keras.Model(ids, layers.Dense(3, activation="softmax")(x), name="encoder")
    randomize(original)
    imported = layerdsl.from_keras(original)
    assert "attention 2 8\n" in imported.text and "layernorm eps=1e-06\n" in imported.text
    assert [y.kind for y in imported.model.layers] == [
        "embedding", "attention", "add", "layernorm", "dense", "dense", "add", "layernorm", "globalavgpool1d", "dense"
    ]  # fmt: skip
    tokens = padded_ids(4, 12, 50, seed=6)
    expected = np.asarray(original(tokens, training=False))
    for target in ("numpy", "keras"):
        live = layerdsl.build(imported.model, target)
        layerdsl.set_weights(live, imported.weights)
        np.testing.assert_allclose(run(target, live, imported.model, tokens), expected, atol=ATOL, rtol=RTOL)


def test_cli_imports_a_saved_text_transformer(tmp_path, capsys):
    model = layerdsl.parse(TEXT)
    original = layerdsl.build(model, "keras")
    layerdsl.set_weights(original, random_weights(model))
    path = tmp_path / "text_transformer.keras"
    original.save(path)
    out, npz = tmp_path / "imported.layers", tmp_path / "imported.npz"
    assert cli.main(["import", str(path), "-o", str(out), "--weights", str(npz)]) == cli.EXIT_OK
    assert capsys.readouterr().err == ""
    imported = layerdsl.load(out)
    assert imported.total_params == 657_758
    live = layerdsl.build(imported, "numpy")
    layerdsl.set_weights(live, layerdsl.load_weights(npz))
    ids = padded_ids(2, 200, 20000, seed=8)
    np.testing.assert_allclose(live(ids), run("keras", original, model, ids), atol=ATOL, rtol=RTOL)
