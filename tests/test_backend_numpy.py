"""The numpy backend: its runtime kernels against independent oracles, and the models it generates.

Oracles are torch.nn.functional and Keras (each skipped when not installed) and
a brute-force loop convolution that needs no framework. float32, atol 1e-5, rtol 1e-4.
"""

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import specs
from layerdsl.backends import get
from layerdsl.backends import numpy_runtime as rt
from layerdsl.backends.numpy_backend import EMITTERS
from layerdsl.specs import ACTIVATIONS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOL = {"atol": 1e-5, "rtol": 1e-4}


def rand(*shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def same_padding(shape, window, strides, dilation=(1, 1)):
    args = layerdsl.ir.Args((("pad", "same"), ("stride", strides), ("dilation", dilation)))
    return specs.spatial_padding(args, shape, window)


# --- convolution ----------------------------------------------------------------------------

CONV_CASES = [
    # (height, width, in, out, kernel, stride, dilation, pad)
    (7, 7, 2, 3, (3, 3), (1, 1), (1, 1), "valid"),
    (8, 8, 2, 3, (3, 3), (1, 1), (1, 1), "same"),
    (8, 9, 3, 4, (4, 4), (1, 1), (1, 1), "same"),  # even kernel: padding after exceeds before
    (9, 9, 2, 3, (3, 3), (2, 2), (1, 1), "same"),
    (8, 8, 2, 3, (3, 3), (2, 2), (1, 1), "same"),
    (8, 8, 2, 3, (3, 3), (2, 2), (1, 1), "valid"),
    (10, 11, 2, 3, (5, 5), (3, 3), (1, 1), "same"),
    (10, 11, 2, 3, (3, 2), (3, 1), (1, 1), "valid"),
    (12, 12, 2, 3, (3, 3), (1, 1), (2, 2), "valid"),
    (11, 10, 2, 3, (3, 3), (1, 1), (2, 2), "same"),
    (9, 9, 2, 3, (1, 1), (2, 2), (1, 1), "same"),
]


def runtime_conv(x, kernel, bias, stride, dilation, pad):
    padding = same_padding(x.shape[1:], kernel.shape[:2], stride, dilation) if pad == "same" else ((0, 0), (0, 0))
    return rt.Conv2D(kernel, bias, strides=stride, dilation=dilation, padding=padding)(x)


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "{0}x{1} k{4} s{5} d{6} {7}".format(*c))
def test_conv2d_matches_keras(keras, case):
    h, w, cin, cout, kernel_size, stride, dilation, pad = case
    x, kernel, bias = rand(2, h, w, cin), rand(*kernel_size, cin, cout, seed=1), rand(cout, seed=2)
    expected = keras.ops.convert_to_numpy(
        keras.ops.conv(x, kernel, strides=stride, padding=pad, dilation_rate=dilation) + bias
    )
    got = runtime_conv(x, kernel, bias, stride, dilation, pad)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[-1] == "valid"], ids=str)
def test_conv2d_valid_matches_torch(torch, case):
    h, w, cin, cout, kernel_size, stride, dilation, _ = case
    x, kernel, bias = rand(2, h, w, cin), rand(*kernel_size, cin, cout, seed=1), rand(cout, seed=2)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2),
        torch.from_numpy(kernel).permute(3, 2, 0, 1),
        torch.from_numpy(bias),
        stride=stride,
        dilation=dilation,
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(runtime_conv(x, kernel, bias, stride, dilation, "valid"), expected.numpy(), **TOL)


