"""The numpy backend's sequence layers against Keras models built by hand, and against plain loops.

Each Keras oracle is made from keras.layers directly (not by layerdsl) and given the same
canonical weights. Masked batches are padded before, after, and at arbitrary steps.
float32, atol 1e-5, rtol 1e-4.
"""

import ast
import subprocess
import sys

import numpy as np
import pytest

import layerdsl
from layerdsl.backends import numpy_runtime as rt
from layerdsl.testing import random_input, random_weights

TOL = {"atol": 1e-5, "rtol": 1e-4}
PADDINGS = ["pre", "post", "random"]


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def run_both(keras, text, keras_layers, padding="pre", batch=4, seed=0):
    """Our numpy model and a hand-built Keras Sequential, same weights, same batch."""
    model = layerdsl.parse(text)
    weights = random_weights(model, seed)
    live = layerdsl.build(model, target="numpy")
    layerdsl.set_weights(live, weights)
    x = random_input(model, batch, seed + 1, padding)
    reference = keras.Sequential([keras.Input(model.input.shape, dtype=model.input.dtype), *keras_layers])
    ours_with_weights = [layer for layer in model.layers if layer.weights]
    theirs_with_weights = [layer for layer in reference.layers if layer.weights]
    assert len(ours_with_weights) == len(theirs_with_weights)
    for ours, theirs in zip(ours_with_weights, theirs_with_weights, strict=True):
        theirs.set_weights([weights[f"{ours.name}.{w.name}"] for w in ours.weights])
    got = live(x)
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    assert got.dtype == np.float32
    assert got.shape == (batch, *model.output_shape) == expected.shape
    return got, expected, x


def assert_matches_keras(keras, text, keras_layers, **kwargs):
    got, expected, _ = run_both(keras, text, keras_layers, **kwargs)
    np.testing.assert_allclose(got, expected, **TOL)


# --- recurrent layers on float sequences ----------------------------------------------------

RECURRENT_CASES = {
    "lstm": ("lstm 6", lambda L: [L.LSTM(6)]),
    "lstm_sequences": ("lstm 6 return_sequences=true", lambda L: [L.LSTM(6, return_sequences=True)]),
    "lstm_backwards": (
        "lstm 6 go_backwards=true return_sequences=true",
        lambda L: [L.LSTM(6, go_backwards=True, return_sequences=True)],
    ),
    "lstm_backwards_last": ("lstm 6 go_backwards=true", lambda L: [L.LSTM(6, go_backwards=True)]),
    "lstm_activations": (
        "lstm 5 activation=softsign recurrent_activation=tanh return_sequences=true",
        lambda L: [L.LSTM(5, activation="softsign", recurrent_activation="tanh", return_sequences=True)],
    ),
    "lstm_no_bias": ("lstm 4 bias=false", lambda L: [L.LSTM(4, use_bias=False)]),
    "gru": ("gru 6", lambda L: [L.GRU(6)]),
    "gru_sequences": ("gru 6 return_sequences=true", lambda L: [L.GRU(6, return_sequences=True)]),
    "gru_reset_before": (
        "gru 6 reset_after=false return_sequences=true",
        lambda L: [L.GRU(6, reset_after=False, return_sequences=True)],
    ),
    "gru_reset_before_last": ("gru 5 reset_after=false", lambda L: [L.GRU(5, reset_after=False)]),
    "gru_backwards": (
        "gru 5 go_backwards=true return_sequences=true",
        lambda L: [L.GRU(5, go_backwards=True, return_sequences=True)],
    ),
    "gru_activations": (
        "gru 5 activation=elu recurrent_activation=softsign",
        lambda L: [L.GRU(5, activation="elu", recurrent_activation="softsign")],
    ),
    "gru_no_bias": ("gru 4 bias=false reset_after=false", lambda L: [L.GRU(4, use_bias=False, reset_after=False)]),
    "simplernn": ("simplernn 6", lambda L: [L.SimpleRNN(6)]),
    "simplernn_sequences": ("simplernn 6 return_sequences=true", lambda L: [L.SimpleRNN(6, return_sequences=True)]),
    "simplernn_relu_backwards": (
        "simplernn 5 activation=relu go_backwards=true return_sequences=true",
        lambda L: [L.SimpleRNN(5, activation="relu", go_backwards=True, return_sequences=True)],
    ),
    "stacked": (
        "lstm 6 return_sequences=true | gru 4 return_sequences=true | simplernn 3",
        lambda L: [L.LSTM(6, return_sequences=True), L.GRU(4, return_sequences=True), L.SimpleRNN(3)],
    ),
}


