"""The numpy backend on graphs (residuals, branches, taps, blocks) and the layers of real architectures.

Each model is checked against Keras built by hand from plain keras.layers with the same canonical
weights (skipped without keras), float32 atol 1e-5 rtol 1e-4; the generated source is checked to
read as a graph and to stay standalone.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl.backends import numpy_runtime_graph as rtg
from layerdsl.testing import random_input, random_weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOL = {"atol": 1e-5, "rtol": 1e-4}


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def numpy_model(text, seed=0):
    model = layerdsl.parse(text)
    live = layerdsl.build(model, target="numpy")
    weights = random_weights(model, seed)
    layerdsl.set_weights(live, weights)
    return model, live, weights


def assert_matches_keras(keras, text, reference_output, batch=3):
    """``reference_output(keras.layers, inputs)`` builds the Keras graph, its weighted layers named as the IR's."""
    model, live, weights = numpy_model(text)
    inputs = keras.Input(model.input.shape)
    reference = keras.Model(inputs, reference_output(keras.layers, inputs))
    for layer in model.layers:
        if layer.weights:
            reference.get_layer(layer.name).set_weights([weights[f"{layer.name}.{w.name}"] for w in layer.weights])
    assert_same_outputs(keras, model, live, reference, batch)


def assert_layer_matches_keras(keras, text, keras_layer, batch=3):
    """A one-layer model (after ``input``) against ``keras_layer``."""
    model, live, weights = numpy_model(text)
    (layer,) = model.layers
    reference = keras.Sequential([keras.Input(model.input.shape), keras_layer])
    keras_layer.set_weights([weights[f"{layer.name}.{w.name}"] for w in layer.weights])
    assert_same_outputs(keras, model, live, reference, batch)


def assert_same_outputs(keras, model, live, reference, batch):
    x = random_input(model, batch=batch)
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    got = live(x)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (batch, *model.output_shape)
    np.testing.assert_allclose(got, expected, **TOL)


# --- the new layers, one at a time ---------------------------------------------------------------

TRANSPOSE_CASES = [
    # (height, width, channels, filters, kernel, stride, pad)
    (5, 5, 3, 4, 3, 1, "valid"),
    (5, 5, 3, 4, 3, 1, "same"),
    (4, 4, 3, 2, 3, 2, "same"),
    (5, 5, 3, 2, 3, 2, "same"),
    (5, 6, 2, 3, 3, 2, "valid"),
    (4, 5, 2, 3, 4, 2, "same"),  # even kernel: TensorFlow crops more at the end
    (4, 4, 2, 3, 2, 2, "valid"),
    (5, 4, 2, 3, 2, 3, "valid"),  # kernel smaller than the stride: zero rows between patches
    (4, 4, 2, 3, 2, 3, "same"),
    (6, 5, 2, 3, 5, 3, "same"),
    (3, 4, 2, 3, (3, 2), (2, 3), "same"),
    (4, 4, 2, 3, 1, 2, "valid"),
]


@pytest.mark.parametrize(("h", "w", "c", "filters", "kernel", "stride", "pad"), TRANSPOSE_CASES)
def test_conv2dtranspose_matches_keras(keras, h, w, c, filters, kernel, stride, pad):
    size = "x".join(map(str, kernel)) if isinstance(kernel, tuple) else kernel
    strides = "x".join(map(str, stride)) if isinstance(stride, tuple) else stride
    text = f"input {h}x{w}x{c}\nconv2dtranspose {filters} {size} stride={strides} pad={pad}"
    layer = keras.layers.Conv2DTranspose(filters, kernel, strides=stride, padding=pad)
    assert_layer_matches_keras(keras, text, layer)


@pytest.mark.parametrize(
    ("shape", "options", "keras_options"),
    [
        ("8x8x3", "3 stride=2 pad=same multiplier=2", {"strides": 2, "padding": "same", "depth_multiplier": 2}),
        ("7x7x3", "3", {}),
        ("9x9x2", "3 pad=same dilation=2 multiplier=3", {"padding": "same", "dilation_rate": 2, "depth_multiplier": 3}),
        ("8x7x2", "2x3 stride=2 pad=same bias=false", {"strides": 2, "padding": "same", "use_bias": False}),
        ("6x6x4", "3 activation=relu6", {"activation": "relu6"}),
    ],
)
def test_depthwiseconv2d_matches_keras(keras, shape, options, keras_options):
    kernel = options.split()[0]
    size = tuple(map(int, kernel.split("x"))) if "x" in kernel else int(kernel)
    layer = keras.layers.DepthwiseConv2D(size, **keras_options)
    assert_layer_matches_keras(keras, f"input {shape}\ndepthwiseconv2d {options}", layer)


