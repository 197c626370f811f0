"""Importing Keras and torch models: the same model back (IR and outputs), hand-written models, errors, CLI."""

import subprocess
import sys
from pathlib import Path

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


def test_keras_add_of_the_input_and_a_layer_imports_as_residual():
    inputs = keras.Input((4,))
    hidden = layers.Dense(4, name="hidden")(inputs)
    outputs = layers.Dense(4, name="skip")(layers.Add(name="add")([inputs, hidden]))
    original = keras.Model(inputs, outputs, name="skipper")
    randomize(original)
    imported = layerdsl.from_keras(original)
    assert imported.text == "model skipper\ninput 4\nresidual {\n  dense 4 name=hidden\n}\ndense 4 name=skip\n"
    assert imported.model.layer("add").inputs == ("input", "hidden")
    x = np.random.default_rng(6).normal(size=(3, 4)).astype("float32")
    live = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(live, imported.weights)
    np.testing.assert_allclose(live(x), original(x), atol=ATOL, rtol=RTOL)


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


# --- graphs: branches, residuals, taps -----------------------------------------------------------


def keras_functional_with_merges():
    keras.utils.clear_session()
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="res1_a")(x)
    y = layers.Conv2D(8, 3, padding="same", name="res1_b")(y)
    x = layers.Add(name="res1")([x, y])  # identity shortcut
    main = layers.Conv2D(12, 3, strides=2, padding="same", name="res2_main")(x)
    shortcut = layers.BatchNormalization(name="res2_bn")(layers.Conv2D(12, 1, strides=2, name="res2_proj")(x))
    x = layers.Add(name="res2")([shortcut, main])  # projection shortcut
    x = layers.Concatenate(name="mixed")(
        [
            layers.Conv2D(4, 1, name="branch_1x1")(x),
            layers.Conv2D(6, 3, padding="same", activation="relu", name="branch_3x3")(x),
            layers.MaxPooling2D(3, strides=1, padding="same", name="branch_pool")(x),
        ]
    )
    gate = layers.Conv2D(22, 1, activation="sigmoid", name="gate")(x)
    x = layers.Multiply(name="gated")([x, gate])
    x = layers.Average(name="blend")([x, layers.Conv2D(22, 1, name="blend_conv")(x)])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(5, name="head")(x), name="merges")


def test_keras_functional_model_with_residual_adds_and_concatenate_imports_with_equal_outputs():
    original = keras_functional_with_merges()
    randomize(original)
    imported = layerdsl.from_keras(original)
    text = imported.text
    assert "add name=res1 { } {\n  conv2d 8 3 pad=same activation=relu name=res1_a\n" in text
    assert "add name=res2 {\n  conv2d 12 1 stride=2 name=res2_proj\n  batchnorm name=res2_bn\n} {\n  conv2d 12 3" in text
    assert "concat name=mixed {\n  conv2d 4 1 name=branch_1x1\n} {\n  conv2d 6 3 pad=same" in text
    assert "\n} {\n  maxpool 3 stride=1 pad=same name=branch_pool\n}\n" in text
    assert "multiply name=gated { } {\n  conv2d 22 1 activation=sigmoid name=gate\n}\n" in text
    assert "average name=blend { } {\n  conv2d 22 1 name=blend_conv\n}\n" in text
    x = np.random.default_rng(7).normal(size=(3, 8, 8, 3)).astype("float32")
    expected = np.asarray(original(x, training=False))
    for target in ("numpy", "torch"):
        live = layerdsl.build(imported.model, target)
        layerdsl.set_weights(live, imported.weights)
        np.testing.assert_allclose(run(target, live, imported.model, x), expected, atol=ATOL, rtol=RTOL)


GRAPHS = {
    "tiny_resnet": (Path(__file__).parent.parent / "docs" / "tiny_resnet.layers").read_text(),
    "branches": "input 6x6x2\nconv2d 4 1\nconcat { conv2d 3 1 } { } { maxpool 3 stride=1 pad=same }\n"
    "residual { conv2d 11 3 pad=same | relu }\nmultiply { } { conv2d 11 1 activation=sigmoid }\nflatten\ndense 3\n",
    "taps": "input 5x5x2\nconv2d 3 3 pad=same\ntap a\nrelu\ntap b\nconv2d 3 1\nconcat @a @b\n",
}


