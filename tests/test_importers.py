"""Importing Keras and torch models: the same model back (IR and outputs), hand-written models, errors, CLI."""

import subprocess
import sys

import numpy as np
import pytest

import layerdsl
from layerdsl import cli
from layerdsl.backends.torch_backend import torch_shape
from layerdsl.testing import ATOL, RTOL, random_input, random_weights, run

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
nn = torch.nn
layers = keras.layers


def signature(model: layerdsl.Model) -> tuple:
    """What two equal models share: input, and each layer's kind, name, arguments and shapes."""
    return (
        model.name,
        model.input.shape,
        model.input.dtype,
        tuple((y.kind, y.name, tuple(y.args.items()), y.input_shape, y.output_shape) for y in model.layers),
    )


def assert_same_outputs(target, original, model, imported, x):
    fresh = layerdsl.build(imported.model, target)
    layerdsl.set_weights(fresh, imported.weights)
    expected = run(target, original, model, x)
    np.testing.assert_allclose(run(target, fresh, imported.model, x), expected, atol=ATOL, rtol=RTOL)


CONVNET = """\
model convnet
input 12x12x3
conv2d 8 3 activation=relu
maxpool 2
conv2d 6 3 stride=2 pad=same bias=false
batchnorm eps=1e-05 momentum=0.9
leaky_relu
avgpool 2 stride=1 pad=same
flatten
dropout 0.25
dense 5 activation=softmax name=out
"""

BOTH_FRAMEWORKS = {
    "convnet": CONVNET,
    "same_padding": "input 9x9x2\nconv2d 4 3 pad=same\nconv2d 4 2 pad=same\nmaxpool 3 stride=2 pad=same\n"
    "conv2d 3 3 dilation=2 pad=same activation=gelu\nglobalmaxpool\n",
    "flatten_output": "input 4x4x2\nconv2d 3 1\nflatten\n",
    "mlp": "input 6\ndense 8 activation=elu\nbatchnorm center=false scale=false\ndense 8 bias=false activation=silu\n"
    "dropout 0.0\ntanh\nsoftmax\n",
    "sequences": "input 7x3\nlstm 5 return_sequences=true\ngru 4 return_sequences=true go_backwards=true\n"
    "bidirectional simplernn 3 return_sequences=true\nglobalavgpool1d\ndense 2 name=head\n",
    "tokens": "input 6 dtype=int64\nembedding 20 4\nbidirectional gru 3 return_sequences=true\nlstm 2\n",
    "conv1d": "input 11x3\nconv1d 4 3 pad=causal dilation=2\nmaxpool1d 2 pad=same\nconv1d 4 4 pad=same\n"
    "avgpool1d 3 stride=2 pad=same\nconv1d 2 3 activation=relu\nglobalmaxpool1d\n",
}

KERAS_ONLY = {
    "masks": "input 8 dtype=int32\nembedding 30 6 mask_zero=true\nbidirectional lstm 4 return_sequences=true "
    "merge=sum\nbidirectional gru 3 merge=ave go_backwards=true\n",
    "masking": "input 6x2\nmasking -1.0\nsimplernn 4 return_sequences=true activation=relu\nglobalavgpool1d\n",
    "options": "input 5x4\nlstm 3 return_sequences=true unit_forget_bias=false recurrent_activation=tanh init=he_normal\n"
    "gru 3 return_sequences=true reset_after=false bias=false recurrent_init=glorot_normal\nbidirectional lstm 2 merge=mul\n"
    "dense 3 maxnorm=2.0 bias_init=ones init=normal\n",
    "init_names": "input 4x4x1\nzeropad2d top=1 right=2\nzeropad2d 1x2\nconv2d 2 3 maxnorm=1.5 init=lecun_uniform bias_init=uniform\nflatten\n"
    "dense 2 activation=softsign\n",
}


