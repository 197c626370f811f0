"""The torch backend computes what Keras computes on graphs (blocks, branches, merges) and the new layers.

The oracle is a Keras functional model built here from plain ``keras.layers``,
following each layer's ``inputs``, with the same canonical weights (Keras layout
is canonical), never through layerdsl's own backends.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import ir
from layerdsl.testing import random_input, random_weights, run

torch = pytest.importorskip("torch")

ATOL, RTOL = 1e-5, 1e-4
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("keras")


def keras_axis(axis: int) -> int:
    """An IR axis (batch excluded) as a Keras axis (batch included)."""
    return axis if axis < 0 else axis + 1


def keras_layer(keras, layer: ir.Layer):
    a, kind, L = layer.args, layer.kind, keras.layers
    if kind == "dense":
        return L.Dense(a["units"], use_bias=a["bias"], activation=a["activation"])
    if kind == "conv2d":
        return L.Conv2D(
            a["filters"], a["kernel"], strides=a["stride"], padding=a["pad"], dilation_rate=a["dilation"],
            use_bias=a["bias"], activation=a["activation"],
        )  # fmt: skip
    if kind == "depthwiseconv2d":
        return L.DepthwiseConv2D(
            a["kernel"], strides=a["stride"], padding=a["pad"], dilation_rate=a["dilation"],
            depth_multiplier=a["multiplier"], use_bias=a["bias"], activation=a["activation"],
        )  # fmt: skip
    if kind == "separableconv2d":
        return L.SeparableConv2D(
            a["filters"], a["kernel"], strides=a["stride"], padding=a["pad"], dilation_rate=a["dilation"],
            depth_multiplier=a["multiplier"], use_bias=a["bias"], activation=a["activation"],
        )  # fmt: skip
    if kind == "conv2dtranspose":
        return L.Conv2DTranspose(
            a["filters"], a["kernel"], strides=a["stride"], padding=a["pad"], use_bias=a["bias"],
            activation=a["activation"],
        )  # fmt: skip
    if kind == "maxpool":
        return L.MaxPooling2D(a["pool"], strides=a["stride"], padding=a["pad"])
    if kind == "avgpool":
        return L.AveragePooling2D(a["pool"], strides=a["stride"], padding=a["pad"])
    if kind == "globalavgpool":
        return L.GlobalAveragePooling2D()
    if kind == "globalmaxpool":
        return L.GlobalMaxPooling2D()
    if kind == "flatten":
        return L.Flatten()
    if kind == "dropout":
        return L.Dropout(a["rate"])
    if kind == "batchnorm":
        return L.BatchNormalization(epsilon=a["eps"], momentum=a["momentum"], center=a["center"], scale=a["scale"])
    if kind == "layernorm":
        return L.LayerNormalization(axis=-1, epsilon=a["eps"], center=a["center"], scale=a["scale"])
    if kind == "activation":
        return L.Activation(a["function"])
    if kind == "zeropad2d":
        return L.ZeroPadding2D(((a["top"], a["bottom"]), (a["left"], a["right"])))
    if kind == "upsample2d":
        return L.UpSampling2D(a["size"], interpolation=a["interpolation"])
    if kind == "reshape":
        return L.Reshape(a["target"])
    if kind == "permute":
        return L.Permute(a["dims"])
    if kind == "conv1d":
        return L.Conv1D(a["filters"], a["kernel"], padding=a["pad"], activation=a["activation"])
    merges = {"add": L.Add, "multiply": L.Multiply, "average": L.Average}
    if kind in merges:
        return merges[kind]()
    if kind == "concat":
        return L.Concatenate(axis=keras_axis(a["axis"]))
    raise AssertionError(f"no Keras oracle for {kind}")


def keras_oracle(keras, model: ir.Model, weights: dict[str, np.ndarray]):
    """The model as a Keras functional graph, built layer by layer from each layer's inputs."""
    tensors = {ir.INPUT_NAME: keras.Input(model.input.shape)}
    previous = ir.INPUT_NAME
    for layer in model.layers:
        klayer = keras_layer(keras, layer)
        names = layer.inputs or (previous,)
        inputs = [tensors[name] for name in names]
        tensors[layer.name] = klayer(inputs if len(inputs) > 1 else inputs[0])
        klayer.set_weights([weights[f"{layer.name}.{w.name}"] for w in layer.weights])
        previous = layer.name
    return keras.Model(tensors[ir.INPUT_NAME], tensors[model.output_layer.name])


