"""The Keras backend writes a model as keras.applications does: one function per block definition,
layer names built from the instance's `name`, a loop for a repeat, a variable for a tap, and the
details a Keras user expects (an activation fused into the layer before it, zero padding as a
ZeroPadding2D of its own). Names stay the IR's, so weights and saved models are unchanged."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import layerdsl
from layerdsl import testing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name: str, size: int | None = None) -> str:
    """An example's text, with its input's height and width set to ``size`` (a quicker model)."""
    text = (EXAMPLES / f"{name}.layers").read_text()
    return text if size is None else text.replace("input 224x224x3", f"input {size}x{size}x3")


def _functions(source: str) -> dict[str, str]:
    """Each top-level function's source, by name."""
    tree = ast.parse(source)
    return {node.name: ast.get_source_segment(source, node) for node in tree.body if isinstance(node, ast.FunctionDef)}


# --- source ---------------------------------------------------------------------------------


def test_a_block_is_a_function_of_its_parameters_that_names_layers_after_the_instance():
    source = layerdsl.compile(_example("resnet18"), "keras")
    conv_bn = _functions(source)["conv_bn"]
    assert conv_bn.startswith("def conv_bn(x, filters, k, stride=1, pad=0, name=None):")
    assert 'name=name + "_conv"' in conv_bn and 'name=name + "_bn"' in conv_bn
    assert 'x = conv_bn(inputs, 64, 7, stride=2, pad=3, name="conv_bn")' in source
    # blocks call the functions of the blocks they use, with names built from their own
    basic = _functions(source)["basic"]
    assert basic.startswith("def basic(inputs, filters, name=None):")  # the input is read twice
    assert 'x = conv_bn(inputs, filters, 3, pad=1, name=name + "_conv_bn")' in basic
    assert 'x = layers.Add(name=name + "_add")([inputs, conv_bn_1])' in basic


def test_zero_padding_is_a_layer_of_its_own_before_a_valid_convolution():
    conv_bn = _functions(layerdsl.compile(_example("resnet18"), "keras"))["conv_bn"]
    lines = [line.strip() for line in conv_bn.splitlines()]
    padding = lines.index('x = layers.ZeroPadding2D(pad, name=name + "_conv_pad")(x)')
    assert lines[padding + 1].startswith("x = layers.Conv2D(")
    assert "padding=" not in conv_bn


def test_a_repeat_of_a_block_is_a_loop():
    resnet18 = layerdsl.compile(_example("resnet18"), "keras")
    assert 'for i in range(2):\n        x = basic(x, 64, name="basic" + ("" if i == 0 else f"_{i}"))' in resnet18
    densenet = _functions(layerdsl.compile(_example("densenet121"), "keras"))
    assert densenet["dense_block"] == (
        "def dense_block(x, n, name=None):\n"
        "    for i in range(n):\n"
        '        x = conv_block(x, name=name + "_conv_block" + ("" if i == 0 else f"_{i}"))\n'
        "    return x"
    )
    # parameters that every instance leaves at their default are still the block's parameters
    assert densenet["conv_block"].startswith("def conv_block(inputs, growth=32, bottleneck=128, name=None):")
    assert "layers.Conv2D(bottleneck, (1, 1)" in densenet["conv_block"]


def test_a_tap_is_a_variable_named_after_it():
    source = layerdsl.compile(_example("unet"), "keras")
    assert 'enc1 = double(inputs, 16, name="double")' in source
    assert 'x = layers.Concatenate(name="concatenate_2")([up_2, enc1])' in source


def test_an_argument_that_differs_between_instances_is_spelled_out_in_every_one():
    text = "input 8x8x3\nblock cb s=1 p=0 { conv2d 4 3 stride=s pad=p }\ncb\ncb s=2 p=1\ncb\n"
    source = layerdsl.compile(text, "keras")
    functions = _functions(source)
    assert list(functions) == ["cb", "build_model"]
    assert 'x = layers.ZeroPadding2D(p, name=name + "_conv2d_pad")(x)' in functions["cb"]
    assert "strides=(s, s)" in functions["cb"]
    assert 'x = cb(inputs, name="cb")' in source and 'x = cb(x, s=2, p=1, name="cb_1")' in source
    testing.assert_backends_agree(text, ["keras", "numpy"])


def test_a_function_does_not_depend_on_the_input_size():
    small = _functions(layerdsl.compile(_example("resnet50", 64), "keras"))
    large = _functions(layerdsl.compile(_example("resnet50"), "keras"))
    for name in ("conv_bn", "bottleneck", "identity", "stage"):
        assert small[name] == large[name]


def test_an_activation_after_a_conv_or_dense_is_its_activation_argument():
    source = layerdsl.compile("input 6x6x2\nconv2d 4 3 | relu\nflatten | dense 3 | softmax\n", "keras")
    assert 'x = layers.Conv2D(4, (3, 3), activation="relu", name="conv2d")(inputs)' in source
    assert 'x = layers.Dense(3, activation="softmax", name="dense")(x)' in source
    assert "layers.Activation" not in source


