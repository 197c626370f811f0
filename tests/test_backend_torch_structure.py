"""The torch source has the model's own structure: one class per block, repeats as nn.Sequential or a
loop, taps as variables, and the details a torch user expects (fused activations, `padding=1`)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import testing

torch = pytest.importorskip("torch")

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.layers"))


def example(name: str, size: int | None = None) -> layerdsl.Model:
    """An example, optionally with a smaller square input (`input 224x224x3` -> `input SxSx3`)."""
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.layers"
    text = path.read_text()
    if size is not None:
        text = re.sub(r"^input \d+x\d+x(\d+)", rf"input {size}x{size}x\1", text, count=1, flags=re.MULTILINE)
    return layerdsl.parse(text, filename=f"{name}.layers")


def namespace(model: layerdsl.Model) -> dict:
    scope: dict = {}
    exec(compile(layerdsl.compile(model, "torch"), "<generated>", "exec"), scope)
    return scope


def classes_part(source: str, model_class: str) -> str:
    """The block classes: from the first class to the model's class."""
    return source[source.index("class ") : source.index(f"class {model_class}(nn.Module):")]


def test_an_activation_right_after_a_conv_or_dense_joins_its_line():
    source = layerdsl.compile("input 6x6x3\nconv2d 4 3 | relu\nflatten\ndense 5 | softmax", "torch")
    assert "x = torch.relu(self.conv2d(x))" in source
    assert "x = torch.softmax(self.dense(x), dim=-1)" in source
    assert "x = torch.relu(x)" not in source


def test_an_activation_stays_apart_when_something_else_reads_the_conv():
    source = layerdsl.compile("input 6x6x3\nconv2d 4 3 pad=same | tap t | relu | add @t", "torch")
    assert "torch.relu(self.conv2d" not in source
    assert "x = torch.relu(x)" in source and "x = x + t" in source  # the tap is a variable named after it


def test_symmetric_zero_padding_is_torchs_padding():
    assert "nn.Conv2d(3, 4, kernel_size=3, padding=1)" in layerdsl.compile("input 6x6x3\nconv2d 4 3 pad=1", "torch")
    assert "padding=(1, 2)" in layerdsl.compile("input 6x6x3\nconv2d 4 3 pad=1x2", "torch")
    source = layerdsl.compile(example("resnet18"), "torch")
    assert "nn.Conv2d(in_channels, filters, kernel_size=k, stride=stride, padding=pad, bias=False)" in source
    assert "self.conv_bn = ConvBn(3, 64, 7, stride=2, pad=3)" in source
    assert "ZeroPad2d(pads)" not in source
    # a max pool's `same` at stride 1 is symmetric: torch's own padding (with -inf, as a max needs)
    assert "nn.MaxPool2d(3, stride=1, padding=1)" in layerdsl.compile(example("inception"), "torch")


def test_a_block_class_takes_its_parameters_and_its_input_channels():
    scope = namespace(example("resnet18"))
    signature = inspect.signature(scope["ConvBn"].__init__)
    assert [(p.name, p.default) for p in signature.parameters.values()][1:] == [
        ("in_channels", inspect.Parameter.empty),
        ("filters", inspect.Parameter.empty),
        ("k", inspect.Parameter.empty),
        ("stride", 1),
        ("pad", 0),
    ]
    block = scope["ConvBn"](16, 32, 3, stride=2, pad=1)  # usable on its own, as a torch user would
    assert block(torch.zeros(1, 16, 10, 10)).shape == (1, 32, 5, 5)


def test_block_classes_never_depend_on_the_input_size():
    text = "block down f { conv2d f 3 stride=2 pad=same | relu }\ndown 4 | down 4 | down 4\nflatten | dense 2"
    model = layerdsl.parse(f"input 12x12x3\n{text}")  # pads (0, 1, 0, 1), (0, 1, 0, 1), then (1, 1, 1, 1)
    live = layerdsl.build(model, "torch")
    assert type(live.down) is type(live.down_1) is type(live.down_2)
    assert (live.down_1.conv2d_pad.padding, live.down_2.conv2d_pad.padding) == ((0, 1, 0, 1), (1, 1, 1, 1))
    testing.assert_backends_agree(model, ["numpy", "torch"])
    # the same DSL at another input size: the block classes are the same text
    small = layerdsl.compile(layerdsl.parse(f"input 7x7x3\n{text}"), "torch")
    assert classes_part(small, "Model") == classes_part(layerdsl.compile(model, "torch"), "Model")
    for name, size in (("resnet18", 64), ("densenet121", 96), ("mobilenet_v2", 96), ("unet", 32)):
        model_class = "".join(w.title() for w in name.split("_"))
        assert classes_part(layerdsl.compile(example(name), "torch"), model_class) == classes_part(
            layerdsl.compile(example(name, size), "torch"), model_class
        ), name


def test_a_densenet_dense_block_is_a_loop_with_growing_channels():
    source = layerdsl.compile(example("densenet121"), "torch")
    assert "self.conv_block = nn.Sequential(*[ConvBlock(in_channels + i * 32) for i in range(n)])" in source
    assert "self.dense_block_3 = DenseBlock(512, 16)" in source
    assert re.findall(r"^class (\w+)\(", source, re.MULTILINE) == [
        "ConvBlock", "Transition", "DenseBlock", "Densenet121",
    ]  # fmt: skip


