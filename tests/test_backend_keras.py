"""The Keras backend: generated source, live models, weights, checked against a NumPy oracle.

The oracle below is written from the layer definitions (TensorFlow's `same`
padding, Keras's activation formulas), not from layerdsl's own code, so a
mistake in the backend cannot hide behind the same mistake in a reference.
"""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")

import layerdsl  # noqa: E402
from layerdsl import specs  # noqa: E402
from layerdsl.backends import get, owner_of  # noqa: E402
from layerdsl.backends.keras_backend import KerasBackend  # noqa: E402
from layerdsl.errors import BackendError  # noqa: E402

MNIST = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "mnist_convnet.layers")

VGG16 = """
model vgg16
input 224x224x3
conv2d 64 3 pad=same activation=relu | conv2d 64 3 pad=same activation=relu | maxpool 2
conv2d 128 3 pad=same activation=relu | conv2d 128 3 pad=same activation=relu | maxpool 2
conv2d 256 3 pad=same activation=relu | conv2d 256 3 pad=same activation=relu
conv2d 256 3 pad=same activation=relu | maxpool 2
conv2d 512 3 pad=same activation=relu | conv2d 512 3 pad=same activation=relu
conv2d 512 3 pad=same activation=relu | maxpool 2
conv2d 512 3 pad=same activation=relu | conv2d 512 3 pad=same activation=relu
conv2d 512 3 pad=same activation=relu | maxpool 2
flatten
dense 4096 activation=relu
dense 4096 activation=relu
dense 1000 activation=softmax
"""


# --- the NumPy oracle ---------------------------------------------------------------------

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "softmax": _softmax,
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    # Keras 3's definitions, written out from keras/src/activations and the TensorFlow backend
    "hard_sigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hard_swish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "mish": lambda x: x * np.tanh(np.logaddexp(0.0, x)),
    "hard_tanh": lambda x: np.clip(x, -1.0, 1.0),
    "log_softmax": lambda x: np.log(_softmax(x.astype(np.float64))),
    "log_sigmoid": lambda x: -np.logaddexp(0.0, -x),
    "celu": lambda x: np.maximum(x, 0.0) + np.expm1(np.minimum(x, 0.0)),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "soft_shrink": lambda x: np.sign(x) * np.maximum(np.abs(x) - 0.5, 0.0),
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0.0),
}