@pytest.mark.parametrize(
    ("shape", "options", "keras_options"),
    [
        ("8x8x3", "5 3 pad=same", {"padding": "same"}),
        ("9x9x3", "4 3 stride=2 pad=same multiplier=2 activation=relu6", {"strides": 2, "padding": "same", "depth_multiplier": 2, "activation": "relu6"}),
        ("9x9x2", "3 3 dilation=2 bias=false", {"dilation_rate": 2, "use_bias": False}),
    ],
)  # fmt: skip
def test_separableconv2d_matches_keras(keras, shape, options, keras_options):
    filters, kernel = map(int, options.split()[:2])
    layer = keras.layers.SeparableConv2D(filters, kernel, **keras_options)
    assert_layer_matches_keras(keras, f"input {shape}\nseparableconv2d {options}", layer)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [2, 3, (2, 3)])
def test_upsample2d_matches_keras(keras, interpolation, size):
    text = "x".join(map(str, size)) if isinstance(size, tuple) else str(size)
    layer = keras.layers.UpSampling2D(size, interpolation=interpolation)
    assert_layer_matches_keras(keras, f"input 4x5x3\nupsample2d {text} interpolation={interpolation}", layer)


@pytest.mark.parametrize("shape", ["7", "5x7", "4x5x6"], ids=["vectors", "sequences", "images"])
@pytest.mark.parametrize(
    ("options", "keras_options"),
    [("", {}), ("eps=1e-5", {"epsilon": 1e-5}), ("center=false", {"center": False}), ("scale=false", {"scale": False})],
)
def test_layernorm_matches_keras(keras, shape, options, keras_options):
    layer = keras.layers.LayerNormalization(**keras_options)
    assert_layer_matches_keras(keras, f"input {shape}\nlayernorm {options}", layer)