def test_a_repeat_of_one_block_is_an_nn_sequential_whose_weights_map_through_it():
    model = example("resnet18", 32)
    live = layerdsl.build(model, "torch")
    assert isinstance(live.basic, torch.nn.Sequential) and len(live.basic) == 2
    weights = testing.random_weights(model, seed=4)
    layerdsl.set_weights(live, weights)
    kernel = weights["basic_1_conv_bn_conv.kernel"]  # the second iteration's first conv
    np.testing.assert_array_equal(live.basic[1].conv_bn.conv.weight.detach().numpy(), kernel.transpose(3, 2, 0, 1))
    back = layerdsl.get_weights(live)
    assert list(back) == model.weight_names()
    for key, array in weights.items():
        np.testing.assert_array_equal(back[key], array, err_msg=key)


@pytest.mark.parametrize(("name", "size"), [("resnet18", 32), ("densenet121", 32)])
def test_block_structured_examples_agree_with_numpy_and_keras(name, size):
    testing.assert_backends_agree(example(name, size), testing.available_targets(), batch=2)


def test_a_block_structured_chain_round_trips_through_from_torch():
    text = (
        "input 8x8x3\nblock cbr f { conv2d f 3 pad=1 bias=false | batchnorm eps=1e-05 momentum=0.9 | relu }\n"
        "cbr 4 | repeat 2 { cbr 4 }\nflatten\ndense 3\n"
    )
    model = layerdsl.parse(text)
    live = layerdsl.build(model, "torch")
    layerdsl.set_weights(live, testing.random_weights(model))
    imported = layerdsl.from_torch(live, (3, 8, 8))
    assert [layer.kind for layer in imported.model.layers] == [layer.kind for layer in model.layers]
    fresh = layerdsl.build(imported.model, "torch")
    layerdsl.set_weights(fresh, imported.weights)
    x = testing.random_input(model, batch=2)
    np.testing.assert_allclose(
        testing.run("torch", fresh, imported.model, x), testing.run("torch", live, model, x), atol=1e-5, rtol=1e-4
    )


def test_reset_parameters_carries_no_per_instance_numbers():
    source = layerdsl.compile(example("mobilenet_v2"), "torch")
    resets = re.findall(r"^ +(?:nn\.init|variance_scaling_).*$", source, re.MULTILINE)
    assert resets and not any(re.search(r"\d\.\d{4,}", line) for line in resets)
    assert "nn.init.xavier_uniform_(self.conv2d.weight)  # Keras glorot_uniform" in source
    # a depthwise kernel's Keras fans are not torch's: the shared helper counts them from the shape
    assert 'variance_scaling_(self.depthwise_conv2d.weight, 1.0, "fan_avg", "uniform", multiplier=1)' in source


def test_batchnorm_momentum_conversion_is_commented():
    source = layerdsl.compile("input 4\nbatchnorm momentum=0.9 eps=1e-05", "torch")
    assert "(Keras momentum 0.9 is torch momentum=0.1)" in source
    assert "nn.BatchNorm1d(4, eps=1e-05, momentum=0.1)" in source


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_generated_source_is_ruff_formatted_with_at_most_one_helper(path):
    pytest.importorskip("ruff")
    source = layerdsl.compile(layerdsl.parse(path.read_text(), filename=path.name), "torch")
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--isolated", "--line-length", "120", "--diff", "-"],
        input=source, capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    helpers = [n for n in re.findall(r"^def (\w+)\(", source, re.MULTILINE) if n != "build_model"]
    assert len(helpers) <= 1, helpers


def test_conv1d_runs_transpose_once_into_and_once_out_of_torchs_layout():
    text = "input 20x3\nconv1d 8 3 activation=relu\nmaxpool1d 2 pad=same\nconv1d 4 4 pad=same\nglobalmaxpool1d\ndense 2"
    source = layerdsl.compile(text, "torch")
    forward = source[source.index("def forward") : source.index("def reset_parameters")]
    assert forward.count("transpose(1, 2)") == 2
    assert "x = torch.relu(self.conv1d(x.transpose(1, 2)))" in forward  # stays (N, C, T) for the pool
    testing.assert_backends_agree(text, testing.available_targets())


def test_instances_that_pad_differently_share_one_class():
    text = "input 9x9x3\nblock cb f k s=1 pad=valid { conv2d f k stride=s pad=pad }\ncb 4 1 | cb 4 3 pad=same | cb 4 3 s=2 pad=1"
    model = layerdsl.parse(text)
    source = layerdsl.compile(model, "torch")
    assert re.findall(r"^class (\w+)\(", source, re.MULTILINE) == ["Cb", "Model"]
    assert "self.conv2d = nn.Conv2d(in_channels, f, kernel_size=k, stride=s)" in source
    assert "self.cb_1 = Cb(4, 4, 3, (1, 1, 1, 1))" in source  # `same` at stride 1, as pads
    testing.assert_backends_agree(model, ["numpy", "torch"])
