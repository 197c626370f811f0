"""Weights saved with layerdsl 0.1.0's canonical names load into today's models unchanged.

The structured IR and the per-block code generation keep every layer's name (instance name +
"_" + local name), so a weights file keyed `"<layer>.<param>"` written by 0.1.0 still fits."""

import json
from pathlib import Path

import numpy as np
import pytest

import layerdsl
from layerdsl import testing

ROOT = Path(__file__).resolve().parent.parent
SAVED = json.loads((ROOT / "tests" / "data" / "weight_names_0_1_0.json").read_text())


@pytest.mark.parametrize("name", sorted(SAVED))
def test_weight_names_are_those_of_0_1_0(name):
    model = layerdsl.load(ROOT / "examples" / f"{name}.layers")
    assert model.weight_names() == SAVED[name]


def test_a_0_1_0_weights_file_loads_and_runs(tmp_path):
    model = layerdsl.load(ROOT / "examples" / "mnist_convnet.layers")
    weights = testing.random_weights(model)
    assert sorted(weights) == sorted(SAVED["mnist_convnet"])
    path = tmp_path / "old.npz"
    np.savez(path, **weights)
    net = layerdsl.build(model, "numpy")
    layerdsl.set_weights(net, layerdsl.load_weights(path))
    assert net(np.zeros((1, 28, 28, 1), np.float32)).shape == (1, 10)


def test_weights_with_other_names_fail_saying_which(tmp_path):
    model = layerdsl.load(ROOT / "examples" / "mnist_convnet.layers")
    weights = testing.random_weights(model)
    weights["old_conv.kernel"] = weights.pop("conv2d.kernel")
    net = layerdsl.build(model, "numpy")
    with pytest.raises(layerdsl.WeightsError, match=r"missing conv2d\.kernel.*unexpected old_conv\.kernel"):
        layerdsl.set_weights(net, weights)
