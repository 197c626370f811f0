"""The Keras backend on graphs (blocks, residuals, taps, merges) and the layers of real architectures.

Graphs are checked against Keras functional models written here by hand with the same
weights, so a wrong configuration or a wrong wire shows up as different outputs. Each new
layer is checked against a NumPy reference written from its definition (TensorFlow's padding
rules, half-pixel bilinear resizing), not from layerdsl's code.
"""

from __future__ import annotations

import ast
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

import layerdsl  # noqa: E402
from layerdsl import testing  # noqa: E402
from layerdsl.testing import ATOL, RTOL, random_input, random_weights  # noqa: E402

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def _live(source: str, seed: int = 0):
    """(IR, a Keras model built by layerdsl with random weights, those weights)."""
    model = layerdsl.parse(source)
    live = layerdsl.build(model, "keras")
    weights = random_weights(model, seed)
    layerdsl.set_weights(live, weights)
    return model, live, weights


def _run(live, x: np.ndarray) -> np.ndarray:
    return np.asarray(live(x, training=False))


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape, f"{actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL)


# --- graphs against hand-written functional models ------------------------------------------

RESIDUAL = """
input 8x8x3
conv2d 8 3 pad=same | relu
residual { conv2d 8 3 pad=same | batchnorm | relu | conv2d 8 3 pad=same }
relu
residual project=true { conv2d 16 3 stride=2 pad=same | relu | conv2d 16 3 pad=same }
globalavgpool | dense 4
"""


def _hand_residual():
    inputs = keras.Input((8, 8, 3))
    stem = layers.Activation("relu", name="activation")(layers.Conv2D(8, 3, padding="same", name="conv2d")(inputs))
    y = layers.Conv2D(8, 3, padding="same", name="conv2d_1")(stem)
    y = layers.Activation("relu", name="activation_1")(layers.BatchNormalization(name="batch_normalization")(y))
    y = layers.Conv2D(8, 3, padding="same", name="conv2d_2")(y)
    block_in = layers.Activation("relu", name="activation_2")(layers.Add(name="add")([stem, y]))
    y = layers.Conv2D(16, 3, strides=2, padding="same", name="conv2d_3")(block_in)
    y = layers.Conv2D(16, 3, padding="same", name="conv2d_4")(layers.Activation("relu", name="activation_3")(y))
    shortcut = layers.Conv2D(16, 1, strides=2, padding="same", name="conv2d_5")(block_in)
    shortcut = layers.BatchNormalization(name="batch_normalization_1")(shortcut)
    y = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(layers.Add(name="add_1")([shortcut, y]))
    return keras.Model(inputs, layers.Dense(4, name="dense")(y))


INCEPTION = """
input 8x8x4
concat {
  conv2d 4 1 activation=relu
} {
  conv2d 3 1 activation=relu | conv2d 5 3 pad=same activation=relu
} {
  maxpool 3 stride=1 pad=same | conv2d 2 1
}
"""


def _hand_inception():
    inputs = keras.Input((8, 8, 4))
    a = layers.Conv2D(4, 1, activation="relu", name="conv2d")(inputs)
    b = layers.Conv2D(3, 1, activation="relu", name="conv2d_1")(inputs)
    b = layers.Conv2D(5, 3, padding="same", activation="relu", name="conv2d_2")(b)
    c = layers.MaxPooling2D(3, strides=1, padding="same")(inputs)
    c = layers.Conv2D(2, 1, name="conv2d_3")(c)
    return keras.Model(inputs, layers.Concatenate()([a, b, c]))


UNET = """
input 16x16x2
conv2d 4 3 pad=same activation=relu | tap e1 | maxpool 2
conv2d 8 3 pad=same activation=relu | tap e2 | maxpool 2
conv2d 16 3 pad=same
conv2dtranspose 8 2 stride=2 pad=same | concat @e2 | conv2d 8 3 pad=same
upsample2d 2 interpolation=bilinear | concat @e1 | conv2d 1 1 activation=sigmoid
"""


def _hand_unet():
    inputs = keras.Input((16, 16, 2))
    e1 = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2d")(inputs)
    e2 = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2d_1")(layers.MaxPooling2D(2)(e1))
    y = layers.Conv2D(16, 3, padding="same", name="conv2d_2")(layers.MaxPooling2D(2)(e2))
    y = layers.Conv2DTranspose(8, 2, strides=2, padding="same", name="conv2d_transpose")(y)
    y = layers.Conv2D(8, 3, padding="same", name="conv2d_3")(layers.Concatenate()([y, e2]))
    y = layers.Concatenate()([layers.UpSampling2D(2, interpolation="bilinear")(y), e1])
    return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid", name="conv2d_4")(y))