@pytest.mark.parametrize("case", RECURRENT_CASES.values(), ids=RECURRENT_CASES.keys())
def test_recurrent_layer_matches_keras(keras, case):
    text, layers = case
    assert_matches_keras(keras, f"input 9x3\n{text}", layers(keras.layers))


MERGES = ["concat", "sum", "mul", "ave"]


@pytest.mark.parametrize("merge", MERGES)
@pytest.mark.parametrize("inner", ["lstm", "gru", "simplernn"])
@pytest.mark.parametrize("sequences", [True, False], ids=["sequences", "last"])
def test_bidirectional_matches_keras(keras, merge, inner, sequences):
    keras_class = {"lstm": "LSTM", "gru": "GRU", "simplernn": "SimpleRNN"}[inner]
    text = f"input 8x3\nbidirectional {inner} 4 merge={merge} return_sequences={str(sequences).lower()}"
    layer = getattr(keras.layers, keras_class)(4, return_sequences=sequences)
    assert_matches_keras(keras, text, [keras.layers.Bidirectional(layer, merge_mode=merge)])


@pytest.mark.parametrize("padding", PADDINGS)
def test_bidirectional_with_masked_sequences_outputs_zeros_at_masked_steps(keras, padding):
    # Keras's Bidirectional forces zero_output_for_mask on its layers when they return sequences.
    text = "input 7 dtype=int32\nembedding 20 3 mask_zero=true\nbidirectional simplernn 4 return_sequences=true"
    bidirectional = keras.layers.Bidirectional(keras.layers.SimpleRNN(4, return_sequences=True))
    layers = [keras.layers.Embedding(20, 3, mask_zero=True), bidirectional]
    got, expected, ids = run_both(keras, text, layers, padding=padding, batch=5)
    np.testing.assert_array_equal(got[ids == 0], 0.0)
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("sequences", [True, False], ids=["sequences", "last"])
def test_bidirectional_around_a_backwards_layer_runs_the_other_direction_forwards(keras, sequences):
    # Keras refuses to flip go_backwards=True itself, but takes the flipped layer as backward_layer.
    flag = str(sequences).lower()
    text = f"input 8x3\nbidirectional gru 4 go_backwards=true return_sequences={flag} reset_after=false"
    forward = keras.layers.GRU(4, go_backwards=True, return_sequences=sequences, reset_after=False)
    backward = keras.layers.GRU(4, go_backwards=False, return_sequences=sequences, reset_after=False)
    assert_matches_keras(keras, text, [keras.layers.Bidirectional(forward, backward_layer=backward)])


# --- masks --------------------------------------------------------------------------------------

