"""The language: what parses, what it means, and the errors for what does not."""

import pytest

import layerdsl
from layerdsl import LayerCheckError, LayerDSLError, LayerSyntaxError
from layerdsl.checker import keras_snake_case, model_name_from_path


def error_of(text: str, filename: str = "m.layers") -> LayerDSLError:
    with pytest.raises(LayerDSLError) as info:
        layerdsl.parse(text, filename)
    return info.value


def test_one_liner_is_a_complete_model():
    model = layerdsl.parse("dense 100 in=20 | batchnorm | relu | dropout 0.2")
    assert model.input.shape == (20,)
    assert [layer.kind for layer in model.layers] == ["dense", "batchnorm", "activation", "dropout"]
    assert [layer.name for layer in model.layers] == ["dense", "batch_normalization", "activation", "dropout"]
    assert model.output_shape == (100,)
    assert model.total_params == 20 * 100 + 100 + 4 * 100
    assert model.non_trainable_params == 200


def test_newlines_pipes_comments_and_blank_lines_are_equivalent():
    piped = layerdsl.parse("input 8x8x3 | conv2d 4 3 | relu | flatten | dense 2")
    lined = layerdsl.parse(
        "# a comment\n\ninput 8x8x3   # trailing comment\r\nconv2d 4 3\n| relu\nflatten\n\ndense 2\n\n"
    )
    assert [(layer.kind, layer.args, layer.output_shape) for layer in piped.layers] == [
        (layer.kind, layer.args, layer.output_shape) for layer in lined.layers
    ]


def test_values_ints_floats_dims_bools_and_names():
    model = layerdsl.parse("input 9x9x2\nconv2d 3 3x2 stride=2x1 pad=same bias=false init=he_normal maxnorm=2.5e0")
    args = model.layers[0].args
    assert args["kernel"] == (3, 2)
    assert args["stride"] == (2, 1)
    assert args["pad"] == "same"
    assert args["bias"] is False
    assert args["init"] == "he_normal"
    assert args["maxnorm"] == 2.5
    assert model.layers[0].output_shape == (5, 9, 3)


def test_model_name_defaults_to_file_stem_and_can_be_set():
    assert layerdsl.parse("dense 1 in=2", "my-net.layers").name == "my_net"
    assert layerdsl.parse("dense 1 in=2").name == "model"
    assert layerdsl.parse("model tiny\ndense 1 in=2", "x.layers").name == "tiny"
    assert model_name_from_path("2fast") == "model_2fast"
    assert model_name_from_path("class") == "class_"


def test_default_layer_names_follow_keras():
    model = layerdsl.parse("input 8x8x1\nconv2d 2 3 | maxpool 2 | avgpool 1 | conv2d 2 1 | flatten | dense 3 | dense 2 | softmax")
    assert [layer.name for layer in model.layers] == [
        "conv2d", "max_pooling2d", "average_pooling2d", "conv2d_1", "flatten", "dense", "dense_1", "activation",
    ]
    assert keras_snake_case("BatchNormalization") == "batch_normalization"


def test_explicit_names_are_kept_and_defaults_skip_them():
    model = layerdsl.parse("dense 4 in=3 name=dense_1 | dense 2 | dense 2")
    assert [layer.name for layer in model.layers] == ["dense_1", "dense", "dense_2"]


def test_channels_first_input_is_stored_channels_last():
    model = layerdsl.parse("input 3x32x32 layout=channels_first\nconv2d 8 3")
    assert model.input.shape == (32, 32, 3)
    assert model.input.fed_shape == (3, 32, 32)
    assert model.layers[0].output_shape == (30, 30, 8)


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("input 7x7x1\nconv2d 1 3 stride=2 pad=same", (4, 4, 1)),
        ("input 7x7x1\nconv2d 1 3 stride=2", (3, 3, 1)),
        ("input 10x10x1\nconv2d 1 3 dilation=2", (6, 6, 1)),
        ("input 10x10x1\nconv2d 1 3 dilation=3 pad=same", (10, 10, 1)),
        ("input 7x7x1\nmaxpool 2", (3, 3, 1)),
        ("input 7x7x1\nmaxpool 2 pad=same", (4, 4, 1)),
        ("input 7x7x1\navgpool 3 stride=1", (5, 5, 1)),
        ("input 7x5x2\nflatten", (70,)),
    ],
)
def test_output_shapes_match_keras_rules(text, shape):
    assert layerdsl.parse(text).output_shape == shape