def assert_torch_matches_keras(keras, text: str, batch: int = 2) -> tuple[ir.Model, torch.nn.Module]:
    model = layerdsl.parse(text)
    weights = random_weights(model)
    x = random_input(model, batch=batch)
    expected = np.asarray(keras_oracle(keras, model, weights)(x, training=False))
    live = layerdsl.build(model, "torch")
    layerdsl.set_weights(live, weights)
    got = run("torch", live, model, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    trainable = sum(p.numel() for p in live.parameters() if p.requires_grad)
    assert trainable == model.trainable_params
    return model, live


def block_classes(model: ir.Model) -> list[str]:
    tree = ast.parse(layerdsl.compile(model, "torch"))
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)][:-1]  # the model's class is last


# --- graphs ------------------------------------------------------------------------------

RESNET = """
input 12x12x3
block conv_bn filters k=3 stride=1 {
  conv2d filters k stride=stride pad=same bias=false | batchnorm | relu
}
conv_bn 8
repeat 2 { residual { conv_bn 8 | conv_bn 8 } }
residual project=true { conv_bn 16 stride=2 | conv_bn 16 }
globalavgpool | dense 5
"""


def test_residual_identity_and_projection_match_keras(keras):
    assert_torch_matches_keras(keras, RESNET)


def test_block_instances_are_submodules_whose_state_dict_keys_nest():
    model = layerdsl.parse(RESNET)
    live = layerdsl.build(model, "torch")
    keys = set(live.state_dict())
    assert {"conv_bn.conv2d.weight", "conv_bn_4.batch_normalization.running_var"} <= keys
    assert "conv2d.weight" in keys  # the projection shortcut is the model's own layer
    # one class per block definition, whatever the instances' channels, strides and input sizes
    assert type(live.conv_bn) is type(live.conv_bn_1) is type(live.conv_bn_4)
    assert block_classes(model) == ["ConvBn"]
    assert (live.conv_bn.conv2d.stride, live.conv_bn_5.conv2d.stride) == ((1, 1), (2, 2))


def test_canonical_weights_stay_flat_and_round_trip_through_nested_modules():
    model = layerdsl.parse(RESNET)
    live = layerdsl.build(model, "torch")
    weights = random_weights(model, seed=3)
    layerdsl.set_weights(live, weights)
    back = layerdsl.get_weights(live)
    assert list(back) == model.weight_names()
    for key, array in weights.items():
        np.testing.assert_array_equal(back[key], array, err_msg=key)
    np.testing.assert_array_equal(
        live.conv_bn_2.conv2d.weight.detach().numpy(), weights["conv_bn_2_conv2d.kernel"].transpose(3, 2, 0, 1)
    )


def test_forward_reads_like_the_graph():
    source = layerdsl.compile(RESNET, "torch")
    forward = source[source.index("class Model(") :]
    assert "x = self.conv_bn(x)\n        conv_bn = x\n" in forward  # the residual input gets a name
    assert "x = conv_bn + x" in forward
    assert "conv_bn_6 = self.conv_bn_6(x)\n        x = self.conv2d(add_1)" in forward  # a branch, then the shortcut


INCEPTION = """
input 10x10x6
block conv filters k=1 { conv2d filters k pad=same activation=relu }
concat { conv 4 } { conv 3 | conv 5 3 } { maxpool 3 stride=1 pad=same | conv 2 }
conv 4 3
"""