def test_layernorm_keeps_its_precision_far_from_zero(keras):
    # A one-pass variance (mean of squares minus squared mean) would cancel to noise here.
    _, live, weights = numpy_model("input 16\nlayernorm")
    x = (1000.0 + np.random.default_rng(0).standard_normal((3, 16))).astype(np.float32)
    reference = keras.layers.LayerNormalization()
    reference.build(x.shape)
    reference.set_weights([weights["layer_normalization.gamma"], weights["layer_normalization.beta"]])
    # float32 holds values near 1000 to about 6e-5, which bounds both results' agreement.
    np.testing.assert_allclose(live(x), keras.ops.convert_to_numpy(reference(x)), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(
    ("text", "make"),
    [
        ("input 4x6x2\nreshape 6x8", lambda L: L.Reshape((6, 8))),
        ("input 12\nreshape 3x4", lambda L: L.Reshape((3, 4))),
        ("input 3x4x5\nreshape 60", lambda L: L.Reshape((60,))),
        ("input 3x4x5\npermute 3x1x2", lambda L: L.Permute((3, 1, 2))),
        ("input 5x3\npermute 2x1", lambda L: L.Permute((2, 1))),
        ("input 5x4x3\nzeropad2d top=1 bottom=2 left=0 right=3", lambda L: L.ZeroPadding2D(((1, 2), (0, 3)))),
        ("input 5x4x3\nzeropad2d 1x2", lambda L: L.ZeroPadding2D((1, 2))),
        ("input 5x4x3\nzeropad2d", lambda L: L.ZeroPadding2D()),
        ("input 6\nrelu6", lambda L: L.Activation("relu6")),
    ],
)
def test_layout_layers_match_keras(keras, text, make):
    assert_layer_matches_keras(keras, text, make(keras.layers))


def test_depthwise_output_channels_are_ordered_channel_major():
    layer = rtg.DepthwiseConv2D(np.arange(1 * 1 * 2 * 3, dtype=np.float32).reshape(1, 1, 2, 3))
    y = layer(np.ones((1, 1, 1, 2), dtype=np.float32))
    np.testing.assert_array_equal(y.ravel(), [0, 1, 2, 3, 4, 5])  # channel c, multiplier m -> c * 3 + m


def test_conv2dtranspose_kernel_assignment_refreshes_its_matrix():
    layer = rtg.Conv2DTranspose(np.zeros((2, 2, 3, 4), dtype=np.float32), strides=(2, 2))
    layer.weights = {"kernel": np.ones((2, 2, 3, 4))}
    np.testing.assert_array_equal(layer(np.ones((1, 2, 2, 4), dtype=np.float32)), np.full((1, 4, 4, 3), 4.0))


# --- graphs ----------------------------------------------------------------------------------------


def test_residual_with_identity_shortcut_matches_keras(keras):
    text = "input 8x8x4\nconv2d 4 3 pad=same | relu\nresidual { conv2d 4 3 pad=same | batchnorm | relu | conv2d 4 3 pad=same }\nrelu"

    def reference(L, x):
        x = L.Activation("relu")(L.Conv2D(4, 3, padding="same", name="conv2d")(x))
        y = L.Conv2D(4, 3, padding="same", name="conv2d_1")(x)
        y = L.Activation("relu")(L.BatchNormalization(name="batch_normalization")(y))
        y = L.Conv2D(4, 3, padding="same", name="conv2d_2")(y)
        return L.Activation("relu")(L.Add()([x, y]))

    assert_matches_keras(keras, text, reference)


def test_residual_with_projection_matches_keras(keras):
    text = "input 8x8x4\nconv2d 4 3 pad=same\nresidual project=true { conv2d 8 3 stride=2 pad=same | relu | conv2d 8 3 pad=same }"

    def reference(L, x):
        x = L.Conv2D(4, 3, padding="same", name="conv2d")(x)
        y = L.Conv2D(8, 3, strides=2, padding="same", name="conv2d_1")(x)
        y = L.Conv2D(8, 3, padding="same", name="conv2d_2")(L.Activation("relu")(y))
        shortcut = L.Conv2D(8, 1, strides=2, padding="same", name="conv2d_3")(x)
        shortcut = L.BatchNormalization(name="batch_normalization")(shortcut)
        return L.Add()([shortcut, y])

    assert_matches_keras(keras, text, reference)


def test_three_branch_concat_matches_keras(keras):
    text = "input 8x8x4\nconcat { conv2d 3 1 } { conv2d 2 1 | conv2d 4 3 pad=same } { maxpool 3 stride=1 pad=same | conv2d 5 1 }"

    def reference(L, x):
        a = L.Conv2D(3, 1, name="conv2d")(x)
        b = L.Conv2D(4, 3, padding="same", name="conv2d_2")(L.Conv2D(2, 1, name="conv2d_1")(x))
        c = L.Conv2D(5, 1, name="conv2d_3")(L.MaxPooling2D(3, strides=1, padding="same")(x))
        return L.Concatenate()([a, b, c])

    assert_matches_keras(keras, text, reference)


UNET = """input 16x16x1
conv2d 8 3 pad=same activation=relu | tap e1
maxpool 2 | conv2d 16 3 pad=same activation=relu | tap e2
maxpool 2 | conv2d 16 3 pad=same
conv2dtranspose 16 2 stride=2
concat @e2
conv2d 16 3 pad=same activation=relu
upsample2d 2 interpolation=bilinear
concat @e1
conv2d 1 1 activation=sigmoid"""


def test_small_unet_with_taps_matches_keras(keras):
    def reference(L, x):
        e1 = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2d")(x)
        e2 = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2d_1")(L.MaxPooling2D(2)(e1))
        x = L.Conv2D(16, 3, padding="same", name="conv2d_2")(L.MaxPooling2D(2)(e2))
        x = L.Conv2DTranspose(16, 2, strides=2, name="conv2d_transpose")(x)
        x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2d_3")(L.Concatenate()([x, e2]))
        x = L.UpSampling2D(2, interpolation="bilinear")(x)
        return L.Conv2D(1, 1, activation="sigmoid", name="conv2d_4")(L.Concatenate()([x, e1]))

    assert_matches_keras(keras, UNET, reference)


def test_repeated_residuals_match_keras(keras):
    text = "input 6\ndense 8\nrepeat 2 { residual { dense 8 | relu | dense 8 } }\ndense 2"

    def reference(L, x):
        x = L.Dense(8, name="dense")(x)
        for first in (1, 3):
            y = L.Dense(8, name=f"dense_{first}")(x)
            x = L.Add()([x, L.Dense(8, name=f"dense_{first + 1}")(L.Activation("relu")(y))])
        return L.Dense(2, name="dense_5")(x)

    assert_matches_keras(keras, text, reference)


NESTED = """input 8x8x3
block conv_bn f s=1 { conv2d f 3 stride=s pad=same bias=false | batchnorm | relu6 }
block stage f { conv_bn f s=2 | residual { conv_bn f | conv_bn f } }
stage 8
stage 16
globalavgpool
dense 3"""


def test_nested_blocks_match_keras(keras):
    def conv_bn(L, x, name, filters, stride=1):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv2d")(x)
        return L.Activation("relu6")(L.BatchNormalization(name=f"{name}_batch_normalization")(x))

    def reference(L, x):
        for stage, filters in (("stage", 8), ("stage_1", 16)):
            x = conv_bn(L, x, f"{stage}_conv_bn", filters, stride=2)
            y = conv_bn(L, conv_bn(L, x, f"{stage}_conv_bn_1", filters), f"{stage}_conv_bn_2", filters)
            x = L.Add()([x, y])
        return L.Dense(3, name="dense")(L.GlobalAveragePooling2D()(x))

    assert_matches_keras(keras, NESTED, reference)


def test_inverted_residual_with_depthwise_matches_keras(keras):
    text = (
        "input 8x8x4\nresidual { conv2d 8 1 bias=false | batchnorm | relu6 | depthwiseconv2d 3 pad=same bias=false"
        " | batchnorm | relu6 | conv2d 4 1 bias=false | batchnorm }"
    )

    def reference(L, inputs):
        x = L.BatchNormalization(name="batch_normalization")(L.Conv2D(8, 1, use_bias=False, name="conv2d")(inputs))
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise_conv2d")(L.Activation("relu6")(x))
        x = L.Conv2D(4, 1, use_bias=False, name="conv2d_1")(
            L.Activation("relu6")(L.BatchNormalization(name="batch_normalization_1")(x))
        )
        return L.Add()([inputs, L.BatchNormalization(name="batch_normalization_2")(x)])

    assert_matches_keras(keras, text, reference)


@pytest.mark.parametrize(("merge", "keras_merge"), [("add", "Add"), ("multiply", "Multiply"), ("average", "Average")])
def test_merges_of_three_branches_match_keras(keras, merge, keras_merge):
    text = f"input 6\n{merge} {{ dense 4 }} {{ dense 4 }} {{ dense 4 | relu }}"

    def reference(L, x):
        a, b, c = (L.Dense(4, name=name)(x) for name in ("dense", "dense_1", "dense_2"))
        return getattr(L, keras_merge)()([a, b, L.Activation("relu")(c)])

    assert_matches_keras(keras, text, reference)


@pytest.mark.parametrize(
    ("text", "keras_axis"),
    [
        ("input 5x3\nconcat axis=0 { } { dense 3 }", 1),
        ("input 4x5x3\nconcat axis=1 { } { conv2d 3 1 }", 2),
        ("input 4x5x3\nconcat axis=-3 { } { conv2d 3 1 }", -3),
    ],
)
def test_concat_on_a_non_channel_axis_matches_keras(keras, text, keras_axis):
    model = layerdsl.parse(text)
    weighted = next(layer for layer in model.layers if layer.weights)
    make = keras.layers.Dense if weighted.kind == "dense" else (lambda n, name: keras.layers.Conv2D(n, 1, name=name))

    def reference(L, x):
        return L.Concatenate(axis=keras_axis)([x, make(3, name=weighted.name)(x)])

    assert_matches_keras(keras, text, reference)


@pytest.mark.parametrize("name", ["unet", "inception"])
def test_example_architectures_match_the_keras_backend(keras, name):
    model = layerdsl.load(EXAMPLES / f"{name}.layers")
    live, reference = layerdsl.build(model, target="numpy"), layerdsl.build(model, target="keras")
    weights = random_weights(model)
    layerdsl.set_weights(live, weights)
    layerdsl.set_weights(reference, weights)
    x = random_input(model, batch=1)
    np.testing.assert_allclose(live(x), keras.ops.convert_to_numpy(reference(x, training=False)), **TOL)


# --- the generated source --------------------------------------------------------------------------


def call_body(source):
    tree = ast.parse(source)
    model_class = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Model")
    method = next(node for node in model_class.body if isinstance(node, ast.FunctionDef) and node.name == "__call__")
    return [ast.unparse(statement) for statement in method.body]


def test_chains_reuse_x_and_branch_tensors_get_their_layer_names():
    source = layerdsl.compile("input 8x8x3\nconv2d 3 1 | relu\nresidual { conv2d 3 3 pad=same | relu }\nrelu", "numpy")
    assert call_body(source) == [
        "x = np.asarray(x, dtype=np.float32)",
        "x = self.conv2d(x)",
        "activation = self.activation(x)",
        "x = self.conv2d_1(activation)",
        "x = self.activation_1(x)",
        "x = self.add(activation, x)",
        "return self.activation_2(x)",
    ]


def test_an_input_read_by_several_layers_is_kept_as_inputs():
    source = layerdsl.compile("input 8x8x4\nconcat { } { conv2d 3 1 }", "numpy")
    assert call_body(source) == [
        "inputs = np.asarray(x, dtype=np.float32)",
        "x = self.conv2d(inputs)",
        "return self.concatenate(inputs, x)",
    ]


def test_block_instances_call_one_class_per_block_definition():
    source = layerdsl.compile(NESTED, "numpy")
    assert re.findall(r"^class (\w+)\(Block\):", source, re.MULTILINE) == ["ConvBn", "Stage", "Model"]
    # Stage's instances differ in width and input channels: arguments of one class.
    assert 'self.stage = Stage(rng, "stage", 8, 3)' in source
    assert 'self.stage_1 = Stage(rng, "stage_1", 16, 8)' in source
    assert 'self.conv_bn_1 = ConvBn(rng, name + "_conv_bn_1", f, f, ((1, 1), (1, 1)))' in source


def test_layer_names_that_clash_with_forward_variables_get_their_own():
    live = layerdsl.build("input 6\ndense 4 name=mask | tap a\ndense 4 name=np\nadd @a", target="numpy")
    assert live(np.ones((2, 6))).shape == (2, 4)


def test_model_output_read_from_a_tap_is_returned():
    model = layerdsl.parse("input 6\ndense 4 | tap a\ndense 3 | tap b\n@a\nconcat @b")
    live = layerdsl.build(model, target="numpy")
    assert live(np.ones((2, 6))).shape == (2, 7)


def top_level_names(source):
    return {node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef | ast.ClassDef)}