NESTED = """
input 8x8x4
block conv_bn filters k=3 { conv2d filters k pad=same bias=false | batchnorm | relu }
block pair filters { residual { conv_bn filters | conv_bn filters k=1 } }
repeat 2 { pair 4 }
tap t
multiply { conv_bn 4 } { conv_bn 4 k=1 }
average @t
conv2d 2 1 | tap u
concat axis=0 @u
"""


def _hand_nested():
    def conv_bn(x, prefix, k=3):
        x = layers.Conv2D(4, k, padding="same", use_bias=False, name=f"{prefix}_conv2d")(x)
        return layers.ReLU()(layers.BatchNormalization(name=f"{prefix}_batch_normalization")(x))

    inputs = keras.Input((8, 8, 4))
    x = inputs
    for pair in ("pair", "pair_1"):
        x = layers.Add()([x, conv_bn(conv_bn(x, f"{pair}_conv_bn"), f"{pair}_conv_bn_1", k=1)])
    y = layers.Multiply()([conv_bn(x, "conv_bn"), conv_bn(x, "conv_bn_1", k=1)])
    y = layers.Conv2D(2, 1, name="conv2d")(layers.Average()([y, x]))
    return keras.Model(inputs, layers.Concatenate(axis=1)([y, y]))  # IR axis 0 is Keras axis 1


GRAPHS = {"residual": (RESIDUAL, _hand_residual), "inception": (INCEPTION, _hand_inception)}
GRAPHS |= {"unet": (UNET, _hand_unet), "nested_repeat_merges": (NESTED, _hand_nested)}


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_computes_what_a_hand_written_functional_model_computes(name):
    source, hand_written = GRAPHS[name]
    model, live, weights = _live(source)
    hand = hand_written()
    for layer in model.layers:
        if layer.weights:
            hand.get_layer(layer.name).set_weights([weights[f"{layer.name}.{w.name}"] for w in layer.weights])
    assert hand.count_params() == live.count_params() == model.total_params
    x = random_input(model, batch=3)
    _close(_run(live, x), _run(hand, x))


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_source_is_functional_and_returns_the_output_variable(name):
    model = layerdsl.parse(GRAPHS[name][0])
    source = layerdsl.compile(model, "keras")
    ast.parse(source)
    assert all(len(line) <= 100 for line in source.splitlines())
    assert "keras.Model(inputs, " in source
    assert "layers.Sequential" not in source
    # every layer has its DSL line above it (as written in its block, where it is in one)
    for layer in model.layers:
        assert f"# line {layer.span.line}: {layer.written if layer.block else layer.source}" in source
    # and is a Keras layer of its own name, but for an activation fused into the conv or dense before it
    live = layerdsl.build(model, "keras")
    names = [keras_layer.name for keras_layer in live.layers[1:]]
    assert len(names) == len(set(names))
    for layer in model.layers:
        if layer.name not in names:
            assert layer.kind == "activation"
            config = live.get_layer(layer.inputs[0]).get_config()
            assert config["activation"] == layer.args["function"]


def test_branch_points_and_merge_inputs_get_variables_named_after_their_layers():
    source = layerdsl.compile(UNET, "keras")
    # a tapped tensor is a variable named after its tap
    assert 'e1 = layers.Conv2D(4, (3, 3), padding="same", activation="relu", name="conv2d")(inputs)' in source
    assert 'x = layers.MaxPooling2D((2, 2), name="max_pooling2d")(e1)' in source
    assert 'x = layers.Concatenate(name="concatenate")([conv2d_transpose, e2])' in source
    assert 'x = layers.Concatenate(name="concatenate_1")([up_sampling2d, e1])' in source
    # a chain link read once, by the next layer, stays in `x`
    assert 'x = layers.Conv2D(16, (3, 3), padding="same", name="conv2d_2")(x)' in source
    assert source.rstrip().endswith('return keras.Model(inputs, x, name="model")')


def _pointwise(weights, name, x):
    """A 1x1 convolution or a dense layer, from its canonical weights."""
    kernel = weights[f"{name}.kernel"]
    return x @ kernel.reshape(kernel.shape[-2:]) + weights[f"{name}.bias"]