def test_pool_stride_defaults_to_window():
    assert layerdsl.parse("input 8x8x1\nmaxpool 3x2").layers[0].args["stride"] == (3, 2)


def test_batchnorm_weights_follow_center_and_scale():
    names = lambda t: [w.name for w in layerdsl.parse(t).layers[0].weights]  # noqa: E731
    assert names("input 4\nbatchnorm") == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert names("input 4\nbatchnorm center=false") == ["gamma", "moving_mean", "moving_variance"]
    assert names("input 4\nbatchnorm scale=false center=false") == ["moving_mean", "moving_variance"]


def test_keras_parameter_counts_of_examples(examples_dir):
    assert layerdsl.load(examples_dir / "mnist_convnet.layers").total_params == 34_826
    assert layerdsl.load(examples_dir / "vgg16.layers").total_params == 138_357_544


# --- errors ---------------------------------------------------------------------------------


def test_dense_after_conv_needs_flatten():
    err = error_of("input 8x8x3\nconv2d 4 3\ndense 10")
    assert isinstance(err, LayerCheckError)
    assert (err.filename, err.line, err.column) == ("m.layers", 3, 1)
    text = str(err)
    assert text.startswith("m.layers:3:1: error: `dense` needs a 1-D input")
    assert "    dense 10\n    ^~~~~" in text
    assert "add `flatten` before `dense`" in text
    assert "comes from `conv2d` on line 2" in text


def test_unknown_layer_suggests_the_closest():
    err = error_of("input 4\ndnese 3")
    assert (err.line, err.column) == (2, 1)
    assert "unknown layer `dnese`" in err.message
    assert err.hint == "did you mean `dense`?"


def test_unknown_option_suggests_the_closest():
    err = error_of("dense 3 in=4 activaton=relu")
    assert (err.line, err.column) == (1, 14)
    assert err.hint == "did you mean `activation`?"


def test_bad_choice_suggests_the_closest():
    err = error_of("dense 3 in=4 init=glorot_unifrom")
    assert "invalid value for `init`" in err.message
    assert err.hint == "did you mean `glorot_uniform`?"


@pytest.mark.parametrize(
    ("text", "message", "col"),
    [
        ("dense 3 in=4 | dropout 1.0", "expected 0 <= rate < 1; received rate=1.0", 24),
        ("dense 3 in=4 | dropout -0.1", "expected 0 <= rate < 1", 24),
        ("dense 0 in=4", "expected units >= 1; received units=0", 7),
        ("dense 3.5 in=4", "expected an integer; received units=3.5", 7),
        ("dense 3 in=4 bias=yes", "expected true or false", 19),
        ("dense 3 in=4 maxnorm=0", "expected maxnorm > 0", 22),
        ("input 4\nbatchnorm momentum=1.5", "expected 0 <= momentum < 1", 20),
        ("dense 99999999999 in=4", "at most 2,147,483,647", 7),
        ("input 8x8x1\nconv2d 2 3x3x3", "expected N or HxW", 10),
    ],
)
def test_out_of_range_values_are_refused_at_the_value(text, message, col):
    err = error_of(text)
    assert message in err.message
    assert err.column == col


def test_kernel_larger_than_input():
    err = error_of("input 4x4x1\nconv2d 2 5")
    assert "kernel 5x5 is larger than its 4x4 input" in err.message
    assert (err.line, err.column) == (2, 10)


def test_pool_larger_than_input():
    err = error_of("input 3x3x1\nmaxpool 4")
    assert "pool 4x4 is larger than its 3x3 input" in err.message


def test_rank_mismatch_conv_on_vector():
    err = error_of("input 100\nconv2d 3 3")
    assert "needs a 3-D (height x width x channels) input" in err.message
    assert "input 28x28x1" in err.hint


def test_missing_input_shape():
    err = error_of("conv2d 3 3")
    assert "missing input shape" in err.message
    assert "input SHAPE" in err.hint
    err = error_of("dense 3")
    assert "in=N" in err.hint


def test_conflicting_input_and_in():
    err = error_of("input 5\ndense 3 in=4")
    assert "conflicts with `input (5,)` on line 1" in err.message
    assert layerdsl.parse("input 4\ndense 3 in=4").input.shape == (4,)