def test_inception_three_branch_concat_matches_keras(keras):
    _, live = assert_torch_matches_keras(keras, INCEPTION)
    assert "conv_3.conv2d.weight" in live.state_dict()


UNET = """
input 16x16x2
block double filters { conv2d filters 3 pad=same activation=relu | conv2d filters 3 pad=same activation=relu }
double 4 | tap e1 | maxpool 2
double 8 | tap e2 | maxpool 2
double 16
conv2dtranspose 8 2 stride=2 pad=same | concat @e2 | double 8
upsample2d 2 interpolation=bilinear | concat @e1 | double 4
conv2d 1 1 activation=sigmoid
"""


def test_unet_with_taps_upsampling_and_concat_matches_keras(keras):
    assert_torch_matches_keras(keras, UNET)


NESTED = """
input 8x8x3
block conv_bn filters { conv2d filters 3 pad=same bias=false | batchnorm | relu6 }
block pair filters { conv_bn filters | residual { conv_bn filters } }
block stage filters { pair filters | pair filters }
stage 4
stage 4
globalmaxpool | dense 3
"""


def test_nested_blocks_match_keras_and_nest_their_modules(keras):
    _, live = assert_torch_matches_keras(keras, NESTED)
    assert "stage_1.pair_1.conv_bn_1.conv2d.weight" in live.state_dict()
    assert type(live.stage.pair_1) is type(live.stage_1.pair)
    assert type(live.stage) is type(live.stage_1)  # though the first one reads 3 channels, not 4
    assert (live.stage.pair.conv_bn.conv2d.in_channels, live.stage_1.pair.conv_bn.conv2d.in_channels) == (3, 4)


def test_a_block_reading_an_outer_tap_is_written_inline(keras):
    text = """
input 8x8x3
block up filters { upsample2d 2 | concat @skip | conv2d filters 3 pad=same }
conv2d 4 3 pad=same | tap skip
maxpool 2 | conv2d 6 1
up 5
"""
    model, _ = assert_torch_matches_keras(keras, text)
    source = layerdsl.compile(model, "torch")
    assert "class Up(" not in source and "self.up_conv2d = nn.Conv2d(10, 5" in source
    assert "x = torch.cat([x, skip], dim=1)" in source  # the tap is a variable named after it


@pytest.mark.parametrize("merge", ["multiply", "average", "add"])
def test_elementwise_merges_of_three_branches_match_keras(keras, merge):
    text = f"input 6x6x3\nconv2d 4 1\n{merge} {{ conv2d 4 3 pad=same }} {{ relu }} {{ }}\nconv2d 2 1"
    model, _ = assert_torch_matches_keras(keras, text)
    assert len(model.layer(merge if merge != "average" else "average").inputs) == 3


def test_two_input_merges_read_left_to_right(keras):
    assert_torch_matches_keras(
        keras, "input 6x6x3\nconv2d 4 1\nmultiply { conv2d 4 3 pad=same } { }\naverage { } { relu }"
    )


def test_image_concat_on_any_axis_matches_keras(keras):
    concats = [f"concat axis={axis} {{ relu }} {{ }}" for axis in (0, 1, -2, 2, -1, -3)]
    assert_torch_matches_keras(keras, "input 4x6x3\nconv2d 3 1 pad=same\n" + "\n".join(concats))


def test_sequence_concat_on_time_matches_keras(keras):
    assert_torch_matches_keras(keras, "input 5x3\nconv1d 3 1\nconcat axis=0 { conv1d 3 1 } { }\nconcat { } { }")


def test_flatten_feeding_a_merge_keeps_keras_order_and_one_feeding_dense_is_folded(keras):
    text = """
input 4x4x3
conv2d 2 1 | flatten | tap f
dropout 0.1 | dense 5 | tap d
@f
dense 5
add @d
concat @f
"""
    model, _ = assert_torch_matches_keras(keras, text)
    source = layerdsl.compile(model, "torch")
    assert source.count("permute(0, 2, 3, 1)") == 1  # the flatten that reaches the concat


