"""The ONNX target: valid models (onnx.checker, full check) whose onnxruntime outputs equal the NumPy backend's.

Every example file (big images shrunk), every recurrence with pre-, post- and arbitrary padding, the
exported graph's interface (names, layouts, dynamic batch), and the CLI's refusals. The equivalence
harness (tests/test_equivalence.py) also runs ONNX as a fourth backend on every layer case.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import cli, testing
from layerdsl.backends import onnx_backend

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Example -> image side to shrink it to (the architectures hold at any multiple of their total stride).
SHRUNK = {"vgg16": 32, "resnet50": 32, "resnet18": 32, "mobilenet_v2": 32, "inception": 8, "unet": 16}


def example(name: str) -> layerdsl.Model:
    text = (EXAMPLES / f"{name}.layers").read_text()
    if name in SHRUNK:
        side = SHRUNK[name]
        text = re.sub(r"^input \d+x\d+x(\d+)", rf"input {side}x{side}x\1", text, count=1, flags=re.M)
    return layerdsl.parse(text, filename=f"{name}.layers")


def run_onnx(proto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def run_numpy(model: layerdsl.Model, weights: dict, x: np.ndarray) -> np.ndarray:
    live = layerdsl.build(model, target="numpy")
    layerdsl.set_weights(live, weights)
    return live(x)


def assert_onnx_matches_numpy(model: layerdsl.Model, x: np.ndarray, weights: dict | None = None, **options) -> None:
    weights = weights if weights is not None else testing.random_weights(model, seed=3)
    proto = layerdsl.to_onnx(model, weights, **options)
    onnx.checker.check_model(proto, full_check=True)
    got, expected = run_onnx(proto, x), run_numpy(model, weights, x)
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=testing.ATOL, rtol=testing.RTOL)


# --- every example ---------------------------------------------------------------------------

EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.layers"))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_example_exports_a_valid_model_that_computes_what_numpy_does(name):
    model = example(name)
    paddings = ("pre", "post", "random") if model.input.dtype.startswith("int") or name == "masked_timeseries" else ("pre",)
    for padding in paddings:
        assert_onnx_matches_numpy(model, testing.random_input(model, batch=3, seed=5, padding=padding))


# --- recurrences: native operators without a mask, Scan loops with one ---------------------------

RECURRENT = {
    "lstm": "lstm 5",
    "lstm_sequences": "lstm 5 return_sequences=true",
    "lstm_backwards": "lstm 5 go_backwards=true return_sequences=true",
    "gru": "gru 4 return_sequences=true",
    "gru_no_reset_after": "gru 4 reset_after=false return_sequences=true",
    "gru_backwards_last": "gru 4 go_backwards=true",
    "simplernn": "simplernn 4 return_sequences=true",
    "simplernn_relu_backwards": "simplernn 4 activation=relu go_backwards=true",
    "lstm_gelu_elu": "lstm 4 activation=gelu recurrent_activation=elu",  # activations ONNX's LSTM lacks: a Scan
    "lstm_no_bias": "lstm 4 bias=false unit_forget_bias=false return_sequences=true",
    "bidirectional_lstm": "bidirectional lstm 4",
    "bidirectional_gru_sequences": "bidirectional gru 4 return_sequences=true merge=ave",
    "bidirectional_simplernn_backwards": "bidirectional simplernn 3 go_backwards=true return_sequences=true merge=mul",
    "bidirectional_lstm_sum": "bidirectional lstm 3 return_sequences=true merge=sum",
}


@pytest.mark.parametrize("padding", ["pre", "post", "random"])
@pytest.mark.parametrize("masked_by", ["embedding", "masking"])
@pytest.mark.parametrize("layer", RECURRENT.values(), ids=RECURRENT.keys())
def test_masked_recurrences_equal_keras_semantics_for_any_padding(layer, masked_by, padding):
    head = "input 9 dtype=int32\nembedding 30 6 mask_zero=true" if masked_by == "embedding" else "input 9x3\nmasking 0.0"
    model = layerdsl.parse(f"{head}\n{layer}")
    x = testing.random_input(model, batch=5, seed=7, padding=padding)
    assert_onnx_matches_numpy(model, x)


@pytest.mark.parametrize("layer", RECURRENT.values(), ids=RECURRENT.keys())
def test_unmasked_recurrences_equal_numpy(layer):
    model = layerdsl.parse(f"input 9x3\n{layer}")
    assert_onnx_matches_numpy(model, testing.random_input(model, batch=3, seed=2))


def test_a_row_of_nothing_but_padding_keeps_the_initial_state():
    model = layerdsl.parse("input 6 dtype=int32\nembedding 20 4 mask_zero=true\nlstm 3 return_sequences=true\ngru 2")
    x = np.array([[0, 0, 0, 0, 0, 0], [3, 0, 5, 0, 0, 7], [0, 0, 2, 9, 1, 4]], dtype=np.int32)
    assert_onnx_matches_numpy(model, x)


def test_masked_recurrences_are_scan_loops_and_unmasked_ones_onnx_operators():
    masked = layerdsl.to_onnx(layerdsl.parse("input 9x3\nmasking\nlstm 4 return_sequences=true\ngru 3"))
    assert [n.op_type for n in masked.graph.node].count("Scan") == 2
    assert not {"LSTM", "GRU"} & {n.op_type for n in masked.graph.node}
    plain = layerdsl.to_onnx(layerdsl.parse("input 9x3\nlstm 4 return_sequences=true\ngru 3\ndense 2"))
    ops = {n.op_type: n for n in plain.graph.node}
    assert "Scan" not in ops
    for op_type in ("LSTM", "GRU"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in ops[op_type].attribute}
        assert attrs.get("layout", 0) == 0  # onnxruntime refuses layout=1
    gru_attrs = {a.name: onnx.helper.get_attribute_value(a) for a in ops["GRU"].attribute}
    assert gru_attrs["linear_before_reset"] == 1  # Keras's reset_after=true


# --- the exported graph's interface --------------------------------------------------------------


def test_the_graph_is_named_after_the_dsl_and_its_batch_axis_is_dynamic(tmp_path):
    path = tmp_path / "deep" / "net.layers"
    path.parent.mkdir()
    path.write_text("model net\ninput 8x8x3\nconv2d 4 3 name=stem | relu\nflatten\ndense 2 name=head\n")
    proto = layerdsl.to_onnx(layerdsl.load(path))
    assert "net.layers" in proto.doc_string and str(tmp_path) not in proto.SerializeToString().decode("latin-1")
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "input" and dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [8, 8, 3]
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim[1:]] == [2]
    assert {"stem.kernel", "stem.bias", "head.kernel", "head.bias"} <= {i.name for i in proto.graph.initializer}
    assert {"stem", "head"} <= {n.name for n in proto.graph.node}
    assert proto.opset_import[0].version == 17
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
    assert run_onnx(proto, x).shape == (5, 2)


def test_a_channels_first_input_is_taken_channels_first():
    model = layerdsl.parse("input 3x6x5 layout=channels_first\nconv2d 4 3 | flatten | dense 2")
    dims = layerdsl.to_onnx(model).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 6, 5]
    assert_onnx_matches_numpy(model, testing.random_input(model, batch=2))


def test_convolutions_stay_channels_first_between_them():
    proto = layerdsl.to_onnx(example("resnet18"))
    transposes = [n for n in proto.graph.node if n.op_type == "Transpose"]
    assert len(transposes) == 1  # the input, once: resnet18 ends in globalavgpool, which reads either layout


@pytest.mark.parametrize("opset", [17, 18, 21])
def test_later_opsets_compute_the_same(opset):
    model = layerdsl.parse("input 7 dtype=int32\nembedding 20 4 mask_zero=true\nlstm 3 return_sequences=true\nglobalavgpool1d\ndense 2")
    proto = layerdsl.to_onnx(model, opset=opset)
    assert proto.opset_import[0].version == opset
    assert_onnx_matches_numpy(model, testing.random_input(model, batch=3, padding="random"), opset=opset)
    image = layerdsl.parse("input 6x6x2\nglobalmaxpool | dense 2")
    assert_onnx_matches_numpy(image, testing.random_input(image, batch=2), opset=opset)


def test_without_weights_they_are_drawn_from_the_dsl_initializers_with_the_seed():
    model = example("mnist_convnet")
    x = testing.random_input(model, batch=2)
    numpy_model = layerdsl.build(model, target="numpy", seed=4)
    np.testing.assert_allclose(run_onnx(layerdsl.to_onnx(model, seed=4), x), numpy_model(x), atol=1e-5, rtol=1e-4)
    assert not np.allclose(run_onnx(layerdsl.to_onnx(model, seed=5), x), numpy_model(x))


def test_compile_returns_the_serialized_model():
    model = example("mlp")
    weights = testing.random_weights(model)
    data = layerdsl.compile(model, "onnx", weights=weights)
    assert isinstance(data, bytes)
    assert onnx.load_from_string(data) == layerdsl.to_onnx(model, weights)
    with pytest.raises(TypeError):
        layerdsl.compile(model, "numpy", weights=weights)


def test_live_onnx_models_take_and_give_canonical_weights():
    model = example("convnet_same")
    live = layerdsl.build(model, target="onnx")
    weights = testing.random_weights(model, seed=9)
    layerdsl.set_weights(live, weights)
    got = layerdsl.get_weights(live)
    assert got.keys() == weights.keys()
    x = testing.random_input(model, batch=2)
    np.testing.assert_allclose(live(x), run_numpy(model, weights, x), atol=1e-5, rtol=1e-4)


def test_bad_weights_and_opsets_are_refused():
    model = layerdsl.parse("dense 3 in=2 | dense 1")
    weights = testing.random_weights(model)
    with pytest.raises(layerdsl.WeightsError, match=r"missing dense_1\.bias"):
        layerdsl.to_onnx(model, {k: v for k, v in weights.items() if k != "dense_1.bias"})
    with pytest.raises(layerdsl.WeightsError, match=r"unexpected extra\.kernel"):
        layerdsl.to_onnx(model, {**weights, "extra.kernel": np.zeros(2)})
    with pytest.raises(layerdsl.WeightsError, match=r"dense\.kernel` has shape \(3, 2\)"):
        layerdsl.to_onnx(model, {**weights, "dense.kernel": np.zeros((3, 2))})
    with pytest.raises(layerdsl.LayerDSLError, match="opset 16 is not supported"):
        layerdsl.to_onnx(model, opset=16)


def test_an_unsupported_layer_is_refused_with_its_reason(monkeypatch):
    monkeypatch.setitem(onnx_backend.UNSUPPORTED, "dense", "no reason but a test")
    with pytest.raises(layerdsl.LayerDSLError, match="cannot realize `dense`: no reason but a test"):
        layerdsl.to_onnx(layerdsl.parse("dense 3 in=2"))


def test_the_equivalence_harness_runs_onnx_against_numpy():
    targets = testing.available_targets()
    assert "onnx" in targets
    result = testing.compare("input 5x5x2\nconv2d 3 3 pad=same | softmax", [t for t in targets if t != "torch"], batch=2)
    assert result.reference_of("onnx") == "numpy"  # whichever the common reference (keras, when installed)
    assert result.max_abs_diff["onnx"] < 1e-5


def test_import_parse_and_compile_do_not_import_onnx():
    code = (
        "import sys, layerdsl; m = layerdsl.parse('dense 3 in=2'); layerdsl.compile(m, 'numpy'); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('onnx', 'onnxruntime')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


# --- the command line ------------------------------------------------------------------------------

GOOD = "model tiny\ninput 6x6x2\nconv2d 3 3 pad=same | batchnorm | relu\nflatten\ndense 2\n"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "layerdsl", *args], capture_output=True, cwd=cwd, timeout=120, text=True
    )


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.layers"
    path.write_text(GOOD)
    return path


def test_cli_writes_the_model_with_the_given_weights(tiny, tmp_path):
    model = layerdsl.load(tiny)
    weights = testing.random_weights(model, seed=1)
    layerdsl.save_weights(tmp_path / "w.npz", weights)
    out = tmp_path / "tiny.onnx"
    result = run_cli("compile", "tiny.layers", "--target", "onnx", "-o", "tiny.onnx", "--weights", "w.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    x = testing.random_input(model, batch=2)
    np.testing.assert_allclose(run_onnx(proto, x), run_numpy(model, weights, x), atol=1e-5, rtol=1e-4)


def test_cli_seed_and_opset(tiny, tmp_path):
    args = ("compile", "tiny.layers", "--target", "onnx", "--opset", "18", "--seed", "2")
    assert run_cli(*args, "-o", "a.onnx", cwd=tmp_path).returncode == 0
    assert run_cli(*args, "-o", "b.onnx", cwd=tmp_path).returncode == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert onnx.load(str(tmp_path / "a.onnx")).opset_import[0].version == 18


@pytest.mark.parametrize("output", [None, "-"])
def test_cli_onnx_without_an_output_file_is_a_usage_error(tiny, tmp_path, output):
    result = run_cli("compile", "tiny.layers", "--target", "onnx", *(["-o", output] if output else []), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "-o MODEL.onnx" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.layers"]


def _bad_weights(model: layerdsl.Model, how: str) -> dict:
    weights = testing.random_weights(model)
    if how == "missing":
        del weights["dense.bias"]
    elif how == "extra":
        weights["dense.gain"] = np.ones(2, dtype=np.float32)
    else:
        weights["dense.kernel"] = np.ones((3, 2), dtype=np.float32)
    return weights


@pytest.mark.parametrize(
    ("how", "message"),
    [("missing", "missing dense.bias"), ("extra", "unexpected dense.gain"), ("misshapen", "`dense.kernel` has shape (3, 2)")],
)
def test_cli_bad_weights_write_nothing(tiny, tmp_path, how, message):
    layerdsl.save_weights(tmp_path / "w.npz", _bad_weights(layerdsl.load(tiny), how))
    (tmp_path / "kept.onnx").write_bytes(b"precious")
    for out in ("new.onnx", "kept.onnx"):
        result = run_cli("compile", "tiny.layers", "--target", "onnx", "-o", out, "--weights", "w.npz", cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr.startswith("w.npz: error: weights do not match") or "w.npz: error: weight" in result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.onnx", "tiny.layers", "w.npz"]
    assert (tmp_path / "kept.onnx").read_bytes() == b"precious"


def test_cli_missing_weights_file_is_a_usage_error(tiny, tmp_path):
    result = run_cli("compile", "tiny.layers", "--target", "onnx", "-o", "m.onnx", "--weights", "nope.npz", cwd=tmp_path)
    assert result.returncode == 2 and "nope.npz: no such file" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_cli_unsupported_layer_writes_nothing(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(onnx_backend.UNSUPPORTED, "batchnorm", "a reason given by the test")
    out = tmp_path / "m.onnx"
    assert cli.main(["compile", str(tiny), "--target", "onnx", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{tiny}:3:" in err and "cannot realize `batchnorm`: a reason given by the test" in err
    assert not out.exists()


def test_cli_onnx_options_are_refused_for_source_targets(tiny, tmp_path):
    result = run_cli("compile", "tiny.layers", "--target", "numpy", "--opset", "18", cwd=tmp_path)
    assert result.returncode == 2 and "--opset: only for --target onnx" in result.stderr