def loop_conv(x, kernel, stride, dilation, padding):
    """Brute force, straight from the definition."""
    (top, bottom), (left, right) = padding
    x = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, _, cout = kernel.shape
    oh = (x.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    ow = (x.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    out = np.zeros((len(x), oh, ow, cout))
    for n in range(len(x)):
        for i in range(oh):
            for j in range(ow):
                for a in range(kh):
                    for b in range(kw):
                        pixel = x[n, i * stride[0] + a * dilation[0], j * stride[1] + b * dilation[1]]
                        out[n, i, j] += pixel @ kernel[a, b]
    return out


@pytest.mark.parametrize(
    ("stride", "dilation", "padding"),
    [((1, 1), (1, 1), ((0, 0), (0, 0))), ((2, 3), (1, 1), ((0, 1), (1, 1))), ((1, 1), (2, 1), ((1, 2), (0, 1)))],
)
def test_conv2d_matches_a_loop_reference(stride, dilation, padding):
    x, kernel = rand(2, 6, 7, 3), rand(3, 2, 3, 4, seed=1)
    got = rt.Conv2D(kernel, strides=stride, dilation=dilation, padding=padding)(x)
    np.testing.assert_allclose(got, loop_conv(x, kernel, stride, dilation, padding), **TOL)


class MatmulCounter(np.ndarray):
    calls = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:
            MatmulCounter.calls += 1
        return getattr(ufunc, method)(*(np.asarray(i) for i in inputs), **kwargs)


def test_conv2d_is_one_matmul_for_the_whole_batch():
    layer = rt.Conv2D(rand(3, 3, 4, 8), rand(8), padding=((1, 1), (1, 1)))
    layer.matrix = layer.matrix.view(MatmulCounter)
    MatmulCounter.calls = 0
    out = layer(rand(8, 64, 64, 4))
    assert out.shape == (8, 64, 64, 8)
    assert MatmulCounter.calls == 1


# --- pooling ----------------------------------------------------------------------------------

POOL_CASES = [
    # (height, width, pool, stride, pad)
    (9, 9, (2, 2), (2, 2), "valid"),
    (9, 9, (3, 3), (2, 2), "valid"),
    (9, 8, (2, 2), (2, 2), "same"),  # pads (0, 1) on height only
    (7, 7, (3, 3), (1, 1), "same"),
    (7, 6, (4, 4), (1, 1), "same"),  # pads (1, 2): asymmetric
    (8, 8, (3, 3), (2, 2), "same"),
    (10, 7, (3, 2), (3, 1), "same"),
]


def runtime_pool(kind, x, pool, stride, pad):
    padding = same_padding(x.shape[1:], pool, stride) if pad == "same" else ((0, 0), (0, 0))
    return getattr(rt, kind)(pool, stride, padding)(x)


@pytest.mark.parametrize("kind", ["MaxPool2D", "AvgPool2D"])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pooling_matches_keras(keras, kind, case):
    h, w, pool, stride, pad = case
    x = rand(2, h, w, 3) - 2.0  # mostly negative, so zero padding would win a max and skew a mean
    op = keras.ops.max_pool if kind == "MaxPool2D" else keras.ops.average_pool
    expected = keras.ops.convert_to_numpy(op(x, pool, strides=stride, padding=pad))
    got = runtime_pool(kind, x, pool, stride, pad)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("kind", ["MaxPool2D", "AvgPool2D"])
def test_valid_pooling_matches_torch(torch, kind):
    x = rand(2, 9, 8, 3)
    op = torch.nn.functional.max_pool2d if kind == "MaxPool2D" else torch.nn.functional.avg_pool2d
    expected = op(torch.from_numpy(x).permute(0, 3, 1, 2), (3, 2), stride=(2, 2)).permute(0, 2, 3, 1)
    np.testing.assert_allclose(runtime_pool(kind, x, (3, 2), (2, 2), "valid"), expected.numpy(), **TOL)


# --- batchnorm, dense, flatten ------------------------------------------------------------------


@pytest.mark.parametrize(("center", "scale"), [(True, True), (False, True), (True, False), (False, False)])
def test_batchnorm_matches_keras(keras, center, scale):
    channels = 5
    stats = {
        "gamma": rand(channels, seed=1) + 1.5,
        "beta": rand(channels, seed=2),
        "moving_mean": rand(channels, seed=3),
        "moving_variance": np.random.default_rng(4).uniform(0.2, 3.0, channels).astype(np.float32),
    }
    kept = {k: v for k, v in stats.items() if (k != "gamma" or scale) and (k != "beta" or center)}
    bn = keras.layers.BatchNormalization(epsilon=0.01, center=center, scale=scale)
    bn.build((None, 4, 4, channels))
    bn.set_weights(list(kept.values()))
    x = rand(3, 4, 4, channels, seed=5) * 2 + 1
    left_out = {k: None for k in ("gamma", "beta") if k not in kept}
    got = rt.BatchNorm(channels, eps=0.01, **kept, **left_out)(x)
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(bn(x, training=False)), **TOL)


def test_batchnorm_refreshes_its_folded_scale_when_weights_are_set():
    bn = rt.BatchNorm(3, eps=0.0)  # starts as Keras: gamma and the variance ones, beta and the mean zeros
    bn.weights = {"moving_variance": np.full(3, 4.0), "beta": np.ones(3)}
    np.testing.assert_allclose(bn(np.full((1, 3), 2.0, np.float32)), np.full((1, 3), 2.0))
    assert list(bn.weights) == ["gamma", "beta", "moving_mean", "moving_variance"]


def test_dense_works_on_vectors_and_sequences(torch):
    kernel, bias = rand(6, 4, seed=1), rand(4, seed=2)
    layer = rt.Dense(kernel, bias, activation=rt.tanh)
    for x in (rand(3, 6), rand(3, 5, 6)):
        expected = torch.tanh(
            torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(kernel.T), torch.from_numpy(bias))
        )
        np.testing.assert_allclose(layer(x), expected.numpy(), **TOL)


