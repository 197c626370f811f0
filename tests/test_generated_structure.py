"""Generated source has the model's own structure: one definition per block, and a size a person
would write (about 10 lines per DSL line, plus a fixed header)."""

import re
from pathlib import Path

import pytest

import layerdsl

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.layers"))
TARGETS = ("torch", "keras", "numpy")
# Where the model's own code starts; what comes before (imports, runtime helpers) is the fixed header.
MODEL_CODE_STARTS = {"torch": r"^class ", "keras": r"^def ", "numpy": r"^# --- the model ---$"}


def _dsl_lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _model_code(target: str, source: str) -> list[str]:
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(MODEL_CODE_STARTS[target], line))
    return lines[start:]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_generated_source_is_about_ten_lines_per_dsl_line(path, target):
    source = layerdsl.compile(layerdsl.load(path), target)
    assert len(_model_code(target, source)) <= 10 * _dsl_lines(path) + 20


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_torch_source_has_one_class_per_block_definition(path):
    model = layerdsl.load(path)
    source = layerdsl.compile(model, "torch")
    classes = re.findall(r"^class (\w+)\(nn\.Module\):", source, re.MULTILINE)
    # and one attention module where nn.MultiheadAttention cannot hold the layer (heads x key_dim != features)
    helpers = [c for c in classes if c == "MultiHeadAttention"]
    assert len(classes) == len(model.blocks) + 1 + len(helpers)
    assert len(set(classes)) == len(classes)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_keras_source_has_one_function_per_block_definition(path):
    model = layerdsl.load(path)
    source = layerdsl.compile(model, "keras")
    functions = re.findall(r"^def (\w+)\(", source, re.MULTILINE)
    assert sorted(functions) == sorted([b.name for b in model.blocks] + ["build_model"])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_numpy_source_has_one_definition_per_block(path):
    model = layerdsl.load(path)
    code = "\n".join(_model_code("numpy", layerdsl.compile(model, "numpy")))
    definitions = re.findall(r"^(?:class|def) (\w+)", code, re.MULTILINE)
    assert len(definitions) == len(model.blocks) + 1, definitions


def test_a_size_written_as_an_expression_is_that_expression_in_the_generated_class():
    """MobileNetV3's squeeze-excite writes its squeeze width as `max(8,(in_channels//4+4)//8*8)`: the
    torch class and the Keras function compute it from their input as the line does, instead of
    taking each instance's number as an argument."""
    model = layerdsl.load(next(p for p in EXAMPLES if p.stem == "mobilenet_v3_small"))
    squeeze = "max(8, (in_channels // 4 + 4) // 8 * 8)"
    torch_source = layerdsl.compile(model, "torch")
    assert "def __init__(self, in_channels: int) -> None:" in torch_source[torch_source.index("class Se(") :]
    assert f"nn.Conv2d(in_channels, {squeeze}, kernel_size=1)" in torch_source
    keras_source = layerdsl.compile(model, "keras")
    assert "def se(inputs, name=None):\n    in_channels = inputs.shape[-1]\n" in keras_source
    assert squeeze in keras_source
