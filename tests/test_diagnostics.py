"""Diagnostics a newcomer meets: each points at the text to blame and the fix that applies."""

import subprocess
import sys

import pytest

import layerdsl
from layerdsl import LayerDSLError


def error_of(text):
    with pytest.raises(LayerDSLError) as info:
        layerdsl.parse(text, filename="m.layers")
    return info.value


def at(error):
    return error.span.line, error.span.column


def test_an_unknown_first_layer_wins_over_the_missing_input():
    error = error_of("dens 10 in=20\n")
    assert error.message == "unknown layer `dens`"
    assert error.hint == "did you mean `dense`?"
    assert at(error) == (1, 1)
    assert not error.additional


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("maxpooling2d 2", "maxpool"),
        ("MaxPooling2D 2", "maxpool"),
        ("Conv2D 4 3", "conv2d"),
        ("BatchNormalization", "batchnorm"),
        ("GlobalAveragePooling2D", "globalavgpool"),
        ("LayerNormalization", "layernorm"),
        ("Linear 4", "dense"),
        ("BatchNorm2d", "batchnorm"),
        ("MaxPool2d 2", "maxpool"),
        ("ReLU", "relu"),
    ],
)
def test_framework_class_names_suggest_the_dsl_name(written, meant):
    error = error_of(f"input 8x8x3\n{written}\nflatten | dense 2\n")
    assert error.message == f"unknown layer `{written.split()[0]}`"
    assert error.hint.startswith(f"did you mean `{meant}`?")
    assert at(error) == (2, 1)


def test_dense_in_any_case_suggests_dense():
    error = error_of("input 8\nDense 3\n")
    assert error.hint == "did you mean `dense`? (layer names are lowercase)"


def test_a_value_in_the_wrong_case_suggests_the_same_word():
    error = error_of("input 20\ndense 10 activation=Relu\n")
    assert error.hint == "did you mean `relu`?"
    assert at(error) == (2, 21)


def test_stacked_recurrent_layers_hint_return_sequences_on_the_first():
    error = error_of("input 10x8\nlstm 64\nlstm 32\n")
    assert at(error) == (3, 1)
    assert error.hint.startswith("add `return_sequences=true` to the `lstm` on line 2")
    error = error_of("input 10x8\nbidirectional gru 8\nconv1d 4 3\n")
    assert error.hint.startswith("add `return_sequences=true` to the `bidirectional` on line 2")


def test_an_unclosed_brace_is_reported_where_it_opens():
    error = error_of("input 8x8x3\nresidual {\n  conv2d 3 3 pad=same\n\ndense 4\n")
    assert error.message == "`{` on line 2, column 10 is never closed"
    assert at(error) == (2, 10)
    assert error.hint == "close the body with `}`"


@pytest.mark.parametrize(
    ("text", "written", "where"),
    [("input (28, 28, 1)\ndense 2\n", "28x28x1", (1, 7)), ("input 28x28x1\nconv2d 32 (3,3)\n", "3x3", (2, 11))],
)
def test_python_tuples_hint_the_languages_dims(text, written, where):
    error = error_of(text)
    assert error.hint.startswith(f"write `{written}`")
    assert at(error) == where


def test_a_dropout_rate_given_as_a_percentage_hints_the_fraction():
    error = error_of("input 20\ndropout 50\n")
    assert error.hint == "a rate is a fraction, not a percentage: `0.5` for 50%"
    assert at(error) == (2, 9)


def test_concat_hint_names_the_axis_that_differs_and_by_how_much():
    error = error_of("input 8x8x3\nconcat { conv2d 4 1 } { conv2d 4 3 }\nflatten | dense 2\n")
    assert error.hint.startswith(
        "height (axis 0): branch 1 has 8, branch 2 has 6 (2 fewer); width (axis 1): branch 1 has 8, branch 2 has 6"
    )
    assert "project" not in error.hint
    assert at(error) == (2, 1)