@pytest.mark.parametrize("text", [*BOTH_FRAMEWORKS.values(), *KERAS_ONLY.values()], ids=[*BOTH_FRAMEWORKS, *KERAS_ONLY])
def test_keras_round_trip_gives_the_same_model_and_outputs(text):
    model = layerdsl.parse(text)
    original = layerdsl.build(model, "keras")
    layerdsl.set_weights(original, random_weights(model))
    imported = layerdsl.from_keras(original)
    assert signature(imported.model) == signature(model)
    assert layerdsl.parse(imported.text) == imported.model  # the text is the model
    assert imported.notes == ()
    x = random_input(model, batch=3, padding="random")  # masks with gaps, where there are masks
    fresh = layerdsl.build(imported.model, "numpy")  # the backends agree (tested elsewhere); numpy is quick
    layerdsl.set_weights(fresh, imported.weights)
    np.testing.assert_allclose(fresh(x), run("keras", original, model, x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("text", BOTH_FRAMEWORKS.values(), ids=BOTH_FRAMEWORKS)
def test_torch_round_trip_gives_the_same_model_and_outputs(text):
    model = layerdsl.parse(text)
    original = layerdsl.build(model, "torch")
    layerdsl.set_weights(original, random_weights(model))
    imported = layerdsl.from_torch(original, torch_shape(model.input.shape))
    assert signature(imported.model)[1:] == signature(model)[1:]
    assert imported.model.name == model.name
    x = random_input(model, batch=3)
    assert_same_outputs("torch", original, model, imported, x)
    assert_same_outputs("numpy", layerdsl_numpy(model), model, imported, x)


def layerdsl_numpy(model):
    live = layerdsl.build(model, "numpy")
    layerdsl.set_weights(live, random_weights(model))
    return live


def test_imported_text_is_canonical_from_either_framework():
    model = layerdsl.parse(CONVNET)
    assert layerdsl.from_keras(layerdsl.build(model, "keras")).text == CONVNET
    assert layerdsl.from_torch(layerdsl.build(model, "torch"), (3, 12, 12)).text == CONVNET


# --- hand-written models ---------------------------------------------------------------------


def randomize(keras_model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in keras_model.layers:
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in v.name
                           else rng.normal(0, 0.4, w.shape).astype("float32")
                           for v, w in zip(layer.weights, layer.get_weights(), strict=True)])  # fmt: skip


def test_hand_written_keras_sequential_imports_with_equal_outputs():
    keras.utils.clear_session()  # Keras's default names (`re_lu`, not `re_lu_3`) are checked below
    original = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            layers.Conv2D(6, 3, padding="same", activation="relu", name="features"),
            layers.BatchNormalization(momentum=0.8, epsilon=1e-4),
            layers.MaxPooling2D(),
            layers.Conv2D(4, (3, 2), strides=(1, 2)),
            layers.Activation("swish"),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(7, kernel_initializer="he_uniform"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Softmax(),
        ],
        name="hand_made",
    )
    randomize(original)
    imported = layerdsl.from_keras(original)
    text = imported.text
    assert text.startswith("model hand_made\ninput 10x10x3\nconv2d 6 3 pad=same activation=relu name=features\n")
    assert "batchnorm eps=0.0001 momentum=0.8\n" in text
    # Keras's own names for weightless layers are kept too
    assert "conv2d 4 3x2 stride=1x2\nsilu\nrelu name=re_lu\nflatten\ndropout 0.3\ndense 7 init=he_uniform\n" in text
    assert text.endswith("leaky_relu name=leaky_re_lu\nsoftmax name=softmax\n")
    x = np.random.default_rng(1).normal(size=(4, 10, 10, 3)).astype("float32")
    for target in ("numpy", "torch"):
        live = layerdsl.build(imported.model, target)
        layerdsl.set_weights(live, imported.weights)
        got = run(target, live, imported.model, x)
        np.testing.assert_allclose(got, original(x, training=False), atol=ATOL, rtol=RTOL)