MASKED_CASES = {
    "lstm": ("lstm 6", lambda L: [L.LSTM(6)]),
    "lstm_sequences": ("lstm 6 return_sequences=true", lambda L: [L.LSTM(6, return_sequences=True)]),
    "lstm_backwards": (
        "lstm 5 go_backwards=true return_sequences=true",
        lambda L: [L.LSTM(5, go_backwards=True, return_sequences=True)],
    ),
    "gru": ("gru 6 return_sequences=true", lambda L: [L.GRU(6, return_sequences=True)]),
    "gru_reset_before": ("gru 5 reset_after=false", lambda L: [L.GRU(5, reset_after=False)]),
    "simplernn": ("simplernn 5 go_backwards=true", lambda L: [L.SimpleRNN(5, go_backwards=True)]),
    "bidirectional": (
        "bidirectional lstm 4 return_sequences=true merge=ave",
        lambda L: [L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="ave")],
    ),
    "bidirectional_last": ("bidirectional gru 4", lambda L: [L.Bidirectional(L.GRU(4))]),
    "through_dense_to_pool": (
        "lstm 6 return_sequences=true | dense 3 activation=tanh | globalavgpool1d",
        lambda L: [L.LSTM(6, return_sequences=True), L.Dense(3, activation="tanh"), L.GlobalAveragePooling1D()],
    ),
    "pool": ("globalavgpool1d", lambda L: [L.GlobalAveragePooling1D()]),
}


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("case", MASKED_CASES.values(), ids=MASKED_CASES.keys())
def test_embedding_mask_zero_matches_keras(keras, case, padding):
    text, layers = case
    source = f"input 9 dtype=int32\nembedding 30 4 mask_zero=true\n{text}"
    embedding = keras.layers.Embedding(30, 4, mask_zero=True)
    got, expected, ids = run_both(keras, source, [embedding, *layers(keras.layers)], padding=padding, batch=6)
    assert (ids == 0).any() and (ids != 0).all(axis=1).any()  # some rows padded, some not
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(
    "case", [MASKED_CASES[k] for k in ("lstm_sequences", "gru", "bidirectional", "through_dense_to_pool")]
)
def test_masking_float_sequences_matches_keras(keras, case, padding):
    text, layers = case
    source = f"input 9x3\nmasking 0.0\n{text}"
    got, expected, x = run_both(keras, source, [keras.layers.Masking(0.0), *layers(keras.layers)], padding=padding)
    assert (x == 0).all(axis=-1).any()
    np.testing.assert_allclose(got, expected, **TOL)


def test_int64_ids_work_like_int32(keras):
    text = "input 6 dtype=int64\nembedding 10 3 mask_zero=true | lstm 4"
    assert_matches_keras(keras, text, [keras.layers.Embedding(10, 3, mask_zero=True), keras.layers.LSTM(4)])


def test_masking_zeroes_masked_steps_and_returns_the_mask():
    x = np.ones((2, 3, 2), np.float32)
    x[0, 1] = 5.0
    out, mask = rt.Masking(5.0)(x)
    np.testing.assert_array_equal(mask, [[True, False, True], [True, True, True]])
    np.testing.assert_array_equal(out[0, 1], [0.0, 0.0])


def test_fully_masked_prefix_outputs_zeros_then_carries_the_state():
    rng = np.random.default_rng(0)
    layer = rt.LSTM(rng.normal(size=(2, 12)), rng.normal(size=(3, 12)), rng.normal(size=12), return_sequences=True)
    x = rng.normal(size=(1, 5, 2)).astype(np.float32)
    mask = np.array([[False, False, True, False, True]])
    y = layer(x, mask)
    np.testing.assert_array_equal(y[0, :2], 0.0)
    np.testing.assert_array_equal(y[0, 3], y[0, 2])
    assert not np.array_equal(y[0, 4], y[0, 3])


# --- a framework-free reference -----------------------------------------------------------------


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def loop_lstm(x, mask, kernel, recurrent_kernel, bias):
    """An LSTM one example and one step at a time, in float64, straight from the definition."""
    units = len(recurrent_kernel)
    outputs = np.zeros((len(x), x.shape[1], units))
    for n in range(len(x)):
        h, c = np.zeros(units), np.zeros(units)
        for t in range(x.shape[1]):
            if mask[n, t]:
                z = x[n, t] @ kernel + h @ recurrent_kernel + bias
                i, f, g, o = z[:units], z[units : 2 * units], z[2 * units : 3 * units], z[3 * units :]
                c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                h = sigmoid(o) * np.tanh(c)
            outputs[n, t] = h
    return outputs


def test_lstm_with_an_arbitrary_mask_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    kernel, recurrent_kernel, bias = (rng.normal(0, 0.5, shape) for shape in [(3, 20), (5, 20), (20,)])
    x = rng.normal(size=(4, 8, 3)).astype(np.float32)
    mask = rng.uniform(size=(4, 8)) > 0.4
    mask[0] = True
    expected = loop_lstm(x.astype(np.float64), mask, kernel, recurrent_kernel, bias)
    sequences = rt.LSTM(kernel, recurrent_kernel, bias, return_sequences=True)(x, mask)
    last = rt.LSTM(kernel, recurrent_kernel, bias)(x, mask)
    np.testing.assert_allclose(sequences, expected, **TOL)
    np.testing.assert_allclose(last, expected[:, -1], **TOL)