def test_a_flatten_inside_a_block_is_folded_into_the_dense_outside(keras):
    text = "input 4x4x3\nblock head { conv2d 2 1 | flatten | dropout 0.1 }\nhead\ndense 3 | dense 2"
    model, _ = assert_torch_matches_keras(keras, text)
    assert "permute" not in layerdsl.compile(model, "torch")


# --- the new layers ----------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("pad", ["valid", "same"])
def test_conv2dtranspose_matches_keras(keras, stride, pad):
    # kernels smaller than, equal to and larger than the stride, with odd and even excess; odd and even sizes
    first = f"conv2dtranspose 2 3 stride={stride} pad={pad}"
    chain = [f"conv2dtranspose 2 {kernel} stride={stride} pad={pad}" for kernel in (1, 2, 4, 5)]
    model, _ = assert_torch_matches_keras(keras, f"input 5x4x3\n{first}\nmaxpool 5x4\n" + "\n".join(chain), batch=1)
    assert model.layers[0].output_shape[:2] == ((5 * stride, 4 * stride) if pad == "same" else
                                               (4 * stride + max(3, stride), 3 * stride + max(3, stride)))  # fmt: skip


def test_conv2dtranspose_non_square_without_bias_and_fused(keras):
    assert_torch_matches_keras(
        keras, "input 3x4x2\nconv2dtranspose 3 3x2 stride=2x3 pad=same bias=false activation=relu6"
    )
    assert_torch_matches_keras(keras, "input 3x4x2\nconv2dtranspose 3 2x5 stride=3x2 activation=tanh")


@pytest.mark.parametrize("size", ["7x7", "8x8", "7x8"])
def test_depthwise_multiplier_two_same_stride_two_matches_keras(keras, size):
    assert_torch_matches_keras(keras, f"input {size}x3\ndepthwiseconv2d 3 stride=2 pad=same multiplier=2")


def test_depthwise_variants_match_keras(keras):
    assert_torch_matches_keras(keras, "input 7x6x4\ndepthwiseconv2d 3x2 pad=same bias=false activation=relu6")
    assert_torch_matches_keras(keras, "input 9x9x2\ndepthwiseconv2d 3 dilation=2 multiplier=3")


def test_depthwise_kernel_round_trips_in_channel_major_order():
    model = layerdsl.parse("input 5x5x3\ndepthwiseconv2d 3 multiplier=2")
    live = layerdsl.build(model, "torch")
    weights = random_weights(model)
    layerdsl.set_weights(live, weights)
    kernel = weights["depthwise_conv2d.kernel"]
    # torch output channel c * multiplier + m is Keras's kernel[..., c, m]
    np.testing.assert_array_equal(live.depthwise_conv2d.weight[3, 0].detach().numpy(), kernel[:, :, 1, 1])
    np.testing.assert_array_equal(layerdsl.get_weights(live)["depthwise_conv2d.kernel"], kernel)


@pytest.mark.parametrize(
    "line",
    [
        "separableconv2d 5 3",
        "separableconv2d 5 3 stride=2 pad=same multiplier=2 activation=relu6",
        "separableconv2d 4 2x3 pad=same bias=false",
    ],
)
def test_separableconv2d_matches_keras(keras, line):
    assert_torch_matches_keras(keras, f"input 7x8x3\n{line}")


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsample2d_matches_keras(keras, interpolation):
    lines = f"upsample2d 2 interpolation={interpolation} | upsample2d 3x2 interpolation={interpolation}"
    assert_torch_matches_keras(keras, f"input 5x4x2\n{lines}")


