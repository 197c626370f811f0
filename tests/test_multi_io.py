"""Models with several inputs and several outputs: the language, every backend, the tools, from_keras."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import layerdsl
from layerdsl import LayerCheckError, LayerDSLError
from layerdsl.testing import assert_backends_agree, random_input, random_weights, run

TWO_INPUTS = """\
model token_segments
input 16 dtype=int32 name=ids
embedding 100 8
tap tok
input 16 dtype=int32 name=segments
embedding 2 8
add @tok
layernorm
globalavgpool1d
dense 4
"""

TWO_OUTPUTS = """\
model two_heads
input 12
dense 16
batchnorm
relu
tap trunk
dense 3
softmax
tap label
@trunk
dense 1
tap score
output @label @score
"""

#: Two inputs, one read by a merge far from where it is declared, with blocks on both chains, and two outputs.
GRAPH = """\
model graph_io
block mlp units {
  dense units
  relu
}
input 10 name=features
mlp 8
tap a
input 6 name=context
mlp 8
add @a
tap merged
dense 2
tap first
@merged
concat @features
dense 3
tap second
output @second @first
"""

#: Images, one input fed channels-first, and a flatten that feeds a dense (torch permutes its features).
IMAGES = """\
input 8x8x3 name=image
conv2d 4 3 pad=same | relu
tap a
input 3x8x8 layout=channels_first name=depth
conv2d 4 3 pad=same
add @a
flatten
dense 5
tap logits
@a
globalavgpool
dense 2
tap aux
output @logits @aux
"""

#: A Keras mask on each chain, each consumed by a recurrence before the merge.
MASKED = """\
input 10 dtype=int32 name=words
embedding 50 6 mask_zero=true
lstm 5
tap w
input 7 dtype=int32 name=chars
embedding 20 6 mask_zero=true
gru 5
concat @w
dense 3
"""

#: Cross-attention whose queries and memory are two model inputs, and two outputs.
CROSS_ATTENTION = """\
input 4x8 name=queries
input 6x3 name=memory
@queries
attention 2 4 @memory
tap att
globalavgpool1d
dense 2
tap cls
@att
dense 1
tap per_step
output @cls @per_step
"""

#: Two masks alive at once: the first chain's is read after the second chain made and used its own.
TWO_MASKS = """\
input 10 dtype=int32 name=ids
embedding 50 6 mask_zero=true
tap tok
input 7 dtype=int32 name=chars
embedding 20 6 mask_zero=true
gru 5
tap c
@tok
globalavgpool1d
concat @c
dense 3
"""


def test_two_inputs_are_named_inputs_in_the_ir():
    model = layerdsl.parse(TWO_INPUTS)
    assert model.input_names == ("ids", "segments")
    assert model.input.name == "ids"
    assert [i.dtype for i in model.inputs] == ["int32", "int32"]
    assert model.layer("embedding").inputs == ("ids",)
    assert model.layer("embedding_1").inputs == ("segments",)
    assert model.layer("add").inputs == ("embedding_1", "embedding")
    assert model.outputs == ("dense",)
    assert not model.is_sequential


def test_output_directive_declares_the_outputs_in_order():
    model = layerdsl.parse(TWO_OUTPUTS)
    assert model.outputs == ("activation_1", "dense_2")
    assert model.output == "activation_1"
    assert model.output_shapes == ((3,), (1,))
    assert layerdsl.parse(GRAPH).outputs == ("dense_1", "dense")


def test_a_single_input_model_is_unchanged():
    model = layerdsl.parse("input 4\ndense 2\n")
    assert model.input.name == "input" and model.inputs == (model.input,)
    assert model.outputs == ("dense",)
    assert model.layers[0].inputs == ("input",)
    assert model.is_sequential


@pytest.mark.parametrize(
    "text",
    [TWO_INPUTS, TWO_OUTPUTS, GRAPH, IMAGES, MASKED, TWO_MASKS, CROSS_ATTENTION],
    ids=["two_inputs", "two_outputs", "graph", "images", "masked", "two_masks", "cross_attention"],
)
def test_backends_agree_with_transferred_weights(text):
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    model = layerdsl.parse(text)
    result = assert_backends_agree(model)
    assert set(result.outputs) >= {"numpy", "keras", "torch"}
    if len(model.outputs) > 1:
        assert all(len(outputs) == len(model.outputs) for outputs in result.outputs.values())


def test_batchnorm_statistics_reach_every_backend_through_two_outputs():
    """The harness's weights are non-trivial: a change of one output's weights moves that output only."""
    model = layerdsl.parse(TWO_OUTPUTS)
    weights = random_weights(model)
    x = random_input(model)
    live = layerdsl.build(model, "numpy")
    layerdsl.set_weights(live, weights)
    label, score = run("numpy", live, model, x)
    weights["dense_2.bias"] = weights["dense_2.bias"] + 1.0
    layerdsl.set_weights(live, weights)
    label2, score2 = run("numpy", live, model, x)
    np.testing.assert_array_equal(label, label2)
    np.testing.assert_allclose(score2, score + 1.0, rtol=1e-6)


def test_random_input_gives_each_input_its_dtype_and_vocabulary():
    model = layerdsl.parse(TWO_INPUTS)
    ids, segments = random_input(model, batch=3)
    assert ids.dtype == segments.dtype == np.int32
    assert ids.shape == segments.shape == (3, 16)
    assert segments.max() < 2 and ids.max() < 100


def test_torch_source_takes_each_input_and_returns_a_tuple():
    two_inputs = layerdsl.compile(TWO_INPUTS, "torch")
    assert "def forward(self, ids: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:" in two_inputs
    two_outputs = layerdsl.compile(TWO_OUTPUTS, "torch")
    assert "-> tuple[torch.Tensor, torch.Tensor]:" in two_outputs
    assert "return label, " in two_outputs


def test_keras_source_has_an_input_per_input_and_lists_only_several_outputs():
    two_inputs = layerdsl.compile(TWO_INPUTS, "keras")
    assert 'ids = keras.Input(shape=(16,), dtype="int32", name="ids")' in two_inputs
    assert 'segments = keras.Input(shape=(16,), dtype="int32", name="segments")' in two_inputs
    assert "keras.Model([ids, segments], x, " in two_inputs  # one output: a tensor, not a list
    two_outputs = layerdsl.compile(TWO_OUTPUTS, "keras")
    assert "keras.Model(inputs, [label, score], " in two_outputs


def test_live_keras_model_has_named_inputs_and_two_outputs():
    pytest.importorskip("keras")
    live = layerdsl.build(TWO_INPUTS, "keras")
    assert [t.name for t in live.inputs] == ["ids", "segments"]
    two = layerdsl.build(TWO_OUTPUTS, "keras")
    assert len(two.outputs) == 2


def test_numpy_model_is_called_with_an_array_per_input():
    source = layerdsl.compile(TWO_INPUTS, "numpy")
    assert "def __call__(self, ids, segments):" in source
    live = layerdsl.build(TWO_INPUTS, "numpy")
    ids = np.ones((2, 16), np.int32)
    assert live(ids, ids * 0).shape == (2, 4)
    with pytest.raises(TypeError):
        live(ids)


def test_onnx_graph_inputs_and_outputs_are_named():
    pytest.importorskip("onnxruntime")
    proto = layerdsl.to_onnx(TWO_INPUTS)
    assert [i.name for i in proto.graph.input] == ["ids", "segments"]
    proto = layerdsl.to_onnx(TWO_OUTPUTS)
    assert [o.name for o in proto.graph.output] == ["label", "score"]
    live = layerdsl.build(TWO_OUTPUTS, "onnx")
    label, score = live(np.zeros((2, 12), np.float32))
    assert label.shape == (2, 3) and score.shape == (2, 1)


def test_summary_lists_every_input_and_the_outputs():
    text = layerdsl.summary(TWO_INPUTS)
    assert "ids (InputLayer)" in text and "segments (InputLayer)" in text
    assert "Connected to" in text
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(" segments (InputLayer)"))
    assert lines[row + 2].startswith(" embedding_1 (Embedding)")  # listed where its chain starts
    assert "Inputs: ids, segments" in text
    assert "Outputs: activation_1, dense_2" in layerdsl.summary(TWO_OUTPUTS)


def test_summary_json_has_inputs_and_outputs(tmp_path):
    path = tmp_path / "two.layers"
    path.write_text(TWO_INPUTS)
    out = subprocess.run([sys.executable, "-m", "layerdsl", "summary", "--json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert [i["name"] for i in data["inputs"]] == ["ids", "segments"]
    assert data["inputs"][1] == {"name": "segments", "shape": [16], "dtype": "int32", "layout": "channels_last"}
    assert data["outputs"] == ["dense"]


def test_graph_shows_every_input_and_marks_the_outputs():
    from layerdsl.graph import to_svg, to_text

    text = to_text(layerdsl.parse(TWO_INPUTS))
    assert "○    ids" in text and "○  segments" in text
    outputs = to_text(layerdsl.parse(TWO_OUTPUTS))
    assert "activation → output 1" in outputs and "dense → output 2" in outputs
    svg = to_svg(layerdsl.parse(GRAPH))
    for name in ("features", "context"):
        assert f'data-name="{name}" data-kind="input"' in svg
    assert "→ output 1" in svg and "→ output 2" in svg


def test_fmt_round_trips_inputs_and_outputs():
    messy = "input 16 dtype=int32   name=ids | embedding 100 8 | tap tok\n" \
            "input 16  dtype=int32 name=segments|embedding 2 8 | add @tok\n" \
            "globalavgpool1d | tap a\n@a\ndense 2 | tap b\noutput   @a  @b\n"
    formatted = layerdsl.format_text(messy)
    assert "input 16 dtype=int32 name=segments" in formatted
    assert "output @a @b" in formatted
    assert layerdsl.format_text(formatted) == formatted
    assert layerdsl.parse(formatted).outputs == layerdsl.parse(messy).outputs == ("global_average_pooling1d", "dense")


def test_weights_save_load_and_convert_between_backends(tmp_path):
    torch = pytest.importorskip("torch")
    model = layerdsl.parse(GRAPH)
    donor = layerdsl.build(model, "numpy", seed=3)
    path = tmp_path / "w.npz"
    layerdsl.save_weights(path, layerdsl.get_weights(donor))
    loaded = layerdsl.load_weights(path)
    live = layerdsl.build(model, "torch")
    layerdsl.set_weights(live, loaded)
    x = random_input(model)
    expected = run("numpy", donor, model, x)
    got = run("torch", live, model, x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    assert isinstance(live(*[torch.from_numpy(a) for a in x]), tuple)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input 4 name=a\ninput 4 name=a\ndense 2", "input name `a` is used twice"),
        ("input 4\ninput 3\ndense 1", "each input after the first needs a name"),
        ("input 4\ndense 2 name=b\ninput 3 name=b\nadd @b", "input name `b` is already a layer's name"),
        ("input 4\ndense 2\ntap x\ninput 2 name=b\ndense 2 name=b\nadd @x", "already the name of a model input"),
        ("input 4 name=a\ndense 2\ntap a", "`a` is the name of a model input"),
        ("input 4\ndense 2\noutput @nowhere", "unknown tap `@nowhere`"),
        ("input 4\ndense 2\ntap x\ninput 2 name=q\ndense 2\ntap y\noutput @x @q", "is a model input"),
        ("input 4\ndense 2\ntap x\noutput @x @x", "is an output twice"),
        ("input 4\ndense 2\ntap x\noutput @x\noutput @x", "`output` is given twice"),
        ("input 4\ndense 2\ntap x\noutput x", "`output` takes the tensors"),
        ("input 4\ndense 2\ntap x\ninput 3 name=b\ndense 2 in=3\nadd @x", "`in=` conflicts with `input` on line 4"),
        ("input 4\ndense 2\ntap x\ndense 3\noutput @x", "is never used"),
        ("input 3 name=a\ndense 2\ntap t\ninput 3 name=b\ndense 2\nadd @t\ntap s\n@b", "ends on the input `b`"),
        ("input 4\nrepeat 2 { input 3 name=b }\ndense 1", "only allowed at the top level"),
        ("input 4\ndense 4\nresidual { input 4 name=b }", "only allowed at the top level"),
        ("input 4\ndense 4\ntap x\nconcat { output @x } { }", "only allowed at the top level"),
    ],
)
def test_checker_errors_point_at_the_problem(text, message):
    with pytest.raises(LayerCheckError) as info:
        layerdsl.parse(text, "m.layers")
    messages = [e.message for e in info.value.all_errors()]
    assert any(message in m for m in messages), messages
    assert str(info.value).startswith("m.layers:")


def test_an_input_never_used_is_a_warning_as_keras_builds_such_a_model():
    model = layerdsl.parse("input 4 name=a\ninput 3 name=b\ndense 2\n")
    assert [w.message for w in model.warnings] == ["input `a` is never used"]
    assert model.warnings[0].span.line == 1


def test_cli_compiles_every_target_and_refuses_bad_files_without_writing(tmp_path):
    good = tmp_path / "good.layers"
    good.write_text(GRAPH)
    for target, suffix in (("keras", "py"), ("torch", "py"), ("numpy", "py")):
        out = tmp_path / f"out_{target}.{suffix}"
        subprocess.run([sys.executable, "-m", "layerdsl", "compile", "--target", target, str(good), "-o", str(out)],
                       check=True, capture_output=True)
        assert out.read_text().startswith('"""')
    bad = tmp_path / "bad.layers"
    bad.write_text("input 4\ndense 2\noutput @nowhere\n")
    out = tmp_path / "bad.py"
    result = subprocess.run([sys.executable, "-m", "layerdsl", "compile", "--target", "torch", str(bad), "-o", str(out)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "bad.layers:3:8: error: unknown tap `@nowhere`" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


# --- from_keras ------------------------------------------------------------------------------


def _residual_two_inputs():
    keras = pytest.importorskip("keras")
    layers = keras.layers
    features = keras.Input((8,), name="features")
    context = keras.Input((6,), name="context")
    x = layers.Dense(8, activation="relu")(features)
    x = layers.Add()([x, layers.Dense(8)(x)])
    x = layers.Add()([x, layers.Dense(8)(context)])
    x = layers.BatchNormalization()(x)
    x = layers.Add()([x, layers.Dense(8, activation="relu")(x)])
    return keras.Model([features, context], layers.Dense(3)(x))


def _two_outputs():
    keras = pytest.importorskip("keras")
    layers = keras.layers
    inputs = keras.Input((10,))
    trunk = layers.Dense(12, activation="relu")(inputs)
    trunk = layers.Add()([trunk, layers.Dense(12)(trunk)])
    label = layers.Dense(4, activation="softmax", name="label")(trunk)
    score = layers.Dense(1, name="score")(trunk)
    return keras.Model(inputs, [label, score])


def _set_batchnorm_statistics(model):
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))


