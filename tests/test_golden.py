"""Golden tests: the generated source for the examples, pinned byte for byte.

A change to an emitter shows up here as a readable diff of the generated
code. After reviewing it, regenerate with:

    LAYERDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

import ast
import os
from pathlib import Path

import pytest

import layerdsl

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT.parent / "examples"
GOLDEN = ROOT / "golden"
MODELS = ["oneliner", "mlp", "convnet_same", "mnist_convnet", "sentiment", "masked_timeseries"]
TARGETS = ["keras", "torch", "numpy"]


#: Architectures with blocks: one class or function per block definition, pinned for every target.
BLOCK_MODELS = [("resnet18", target) for target in TARGETS]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", MODELS)
def test_generated_source_matches_golden(name, target):
    _check_golden(name, target)


@pytest.mark.parametrize(("name", "target"), BLOCK_MODELS)
def test_generated_source_of_blocks_matches_golden(name, target):
    _check_golden(name, target)


def _check_golden(name, target):
    text = (EXAMPLES / f"{name}.layers").read_text()
    source = layerdsl.compile(layerdsl.parse(text, filename=f"{name}.layers"), target)
    ast.parse(source)
    path = GOLDEN / f"{name}.{target}.py"
    if os.environ.get("LAYERDSL_UPDATE_GOLDEN"):
        path.write_text(source)
    assert path.exists(), f"no golden file {path.name}; run with LAYERDSL_UPDATE_GOLDEN=1"
    assert source == path.read_text(), f"generated {target} source for {name} changed; review and update goldens"
