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


#: Goldens of real architectures, per target: one class (or function) per block definition.
ARCHITECTURES = [("resnet18", "torch"), ("resnet18", "numpy")]


@pytest.mark.parametrize(("name", "target"), [(n, t) for n in MODELS for t in TARGETS] + ARCHITECTURES)
def test_generated_source_matches_golden(name, target):
    text = (EXAMPLES / f"{name}.layers").read_text()
    source = layerdsl.compile(layerdsl.parse(text, filename=f"{name}.layers"), target)
    ast.parse(source)
    path = GOLDEN / f"{name}.{target}.py"
    if os.environ.get("LAYERDSL_UPDATE_GOLDEN"):
        path.write_text(source)
    assert path.exists(), f"no golden file {path.name}; run with LAYERDSL_UPDATE_GOLDEN=1"
    assert source == path.read_text(), f"generated {target} source for {name} changed; review and update goldens"