def _without_activations(model):
    """The layers but activation layers, without their `activation=` (outputs are compared too)."""
    layers_ = [y for y in model.layers if y.kind != "activation"]
    return sorted(
        ((y.kind, y.name, tuple((k, v) for k, v in y.args.items() if k != "activation"), y.output_shape) for y in layers_),
        key=str,
    )


@pytest.mark.parametrize("text", GRAPHS.values(), ids=GRAPHS)
@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_graph_round_trip_gives_the_same_layers_and_outputs(framework, text):
    model = layerdsl.parse(text)
    original = layerdsl.build(model, framework)
    layerdsl.set_weights(original, random_weights(model))
    if framework == "keras":
        imported = layerdsl.from_keras(original)
    else:
        imported = layerdsl.from_torch(original, torch_shape(model.input.shape))
    assert layerdsl.parse(imported.text) == imported.model
    if framework == "keras":  # the same layers (an add's two inputs may come back in the other order: the same sum),
        # but for `conv2d ... | relu`, which the Keras model holds as one Conv2D(activation="relu")
        assert _without_activations(imported.model) == _without_activations(model)
    else:  # torch's forward cannot tell `dense 10 | softmax` from `dense 10 activation=softmax`
        assert imported.model.total_params == model.total_params
    merges = ("add", "concat", "multiply")
    assert sorted(y.kind for y in imported.model.layers if y.kind in merges) == sorted(
        y.kind for y in model.layers if y.kind in merges
    )
    x = random_input(model, batch=2)
    assert_same_outputs(framework, original, model, imported, x)