def test_add_hint_suggests_the_projection_and_multiply_never_does():
    add = error_of("input 8x8x3\nresidual { conv2d 4 1 }\nflatten | dense 2\n")
    assert "channels (axis 2): branch 1 has 3, branch 2 has 4 (1 more)" in add.hint
    assert "residual project=true" in add.hint
    multiply = error_of("input 8x8x3\nmultiply { conv2d 4 1 } { conv2d 3 1 }\nflatten | dense 2\n")
    assert multiply.hint == (
        "channels (axis 2): branch 1 has 4, branch 2 has 3 (1 fewer); "
        "`multiply` works elementwise: end each branch with the same shape"
    )


def test_an_unused_block_parameter_is_a_warning():
    model = layerdsl.parse("input 8x8x3\nblock b f unused=2 { conv2d f 1 }\nb 4\nflatten | dense 2\n", filename="m.layers")
    [warning] = model.warnings
    assert warning.message == "block parameter `unused` is never used in the body of `b`"
    assert at(warning) == (2, 11)
    assert warning.render().startswith("m.layers:2:11: warning: ")


def test_the_cli_prints_warnings_and_exits_zero(tmp_path):
    path = tmp_path / "m.layers"
    path.write_text("input 8x8x3\nblock b f unused=2 { conv2d f 1 }\nb 4\nflatten | dense 2\n")
    run = subprocess.run([sys.executable, "-m", "layerdsl", "check", str(path)], capture_output=True, text=True)
    assert run.returncode == 0
    assert "m.layers:2:11: warning: block parameter `unused`" in run.stderr


def test_a_name_inside_dims_reads_the_block_parameter():
    model = layerdsl.parse("input 8x8x3\nblock b c { reshape 1x1xc }\nflatten\nb 192\n")
    assert model.layers[-1].output_shape == (1, 1, 192)
    error = error_of("input 8x8x3\nblock b c { reshape 1x1xd }\nflatten\nb 192\n")
    assert error.message == "unknown name `d` in an expression"
    assert at(error) == (2, 25)


def test_every_independent_error_is_reported():
    text = (
        "input 8x8x3\n"
        "conv2d 4 3 bogus=1 activation=rleu\n"   # two problems in one statement
        "conv2d 4 0\n"                           # its chain is broken: later shapes are unknown
        "dens 3\n"
        "flatten\n"
        "dense 2 activation=rleu\n"               # arguments are still checked
    )
    errors = error_of(text).all_errors()
    assert [(at(e), e.message.split(":")[0]) for e in errors] == [
        ((2, 12), "unknown option `bogus` for `conv2d`"),
        ((2, 31), "invalid value for `activation`"),
        ((3, 10), "invalid value for `kernel`"),
        ((4, 1), "unknown layer `dens`"),
        ((6, 20), "invalid value for `activation`"),
    ]


def test_a_shape_error_ends_only_its_own_chain():
    text = (
        "input 8x8x3\n"
        "concat {\n"
        "  conv2d 4 9\n"            # too big: this branch is broken
        "  dense 2 bias=maybe\n"    # still checked for its arguments
        "} {\n"
        "  conv2d 4 1 stride=0\n"   # the other branch has its own error
        "}\n"
    )
    errors = error_of(text).all_errors()
    assert [at(e) for e in errors] == [(3, 12), (4, 16), (6, 21)]


def test_errors_in_a_block_body_are_reported_once_with_the_call():
    text = "input 8x8x3\nblock b f { conv2d f 3 bogus=1 }\nb 4\nb 8\nflatten | dense 2\n"
    errors = error_of(text).all_errors()
    assert len(errors) == 1
    assert errors[0].notes == ("in block `b` (b) called on line 3",)


def test_the_cli_prints_every_error(tmp_path):
    path = tmp_path / "m.layers"
    path.write_text("input 8x8x3\nconv2d 4 0\ndens 3\n")
    run = subprocess.run([sys.executable, "-m", "layerdsl", "check", str(path)], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.count(": error: ") == 2
    assert "Traceback" not in run.stderr


def test_the_number_of_errors_is_capped():
    text = "input 8\n" + "".join(f"dense 4 bias=maybe{i}\n" for i in range(50))
    assert len(error_of(text).all_errors()) == layerdsl.checker.MAX_ERRORS


def test_name_cannot_be_a_block_parameter():
    error = error_of("input 8\nblock b name { dense name }\nb 3\n")
    assert error.message == "`name` is reserved: a block call's `name=` names the instance"
    assert at(error) == (2, 9)