def test_conv2d_kernel_assignment_refreshes_its_matrix():
    layer = rt.Conv2D(np.zeros((2, 2, 1, 1)), np.zeros(1))
    layer.weights = {"kernel": np.ones((2, 2, 1, 1))}
    np.testing.assert_array_equal(layer(np.ones((1, 3, 3, 1), np.float32)), np.full((1, 2, 2, 1), 4.0))
    with pytest.raises(ValueError, match="shape"):
        layer.weights = {"kernel": np.ones((3, 3, 1, 1))}


def test_flatten_follows_keras_channels_last_order(keras):
    x = rand(2, 3, 4, 5)
    np.testing.assert_array_equal(rt.Flatten()(x), keras.ops.convert_to_numpy(keras.layers.Flatten()(x)))


# --- activations ------------------------------------------------------------------------------------


def test_every_dsl_activation_is_in_the_runtime():
    assert all(callable(getattr(rt, name, None)) for name in ACTIVATIONS)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_keras(keras, name):
    x = np.concatenate([np.linspace(-12, 12, 97, dtype=np.float32), rand(64, scale=3)]).reshape(-1, 7)
    expected = keras.ops.convert_to_numpy(keras.layers.Activation(name)(x))
    got = getattr(rt, name)(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, **TOL)


def test_gelu_is_the_exact_erf_form(torch):
    x = np.linspace(-10, 10, 4001, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    np.testing.assert_allclose(rt.gelu(x), exact, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(rt.gelu(x), torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), atol=1e-6, rtol=1e-6)


def test_exact_gelu_is_accurate_in_float32_without_any_framework():
    x = np.linspace(-12, 12, 4801, dtype=np.float32)
    exact = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
    y = rt.gelu(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, exact, rtol=0, atol=5e-7)
    assert np.abs(y - exact).max() > 1e-8  # computed, not looked up: float32 and the erfc fit show


@pytest.mark.parametrize("name", ["softmax", "sigmoid", "softplus", "silu", "elu", "selu", "gelu"])
def test_activations_stay_finite_for_huge_inputs(name):
    x = np.array([[-1e4, -500.0, 0.0, 500.0, 1e4]], dtype=np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        y = getattr(rt, name)(x)
    assert np.isfinite(y).all()
    assert y.dtype == np.float32


def test_softmax_of_large_logits_matches_torch(torch):
    x = rand(4, 10, scale=1e3)
    np.testing.assert_allclose(rt.softmax(x), torch.softmax(torch.from_numpy(x), -1).numpy(), **TOL)


# --- initial weights ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "shape"),
    [
        ("glorot_uniform", (600, 400)),
        ("he_uniform", (3, 3, 64, 128)),
        ("lecun_uniform", (500, 300)),
        ("glorot_normal", (600, 400)),
        ("he_normal", (3, 3, 64, 128)),
        ("lecun_normal", (500, 300)),
        ("normal", (400, 400)),
        ("uniform", (400, 400)),
    ],
)
def test_initial_weights_follow_keras(keras, init, shape):
    dist = layerdsl.initializers.distribution(init, shape)
    ours = rt.draw(np.random.default_rng(0), dist.kind, shape, limit=dist.limit, std=dist.std)
    theirs = keras.ops.convert_to_numpy(keras.initializers.get(init)(shape))
    assert ours.dtype == np.float32 and ours.shape == shape
    assert ours.std() == pytest.approx(theirs.std(), rel=0.03)
    if dist.kind != "normal":  # bounded: both reach (nearly) the same bound
        assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=0.03)
    if dist.kind == "truncated_normal":
        assert np.abs(ours).max() <= 2 * dist.std