class NotNested(nn.Module):
    """DenseNet's pattern: each concatenation reads tensors from before the branch that feeds it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(7, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        z = self.b(torch.cat([x, y], 1))
        return torch.cat([x, y, z], dim=1)


def assert_torch_imports_with_equal_outputs(module, shape, seed=0):
    randomize_torch(module, seed)
    imported = layerdsl.from_torch(module, shape)
    x = np.random.default_rng(seed).normal(size=(2, *shape)).astype("float32")
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    channels_last = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    for target in ("numpy", "torch"):
        live = layerdsl.build(imported.model, target)
        layerdsl.set_weights(live, imported.weights)
        got = run(target, live, imported.model, channels_last)
        if got.ndim == 4:
            got = got.transpose(0, 3, 1, 2)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    return imported


def test_torch_graph_whose_branches_do_not_nest_is_written_with_taps():
    imported = assert_torch_imports_with_equal_outputs(NotNested(), (3, 6, 6))
    assert imported.text == (
        "model not_nested\ninput 6x6x3\ntap model_input\nconv2d 4 3 pad=same activation=relu name=a\ntap a\n"
        "@model_input\nconcat @a\nconv2d 4 3 pad=same name=b\ntap b\n@model_input\nconcat @a @b\n"
    )


class SelfGated(nn.Module):
    def forward(self, x):
        return x * x + torch.sigmoid(x)


def test_torch_merges_of_a_tensor_with_itself_and_with_a_function_of_it():
    imported = assert_torch_imports_with_equal_outputs(SelfGated(), (4,))
    assert imported.text == "model self_gated\ninput 4\nresidual {\n  multiply { } { }\n} {\n  sigmoid\n}\n"


# --- adaptive pools and ceil_mode: accepted where exact ------------------------------------------


@pytest.mark.parametrize(
    ("module", "shape", "expected"),
    [
        (nn.Sequential(nn.Conv2d(2, 3, 1), nn.AdaptiveAvgPool2d((4, 4))), (2, 4, 4), "conv2d 3 1\n"),
        (nn.Sequential(nn.AdaptiveAvgPool2d(1)), (2, 4, 3), "globalavgpool\nreshape 1x1x2\n"),
        (nn.Sequential(nn.AdaptiveMaxPool2d((1, 1)), nn.Flatten()), (2, 4, 3), "globalmaxpool\n"),
        (nn.Sequential(nn.AdaptiveAvgPool2d((2, 3))), (2, 6, 9), "avgpool 3\n"),
        (nn.Sequential(nn.AdaptiveMaxPool2d((3, 2))), (2, 6, 8), "maxpool 2x4\n"),
        (nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True)), (2, 7, 9), "maxpool 3 stride=2\n"),
        (nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True)), (2, 8, 6), "maxpool 3 stride=2 pad=same\n"),
        (nn.Sequential(nn.AvgPool2d(2, ceil_mode=True)), (2, 5, 7), "avgpool 2 pad=same\n"),
        (nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 2, padding=1)), (2, 8, 8), "relu\nzeropad2d 1\nmaxpool 3 stride=2\n"),
    ],
    ids=[
        "adaptive_identity",
        "adaptive_global_keeps_axes",
        "adaptive_global_flattened",
        "adaptive_tiles",
        "adaptive_max_tiles",
        "ceil_valid",
        "ceil_same",
        "ceil_avg_same",
        "max_pad_after_relu",
    ],
)
def test_torch_pools_import_where_exact_by_shape(module, shape, expected):
    imported = assert_torch_imports_with_equal_outputs(module, shape)
    body = imported.text.split("\n", 2)[2]  # after `model` and `input`
    assert body == expected


@pytest.mark.parametrize(
    ("module", "shape", "message"),
    [
        (nn.Sequential(nn.AdaptiveAvgPool2d(3)), (1, 8, 8), "output size 3x3 from a 8x8 input: its windows differ"),
        (nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True)), (1, 7, 8), "ceil_mode=True: on a 7x8 input its output 3x4"),
        (nn.Sequential(nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)), (1, 8, 8), "ceil_mode=True with padding"),
        (nn.Sequential(nn.Tanh(), nn.MaxPool2d(3, 2, padding=1)), (1, 8, 8), "neither none nor TensorFlow's `same`"),
    ],
    ids=["adaptive_uneven", "ceil_mixed", "ceil_padding", "max_pad_after_tanh"],
)
def test_torch_pools_that_are_not_exact_are_refused_with_the_reason(module, shape, message):
    with pytest.raises(layerdsl.ModelImportError) as info:
        layerdsl.from_torch(module, shape)
    assert message in str(info.value)


# --- graphs layerdsl cannot express ----------------------------------------------------------------


class TwoInputs(nn.Module):
    def forward(self, a, b):
        return a + b


class TwoOutputs(nn.Module):
    def forward(self, x):
        return x.relu(), x.tanh()


class PlusOne(nn.Module):
    def forward(self, x):
        return x + 1


class Broadcast(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return x + self.pool(x)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (TwoInputs(), "the module's forward takes 2 inputs; layerdsl models have one input"),
        (TwoOutputs(), "the module returns several values"),
        (PlusOne(), "'add' (add): layerdsl's add merges two tensors; it has no arithmetic with constants"),
        (Broadcast(), "it broadcasts (2, 3, 3) and (2, 1, 1); layerdsl's add takes equal shapes"),
    ],
    ids=["two_inputs", "two_outputs", "constant", "broadcast"],
)
def test_torch_graphs_layerdsl_cannot_express_are_refused_with_the_reason(module, message):
    with pytest.raises(layerdsl.ModelImportError) as info:
        layerdsl.from_torch(module, (2, 3, 3))
    assert message in str(info.value)


def test_keras_model_that_adds_its_two_inputs_imports_with_both_named():
    a, b = keras.Input((3,), name="left"), keras.Input((3,), name="right")
    imported = layerdsl.from_keras(keras.Model([a, b], layers.Add()([a, b])))
    assert imported.text.split("\n", 1)[1] == "input 3 name=left\ninput 3 name=right\n@left\nadd @right\n"
    live = layerdsl.build(imported.model, "numpy")
    x, y = np.ones((2, 3), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(live(x, y), x + y)


def test_torch_weights_go_through_the_torch_backends_layout_code():
    from layerdsl.backends import torch_backend, torch_weights
    from layerdsl.importers import torch as torch_importer

    for name in ("to_keras", "to_torch", "permutation", "feature_indexed"):
        assert getattr(torch_backend, name) is getattr(torch_weights, name)
    assert torch_importer.to_keras is torch_weights.to_keras


def test_cli_imports_a_functional_keras_model_with_merges(tmp_path, capsys):
    original = keras_functional_with_merges()
    randomize(original)
    path = tmp_path / "merges.keras"
    original.save(path)
    out, npz = tmp_path / "merges.layers", tmp_path / "merges.npz"
    assert cli.main(["import", str(path), "-o", str(out), "--weights", str(npz)]) == cli.EXIT_OK
    imported = layerdsl.from_keras(original)
    assert out.read_text() == imported.text
    live = layerdsl.build(layerdsl.load(out), "numpy")
    layerdsl.set_weights(live, layerdsl.load_weights(npz))
    x = np.random.default_rng(8).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(live(x), original(x, training=False), atol=ATOL, rtol=RTOL)
