"""The NumPy source keeps the model's structure: a class per block definition, a loop per repeat,
a variable per tap; and the model it builds computes what the flat one did."""

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import testing
from layerdsl.backends.numpy_backend import MODEL_CODE_MARKER

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.layers"))


def example(name, size=None):
    """An example, with its input shrunk to ``size`` x ``size`` (the same blocks, less arithmetic)."""
    text = (Path(EXAMPLES[0]).parent / f"{name}.layers").read_text()
    if size:
        text = re.sub(r"^input 224x224x3$", f"input {size}x{size}x3", text, flags=re.MULTILINE)
    return layerdsl.parse(text, filename=f"{name}.layers")


def model_code(source):
    return source[source.index(MODEL_CODE_MARKER) :]


def classes(source):
    return [node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)]


def method(cls, name):
    return next(node for node in cls.body if isinstance(node, ast.FunctionDef) and node.name == name)


def test_a_block_is_one_class_whose_instances_differ_in_arguments():
    model = example("resnet18")
    source = layerdsl.compile(model, "numpy")
    defined = [cls.name for cls in classes(model_code(source))]
    assert defined == ["ConvBn", "Basic", "Down", "Resnet18"]
    assert 'self.down_1 = Down(rng, "down_1", 256, 128)' in source
    assert 'self.conv_bn_1 = ConvBn(rng, name + "_conv_bn_1", filters, 3, filters, pad=1)' in source
    # The layer names inside come from the instance's name, so the weights keep their canonical keys.
    assert 'name=name + "_conv"' in source
    live = layerdsl.build(model, target="numpy")
    assert list(live.layers) == [layer.name for layer in model.layers]
    assert set(layerdsl.get_weights(live)) == set(model.weight_names())


def test_a_repeat_is_a_loop_over_instances_of_one_class():
    source = layerdsl.compile(example("densenet121"), "numpy")
    dense_block = next(cls for cls in classes(source) if cls.name == "DenseBlock")
    init = ast.unparse(method(dense_block, "__init__"))
    assert "def __init__(self, rng, name, n, in_channels):" in init
    # DenseNet's channels grow by the growth rate at every iteration.
    assert "ConvBlock(rng, name + '_conv_block' + ('' if i == 0 else f'_{i}'), in_channels + i * 32)" in init
    assert "for i in range(n)" in init
    call = ast.unparse(method(dense_block, "__call__"))
    assert "for block in self.conv_block:\n        x = block(x)" in call
    assert len(classes(model_code(source))) == 4  # ConvBlock, DenseBlock, Transition, the model


def test_a_tap_is_a_variable_named_after_it():
    source = layerdsl.compile(example("unet"), "numpy")
    model = classes(model_code(source))[-1]
    call = ast.unparse(method(model, "__call__"))
    for tap in ("enc1", "enc2", "enc3"):
        assert re.search(rf"^    {tap} = self\.", call, re.MULTILINE), tap
        assert re.search(rf"self\.\w+\(x, {tap}\)", call), tap


def test_a_block_that_reads_an_outer_tap_is_inlined():
    text = "input 6\ndense 6 | tap t\ndense 6\nblock b { dense 6 | add @t }\nb\nb\ndense 2"
    source = layerdsl.compile(text, "numpy")
    assert [cls.name for cls in classes(model_code(source))] == ["Model"]
    testing.assert_backends_agree(text, testing.available_targets())


# The large ones (VGG16, ResNet50, DenseNet...) draw the same way, only slower.
SMALL_EXAMPLES = [p for p in EXAMPLES if layerdsl.load(p).total_params <= 5_000_000]


@pytest.mark.parametrize("path", SMALL_EXAMPLES, ids=lambda p: p.stem)
def test_block_classes_draw_the_initial_weights_of_the_flat_model(path):
    """Seeded weights are drawn layer by layer in the order of the source, classes or not."""
    model = layerdsl.load(path)
    flat = dataclasses.replace(model, body=())
    structured, plain = (layerdsl.get_weights(layerdsl.build(m, target="numpy", seed=3)) for m in (model, flat))
    assert list(structured) == list(plain)
    for key in plain:
        np.testing.assert_array_equal(structured[key], plain[key])


@pytest.mark.parametrize(("name", "size"), [("resnet18", 32), ("densenet121", 32), ("mobilenet_v2", 32)])
def test_block_classes_agree_with_torch_and_keras_after_weight_transfer(name, size):
    targets = testing.available_targets()
    if len(targets) < 2:
        pytest.skip("needs torch or keras installed to compare against")
    testing.assert_backends_agree(example(name, size), targets, batch=2)


def test_generated_sources_are_ruff_formatted():
    ruff = pytest.importorskip("ruff")
    del ruff
    for path in EXAMPLES:
        source = layerdsl.compile(layerdsl.parse(path.read_text(), filename=path.name), "numpy")
        # The file carries runtime pieces written at the project's line length.
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "format", "--diff", "--isolated", "--line-length", "120", "-"],
            input=source,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{path.name}:\n{result.stdout}{result.stderr}"
        assert "/work/" not in source and str(Path.home()) not in source


def test_block_parameters_named_like_the_constructors_own_names_are_not_taken():
    text = "input 6\nblock b weights rng initial { dense weights | dense rng | dense initial }\nb 3 4 5\nb 6 7 8\ndense 2"
    source = layerdsl.compile(text, "numpy")
    [block] = [cls for cls in classes(source) if cls.name == "B"]
    taken = [arg.arg for arg in method(block, "__init__").args.args]
    assert taken[:3] == ["self", "rng", "name"] and len(set(taken)) == len(taken)
    testing.assert_backends_agree(text, testing.available_targets())


@pytest.mark.parametrize("shape", [(7,), (3, 4), (5, 2, 3), (3, 3, 2, 5)])
def test_the_runtimes_initial_draws_what_layerdsl_initializers_describe(shape):
    """The generated file carries its own copy of the initializer maths (it needs only numpy):
    it must draw from exactly the distributions layerdsl.initializers describes."""
    from layerdsl.backends import numpy_runtime
    from layerdsl.initializers import INITIALIZERS, distribution

    for name in [*INITIALIZERS, "constant:1e-06"]:
        dist = distribution(name, shape)
        param = {"uniform": "limit", "normal": "std", "truncated_normal": "std", "constant": "value", "orthogonal": "gain"}
        expected = numpy_runtime.draw(
            np.random.default_rng(5), dist.kind, shape, **{param[dist.kind]: getattr(dist, param[dist.kind])}
        )
        np.testing.assert_array_equal(numpy_runtime.initial(np.random.default_rng(5), name, shape), expected, err_msg=name)