def test_truncated_normal_redraws_beyond_two_std():
    values = rt.draw(np.random.default_rng(0), "truncated_normal", (200_000,), std=0.5)
    assert np.abs(values).max() <= 1.0
    assert values.std() == pytest.approx(0.5 * 0.87962566103423978, rel=0.01)


@pytest.mark.parametrize("shape", [(50, 20), (20, 50), (3, 3, 4, 6)])
def test_orthogonal_draws_orthonormal_rows_or_columns(shape):
    q = rt.draw(np.random.default_rng(0), "orthogonal", shape, gain=2.0).reshape(-1, shape[-1])
    small = q.T @ q if q.shape[0] >= q.shape[1] else q @ q.T
    np.testing.assert_allclose(small, 4.0 * np.eye(len(small)), atol=1e-5)


def test_seed_makes_initial_weights_reproducible():
    text = "dense 30 in=20 init=he_normal | batchnorm | dense 5 init=orthogonal bias_init=uniform"
    first, again, other = (layerdsl.get_weights(layerdsl.build(text, target="numpy", seed=s)) for s in (1, 1, 2))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["dense.kernel"], other["dense.kernel"])
    np.testing.assert_array_equal(first["batch_normalization.moving_variance"], np.ones(30))


# --- built models ---------------------------------------------------------------------------------

MODELS = {
    "mnist": (EXAMPLES / "mnist_convnet.layers").read_text(),
    "dense_sequence": "input 5x7\ndense 4 activation=gelu | batchnorm | dense 3 | softmax",
    "conv_same": "input 9x10x3\nconv2d 4 3 stride=2 pad=same | batchnorm scale=false | elu\n"
    "avgpool 2 pad=same | maxpool 3 stride=1 pad=same | flatten | dense 5 bias=false",
}


def random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in model.layers:
        for w in layer.weights:
            values = rng.standard_normal(w.shape)
            if w.name == "moving_variance":
                values = rng.uniform(0.5, 2.0, w.shape)
            weights[f"{layer.name}.{w.name}"] = values.astype(np.float32)
    return weights


@pytest.mark.parametrize("text", MODELS.values(), ids=MODELS.keys())
def test_built_model_outputs_float32_in_the_ir_shape(text):
    model = layerdsl.parse(text)
    live = layerdsl.build(model, target="numpy", seed=0)
    x = np.random.default_rng(0).integers(0, 3, (2, *model.input.fed_shape))
    y = live(x)
    assert y.dtype == np.float32
    assert y.shape == (2, *model.output_shape)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("text", MODELS.values(), ids=MODELS.keys())
def test_weights_round_trip(text):
    model = layerdsl.parse(text)
    live = layerdsl.build(model, target="numpy")
    weights = random_weights(model, seed=1)
    layerdsl.set_weights(live, weights)
    got = layerdsl.get_weights(live)
    assert list(got) == model.weight_names()
    for key, value in weights.items():
        assert got[key].dtype == np.float32
        np.testing.assert_array_equal(got[key], value)
    got[model.weight_names()[0]][...] = 0  # a copy: the model keeps its weights
    np.testing.assert_array_equal(layerdsl.get_weights(live)[model.weight_names()[0]], weights[model.weight_names()[0]])