def test_hand_written_keras_functional_chain_with_masks_imports():
    keras.utils.clear_session()  # default names without a session's counters: no `name=` in the text
    inputs = keras.Input((9,), dtype="int32")
    x = layers.Embedding(40, 5, mask_zero=True)(inputs)
    x = layers.Bidirectional(layers.GRU(4, return_sequences=True))(x)
    x = layers.LSTM(3)(x)
    original = keras.Model(inputs, layers.Dense(2)(x))
    randomize(original)
    imported = layerdsl.from_keras(original)
    assert "embedding 40 5 mask_zero=true\nbidirectional gru 4 return_sequences=true\nlstm 3\n" in imported.text
    ids = np.random.default_rng(2).integers(1, 40, size=(3, 9)).astype("int32")
    ids[1, :4] = 0
    ids[2, [1, 5, 8]] = 0
    live = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(live, imported.weights)
    np.testing.assert_allclose(live(ids), original(ids, training=False), atol=ATOL, rtol=RTOL)


class TorchConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, momentum=0.2)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 4 * 4, 10)
        self.norm = nn.BatchNorm1d(10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        x = x.view(x.size(0), -1)  # torch's (C, H, W) feature order
        return nn.functional.softmax(self.norm(self.head(x)), dim=1)


def randomize_torch(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                low = 0.5 if "running_var" in name else -0.5
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + low)
    module.eval()


def test_hand_written_torch_module_imports_with_flatten_order_and_bn_momentum():
    original = TorchConvNet()
    randomize_torch(original)
    imported = layerdsl.from_torch(original, (3, 8, 8))
    assert imported.text == (
        "model torch_conv_net\ninput 8x8x3\nconv2d 8 3 pad=same name=conv\nbatchnorm eps=1e-05 momentum=0.8 name=bn\n"
        "relu\nmaxpool 2 name=pool\nflatten\ndense 10 name=head\nbatchnorm eps=1e-05 momentum=0.9 name=norm\nsoftmax\n"
    )
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype("float32")
    with torch.no_grad():
        expected = original(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    live = layerdsl.build(imported.model, "keras")  # canonical layout: (H, W, C) rows
    layerdsl.set_weights(live, imported.weights)
    np.testing.assert_allclose(run("keras", live, imported.model, x), expected, atol=ATOL, rtol=RTOL)


class TorchTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 6)
        self.encoder = nn.GRU(6, 5, batch_first=True, bidirectional=True)
        self.summary = nn.LSTM(10, 4, batch_first=True)
        self.head = nn.Sequential(nn.Linear(4, 3), nn.GELU(), nn.Dropout(0.1), nn.Linear(3, 2))

    def forward(self, ids):
        x = self.embed(ids)
        x, _ = self.encoder(x)
        out, (_h, _c) = self.summary(x)  # the final states go unused
        return self.head(out[:, -1])


def test_hand_written_torch_recurrent_module_imports_with_both_biases():
    original = TorchTagger()
    randomize_torch(original)
    imported = layerdsl.from_torch(original, (7,))
    assert imported.text == (
        "model torch_tagger\ninput 7 dtype=int64\nembedding 30 6 name=embed\n"
        "bidirectional gru 5 return_sequences=true name=encoder\nlstm 4 name=summary\n"
        "dense 3 name=head_0\ngelu name=head_1\ndropout 0.1 name=head_2\ndense 2 name=head_3\n"
    )
    ids = np.random.default_rng(4).integers(0, 30, size=(3, 7))
    with torch.no_grad():
        expected = original(torch.from_numpy(ids)).numpy()
    for target in ("keras", "numpy"):
        live = layerdsl.build(imported.model, target)
        layerdsl.set_weights(live, imported.weights)
        np.testing.assert_allclose(run(target, live, imported.model, ids), expected, atol=ATOL, rtol=RTOL)


def test_torch_activation_function_after_a_dense_becomes_its_fused_activation():
    model = layerdsl.parse("input 3\ndense 4\nrelu\n")
    imported = layerdsl.from_torch(layerdsl.build(model, "torch"), (3,))
    assert imported.text == "input 3\ndense 4 activation=relu\n"  # torch's forward is the same either way


def test_torch_padding_that_is_not_tensorflow_same_becomes_explicit_zeropad2d():
    original = nn.Sequential(nn.Conv2d(2, 3, 3, padding=2), nn.ZeroPad2d((1, 0, 2, 1)), nn.AvgPool2d(3, 1, padding=1))
    randomize_torch(original)
    imported = layerdsl.from_torch(original, (2, 6, 6))
    assert imported.text == (
        "model sequential\ninput 6x6x2\nzeropad2d 2\nconv2d 3 3\nzeropad2d top=2 bottom=1 left=1\n"
        "zeropad2d 1\navgpool 3 stride=1\n"  # torch's default count_include_pad averages the zeros in
    )
    x = np.random.default_rng(5).normal(size=(2, 6, 6, 2)).astype("float32")
    with torch.no_grad():
        expected = original(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    live = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(live, imported.weights)
    np.testing.assert_allclose(live(x), expected, atol=ATOL, rtol=RTOL)


def test_torch_sequential_gets_default_names():
    original = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Softplus(), nn.Linear(4, 2), nn.Tanh())
    imported = layerdsl.from_torch(original, (3, 4))
    assert imported.text == "model sequential\ninput 3x4\nflatten\ndense 4\nsoftplus\ndense 2\ntanh\n"


# --- what cannot be imported -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build_model", "message"),
    [
        (lambda: keras.Sequential([keras.Input((4, 4, 4, 1)), layers.Conv3D(2, 3, name="conv3d_3")]),
         "cannot import layer 'conv3d_3' (Conv3D): layerdsl has no conv3d"),
        (lambda: keras.Sequential([keras.Input((4,)), layers.LeakyReLU(name="lr")]),
         "cannot import layer 'lr' (LeakyReLU): negative_slope=0.3: layerdsl's leaky_relu has slope 0.2"),
        (lambda: keras.Sequential([keras.Input((4,)), layers.Dense(2, kernel_regularizer="l2", name="d")]),
         "cannot import layer 'd' (Dense): kernel_regularizer is set, and layerdsl has no regularizers"),
        (lambda: keras.Sequential([keras.Input((3, 4)), layers.LSTM(2, dropout=0.5, name="l")]),
         "cannot import layer 'l' (LSTM): dropout=0.5"),
        (lambda: keras.Sequential([keras.Input((None, 4)), layers.LSTM(2)]), "unknown dimensions"),
    ],
    ids=["conv3d", "leaky_slope", "regularizer", "rnn_dropout", "variable_length"],
)  # fmt: skip
def test_keras_layers_layerdsl_cannot_express_are_refused_by_name(build_model, message):
    with pytest.raises(layerdsl.ModelImportError, match="") as info:
        layerdsl.from_keras(build_model())
    assert message in str(info.value)
    assert isinstance(info.value, layerdsl.LayerDSLError)