def test_layer_names_that_clash_with_generated_names_get_fresh_variables():
    source = "input 6x6x2\nconv2d 2 1 name=keras\nresidual { conv2d 2 1 name=layers }\nconv2d 2 1 name=out"
    model, live, weights = _live(source)
    text = layerdsl.compile(model, "keras")
    assert "keras_1 = layers.Conv2D" in text and "layers_1 = layers.Conv2D" in text
    x = random_input(model)
    first = _pointwise(weights, "keras", x)
    _close(_run(live, x), _pointwise(weights, "out", first + _pointwise(weights, "layers", first)))


def test_channels_first_graph_permutes_once_and_branches_from_the_permuted_tensor():
    source = "input 2x6x6 layout=channels_first\nresidual { conv2d 2 3 pad=same }\nconv2d 3 1"
    model, live, weights = _live(source)
    text = layerdsl.compile(model, "keras")
    assert "to_channels_last = layers.Permute((2, 3, 1)" in text
    x = random_input(model)  # fed NCHW
    nhwc = x.transpose(0, 2, 3, 1)
    conv = next(layer.name for layer in model.layers if layer.kind == "conv2d")
    y = nhwc + _conv(nhwc, weights[f"{conv}.kernel"], (1, 1), (1, 1), "same") + weights[f"{conv}.bias"]
    _close(_run(live, x), _pointwise(weights, model.layers[-1].name, y))


def test_block_instances_are_calls_of_their_blocks_functions():
    source = layerdsl.compile(NESTED, "keras")
    assert "def conv_bn(x, filters, k=3, name=None):" in source
    assert "def pair(inputs, name=None):" in source  # the input is read twice: by conv_bn and by the add
    assert 'x = pair(x, name="pair" + ("" if i == 0 else f"_{i}"))' in source
    assert 'conv_bn(t, 4, k=1, name="conv_bn_1")' in source


def test_a_block_instance_that_reads_an_outer_tensor_is_written_inline_and_marked():
    # the first `b` reads only its input (`@t` is its input), the second reads `@t` too
    text = "input 6x6x2\nconv2d 2 1 | tap t\nblock b { conv2d 2 1 | add @t }\nb\nb\n"
    source = layerdsl.compile(text, "keras")
    assert "def b(inputs, name=None):" in source and 'x = b(t, name="b")' in source
    assert "# block b_1\n" in source and 'x = layers.Add(name="b_1_add")([b_1_conv2d, t])' in source
    testing.assert_backends_agree(text, ["keras", "numpy"])


# --- parameter counts -----------------------------------------------------------------------

NEW_LAYERS = {
    "depthwise": "input 9x9x3\ndepthwiseconv2d 3 multiplier=2",
    "depthwise_nobias": "input 9x9x3\ndepthwiseconv2d 3x2 bias=false",
    "separable": "input 9x9x3\nseparableconv2d 5 3 multiplier=2",
    "separable_nobias": "input 9x9x3\nseparableconv2d 5 3 bias=false",
    "transpose": "input 5x5x3\nconv2dtranspose 4 3 stride=2",
    "transpose_nobias": "input 5x5x3\nconv2dtranspose 4 3 stride=2 bias=false",
    "layernorm": "input 4x5x6\nlayernorm",
    "layernorm_scale_only": "input 4x5x6\nlayernorm center=false",
    "layernorm_none": "input 7\nlayernorm center=false scale=false",
    "zeropad": "input 4x5x2\nzeropad2d top=1 bottom=2 left=0 right=3",
    "upsample": "input 4x5x2\nupsample2d 2",
    "reshape": "input 4x6x2\nreshape 8x6",
    "permute": "input 3x4x5\npermute 3x1x2",
    "relu6": "input 4x4x2\nrelu6",
}


@pytest.mark.parametrize("name", NEW_LAYERS)
def test_new_layer_parameter_count_matches_the_ir(name):
    model = layerdsl.parse(NEW_LAYERS[name])
    live = layerdsl.build(model, "keras")
    assert live.count_params() == model.total_params
    assert live.output_shape[1:] == model.output_shape


@pytest.mark.parametrize("name", ["depthwise", "depthwise_nobias", "separable", "transpose", "layernorm_scale_only"])
def test_new_layer_weights_round_trip_under_their_canonical_names(name):
    model, live, weights = _live(NEW_LAYERS[name])
    back = layerdsl.get_weights(live)
    assert sorted(back) == sorted(weights) == sorted(model.weight_names())
    for key, value in weights.items():
        np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize("example", ["resnet18", "inception", "unet"])  # the two below: with keras.applications