def _same_pads(size, window, stride, dilation=1):
    extent = (window - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2  # TensorFlow puts the odd pixel at the end


def _windows(x, window, stride, dilation, pad, fill):
    """Pad NHWC ``x`` and return ``[(kh, kw, patch)]`` where patch[:, i, j] feeds output (i, j)."""
    pads = [(0, 0), (0, 0)]
    if pad == "same":
        pads = [_same_pads(x.shape[1 + a], window[a], stride[a], dilation[a]) for a in range(2)]
    xp = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)], constant_values=fill)
    out = [(xp.shape[1 + a] - (window[a] - 1) * dilation[a] - 1) // stride[a] + 1 for a in range(2)]
    return [
        (kh, kw, xp[:, kh * dilation[0] :: stride[0], kw * dilation[1] :: stride[1]][:, : out[0], : out[1]])
        for kh in range(window[0])
        for kw in range(window[1])
    ]


def reference(model, weights, x):
    """Inference of the IR ``model`` in float64 NumPy, from first principles."""
    x = x.astype(np.float64)
    if model.input.layout == "channels_first":
        x = np.moveaxis(x, 1, -1)
    for layer in model.layers:
        a = layer.args
        w = {k.split(".", 1)[1]: v.astype(np.float64) for k, v in weights.items() if k.startswith(layer.name + ".")}
        if layer.kind == "dense":
            x = ACTIVATIONS[a["activation"]](x @ w["kernel"] + w.get("bias", 0.0))
        elif layer.kind == "conv2d":
            patches = _windows(x, a["kernel"], a["stride"], a["dilation"], a["pad"], 0.0)
            y = sum(patch @ w["kernel"][kh, kw] for kh, kw, patch in patches)
            x = ACTIVATIONS[a["activation"]](y + w.get("bias", 0.0))
        elif layer.kind == "maxpool":
            patches = _windows(x, a["pool"], a["stride"], (1, 1), a["pad"], -np.inf)
            x = np.max([p for _, _, p in patches], axis=0)
        elif layer.kind == "avgpool":  # padding is left out of each average
            patches = _windows(x, a["pool"], a["stride"], (1, 1), a["pad"], np.nan)
            x = np.nanmean([p for _, _, p in patches], axis=0)
        elif layer.kind == "flatten":
            x = x.reshape(len(x), -1)
        elif layer.kind == "dropout":
            pass
        elif layer.kind == "batchnorm":
            x = (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + a["eps"])
            x = x * w.get("gamma", 1.0) + w.get("beta", 0.0)
        elif layer.kind == "activation":
            x = ACTIVATIONS[a["function"]](x)
        else:
            raise NotImplementedError(layer.kind)
    return x


def random_weights(model, rng):
    weights = {}
    for layer in model.layers:
        for w in layer.weights:
            if w.name == "moving_variance":
                value = rng.uniform(0.5, 2.0, w.shape)
            elif w.name == "gamma":
                value = rng.uniform(0.5, 1.5, w.shape)
            else:
                value = rng.normal(0.0, 0.5, w.shape)
            weights[f"{layer.name}.{w.name}"] = value.astype(np.float32)
    return weights


def assert_matches_reference(text, seed=0):
    model = layerdsl.parse(text)
    live = layerdsl.build(model, "keras")
    rng = np.random.default_rng(seed)
    weights = random_weights(model, rng)
    layerdsl.set_weights(live, weights)
    x = rng.normal(0.0, 1.5, (3, *model.input.fed_shape)).astype(np.float32)
    got = keras.ops.convert_to_numpy(live(x, training=False))
    np.testing.assert_allclose(got, reference(model, weights, x), atol=1e-5, rtol=1e-4)


# --- shared builds (TensorFlow makes each build cost something) -----------------------------


@pytest.fixture(scope="module")
def mnist():
    model = layerdsl.load(MNIST)
    return model, layerdsl.build(model, "keras")


# --- the table ----------------------------------------------------------------------------


def test_every_layer_kind_has_an_emitter_or_a_reason():
    backend = get("keras")
    for kind in specs.layer_kinds():
        assert kind in backend.emitters or kind in backend.unsupported, kind


# --- parameter counts ---------------------------------------------------------------------


def test_mnist_parameter_count_matches_the_ir(mnist):
    model, live = mnist
    assert model.total_params == live.count_params() == 34_826


def test_vgg16_parameter_count_matches_the_ir():
    model = layerdsl.parse(VGG16)
    live = layerdsl.build(model, "keras")
    assert model.total_params == live.count_params() == 138_357_544
    assert live.output_shape == (None, 1000)
    del live
    keras.backend.clear_session()


def test_batchnorm_trainable_and_non_trainable_counts_match_the_ir():
    model = layerdsl.parse("dense 8 in=10\nbatchnorm\nrelu\ndense 2\nbatchnorm scale=false")
    live = layerdsl.build(model, "keras")
    trainable = sum(math.prod(v.shape) for v in live.trainable_weights)
    frozen = sum(math.prod(v.shape) for v in live.non_trainable_weights)
    assert (trainable, frozen) == (model.trainable_params, model.non_trainable_params) == (88 + 16 + 18 + 2, 16 + 4)


# --- outputs against the oracle -----------------------------------------------------------

ORACLE_MODELS = {
    "conv_valid_stride2_then_maxpool": "input 9x11x2\nconv2d 3 3 stride=2\nmaxpool 2\nflatten\ndense 5 activation=tanh",
    "conv_same_stride2_odd_sizes": (
        "input 7x9x3\nconv2d 4 3 stride=2 pad=same activation=relu\nmaxpool 2 pad=same\n"
        "avgpool 3 stride=2 pad=same\nflatten\ndense 3"
    ),
    "dilated_rect_conv_and_strided_avgpool": (
        "input 8x7x3\nconv2d 2 3x2 dilation=2 pad=same bias=false\navgpool 3x2 stride=2\nflatten"
    ),
    "avgpool_same_leaves_padding_out": "input 5x5x2\navgpool 2 pad=same\nmaxpool 3 stride=2 pad=same",
    "batchnorm_with_moving_stats": (
        "input 6x5x4\nbatchnorm eps=0.01 momentum=0.9\nconv2d 3 1\nbatchnorm center=false\nbatchnorm scale=false"
    ),
    "dense_over_a_sequence": "input 4x6\ndense 3 activation=sigmoid\ndropout 0.5\ndense 2 bias=false",
    "mnist_convnet": open(MNIST, encoding="utf-8").read(),
}


@pytest.mark.parametrize("text", ORACLE_MODELS.values(), ids=ORACLE_MODELS.keys())
def test_outputs_match_the_numpy_oracle(text):
    assert_matches_reference(text)


@pytest.mark.parametrize("function", specs.ACTIVATIONS)
def test_every_activation_matches_the_numpy_oracle(function):
    # once fused into a dense layer, once as a layer of its own
    assert_matches_reference(f"input 4x7\ndense 5 activation={function}\nactivation {function}")


def test_channels_first_input_matches_the_transposed_channels_last_model():
    body = "conv2d 4 3 pad=same stride=2\nbatchnorm\nmaxpool 2\nflatten\ndense 3"
    first = layerdsl.parse(f"input 3x8x6 layout=channels_first\n{body}")
    last = layerdsl.parse(f"input 8x6x3\n{body}")
    live_first, live_last = layerdsl.build(first, "keras"), layerdsl.build(last, "keras")
    assert live_first.input_shape == (None, 3, 8, 6)
    weights = random_weights(last, np.random.default_rng(1))
    layerdsl.set_weights(live_first, weights)
    layerdsl.set_weights(live_last, weights)
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 6)).astype(np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(live_first(x)),
        keras.ops.convert_to_numpy(live_last(np.transpose(x, (0, 2, 3, 1)))),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(live_first(x)), reference(first, weights, x), atol=1e-5, rtol=1e-4
    )