class MatmulCounter(np.ndarray):
    calls = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:
            MatmulCounter.calls += 1
        return getattr(ufunc, method)(*(np.asarray(i) for i in inputs), **kwargs)


def test_lstm_projects_all_inputs_in_one_matmul_then_one_per_step():
    rng = np.random.default_rng(0)
    layer = rt.LSTM(rng.normal(size=(3, 16)), rng.normal(size=(4, 16)), np.zeros(16))
    layer.kernel = layer.kernel.view(MatmulCounter)
    layer.recurrent_kernel = layer.recurrent_kernel.view(MatmulCounter)
    MatmulCounter.calls = 0
    layer(rng.normal(size=(5, 11, 3)).astype(np.float32))
    assert MatmulCounter.calls == 1 + 11


# --- convolution and pooling over time ----------------------------------------------------------

CONV1D_CASES = [
    ("conv1d 4 3", dict(kernel_size=3)),
    ("conv1d 4 3 pad=same", dict(kernel_size=3, padding="same")),
    ("conv1d 4 4 pad=same stride=2", dict(kernel_size=4, padding="same", strides=2)),
    ("conv1d 4 3 pad=causal", dict(kernel_size=3, padding="causal")),
    ("conv1d 4 3 pad=causal dilation=2", dict(kernel_size=3, padding="causal", dilation_rate=2)),
    ("conv1d 4 2 pad=same dilation=3", dict(kernel_size=2, padding="same", dilation_rate=3)),
    ("conv1d 4 3 dilation=2 activation=relu", dict(kernel_size=3, dilation_rate=2, activation="relu")),
    ("conv1d 4 3 stride=3 bias=false", dict(kernel_size=3, strides=3, use_bias=False)),
    ("conv1d 4 3 pad=causal stride=2", dict(kernel_size=3, padding="causal", strides=2)),
]


@pytest.mark.parametrize(("text", "options"), CONV1D_CASES, ids=[c[0] for c in CONV1D_CASES])
def test_conv1d_matches_keras(keras, text, options):
    assert_matches_keras(keras, f"input 11x3\n{text}", [keras.layers.Conv1D(4, **options)])


POOL1D_CASES = [
    ("2", dict(pool_size=2)),
    ("3 stride=2", dict(pool_size=3, strides=2)),
    ("2 pad=same", dict(pool_size=2, padding="same")),
    ("4 stride=1 pad=same", dict(pool_size=4, strides=1, padding="same")),
    ("3 stride=2 pad=same", dict(pool_size=3, strides=2, padding="same")),
]


@pytest.mark.parametrize("kind", ["maxpool1d", "avgpool1d"])
@pytest.mark.parametrize(("args", "options"), POOL1D_CASES, ids=[c[0] for c in POOL1D_CASES])
def test_pool1d_matches_keras(keras, kind, args, options):
    keras_class = keras.layers.MaxPooling1D if kind == "maxpool1d" else keras.layers.AveragePooling1D
    # a 1x1 conv first mixes the channels; the minus-infinity padding has its own test below
    text = f"input 11x3\nconv1d 3 1 | {kind} {args}"
    layers = [keras.layers.Conv1D(3, 1), keras_class(**options)]
    assert_matches_keras(keras, text, layers)


@pytest.mark.parametrize(
    ("text", "layer"),
    [
        ("input 7x3\nglobalmaxpool1d", "GlobalMaxPooling1D"),
        ("input 7x3\nglobalavgpool1d", "GlobalAveragePooling1D"),
        ("input 5x6x3\nglobalmaxpool", "GlobalMaxPooling2D"),
        ("input 5x6x3\nglobalavgpool", "GlobalAveragePooling2D"),
    ],
)
def test_global_pools_match_keras(keras, text, layer):
    assert_matches_keras(keras, text, [getattr(keras.layers, layer)()])


def test_pooling_1d_takes_minus_infinity_padding_for_max():
    x = -np.ones((1, 3, 1), np.float32)
    np.testing.assert_array_equal(rt.MaxPool1D(2, 2, (0, 1))(x)[0, :, 0], [-1.0, -1.0])
    np.testing.assert_array_equal(rt.AvgPool1D(2, 2, (0, 1))(x)[0, :, 0], [-1.0, -1.0])


