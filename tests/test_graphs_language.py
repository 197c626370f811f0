"""Blocks, repetition, residuals, branches and taps: what the checker builds and what it refuses."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import layerdsl
from layerdsl import LayerDSLError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

CONV_BN = """input 32x32x3
block conv_bn filters k=3 stride=1 {
  conv2d filters k stride=stride pad=same bias=false | batchnorm | relu
}
"""


def error_of(text: str) -> LayerDSLError:
    with pytest.raises(LayerDSLError) as info:
        layerdsl.parse(text, "g.layers")
    return info.value


def test_block_call_expands_with_arguments_and_defaults():
    model = layerdsl.parse(CONV_BN + "conv_bn 16\nconv_bn 32 stride=2 k=1")
    assert [layer.kind for layer in model.layers] == ["conv2d", "batchnorm", "activation"] * 2
    first, second = model.layers[0], model.layers[3]
    assert first.args["kernel"] == (3, 3) and first.args["stride"] == (1, 1) and first.args["filters"] == 16
    assert second.args["kernel"] == (1, 1) and second.args["stride"] == (2, 2)
    assert model.output_shape == (16, 16, 32)


def test_block_layers_are_named_by_instance_and_record_their_chain():
    model = layerdsl.parse(CONV_BN + "block pair f { conv_bn f | conv_bn f }\npair 8 | pair 8 name=second")
    names = [layer.name for layer in model.layers if layer.kind == "conv2d"]
    assert names == ["pair_conv_bn_conv2d", "pair_conv_bn_1_conv2d", "second_conv_bn_conv2d", "second_conv_bn_1_conv2d"]
    assert model.layers[0].block == ("pair", "pair_conv_bn")
    assert model.layers[-1].block == ("second", "second_conv_bn_1")


def test_block_defaults_may_be_given_positionally():
    model = layerdsl.parse(CONV_BN + "conv_bn 8 1")
    assert model.layers[0].args["kernel"] == (1, 1)


def test_repeat_and_residual_build_a_graph():
    model = layerdsl.parse(CONV_BN + "conv_bn 16\nrepeat 2 { residual { conv_bn 16 | conv_bn 16 } }")
    adds = [layer for layer in model.layers if layer.kind == "add"]
    assert len(adds) == 2
    assert adds[0].inputs == ("conv_bn_activation", "conv_bn_2_activation")
    assert adds[1].inputs == ("add", "conv_bn_4_activation")
    assert not model.is_sequential


def test_residual_projection_matches_the_main_path():
    model = layerdsl.parse(CONV_BN + "conv_bn 16\nresidual project=true { conv_bn 32 stride=2 | conv_bn 32 }")
    add = model.layers[-1]
    projection = model.layer(add.inputs[0])
    assert projection.kind == "batchnorm"
    conv = model.layer(projection.inputs[0])
    assert (conv.kind, conv.args["filters"], conv.args["kernel"], conv.args["stride"]) == ("conv2d", 32, (1, 1), (2, 2))


def test_residual_shortcut_body():
    model = layerdsl.parse("input 8x8x4\nresidual { conv2d 8 3 pad=same } { conv2d 8 1 }")
    assert model.layers[-1].input_shapes == ((8, 8, 8), (8, 8, 8))


def test_parallel_branches_concat_on_channels():
    model = layerdsl.parse("input 8x8x4\nconcat { } { conv2d 3 1 } { maxpool 3 stride=1 pad=same | conv2d 5 1 }")
    concat = model.layers[-1]
    assert concat.kind == "concat" and concat.inputs[0] == "input"
    assert model.output_shape == (8, 8, 12)


@pytest.mark.parametrize("merge", ["add", "multiply", "average"])
def test_elementwise_merges(merge):
    model = layerdsl.parse(f"input 6\n{merge} {{ dense 4 }} {{ dense 4 }} {{ dense 4 | relu }}")
    assert model.layers[-1].kind == merge and len(model.layers[-1].inputs) == 3
    assert model.output_shape == (4,)


def test_concat_on_another_axis():
    assert layerdsl.parse("input 5x3\nconcat axis=0 { } { dense 3 }").output_shape == (10, 3)


def test_taps_make_long_skips():
    model = layerdsl.load(EXAMPLES / "unet.layers")
    concats = [layer for layer in model.layers if layer.kind == "concat"]
    assert [c.inputs[1] for c in concats] == ["double_2_conv2d_1", "double_1_conv2d_1", "double_conv2d_1"]
    assert model.output_shape == (64, 64, 1)


def test_reference_on_its_own_line_switches_the_current_tensor():
    model = layerdsl.parse("input 6\ndense 4 | tap a\ndense 3 | tap b\n@a\nconcat @b")
    assert model.layers[-1].inputs == ("dense", "dense_1")


@pytest.mark.parametrize(
    ("name", "total", "trainable"),
    [
        ("resnet50", 25_636_712, 25_583_592),
        ("resnet18", 11_699_112, 11_689_512),
        ("mobilenet_v2", 3_538_984, 3_504_872),
    ],
)
def test_architecture_parameter_counts(name, total, trainable):
    model = layerdsl.load(EXAMPLES / f"{name}.layers")
    assert (model.total_params, model.trainable_params) == (total, trainable)


def test_examples_fit_on_one_screen():
    for name in ("resnet50", "resnet18", "mobilenet_v2", "inception", "unet"):
        assert len((EXAMPLES / f"{name}.layers").read_text().splitlines()) <= 50


# --- errors ----------------------------------------------------------------------------------


def test_mismatched_add_names_each_branch_and_suggests_projection():
    err = error_of("input 8x8x3\nresidual { conv2d 4 3 pad=same }")
    assert "`add` needs inputs of one shape, but receives branch 1 (8, 8, 3), branch 2 (8, 8, 4)" in err.message
    assert "branch 1 (8, 8, 3) comes from the model input" in err.notes
    assert "branch 2 (8, 8, 4) comes from `conv2d` on line 2" in err.notes
    assert "project=true" in err.hint
    assert (err.line, err.column) == (2, 1)


def test_errors_inside_blocks_point_at_the_body_with_the_call_chain():
    err = error_of(CONV_BN + "block stage f { conv_bn f | dense 3 }\nconv_bn 4\nstage 8")
    assert err.line == 5 and "`dense` needs a 1-D input" in err.message
    assert err.source_line == "block stage f { conv_bn f | dense 3 }"
    assert err.notes[-1] == "in block `stage` (stage) called on line 7"


def test_bad_argument_to_a_block_points_at_the_call():
    err = error_of(CONV_BN + "conv_bn 0")
    assert (err.line, err.column) == (5, 9)
    assert "expected filters >= 1" in err.message
    assert "in block `conv_bn` (conv_bn) called on line 5" in err.notes


def test_recursion_is_refused():
    err = error_of("input 4\nblock a { b }\nblock b { a }\na")
    assert "block `a` uses itself: a -> b -> a" in err.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input 4\nconcat @nowhere", "unknown tap `@nowhere`"),
        ("input 4\ndense 3 | tap x\ndense 2 @x", "can only feed a merge"),
        ("input 4\ndense 3 { relu }", "takes no body in braces"),
        ("input 4\nadd", "merges two or more tensors"),
        ("input 4\nrepeat 0 { dense 3 }", "repeat count"),
        ("input 4\nrepeat 2", "`repeat` takes a count and one body"),
        ("input 4\nblock dense x { relu }\ndense 3", "is a layer name"),
        ("input 4\nblock b x { relu }\nblock b y { relu }\nb 1", "defined twice"),
        ("input 4\nblock b x { relu }\nb", "needs its X argument"),
        ("input 4\nblock b x { relu }\nb 1 y=2", "unknown option `y` for block `b`"),
        ("input 4\ntap t | dense 3 | @t | dense 2", "is never used"),
        ("input 4\nresidual bad=1 { dense 3 | relu }", "unknown option `bad` for `residual`"),
        ("input 4\nresidual { block inner { relu } }", "only allowed at the top level"),
        ("input 8x8x3\nconcat { conv2d 2 3 } { conv2d 2 1 }", "agree except on axis -1"),
        ("input 5x5x3\nzeropad2d 1 | reshape 4x4", "cannot hold its input"),
        ("input 5x3\npermute 1x3", "is not an order of the axes"),
    ],
)
def test_graph_errors(text, message):
    assert message in error_of(text).message


def test_hostile_nesting_is_refused_cleanly():
    err = error_of("input 4\n" + "residual { " * 500 + "dense 4" + " }" * 500)
    assert "nest more than" in err.message


def test_summary_json_carries_inputs_and_blocks(tmp_path):
    path = tmp_path / "g.layers"
    path.write_text(CONV_BN + "conv_bn 8 | tap a\nresidual { conv_bn 8 }\nconcat @a")
    out = subprocess.run([sys.executable, "-m", "layerdsl", "summary", "--json", str(path)], capture_output=True, text=True)
    data = json.loads(out.stdout)
    by_name = {layer["name"]: layer for layer in data["layers"]}
    assert by_name["add"]["inputs"] == ["conv_bn_activation", "conv_bn_1_activation"]
    assert by_name["conv_bn_1_conv2d"]["block"] == ["conv_bn_1"]
    assert by_name["concatenate"]["inputs"] == ["add", "conv_bn_activation"]
    assert data["output"] == "concatenate"
    table = subprocess.run([sys.executable, "-m", "layerdsl", "summary", str(path)], capture_output=True, text=True).stdout
    assert "Connected to" in table and "Block" in table


@pytest.mark.parametrize("layer", ["depthwiseconv2d 3", "separableconv2d 4 3"])
def test_depthwise_strides_must_be_equal(layer):
    err = error_of(f"input 9x9x3\n{layer} stride=2x1")
    assert "equal strides" in err.message and err.column > 10