def test_mnist_convnet_matches_a_hand_built_keras_model(keras):
    model = layerdsl.load(EXAMPLES / "mnist_convnet.layers")
    live = layerdsl.build(model, target="numpy")
    weights = random_weights(model, seed=2)
    layerdsl.set_weights(live, weights)
    L = keras.layers
    reference = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 3, name="conv2d"), L.Activation("relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu", name="conv2d_1"), L.MaxPooling2D(2),
        L.Flatten(), L.Dropout(0.5), L.Dense(10, name="dense"), L.Activation("softmax"),
    ])  # fmt: skip
    for name in ("conv2d", "conv2d_1", "dense"):
        reference.get_layer(name).set_weights([weights[f"{name}.kernel"], weights[f"{name}.bias"]])
    x = np.random.default_rng(3).uniform(0, 1, (4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(live(x), keras.ops.convert_to_numpy(reference(x, training=False)), **TOL)


def test_channels_first_input_is_moved_to_channels_last():
    first = layerdsl.parse("input 3x6x5 layout=channels_first\nconv2d 4 3 | flatten | dense 2")
    last = layerdsl.parse("input 6x5x3\nconv2d 4 3 | flatten | dense 2")
    weights = random_weights(first)
    live_first, live_last = layerdsl.build(first, target="numpy"), layerdsl.build(last, target="numpy")
    layerdsl.set_weights(live_first, weights)
    layerdsl.set_weights(live_last, weights)
    x = rand(2, 3, 6, 5)
    np.testing.assert_allclose(live_first(x), live_last(x.transpose(0, 2, 3, 1)), **TOL)


def test_layer_names_that_clash_with_the_class_keep_their_canonical_keys():
    text = "model dense\ndense 4 in=3 name=layers | dense 2 name=layerdsl_backend | dense 2 name=layers_layer"
    live = layerdsl.build(text, target="numpy")
    assert type(live).__name__ == "DenseModel"
    assert get("numpy").owns(live)
    assert list(live.layers) == ["layers", "layerdsl_backend", "layers_layer"]
    weights = layerdsl.get_weights(live)
    assert set(weights) == {f"{n}.{p}" for n in live.layers for p in ("kernel", "bias")}
    assert live(np.ones((1, 3))).shape == (1, 2)


def test_owns_only_generated_models():
    backend = get("numpy")
    assert backend.owns(layerdsl.build("dense 2 in=3", target="numpy"))
    assert not backend.owns(object())
    assert not backend.owns(rt.Dense(np.ones((2, 2))))


def test_every_layer_kind_has_an_emitter():
    assert set(specs.layer_kinds()) <= set(EMITTERS)


# --- generated source ------------------------------------------------------------------------------


def top_level_names(source):
    return {node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef | ast.ClassDef)}


def test_generated_source_imports_only_numpy():
    source = layerdsl.compile((EXAMPLES / "mnist_convnet.layers").read_text(), "numpy")
    imports = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert [(alias.name, alias.asname) for node in imports for alias in node.names] == [("numpy", "np")]
    assert all(isinstance(node, ast.Import) for node in imports)


def test_generated_source_carries_only_the_runtime_pieces_it_uses():
    dense_only = top_level_names(layerdsl.compile("dense 4 in=3 | relu", "numpy"))
    assert dense_only == {"draw", "initial", "linear", "relu", "Layer", "Block", "Dense", "Activation", "Model", "build_model"}
    mnist = top_level_names(layerdsl.compile((EXAMPLES / "mnist_convnet.layers").read_text(), "numpy"))
    assert {"Conv2D", "MaxPool2D", "windows", "pad", "softmax"} <= mnist
    assert not {"AvgPool2D", "BatchNorm", "gelu", "erfc", "sigmoid"} & mnist


def test_generated_source_runs_with_only_numpy(tmp_path):
    source = layerdsl.compile(MODELS["conv_same"], "numpy")
    path = tmp_path / "model.py"
    path.write_text(source)
    script = (
        "import sys, numpy as np\n"
        f"namespace = {{}}\nexec(open({str(path)!r}).read(), namespace)\n"
        "model = namespace['build_model'](seed=0)\n"
        "y = model(np.ones((2, 9, 10, 3)))\n"
        "assert y.shape == (2, 5) and y.dtype == np.float32, (y.shape, y.dtype)\n"
        "loaded = {'torch', 'keras', 'tensorflow', 'jax', 'layerdsl'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_generated_source_comments_each_line_with_its_statements_and_shape():
    source = layerdsl.compile((EXAMPLES / "mnist_convnet.layers").read_text(), "numpy")
    assert "# line 4: conv2d 32 3 | relu -> (N, 26, 26, 32)" in source
    assert "# line 5: maxpool 2 -> (N, 13, 13, 32)" in source
    assert "# line 10: dense 10 | softmax -> (N, 10)" in source


def test_importing_the_backend_loads_no_framework():
    script = (
        "import sys, layerdsl.backends.numpy_backend\n"
        "assert not {'torch', 'keras', 'tensorflow'} & set(sys.modules)\n"
        "assert 'numpy' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
