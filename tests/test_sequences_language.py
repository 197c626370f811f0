"""Sequence layers in the checker: shapes, Keras parameter counts, and what it refuses."""

import pytest

import layerdsl
from layerdsl import LayerDSLError

SENTIMENT = "input 100 dtype=int32\nembedding 10000 64 mask_zero=true\nlstm 32\ndense 1 | sigmoid"
TIMESERIES = "input 50x8\nmasking 0.0\nlstm 32 return_sequences=true\ngru 16\ndense 3 | softmax"


def error_of(text: str) -> LayerDSLError:
    with pytest.raises(LayerDSLError) as info:
        layerdsl.parse(text, "s.layers")
    return info.value


def test_issue_examples_shapes_and_masks():
    model = layerdsl.parse(SENTIMENT)
    assert [layer.output_shape for layer in model.layers] == [(100, 64), (32,), (1,), (1,)]
    assert [(layer.input_masked, layer.output_masked) for layer in model.layers] == [
        (False, True), (True, False), (False, False), (False, False),
    ]
    model = layerdsl.parse(TIMESERIES)
    assert [layer.output_shape for layer in model.layers] == [(50, 8), (50, 32), (16,), (3,), (3,)]
    assert [layer.input_masked for layer in model.layers] == [False, True, True, False, False]


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("input 10 dtype=int32\nembedding 1000 16", 16_000),
        ("input 7x5\nlstm 8", 4 * 8 * (5 + 8) + 4 * 8),
        ("input 7x5\ngru 8", 3 * 8 * (5 + 8) + 2 * 3 * 8),
        ("input 7x5\ngru 8 reset_after=false", 3 * 8 * (5 + 8) + 3 * 8),
        ("input 7x5\nsimplernn 8", 8 * (5 + 8) + 8),
        ("input 7x5\nlstm 8 bias=false", 4 * 8 * (5 + 8)),
        ("input 7x5\nbidirectional lstm 8", 2 * (4 * 8 * (5 + 8) + 4 * 8)),
        ("input 20x5\nconv1d 6 3", 3 * 5 * 6 + 6),
    ],
)
def test_keras_parameter_counts(text, params):
    assert layerdsl.parse(text).total_params == params


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("input 7x5\nlstm 8 return_sequences=true", (7, 8)),
        ("input 7x5\nbidirectional gru 4 return_sequences=true", (7, 8)),
        ("input 7x5\nbidirectional gru 4 merge=sum", (4,)),
        ("input 20x5\nconv1d 6 3 pad=causal dilation=2", (20, 6)),
        ("input 20x5\nconv1d 6 3 stride=2 pad=same", (10, 6)),
        ("input 20x5\nconv1d 6 4 stride=3", (6, 6)),
        ("input 21x5\nmaxpool1d 2", (10, 5)),
        ("input 21x5\navgpool1d 2 pad=same", (11, 5)),
        ("input 21x5\nglobalmaxpool1d", (5,)),
        ("input 6x6x3\nglobalavgpool", (3,)),
    ],
)
def test_sequence_shapes(text, shape):
    assert layerdsl.parse(text).output_shape == shape


def test_lstm_bias_starts_with_unit_forget_bias():
    (bias,) = [w for w in layerdsl.parse("input 3x2\nlstm 4").layers[0].weights if w.name == "bias"]
    assert bias.initializer == "unit_forget_bias:zeros"
    (bias,) = [w for w in layerdsl.parse("input 3x2\nlstm 4 unit_forget_bias=false").layers[0].weights if w.name == "bias"]
    assert bias.initializer == "zeros"


def test_bidirectional_weights_are_prefixed():
    layer = layerdsl.parse("input 3x2\nbidirectional gru 4").layers[0]
    assert [w.name for w in layer.weights] == [
        "forward_kernel", "forward_recurrent_kernel", "forward_bias",
        "backward_kernel", "backward_recurrent_kernel", "backward_bias",
    ]
    assert layer.args["layer"] == "gru" and layer.args["inner"]["units"] == 4


def test_mask_reaching_a_layer_that_cannot_use_it_is_refused():
    err = error_of("input 30 dtype=int32\nembedding 100 8 mask_zero=true\nconv1d 4 3")
    assert "`conv1d` cannot use the mask made by `embedding 100 8 mask_zero=true` on line 2" in err.message
    assert (err.line, err.column) == (3, 1)
    assert "drop the mask" in err.hint
    err = error_of("input 30x4\nmasking\nflatten")
    assert "`flatten` cannot use the mask" in err.message


def test_mask_passes_through_dense_and_dropout_to_the_lstm():
    model = layerdsl.parse("input 30x4\nmasking\ndense 8 | dropout 0.1 | relu\nlstm 4")
    assert model.layers[-1].input_masked


def test_consumed_mask_stops():
    model = layerdsl.parse("input 30x4\nmasking\nlstm 4 return_sequences=true\nlstm 2\ndense 1")
    assert [layer.output_masked for layer in model.layers] == [True, True, False, False]
    model = layerdsl.parse("input 30x4\nmasking\nglobalavgpool1d\ndense 1")
    assert not model.layers[-1].input_masked


def test_embedding_needs_integer_ids():
    err = error_of("input 100\nembedding 1000 16")
    assert "needs integer token ids, but its input is float32" in err.message
    assert "dtype=int32" in err.hint


def test_float_layers_refuse_token_ids():
    assert "needs float input" in error_of("input 10 dtype=int32\nlstm 4").message


def test_flatten_after_lstm_without_sequences():
    err = error_of("input 10x4\nlstm 8\nflatten")
    assert "nothing to flatten" in err.message
    assert "return_sequences=true" in err.hint


def test_recurrent_needs_sequences():
    err = error_of("input 10\nlstm 4")
    assert "needs a 2-D (timesteps x features) input" in err.message
    assert "input TxF" in err.hint


def test_bidirectional_errors():
    assert "wraps a layer" in error_of("input 5x2\nbidirectional").message
    err = error_of("input 5x2\nbidirectional lsmt 3")
    assert err.hint == "did you mean `lstm`?"
    assert "unknown option `merg`" in error_of("input 5x2\nbidirectional lstm 3 merg=sum").message


def test_conv1d_window_longer_than_input():
    err = error_of("input 4x2\nconv1d 3 5")
    assert "kernel 5 is longer than its 4 timesteps" in err.message