@pytest.mark.parametrize("make", [_residual_two_inputs, _two_outputs], ids=["two_inputs", "two_outputs"])
def test_from_keras_imports_several_inputs_and_outputs(make):
    keras_model = make()
    _set_batchnorm_statistics(keras_model)
    imported = layerdsl.from_keras(keras_model)
    model = imported.model
    assert model.total_params == keras_model.count_params()
    assert len(model.inputs) == len(keras_model.inputs) and len(model.outputs) == len(keras_model.outputs)
    if len(model.inputs) > 1:
        assert "input 8 name=features" in imported.text and "input 6 name=context" in imported.text
    else:
        assert "output @label @score" in imported.text
    x = random_input(model, batch=4)
    expected = keras_model(list(x) if isinstance(x, tuple) else x, training=False)
    for target in ("numpy", "torch"):
        if target == "torch":
            pytest.importorskip("torch")
        live = layerdsl.build(model, target)
        layerdsl.set_weights(live, imported.weights)
        got = run(target, live, model, x)
        for a, b in zip(got if isinstance(got, tuple) else (got,),
                        expected if isinstance(expected, list) else (expected,), strict=True):
            np.testing.assert_allclose(a, np.asarray(b), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("text", [GRAPH, CROSS_ATTENTION], ids=["graph", "cross_attention"])
def test_from_keras_round_trips_the_keras_model_the_backend_builds(text):
    pytest.importorskip("keras")
    model = layerdsl.parse(text)
    live = layerdsl.build(model, "keras")
    layerdsl.set_weights(live, random_weights(model))
    imported = layerdsl.from_keras(live)
    assert imported.model.total_params == model.total_params
    assert imported.model.input_names == model.input_names
    assert [imported.model.tensor_shape(o) for o in imported.model.outputs] == list(model.output_shapes)
    x = random_input(model)
    for a, b in zip(run("keras", live, model, x), run("numpy", _built(imported), imported.model, x), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def _built(imported):
    live = layerdsl.build(imported.model, "numpy")
    layerdsl.set_weights(live, imported.weights)
    return live


def test_from_keras_refuses_a_model_that_returns_its_input():
    keras = pytest.importorskip("keras")
    a = keras.Input((4,))
    with pytest.raises(LayerDSLError, match="returns its input"):
        layerdsl.from_keras(keras.Model(a, [keras.layers.Dense(2)(a), a]))


def test_lsp_hover_on_an_input_reference_shows_the_input_and_its_shape():
    from layerdsl.lsp import analyze, hover_markdown

    text = "input 4 name=feats\ndense 2\ntap t\ninput 3 name=ctx\ndense 2\nadd @t\nconcat @ctx\n"
    analysis = analyze(text)
    shown, span = hover_markdown(analysis, (7, 10))
    assert shown == "input `@ctx`, defined on line 4; shape `(3,)`"
    assert (span.line, span.column) == (7, 8)


@pytest.mark.parametrize("text", ["input 4 name=feats\ndense 3\ntap a\ndense 3\nadd @a\n",
                                  "input 4 name=feats\ndense 3\nconcat @feats\n"], ids=["taps", "merge_with_input"])
def test_one_named_input_reads_as_a_tensor_in_every_backend(text):
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    model = layerdsl.parse(text)
    assert model.input_names == ("feats",) and model.layers[0].inputs == ("feats",)
    assert 'keras.Input(shape=(4,), name="feats")' in layerdsl.compile(model, "keras")
    assert_backends_agree(model)


def test_masks_from_two_chains_get_a_variable_each():
    torch_source = layerdsl.compile(TWO_MASKS, "torch")
    assert "mask_embedding = ids != 0" in torch_source and "mask_embedding_1 = chars != 0" in torch_source
    numpy_source = layerdsl.compile(TWO_MASKS, "numpy")
    assert "mask_embedding = ids != 0" in numpy_source and ", mask_embedding)" in numpy_source
    assert "mask_embedding" not in layerdsl.compile(MASKED.replace("embedding 20 6 mask_zero=true", "embedding 20 6"), "torch")