def test_keras_graph_that_is_not_a_chain_is_refused():
    inputs = keras.Input((4,))
    hidden = layers.Dense(4, name="hidden")(inputs)
    outputs = layers.Dense(4, name="skip")(layers.Add(name="add")([inputs, hidden]))
    with pytest.raises(layerdsl.ModelImportError, match="'add' \\(Add\\): it takes 2 inputs"):
        layerdsl.from_keras(keras.Model(inputs, outputs))


@pytest.mark.parametrize(
    ("module", "shape", "message"),
    [
        (nn.Sequential(nn.Conv3d(1, 2, 3)), (1, 4, 4, 4), "cannot import layer '0' (Conv3d): layerdsl has no conv3d"),
        (nn.Sequential(nn.MaxPool2d(2, padding=1)), (1, 6, 6), "neither none nor TensorFlow's `same`"),
        (nn.Sequential(nn.ConstantPad2d(1, 3.0)), (1, 6, 6), "layerdsl has no explicit padding"),
        (nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(4)), (4, 3), "it normalizes dim 1, the timesteps"),
        (nn.Sequential(nn.LeakyReLU()), (3,), "negative_slope=0.01"),
        (nn.Sequential(nn.Softmax(dim=1)), (4, 3), "softmax over dim=1"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), (1, 5, 5), "(C, H, W) feature order reaches the output"),
        (nn.LSTM(3, 2), (4, 3), "'0' (LSTM): batch_first=False"),
    ],
    ids=[
        "conv3d",
        "maxpool_padding",
        "constant_pad",
        "bn_on_sequence",
        "leaky_slope",
        "softmax_time",
        "flatten_out",
        "lstm",
    ],
)
def test_torch_modules_layerdsl_cannot_express_are_refused_by_name(module, shape, message):
    with pytest.raises(layerdsl.ModelImportError) as info:
        layerdsl.from_torch(module, shape)
    assert message in str(info.value)