# --- initial weights and the weights API --------------------------------------------------------


def test_recurrent_kernels_start_orthogonal_as_keras_draws_them(keras):
    live = layerdsl.build("input 5x3\nlstm 6 recurrent_init=orthogonal", target="numpy", seed=0)
    ours = live.layers["lstm"].recurrent_kernel  # (6, 24): rows orthonormal, as Keras's
    theirs = keras.ops.convert_to_numpy(keras.initializers.Orthogonal()((6, 24)))
    for q in (ours, theirs):
        np.testing.assert_allclose(q @ q.T, np.eye(6), atol=1e-5)


@pytest.mark.parametrize("bias_init", ["zeros", "ones", "uniform"])
def test_lstm_bias_starts_as_keras_unit_forget_bias(keras, bias_init):
    live = layerdsl.build(f"input 5x3\nlstm 4 bias_init={bias_init}", target="numpy", seed=0)
    ours = layerdsl.get_weights(live)["lstm.bias"]
    theirs = keras.layers.LSTM(4, bias_initializer=bias_init)
    theirs.build((None, 5, 3))
    theirs = theirs.get_weights()[2]
    np.testing.assert_array_equal(ours[4:8], 1.0)
    np.testing.assert_array_equal(theirs[4:8], 1.0)
    for piece in (slice(0, 4), slice(8, 16)):
        assert np.abs(ours[piece]).max() == pytest.approx(np.abs(theirs[piece]).max(), abs=0.05)


def test_embeddings_start_uniform_and_seeded():
    first = layerdsl.get_weights(layerdsl.build("input 4 dtype=int32\nembedding 500 40", target="numpy", seed=3))
    again = layerdsl.get_weights(layerdsl.build("input 4 dtype=int32\nembedding 500 40", target="numpy", seed=3))
    table = first["embedding.embeddings"]
    np.testing.assert_array_equal(table, again["embedding.embeddings"])
    assert 0.045 < np.abs(table).max() <= 0.05 and table.dtype == np.float32


def test_bidirectional_weights_round_trip_under_canonical_names():
    text = "input 6x3\nbidirectional gru 4 merge=sum"
    model = layerdsl.parse(text)
    live = layerdsl.build(model, target="numpy")
    weights = random_weights(model, seed=5)
    layerdsl.set_weights(live, weights)
    got = layerdsl.get_weights(live)
    assert list(got) == model.weight_names()
    assert "bidirectional.backward_recurrent_kernel" in got
    for key, value in weights.items():
        np.testing.assert_array_equal(got[key], value)


# --- generated source ---------------------------------------------------------------------------

LSTM_MODEL = "model tagger\ninput 7 dtype=int32\nembedding 50 8 mask_zero=true\nlstm 6\ndense 3 activation=softmax"


def test_generated_lstm_source_carries_only_what_it_uses():
    source = layerdsl.compile(LSTM_MODEL, "numpy")
    tree = ast.parse(source)
    imports = [
        (a.name, a.asname) for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names
    ]
    assert imports == [("numpy", "np")]
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    assert {"Embedding", "Recurrent", "LSTM", "Dense", "draw", "tanh", "sigmoid", "softmax"} <= names
    assert not {"GRU", "SimpleRNN", "Bidirectional", "Masking", "Conv2D", "windows", "relu"} & names
    assert "mask = x != 0" in source and "x = self.lstm(x, mask)" in source


def test_generated_lstm_source_runs_with_only_numpy(tmp_path):
    path = tmp_path / "tagger.py"
    path.write_text(layerdsl.compile(LSTM_MODEL, "numpy"))
    script = (
        "import sys, numpy as np\n"
        f"namespace = {{}}\nexec(open({str(path)!r}).read(), namespace)\n"
        "model = namespace['build_model'](seed=0)\n"
        "ids = np.array([[0, 0, 4, 9, 2, 7, 1], [3, 4, 5, 6, 7, 8, 9]], dtype=np.int64)\n"
        "y = model(ids)\n"
        "assert y.shape == (2, 3) and y.dtype == np.float32, (y.shape, y.dtype)\n"
        "np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)\n"
        "loaded = {'torch', 'keras', 'tensorflow', 'jax', 'layerdsl'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