def test_generated_graph_carries_only_the_runtime_pieces_it_uses():
    names = top_level_names(layerdsl.compile(UNET, "numpy"))
    assert {"Conv2DTranspose", "UpSample2D", "bilinear_axis", "Concatenate", "Conv2D", "windows"} <= names
    assert not {"Add", "DepthwiseConv2D", "depthwise", "LayerNorm", "relu6", "BatchNorm"} & names


def test_generated_graph_runs_with_only_numpy(tmp_path):
    text = NESTED.replace(
        "globalavgpool", "depthwiseconv2d 3 pad=same | separableconv2d 4 3 pad=same | layernorm | globalavgpool"
    )
    path = tmp_path / "model.py"
    path.write_text(layerdsl.compile(text, "numpy"))
    script = (
        "import sys, numpy as np\n"
        f"namespace = {{}}\nexec(open({str(path)!r}).read(), namespace)\n"
        "y = namespace['build_model'](seed=0)(np.ones((2, 8, 8, 3)))\n"
        "assert y.shape == (2, 3) and y.dtype == np.float32 and np.isfinite(y).all(), (y.shape, y.dtype)\n"
        "loaded = {'torch', 'keras', 'tensorflow', 'jax', 'layerdsl'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


ALL_NEW_LAYERS = """input 9x9x3
zeropad2d top=1 left=2
depthwiseconv2d 3 multiplier=2 | separableconv2d 4 3 pad=same
conv2dtranspose 5 3 stride=2 | layernorm
upsample2d 2 | reshape 38x34x5 | permute 2x1x3
residual { conv2d 5 1 }"""


def test_weights_of_new_layers_round_trip_under_canonical_names():
    model, live, weights = numpy_model(ALL_NEW_LAYERS, seed=4)
    got = layerdsl.get_weights(live)
    assert list(got) == model.weight_names()
    assert {
        "separable_conv2d.depthwise_kernel",
        "separable_conv2d.pointwise_kernel",
        "layer_normalization.gamma",
    } <= set(got)
    for key, value in weights.items():
        np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize(
    ("text", "make"),
    [
        ("input 8x8x32\nconv2dtranspose 64 3", lambda L: L.Conv2DTranspose(64, 3)),
        ("input 8x8x32\ndepthwiseconv2d 3 multiplier=4", lambda L: L.DepthwiseConv2D(3, depth_multiplier=4)),
        ("input 8x8x32\nseparableconv2d 64 3 multiplier=2", lambda L: L.SeparableConv2D(64, 3, depth_multiplier=2)),
    ],
)
def test_initial_kernels_follow_keras_fans(keras, text, make):
    model = layerdsl.parse(text)
    live = layerdsl.build(model, target="numpy", seed=0)
    reference = make(keras.layers)
    reference.build((None, *model.input.shape))
    ours = live.layers[model.layers[0].name].weights
    for weight, theirs in zip(reference.weights, reference.get_weights(), strict=True):
        if weight.name == "bias":
            continue
        assert ours[weight.name].shape == theirs.shape
        assert np.abs(ours[weight.name]).max() == pytest.approx(np.abs(theirs).max(), rel=0.05)