class LastStepOfBidirectional(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 2, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.rnn(x)[0][:, -1]


def test_torch_bidirectional_last_step_is_refused_with_the_reason():
    with pytest.raises(layerdsl.ModelImportError, match="'rnn' \\(LSTM\\): out\\[:, -1\\] of a bidirectional"):
        layerdsl.from_torch(LastStepOfBidirectional(), (5, 3))


def test_initializer_without_a_dsl_name_becomes_a_note_not_an_error():
    original = keras.Sequential(
        [keras.Input((3,)), layers.Dense(2, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5), name="d")]
    )
    imported = layerdsl.from_keras(original)
    assert "dense 2 name=d\n" in imported.text
    assert len(imported.notes) == 1 and "RandomNormal" in imported.notes[0]
    np.testing.assert_array_equal(imported.weights["d.kernel"], original.layers[0].kernel)


def test_import_layerdsl_imports_neither_torch_nor_keras():
    code = "import sys, layerdsl; layerdsl.from_keras; layerdsl.from_torch; print('torch' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr


# --- the command line ----------------------------------------------------------------------


def test_cli_import_writes_text_and_weights(tmp_path, capsys):
    model = layerdsl.parse(CONVNET)
    original = layerdsl.build(model, "keras")
    weights = random_weights(model)
    layerdsl.set_weights(original, weights)
    path = tmp_path / "convnet.keras"
    original.save(path)
    out, npz = tmp_path / "convnet.layers", tmp_path / "convnet.npz"
    assert cli.main(["import", str(path), "-o", str(out), "--weights", str(npz)]) == cli.EXIT_OK
    assert out.read_text() == CONVNET
    loaded = layerdsl.load_weights(npz)
    assert loaded.keys() == weights.keys()
    for key, value in weights.items():
        np.testing.assert_array_equal(loaded[key], value)
    assert cli.main(["import", str(path)]) == cli.EXIT_OK
    assert capsys.readouterr().out == out.read_text()


def test_cli_import_reports_an_unsupported_layer_against_the_file(tmp_path, capsys):
    path = tmp_path / "volume.keras"
    keras.Sequential([keras.Input((4, 4, 4, 1)), layers.Conv3D(2, 3, name="conv3d")]).save(path)
    out = tmp_path / "volume.layers"
    assert cli.main(["import", str(path), "-o", str(out)]) == cli.EXIT_MODEL_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: error: cannot import layer 'conv3d' (Conv3D): layerdsl has no conv3d")
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".h5", ".pt", ".pkl"])
def test_cli_import_refuses_formats_that_can_run_code(tmp_path, capsys, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not even read")
    out = tmp_path / "out.layers"
    assert cli.main(["import", str(path), "-o", str(out)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "can run arbitrary code" in err and "pickle" in err and ".keras" in err
    assert not out.exists()
