"""Real architectures: parameter counts against the frameworks' own models, and live builds."""

from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import testing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("name", "application", "count"),
    [("resnet50", "ResNet50", 25_636_712), ("mobilenet_v2", "MobileNetV2", 3_538_984)],
)
def test_counts_equal_keras_applications(name, application, count):
    keras = pytest.importorskip("keras")
    reference = getattr(keras.applications, application)(weights=None)
    assert reference.count_params() == count
    model = layerdsl.load(EXAMPLES / f"{name}.layers")
    assert model.total_params == count
    assert layerdsl.build(model, target="keras").count_params() == count


def test_densenet121_counts_equal_keras_applications():
    keras = pytest.importorskip("keras")
    reference = keras.applications.DenseNet121(weights=None)
    model = layerdsl.load(EXAMPLES / "densenet121.layers")
    live = layerdsl.build(model, target="keras")
    for built in (reference, live):
        assert built.count_params() == 8_062_504
        assert sum(int(np.prod(w.shape)) for w in built.trainable_weights) == 7_978_856
    assert (model.total_params, model.trainable_params) == (8_062_504, 7_978_856)


@pytest.mark.parametrize(
    ("name", "trainable"),
    [("resnet50", 25_583_592), ("resnet18", 11_689_512), ("mobilenet_v2", 3_504_872)],
)
def test_live_torch_builds_have_the_trainable_count(name, trainable):
    pytest.importorskip("torch")
    net = layerdsl.build(layerdsl.load(EXAMPLES / f"{name}.layers"), target="torch")
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == trainable


SMALL_GRAPHS = {
    "residual_identity": "input 6x6x4\nresidual { conv2d 4 3 pad=same | batchnorm | relu | conv2d 4 3 pad=same }\nrelu",
    "residual_projection": "input 7x7x4\nresidual project=true { conv2d 8 3 stride=2 pad=same | relu }",
    "residual_shortcut_body": "input 6x6x4\nresidual { conv2d 6 3 pad=same } { conv2d 6 1 | batchnorm }",
    "concat_three": "input 6x6x4\nconcat { conv2d 2 1 } { conv2d 3 3 pad=same } { maxpool 3 stride=1 pad=same }",
    "merges": "input 6\nmultiply { dense 4 } { dense 4 | sigmoid }\naverage { } { dense 4 }",
    "concat_axis": "input 5x3\nconcat axis=0 { } { dense 3 }",
    "unet_small": "input 8x8x2\nconv2d 4 3 pad=same | tap e\nmaxpool 2 | conv2d 8 3 pad=same\nupsample2d 2 | concat @e | conv2d 2 1",
    "unet_transpose": "input 8x8x2\nconv2d 4 3 pad=same | tap e\nmaxpool 2\nconv2dtranspose 4 2 stride=2 pad=same | concat @e",
    "nested_blocks": "input 6x6x3\nblock cb f { conv2d f 3 pad=same | batchnorm | relu }\nblock two f { cb f | cb f }\ntwo 4 | repeat 2 { residual { two 4 } }",
    "depthwise_separable": "input 9x9x4\ndepthwiseconv2d 3 stride=2 pad=same multiplier=2 | relu6\nseparableconv2d 5 3 pad=same",
    "reshape_permute": "input 4x6x2\nreshape 6x4x2 | permute 2x1x3 | conv2d 3 1",
    "layernorm_everywhere": "input 5x5x3\nlayernorm | conv2d 4 1 | flatten | dense 6 | layernorm center=false",
    "zeropad_bilinear": "input 5x5x3\nzeropad2d top=0 bottom=1 left=2 right=0\nupsample2d 2 interpolation=bilinear",
}


@pytest.mark.parametrize("text", SMALL_GRAPHS.values(), ids=SMALL_GRAPHS.keys())
def test_graphs_agree_across_backends(text):
    targets = testing.available_targets()
    if len(targets) < 2:
        pytest.skip("needs torch or keras installed to compare against")
    testing.assert_backends_agree(text, targets, batch=2)


@pytest.mark.parametrize("name", ["inception", "unet"])
def test_graph_examples_agree_across_backends(name):
    targets = testing.available_targets()
    if len(targets) < 2:
        pytest.skip("needs torch or keras installed to compare against")
    testing.assert_backends_agree(layerdsl.load(EXAMPLES / f"{name}.layers"), targets, batch=1)