# --- the same model a person would write --------------------------------------------------


def test_layer_configs_equal_a_hand_written_keras_model():
    text = (
        "input 12x12x3\n"
        "conv2d 8 3 stride=2 pad=same maxnorm=2 init=he_normal bias_init=ones activation=relu\n"
        "batchnorm momentum=0.9 eps=1e-5 center=false\n"
        "maxpool 3 stride=2 pad=same\n"
        "avgpool 2\n"
        "flatten\n"
        "dropout 0.25\n"
        "dense 10 maxnorm=3 bias=false init=lecun_normal activation=softmax\n"
    )
    live = layerdsl.build(text, "keras")
    from keras import layers

    hand = [
        layers.Conv2D(
            8,
            (3, 3),
            strides=(2, 2),
            padding="same",
            activation="relu",
            kernel_initializer="he_normal",
            bias_initializer="ones",
            kernel_constraint=keras.constraints.MaxNorm(2.0, axis=[0, 1, 2]),
            name="conv2d",
        ),
        layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False, name="batch_normalization"),
        layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name="max_pooling2d"),
        layers.AveragePooling2D((2, 2), name="average_pooling2d"),
        layers.Flatten(name="flatten"),
        layers.Dropout(0.25, name="dropout"),
        layers.Dense(
            10,
            activation="softmax",
            use_bias=False,
            kernel_initializer="lecun_normal",
            kernel_constraint=keras.constraints.MaxNorm(3.0, axis=0),
            name="dense",
        ),
    ]
    for expected in hand:
        assert live.get_layer(expected.name).get_config() == expected.get_config(), expected.name
    conv = live.get_layer("conv2d").get_config()
    assert conv["kernel_constraint"]["config"] == {"max_value": 2.0, "axis": [0, 1, 2]}
    bn = live.get_layer("batch_normalization").get_config()
    assert (bn["momentum"], bn["epsilon"], bn["center"], bn["scale"]) == (0.9, 1e-5, False, True)
    assert live.get_layer("dense").get_config()["kernel_constraint"]["config"] == {"max_value": 3.0, "axis": 0}


def test_layer_named_like_the_channels_first_permute_does_not_clash():
    live = layerdsl.build("input 3x4x4 layout=channels_first\nflatten name=to_channels_last", "keras")
    assert [layer.name for layer in live.layers] == ["input", "to_channels_last_1", "to_channels_last"]


# --- weights ------------------------------------------------------------------------------


def test_weights_round_trip_by_canonical_name(mnist):
    model, live = mnist
    original = layerdsl.get_weights(live)
    assert list(original) == model.weight_names()
    assert all(v.dtype == np.float32 for v in original.values())
    fresh = random_weights(model, np.random.default_rng(3))
    layerdsl.set_weights(live, fresh)
    got = layerdsl.get_weights(live)
    for key, value in fresh.items():
        np.testing.assert_array_equal(got[key], value)
    # canonical is Keras's own layout: the variable itself holds the array
    np.testing.assert_array_equal(live.get_layer("conv2d_1").kernel.numpy(), fresh["conv2d_1.kernel"])
    layerdsl.set_weights(live, original)