@pytest.mark.parametrize("input_line", ["input 12", "input 5x6", "input 4x5x6"])
def test_layernorm_over_the_last_axis_matches_keras(keras, input_line):
    options = ["", "eps=1e-05", "center=false", "scale=false", "center=false scale=false", ""]
    assert_torch_matches_keras(keras, f"{input_line}\n" + "\n".join(f"layernorm {o}" for o in options))


def test_layernorm_on_images_normalizes_channels():
    model = layerdsl.parse("input 3x4x5\nlayernorm")
    live = layerdsl.build(model, "torch").eval()
    with torch.no_grad():
        y = live(torch.randn(2, 5, 3, 4)).numpy()
    np.testing.assert_allclose(y.mean(axis=1), 0.0, atol=1e-5)


@pytest.mark.parametrize(
    "lines",
    [
        "reshape 6x4x2 | conv2d 2 1",  # image -> image
        "reshape 48",  # image -> vector
        "reshape 12x4",  # image -> sequence
        "flatten | reshape 2x4x6 | conv2d 2 1",  # vector -> image
        "reshape 8x6 | reshape 4x3x4 | conv2d 2 1",  # sequence -> image
        "reshape 12x4 | permute 2x1",
        "permute 2x1x3 | conv2d 2 1",
        "permute 3x1x2 | conv2d 2 1",
        "permute 1x3x2 | conv2d 2 1",
        "permute 1x2x3 | conv2d 2 1",
    ],
)
def test_reshape_and_permute_follow_keras_channels_last_order(keras, lines):
    assert_torch_matches_keras(keras, f"input 4x3x4\nconv2d 4 1\n{lines}")


def test_zeropad2d_and_relu6_match_keras(keras):
    assert_torch_matches_keras(keras, "input 5x4x2\nzeropad2d top=1 bottom=2 left=0 right=3 | conv2d 3 2 | relu6")
    assert_torch_matches_keras(keras, "input 5x4x2\nzeropad2d 2 | conv2d 3 1 activation=relu6 | zeropad2d 1x2")


def test_new_layers_draw_keras_initial_weights():
    model = layerdsl.parse("input 8x8x16\ndepthwiseconv2d 3 multiplier=4\nseparableconv2d 8 3\nconv2dtranspose 4 3")
    live = layerdsl.build(model, "torch")
    # glorot_uniform with Keras fans: depthwise (3, 3, 16, 4): fan_in 144, fan_out 36
    limit = np.sqrt(6 / (144 + 36))
    weight = live.depthwise_conv2d.weight.detach().numpy()
    assert limit * 0.9 < np.abs(weight).max() <= limit
    # conv2dtranspose (3, 3, 4, 8): fan_in 36, fan_out 72
    limit = np.sqrt(6 / (36 + 72))
    assert limit * 0.9 < np.abs(live.conv2d_transpose.weight.detach().numpy()).max() <= limit
    assert not live.conv2d_transpose.bias.detach().any()


# --- real architectures --------------------------------------------------------------------


def test_resnet18_has_torchvisions_trainable_parameter_count():
    path = ROOT / "examples" / "resnet18.layers"
    if not path.exists():
        pytest.skip("examples/resnet18.layers is not written yet")
    live = layerdsl.build(layerdsl.load(path), "torch")
    assert sum(p.numel() for p in live.parameters() if p.requires_grad) == 11_689_512
    assert re.search(r"^basic\.1\.conv_bn\.conv\.weight$", "\n".join(live.state_dict()), flags=re.MULTILINE)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "inception", "unet"])
def test_example_architectures_count_parameters_as_the_ir(name):
    path = ROOT / "examples" / f"{name}.layers"
    if not path.exists():
        pytest.skip(f"examples/{name}.layers is not written yet")
    model = layerdsl.load(path)
    live = layerdsl.build(model, "torch")
    assert sum(p.numel() for p in live.parameters() if p.requires_grad) == model.trainable_params
    assert (
        sum(p.numel() for p in live.parameters())
        + sum(b.numel() for name, b in live.named_buffers() if "running" in name)
        == model.total_params
    )