@pytest.mark.parametrize(
    "text",
    [
        "input 6x6x2\nconv2d 2 1 | tap t | relu | add @t\n",  # the conv's output is read again
        "input 6x6x2\nconv2d 2 1 activation=tanh | relu\n",  # it has an activation already
        "input 6x6x2\nbatchnorm | relu\n",  # not a conv or dense
        "input 6\nblock b { dense 4 }\nb | relu\n",  # the dense is the end of a block
    ],
)
def test_an_activation_stays_a_layer_where_it_cannot_be_fused(text):
    source = layerdsl.compile(text, "keras")
    assert 'layers.Activation("relu", name="activation")' in source
    testing.assert_backends_agree(text, ["keras", "numpy"])


@pytest.mark.parametrize("name", sorted(path.stem for path in EXAMPLES.glob("*.layers")))
def test_generated_source_is_ruff_formatted_and_has_no_machine_path(name):
    text = (EXAMPLES / f"{name}.layers").read_text()
    source = layerdsl.compile(layerdsl.parse(text, filename=f"examples/{name}.layers"), "keras")
    assert str(Path.cwd()) not in source and str(EXAMPLES.parent) not in source
    pytest.importorskip("ruff")
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--line-length", "100", "--stdin-filename", f"{name}.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert formatted == source


# --- live models ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("resnet18", 32), ("densenet121", 32)])
def test_block_architectures_agree_with_numpy_at_a_reduced_size(name, size):
    pytest.importorskip("keras")
    model = layerdsl.parse(_example(name, size), filename=f"{name}.layers")
    testing.assert_backends_agree(model, ["keras", "numpy"], batch=1)


def _zero_padded(layer) -> bool:
    return isinstance(layer.args["pad"], tuple) and layer.args["pad"] != (0, 0)


def test_keras_layers_keep_the_canonical_names_and_weights_round_trip():
    keras = pytest.importorskip("keras")
    model = layerdsl.parse(_example("resnet18", 32))
    live = layerdsl.build(model, "keras")
    names = {layer.name for layer in live.layers[1:]}
    pads = {f"{layer.name}_pad" for layer in model.layers if layer.kind == "conv2d" and _zero_padded(layer)}
    fused = {layer.name for layer in model.layers if layer.kind == "activation"} - names
    # every IR layer is a Keras layer of the same name (plus a ZeroPadding2D `<conv>_pad` before a
    # padded conv), but activations fused into the conv before them
    assert "basic_1_conv_bn_1_conv" in names and "basic_1_conv_bn_1_conv_pad" in pads
    assert names == {layer.name for layer in model.layers} - fused | pads
    assert all(model.layer(name).kind == "activation" for name in fused)
    weights = testing.random_weights(model, seed=3)
    layerdsl.set_weights(live, weights)
    again = layerdsl.get_weights(live)
    assert again.keys() == weights.keys()
    for key, value in weights.items():
        np.testing.assert_array_equal(again[key], value)
    assert isinstance(live, keras.Model)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # NumPy 2 notice from inside Keras's saving
def test_a_model_built_from_functions_saves_and_loads(tmp_path):
    keras = pytest.importorskip("keras")
    model = layerdsl.parse(_example("densenet121", 32))
    live = layerdsl.build(model, "keras")
    layerdsl.set_weights(live, testing.random_weights(model, seed=5))
    live.save(tmp_path / "densenet.keras")
    loaded = keras.models.load_model(tmp_path / "densenet.keras")
    x = testing.random_input(model, batch=2)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(live(x)), atol=1e-6)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in live.layers]


def test_every_block_of_every_example_is_one_function():
    for path in sorted(EXAMPLES.glob("*.layers")):
        model = layerdsl.load(path)
        functions = re.findall(r"^def (\w+)\(", layerdsl.compile(model, "keras"), re.MULTILINE)
        assert functions[-1] == "build_model"
        assert sorted(functions[:-1]) == sorted(block.name for block in model.blocks), path.name


def test_blocks_named_like_the_modules_the_source_uses_get_other_function_names():
    text = "input 6\nblock keras n { dense n }\nblock layers { keras 3 | keras 2 }\nlayers\nkeras 5\n"
    source = layerdsl.compile(text, "keras")
    assert list(_functions(source)) == ["keras_1", "layers_1", "build_model"]
    assert 'x = keras_1(x, 5, name="keras")' in source  # the Keras layer names stay the IR's
    testing.assert_backends_agree(text, ["keras", "numpy"])


def test_a_block_with_a_dunder_parameter_is_written_inline():
    source = layerdsl.compile("block b __import__ { dense __import__ }\ndense 4 in=3 | b 2\n", "keras")
    assert "def b(" not in source