def test_in_only_on_first_layer():
    err = error_of("dense 3 in=4 | dense 2 in=3")
    assert "only on the first layer" in err.message


def test_overflow_sized_layers():
    err = error_of("dense 100000 in=100000")
    assert "more than the 2,147,483,647" in err.message
    err = error_of("input 50000x50000x3")
    assert "per example" in err.message


def test_too_many_positionals_and_duplicates():
    assert "takes 1 positional argument (UNITS), but received 2" in error_of("dense 3 4 in=2").message
    assert "given twice" in error_of("dense 3 in=2 bias=true bias=false").message
    assert "used twice" in error_of("dense 3 in=2 name=a | dense 2 name=a").message
    assert "given twice" in error_of("input 2\ninput 3\ndense 1").message


def test_names_must_be_safe_identifiers():
    assert "reserved" in error_of("dense 3 in=2 name=class").message
    assert "reserved" in error_of("dense 3 in=2 name=__init__").message
    assert "must be a name" in error_of('dense 3 in=2 name="a b"').message


def test_integer_input_needs_an_embedding():
    err = error_of("input 10 dtype=int32\ndense 3")
    assert "needs float input" in err.message


def test_stride_with_dilation_is_refused():
    err = error_of("input 9x9x1\nconv2d 1 3 stride=2 dilation=2")
    assert "cannot combine stride > 1 with dilation > 1" in err.message
    assert err.column == 30


@pytest.mark.parametrize(
    ("text", "message", "line", "col"),
    [
        ("dense 3 in=", "unexpected end of input", 1, 12),
        ("dense 3 in=4 = 2", "unexpected `=`", 1, 14),
        ("dense 3 'x' in=2", "unexpected character `'`", 1, 9),
        ("dense 3 in=2\n  12 relu", "unexpected `12`", 2, 3),
        ("dense 3 in=2 name=\"unterminated", 'unexpected character `"`', 1, 19),
        ("dense 3 in=2 $", "unexpected character `$`", 1, 14),
    ],
)
def test_syntax_errors_have_positions(text, message, line, col):
    err = error_of(text)
    assert isinstance(err, LayerSyntaxError)
    assert message in err.message
    assert (err.line, err.column) == (line, col)
    assert err.render().startswith(f"m.layers:{line}:{col}: error: ")


def test_empty_model():
    assert "no layers" in error_of("# nothing here\n").message
    assert "no layers" in error_of("input 3").message


def test_long_line_errors_stay_readable():
    text = " | ".join(["relu"] * 5000) + " | dnse 3"
    err = error_of("input 4\n" + text)
    rendered = err.render()
    assert err.line == 2 and err.column == len(text) - 5
    assert max(len(line) for line in rendered.splitlines()) < 300


def test_statement_source_is_canonical():
    model = layerdsl.parse('input 8x8x1\nconv2d   4   3x3   pad=same name=c1   # hi')
    assert model.layers[0].source == "conv2d 4 3x3 pad=same name=c1"


def test_flatten_of_a_vector_is_refused():
    err = error_of("dense 4 in=3 | flatten")
    assert "nothing to flatten" in err.message
    assert "return_sequences=true" in err.hint


def test_missing_positional_hint_shows_an_example():
    assert error_of("input 8x8x1\nconv2d").hint == "write e.g. `conv2d 32 3`"


def test_conv_pad_takes_zeros_on_each_side_as_torchvision_writes_it():
    model = layerdsl.parse("input 8x8x3 | conv2d 4 3 pad=1 | conv2d 4 3 stride=2 pad=1x0")
    assert [layer.args["pad"] for layer in model.layers] == [(1, 1), (1, 0)]
    assert [layer.output_shape for layer in model.layers] == [(8, 8, 4), (4, 3, 4)]


def test_conv_pad_refuses_what_is_neither_a_mode_nor_a_size():
    with pytest.raises(LayerDSLError, match=r"expected valid, same, P or HxW; received pad=0.5"):
        layerdsl.parse("input 8x8x3 | conv2d 4 3 pad=0.5")
    with pytest.raises(LayerDSLError, match=r"did you mean `same`"):
        layerdsl.parse("input 8x8x3 | conv2d 4 3 pad=sme")
    with pytest.raises(LayerDSLError, match=r"pad >= 0"):
        layerdsl.parse("input 8x8x3 | conv2d 4 3 pad=-1")
