"""One model, every backend, one function: outputs agree after weight transfer.

Each case is checked on every installed backend at once (sqlglot's
validate_all idea): random canonical weights with non-trivial BatchNorm
statistics, eval mode, float32, atol 1e-5 and rtol 1e-4. ONNX (onnxruntime on the exported
model) is checked against the NumPy backend, the others against Keras.
"""

from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import testing
from layerdsl.specs import ACTIVATIONS

TARGETS = testing.available_targets()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.skipif(len(TARGETS) < 2, reason="needs torch or keras installed to compare against")

CASES = {
    # dense
    "dense": "dense 7 in=5",
    "dense_no_bias": "dense 7 in=5 bias=false",
    "dense_stack_fused": "dense 16 in=5 activation=relu | dense 8 activation=tanh | dense 3 activation=softmax",
    # conv2d
    "conv_valid": "input 9x9x3\nconv2d 4 3",
    "conv_rect_kernel": "input 9x8x2\nconv2d 3 3x2 stride=2x1",
    "conv_same_s1_even_kernel": "input 8x8x2\nconv2d 3 4 pad=same",
    "conv_same_s2_odd_input": "input 9x9x2\nconv2d 3 3 stride=2 pad=same",
    "conv_same_s2_even_input": "input 8x8x2\nconv2d 3 3 stride=2 pad=same",
    "conv_same_s3": "input 10x11x2\nconv2d 3 5 stride=3 pad=same",
    "conv_same_s2_k1": "input 9x9x2\nconv2d 3 1 stride=2 pad=same",
    "conv_dilated": "input 12x12x2\nconv2d 3 3 dilation=2",
    "conv_dilated_same": "input 11x11x2\nconv2d 3 3 dilation=2 pad=same",
    "conv_no_bias_fused": "input 8x8x3\nconv2d 4 3 bias=false activation=elu",
    # pooling
    "maxpool_valid": "input 9x9x3\nmaxpool 2",
    "maxpool_same_asym": "input 9x9x3\nmaxpool 2 pad=same",
    "maxpool_same_s1": "input 7x7x2\nmaxpool 3 stride=1 pad=same",
    "maxpool_overlap": "input 9x9x2\nmaxpool 3 stride=2",
    "avgpool_valid": "input 9x9x3\navgpool 3 stride=2",
    "avgpool_same_asym": "input 9x9x3\navgpool 2 pad=same",
    "avgpool_same_s1": "input 7x6x2\navgpool 3 stride=1 pad=same",
    "avgpool_same_s2_k3": "input 8x8x2\navgpool 3 stride=2 pad=same",
    # batchnorm
    "batchnorm_vector": "dense 6 in=4 | batchnorm",
    "batchnorm_image": "input 6x6x3\nconv2d 4 3 | batchnorm eps=0.01",
    "batchnorm_no_center": "dense 6 in=4 | batchnorm center=false",
    "batchnorm_no_scale": "dense 6 in=4 | batchnorm scale=false",
    "batchnorm_neither": "input 5x5x2\nbatchnorm center=false scale=false",
    # flatten order and the layers it passes through
    "flatten_dense": "input 5x4x3\nconv2d 4 2 | flatten | dense 6",
    "flatten_through_equivariant": "input 5x4x3\nconv2d 4 2 | flatten | dropout 0.3 | batchnorm | relu | softmax | dense 6",
    "flatten_at_output": "input 4x3x2\nconv2d 3 2 | flatten",
    "flatten_then_activation_output": "input 4x3x2\nconv2d 3 2 | flatten | sigmoid",
    "dropout_identity": "dense 5 in=3 | dropout 0.9",
    "image_output_softmax": "input 5x5x3\nconv2d 4 1 | softmax",
    # input layouts
    "channels_first": "input 3x6x5 layout=channels_first\nconv2d 4 3 | flatten | dense 2",
    # activations, as layers
    **{f"activation_{a}": f"dense 8 in=4 | {a}" for a in ACTIVATIONS},
    **{f"activation_layer_{a}": f"dense 8 in=4 | activation {a}" for a in ("relu", "gelu")},
    # activations fused into conv
    **{f"conv_fused_{a}": f"input 5x5x2\nconv2d 3 3 activation={a}" for a in ("relu", "softmax", "leaky_relu", "gelu")},
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_backends_agree(text):
    testing.assert_backends_agree(text, TARGETS, batch=3)


@pytest.mark.parametrize("name", ["oneliner", "mlp", "convnet_same", "mnist_convnet"])
def test_examples_agree(name):
    testing.assert_backends_agree(layerdsl.load(EXAMPLES / f"{name}.layers"), TARGETS, batch=4)


def test_large_activations_agree():
    model = layerdsl.parse("dense 8 in=4 | softmax")
    x = np.random.default_rng(0).normal(0, 30, (4, 4)).astype(np.float32)
    testing.assert_backends_agree(model, TARGETS, x=x)


@pytest.mark.parametrize("source", ["keras", "torch", "numpy"])
def test_weights_move_between_backends(source, tmp_path):
    if source not in TARGETS:
        pytest.skip(f"{source} not installed")
    model = layerdsl.load(EXAMPLES / "convnet_same.layers")
    donor = layerdsl.build(model, target=source)
    layerdsl.set_weights(donor, testing.random_weights(model, seed=3))
    path = tmp_path / "w.npz"
    layerdsl.save_weights(path, layerdsl.get_weights(donor))
    weights = layerdsl.load_weights(path)
    x = testing.random_input(model, batch=2)
    expected = testing.run(source, donor, model, x)
    for target in TARGETS:
        live = layerdsl.build(model, target=target)
        layerdsl.set_weights(live, weights)
        np.testing.assert_allclose(testing.run(target, live, model, x), expected, atol=1e-5, rtol=1e-4)
        got = layerdsl.get_weights(live)
        assert got.keys() == weights.keys()
        for key in weights:
            np.testing.assert_array_equal(got[key], weights[key])


# --- sequences: masks from pre-, post- and arbitrarily padded batches ---------------------------

SEQUENCE_CASES = {
    "sentiment_lstm": "input 7 dtype=int32\nembedding 50 6 mask_zero=true\nlstm 5\ndense 1 | sigmoid",
    "lstm_sequences": "input 7 dtype=int32\nembedding 50 6 mask_zero=true\nlstm 5 return_sequences=true",
    "lstm_backwards": "input 7 dtype=int32\nembedding 50 6 mask_zero=true\nlstm 5 go_backwards=true return_sequences=true",
    "gru_stack": "input 7x3\nmasking 0.0\nlstm 5 return_sequences=true\ngru 4\ndense 3 | softmax",
    "gru_no_reset_after": "input 7x3\nmasking\ngru 4 reset_after=false return_sequences=true",
    "simplernn_relu": "input 7x3\nmasking\nsimplernn 4 activation=relu",
    "lstm_custom_activations": "input 7x3\nmasking\nlstm 4 activation=elu recurrent_activation=tanh",
    "lstm_no_bias": "input 7x3\nmasking\nlstm 4 bias=false unit_forget_bias=false",
    "mask_through_dense": "input 7x3\nmasking\ndense 6 | dropout 0.2 | relu\ngru 4",
    "masked_mean": "input 7 dtype=int32\nembedding 50 6 mask_zero=true\nglobalavgpool1d\ndense 2",
    **{
        f"bidirectional_{merge}": f"input 7 dtype=int32\nembedding 50 6 mask_zero=true\nbidirectional lstm 4 merge={merge}"
        for merge in ("concat", "sum", "mul", "ave")
    },
    "bidirectional_gru_sequences": "input 7x3\nmasking\nbidirectional gru 4 return_sequences=true\nlstm 3",
    "bidirectional_simplernn_unmasked": "input 7x3\nbidirectional simplernn 4 return_sequences=true merge=ave",
    "unmasked_lstm": "input 7x3\nlstm 5 return_sequences=true\nlstm 3",
    "text_cnn": "input 12 dtype=int32\nembedding 50 6\nconv1d 8 3 activation=relu\nmaxpool1d 2\nglobalmaxpool1d\ndense 2",
    "conv1d_causal_dilated": "input 12x3\nconv1d 4 3 pad=causal dilation=2",
    "conv1d_same_strided": "input 11x3\nconv1d 4 4 stride=2 pad=same",
    "pools_1d_same": "input 11x3\nmaxpool1d 2 pad=same\navgpool1d 3 stride=1 pad=same\nglobalavgpool1d",
    "global_pools_2d": "input 5x6x3\nconv2d 4 2 | globalmaxpool | dense 2",
    "global_avg_2d": "input 5x6x3\nglobalavgpool",
    "batchnorm_on_sequences": "input 7x3\nmasking\nbatchnorm\nlstm 4",
}


@pytest.mark.parametrize("padding", ["pre", "post", "random"])
@pytest.mark.parametrize("text", SEQUENCE_CASES.values(), ids=SEQUENCE_CASES.keys())
def test_sequence_backends_agree(text, padding):
    testing.assert_backends_agree(text, TARGETS, batch=4, padding=padding)


@pytest.mark.parametrize("name", ["sentiment", "text_cnn", "masked_timeseries"])
def test_sequence_examples_agree(name):
    for padding in ("pre", "post"):
        testing.assert_backends_agree(layerdsl.load(EXAMPLES / f"{name}.layers"), TARGETS, batch=4, padding=padding)


@pytest.mark.parametrize(("name", "count"), [("vgg16", 138_357_544), ("mnist_convnet", 34_826)])
def test_live_parameter_counts_equal_keras(name, count):
    model = layerdsl.load(EXAMPLES / f"{name}.layers")
    assert model.total_params == count
    if "torch" in TARGETS:
        net = layerdsl.build(model, target="torch")
        assert sum(p.numel() for p in net.parameters() if p.requires_grad) == count
        del net
    if "keras" in TARGETS:
        net = layerdsl.build(model, target="keras")
        assert net.count_params() == count
        del net


@pytest.mark.parametrize(
    "text",
    [
        "input 9x9x3 | conv2d 4 3 pad=1 bias=false | batchnorm | relu | conv2d 5 3 stride=2 pad=1x2",
        "input 9x9x3 | depthwiseconv2d 3 pad=1 multiplier=2 | separableconv2d 4 3 pad=2x1 stride=2",
        "input 10x10x2 | conv2d 3 5 pad=2x0 dilation=2",
    ],
)
def test_symmetric_zero_padding_agrees_across_backends(text):
    testing.assert_backends_agree(text, TARGETS, batch=3)