def test_batchnorm_weights_use_keras_variable_names():
    live = layerdsl.build("dense 3 in=2\nbatchnorm center=false", "keras")
    assert list(layerdsl.get_weights(live)) == [
        "dense.kernel",
        "dense.bias",
        "batch_normalization.gamma",
        "batch_normalization.moving_mean",
        "batch_normalization.moving_variance",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.pop("dense.bias"), "missing dense.bias"),
        (lambda w: w.update({"dense.gamma": np.ones(10, np.float32)}), "unexpected dense.gamma"),
        (lambda w: w.update({"conv2d.kernel": np.ones((3, 3, 2, 32), np.float32)}), "conv2d.kernel"),
    ],
    ids=["missing", "extra", "shape"],
)
def test_set_weights_rejects_mismatched_weights(mnist, change, message):
    _, live = mnist
    weights = layerdsl.get_weights(live)
    change(weights)
    with pytest.raises(layerdsl.WeightsError, match=message):
        layerdsl.set_weights(live, weights)


def test_maxnorm_bounds_dense_units_and_conv_filters_after_a_training_step():
    model = layerdsl.parse("input 6x6x2\nconv2d 3 3 maxnorm=0.5\nflatten\ndense 4 maxnorm=0.5")
    live = layerdsl.build(model, "keras")
    big = {f"{la.name}.{w.name}": np.full(w.shape, 2.0, np.float32) for la in model.layers for w in la.weights}
    layerdsl.set_weights(live, big)
    live.compile(optimizer=keras.optimizers.SGD(learning_rate=10.0), loss="mse")
    rng = np.random.default_rng(4)
    live.fit(rng.normal(size=(8, 6, 6, 2)), rng.normal(size=(8, 4)), batch_size=8, epochs=1, verbose=0)
    after = layerdsl.get_weights(live)
    unit_norms = np.linalg.norm(after["dense.kernel"], axis=0)
    filter_norms = np.sqrt((after["conv2d.kernel"] ** 2).sum(axis=(0, 1, 2)))
    assert unit_norms.shape == (4,) and filter_norms.shape == (3,)
    assert np.all(unit_norms <= 0.5 + 1e-5) and np.all(filter_norms <= 0.5 + 1e-5)
    assert not np.allclose(after["dense.kernel"], 2.0)  # the step did happen


# --- the live object ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # NumPy 2 notice from inside Keras's saving
def test_live_model_carries_its_ir_and_is_owned_by_keras(mnist, tmp_path):
    model, live = mnist
    assert live.layerdsl_model is model
    assert owner_of(live).name == "keras"
    assert not KerasBackend().owns(object())
    live.save(tmp_path / "model.keras")  # the attached IR does not get in Keras's way
    assert keras.models.load_model(tmp_path / "model.keras").count_params() == model.total_params


def test_missing_keras_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(BackendError) as info:
        KerasBackend().import_framework()
    assert "layerdsl[keras]" in (info.value.hint or "")


# --- generated source ---------------------------------------------------------------------


def test_generated_source_is_standalone_keras_with_line_comments(mnist):
    model, _ = mnist
    source = layerdsl.compile(model, "keras")
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"keras"}
    assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == ["build_model"]
    assert ast.get_docstring(tree).startswith("mnist_convnet: 9 layers, 34,826 parameters.")
    for layer in model.layers:
        assert f"# line {layer.span.line}: {layer.source} -> (N, " in source
    # `conv2d 32 3 | relu`: the relu is the convolution's activation, as a person writes it
    assert 'x = layers.Conv2D(32, (3, 3), activation="relu", name="conv2d")(inputs)' in source
    assert 'x = layers.Dense(10, activation="softmax", name="dense")(x)' in source
    assert "layers.Activation" not in source
    assert 'layers.MaxPooling2D((2, 2), name="max_pooling2d")' in source  # default stride left out
    assert 'return keras.Model(inputs, x, name="mnist_convnet")' in source
    body = source[source.index("def build_model") :].splitlines()
    assert all(len(line) <= 100 for line in body if not line.lstrip().startswith("#"))


def test_generated_source_wraps_long_layer_calls_and_permutes_channels_first():
    source = layerdsl.compile(
        "input 3x8x8 layout=channels_first\nconv2d 4 3 stride=2 pad=same maxnorm=2 init=he_normal bias_init=ones",
        "keras",
    )
    ast.parse(source)
    assert 'inputs = keras.Input(shape=(3, 8, 8), name="input")' in source
    assert 'x = layers.Permute((2, 3, 1), name="to_channels_last")(inputs)' in source
    assert "        kernel_constraint=keras.constraints.MaxNorm(2.0, axis=[0, 1, 2]),\n" in source


def test_emit_source_does_not_import_keras_or_tensorflow():
    code = (
        "import sys, layerdsl\n"
        "from layerdsl.backends import keras_backend\n"
        "layerdsl.compile(open(sys.argv[1]).read(), 'keras')\n"
        "loaded = [m for m in ('keras', 'tensorflow') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code, MNIST], check=True, timeout=60)