def test_example_parameter_count_matches_the_ir(example):
    path = os.path.join(EXAMPLES, f"{example}.layers")
    if not os.path.exists(path):
        pytest.skip(f"examples/{example}.layers is not written yet")
    model = layerdsl.load(path)
    assert layerdsl.build(model, "keras").count_params() == model.total_params


@pytest.mark.parametrize(
    ("example", "application", "expected"),
    [("resnet50", "ResNet50", 25_636_712), ("mobilenet_v2", "MobileNetV2", 3_538_984)],
)
def test_example_has_as_many_parameters_as_keras_applications(example, application, expected):
    path = os.path.join(EXAMPLES, f"{example}.layers")
    if not os.path.exists(path):
        pytest.skip(f"examples/{example}.layers is not written yet")
    model = layerdsl.load(path)
    reference = getattr(keras.applications, application)(weights=None)
    assert model.total_params == reference.count_params() == expected  # layerdsl's live builds: resnet18 above


# --- the new layers against NumPy references ------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    extent = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2  # TensorFlow puts the odd pixel at the end


def _windows(x: np.ndarray, kernel, stride, dilation, pad: str):
    """Yield ((a, b), the input patch under kernel tap (a, b)) for a correlation over NHWC ``x``."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    if pad == "same":
        x = np.pad(x, ((0, 0), _same_pads(x.shape[1], kh, sh, dh), _same_pads(x.shape[2], kw, sw, dw), (0, 0)))
    oh = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    for a in range(kh):
        for b in range(kw):
            yield (a, b), x[:, a * dh : a * dh + (oh - 1) * sh + 1 : sh, b * dw : b * dw + (ow - 1) * sw + 1 : sw]


def _conv(x, kernel, stride, dilation, pad):
    """Plain 2-D correlation, kernel (kh, kw, in, out)."""
    return sum(patch @ kernel[a, b] for (a, b), patch in _windows(x, kernel.shape[:2], stride, dilation, pad))


def _depthwise(x, kernel, stride, dilation, pad):
    """Each channel c with its own kernels; output channel c * multiplier + m."""
    out = sum(
        np.einsum("nhwc,cm->nhwcm", patch, kernel[a, b])
        for (a, b), patch in _windows(x, kernel.shape[:2], stride, dilation, pad)
    )
    return out.reshape(*out.shape[:3], -1)


def _transpose_conv(x, kernel, stride, pad):
    """Keras Conv2DTranspose: scatter each input pixel through the kernel (kh, kw, out, in), then crop."""
    n, h, w, _ = x.shape
    kh, kw, filters, _ = kernel.shape
    sh, sw = stride
    full = np.zeros((n, (h - 1) * sh + kh, (w - 1) * sw + kw, filters), np.float64)
    for i in range(h):
        for j in range(w):
            full[:, i * sh : i * sh + kh, j * sw : j * sw + kw] += np.einsum("nc,abfc->nabf", x[:, i, j], kernel)
    out = np.zeros((n, h * sh + max(kh - sh, 0), w * sw + max(kw - sw, 0), filters))
    top = left = 0
    if pad == "same":  # the forward `same` convolution from (h*s) down to h pads by this much before
        out = np.zeros((n, h * sh, w * sw, filters))
        top = max((h - 1) * sh + kh - h * sh, 0) // 2
        left = max((w - 1) * sw + kw - w * sw, 0) // 2
    rows = min(out.shape[1], full.shape[1] - top)
    cols = min(out.shape[2], full.shape[2] - left)
    out[:, :rows, :cols] = full[:, top : top + rows, left : left + cols]
    return out


def _bilinear(x, fh, fw):
    """Half-pixel-centre bilinear resizing by integer factors (TF resize, no antialiasing)."""

    def axis_weights(size, factor):
        src = np.maximum((np.arange(size * factor) + 0.5) / factor - 0.5, 0.0)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, size - 1)
        matrix = np.zeros((size * factor, size))
        matrix[np.arange(size * factor), low] += 1 - (src - low)
        matrix[np.arange(size * factor), high] += src - low
        return matrix

    return np.einsum("ih,jw,nhwc->nijc", axis_weights(x.shape[1], fh), axis_weights(x.shape[2], fw), x)


CONVS = [
    # (DSL, input HxWxC)
    ("depthwiseconv2d 3 multiplier=2", (7, 7, 3)),
    ("depthwiseconv2d 3 stride=2 pad=same activation=relu6", (8, 7, 3)),
    ("depthwiseconv2d 3x2 dilation=2 pad=same bias=false", (9, 8, 2)),
    ("depthwiseconv2d 5 stride=2 multiplier=3", (11, 10, 2)),
    ("separableconv2d 4 3", (7, 7, 3)),
    ("separableconv2d 5 3 stride=2 pad=same multiplier=2 activation=relu", (9, 8, 3)),
    ("separableconv2d 3 3 dilation=2 pad=same bias=false", (8, 8, 2)),
]


@pytest.mark.parametrize(("layer", "shape"), CONVS)
def test_depthwise_and_separable_conv_match_numpy(layer, shape):
    model, live, weights = _live(f"input {'x'.join(map(str, shape))}\n{layer}")
    spec = model.layers[0]
    args, name = spec.args, spec.name
    x = random_input(model, batch=2).astype(np.float64)
    if spec.kind == "depthwiseconv2d":
        y = _depthwise(x, weights[f"{name}.kernel"], args["stride"], args["dilation"], args["pad"])
    else:
        y = _depthwise(x, weights[f"{name}.depthwise_kernel"], args["stride"], args["dilation"], args["pad"])
        y = y @ weights[f"{name}.pointwise_kernel"][0, 0]
    if args["bias"]:
        y = y + weights[f"{name}.bias"]
    y = {"linear": y, "relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6)}[args["activation"]]
    _close(_run(live, x.astype(np.float32)), y.astype(np.float32))


TRANSPOSES = [
    ("conv2dtranspose 4 3 stride=2", (5, 5, 3)),
    ("conv2dtranspose 4 3 stride=2", (4, 6, 3)),
    ("conv2dtranspose 4 3 stride=2 pad=same", (5, 5, 3)),
    ("conv2dtranspose 4 3 stride=2 pad=same", (4, 6, 3)),
    ("conv2dtranspose 2 2 stride=2 pad=same", (5, 4, 3)),
    ("conv2dtranspose 2 4 stride=2 pad=same bias=false", (3, 4, 2)),
    ("conv2dtranspose 2 1 stride=2", (3, 4, 2)),  # kernel smaller than stride: a zero row and column
    ("conv2dtranspose 3 2x3 stride=3x2 pad=same activation=relu6", (3, 5, 2)),
    ("conv2dtranspose 3 3", (4, 4, 2)),
]


@pytest.mark.parametrize(("layer", "shape"), TRANSPOSES)
def test_transpose_conv_matches_numpy(layer, shape):
    model, live, weights = _live(f"input {'x'.join(map(str, shape))}\n{layer}")
    spec = model.layers[0]
    x = random_input(model, batch=2).astype(np.float64)
    y = _transpose_conv(x, weights[f"{spec.name}.kernel"], spec.args["stride"], spec.args["pad"])
    if spec.args["bias"]:
        y = y + weights[f"{spec.name}.bias"]
    if spec.args["activation"] == "relu6":
        y = np.clip(y, 0, 6)
    assert y.shape[1:] == model.output_shape
    _close(_run(live, x.astype(np.float32)), y.astype(np.float32))


@pytest.mark.parametrize(("size", "shape"), [("2", (3, 4, 2)), ("3x2", (2, 5, 3)), ("1x3", (4, 1, 2))])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsample_matches_numpy(size, shape, interpolation):
    model, live, _ = _live(f"input {'x'.join(map(str, shape))}\nupsample2d {size} interpolation={interpolation}")
    fh, fw = model.layers[0].args["size"]
    x = random_input(model, batch=2)
    if interpolation == "nearest":
        y = x.repeat(fh, axis=1).repeat(fw, axis=2)
    else:
        y = _bilinear(x.astype(np.float64), fh, fw)
    _close(_run(live, x), y.astype(np.float32))


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        ((4, 5, 6), ""),
        ((4, 5, 6), "eps=1e-5 center=false"),
        ((7,), "scale=false"),
        ((3, 8), "center=false scale=false"),
    ],
)
def test_layernorm_normalizes_the_last_axis_like_numpy(shape, options):
    model, live, weights = _live(f"input {'x'.join(map(str, shape))}\nlayernorm {options}")
    spec = model.layers[0]
    x = random_input(model, batch=2).astype(np.float64) * 3 + 1
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + spec.args["eps"])
    if spec.args["scale"]:
        y = y * weights[f"{spec.name}.gamma"]
    if spec.args["center"]:
        y = y + weights[f"{spec.name}.beta"]
    _close(_run(live, x.astype(np.float32)), y.astype(np.float32))


@pytest.mark.parametrize(
    ("shape", "layer"), [((4, 6, 2), "reshape 8x6"), ((4, 6, 2), "reshape 48"), ((12,), "reshape 2x3x2")]
)
def test_reshape_is_row_major_channels_last(shape, layer):
    model, live, _ = _live(f"input {'x'.join(map(str, shape))}\n{layer}")
    x = random_input(model, batch=3)
    _close(_run(live, x), x.reshape(3, *model.layers[0].args["target"]))


@pytest.mark.parametrize(("shape", "dims"), [((3, 4, 5), (3, 1, 2)), ((3, 4, 5), (2, 1, 3)), ((3, 4), (2, 1))])
def test_permute_reorders_the_axes_after_the_batch(shape, dims):
    model, live, _ = _live(f"input {'x'.join(map(str, shape))}\npermute {'x'.join(map(str, dims))}")
    x = random_input(model, batch=2)
    _close(_run(live, x), x.transpose(0, *dims))


@pytest.mark.parametrize(
    ("options", "keras_padding"),
    [
        ("top=1 bottom=2 left=0 right=3", "((1, 2), (0, 3))"),
        ("2", "2"),
        ("1x2", "(1, 2)"),
        ("", "1"),
    ],
)
def test_zeropad_matches_numpy_and_writes_the_short_form_when_symmetric(options, keras_padding):
    source = f"input 3x4x2\nzeropad2d {options}"
    model, live, _ = _live(source)
    args = model.layers[0].args
    assert f'layers.ZeroPadding2D({keras_padding}, name="zero_padding2d")' in layerdsl.compile(model, "keras")
    x = random_input(model, batch=2)
    y = np.pad(x, ((0, 0), (args["top"], args["bottom"]), (args["left"], args["right"]), (0, 0)))
    _close(_run(live, x), y)


def test_relu6_as_a_layer_and_fused_clips_at_zero_and_six():
    model = layerdsl.parse("input 4x4x2\nrelu6 | conv2d 3 1 activation=relu6")
    live = layerdsl.build(model, "keras")
    weights = random_weights(model)
    weights["conv2d.kernel"] *= 4  # so that the convolution's output passes 6 too
    layerdsl.set_weights(live, weights)
    x = random_input(model, batch=2) * 10
    out = _run(live, x)
    _close(out, np.clip(_pointwise(weights, "conv2d", np.clip(x, 0, 6)), 0, 6))
    assert out.max() == pytest.approx(6.0) and out.min() == 0.0


@pytest.mark.parametrize(("axis", "keras_axis"), [(0, 1), (1, 2), (2, 3), (-1, -1), (-2, -2)])
def test_concat_axis_counts_without_the_batch(axis, keras_axis):
    model, live, weights = _live(f"input 3x4x2\nconv2d 2 1 | tap a\nconv2d 2 1\nconcat @a axis={axis}")
    source = layerdsl.compile(model, "keras")
    assert (f"Concatenate(axis={keras_axis}," in source) == (axis != -1)
    x = random_input(model, batch=2)
    a = _pointwise(weights, "conv2d", x)
    b = _pointwise(weights, "conv2d_1", a)
    _close(_run(live, x), np.concatenate([b, a], axis=keras_axis))


@pytest.mark.parametrize(("merge", "combine"), [("add", np.add), ("multiply", np.multiply), ("average", None)])
def test_elementwise_merges_of_three_branches(merge, combine):
    source = f"input 5\n{merge} {{ dense 4 }} {{ dense 4 }} {{ dense 4 }}"
    model, live, weights = _live(source)
    x = random_input(model, batch=3)
    branches = [_pointwise(weights, layer.name, x) for layer in model.layers[:3]]
    expected = sum(branches) / 3 if combine is None else combine.reduce(branches)
    _close(_run(live, x), expected)


@pytest.mark.parametrize(
    ("layer", "initializers"),
    [
        ("depthwiseconv2d 3 init=he_normal bias_init=ones", ("depthwise_initializer",)),
        ("separableconv2d 4 3 init=he_normal bias_init=ones", ("depthwise_initializer", "pointwise_initializer")),
        ("conv2dtranspose 4 3 init=he_normal bias_init=ones", ("kernel_initializer",)),
    ],
)
def test_init_sets_every_kernel_initializer_of_the_keras_layer(layer, initializers):
    live = layerdsl.build(f"input 6x6x2\n{layer}", "keras")
    config = live.layers[-1].get_config()
    for key in initializers:
        assert config[key]["class_name"] == "HeNormal", key
    assert config["bias_initializer"]["class_name"] == "Ones"
