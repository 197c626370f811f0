"""Cross-backend checking: random non-trivial weights, and running one model on every backend.

Used by the test suite and by ``examples/compare_backends.py``; handy for
anyone checking that a model means the same thing everywhere.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ir
from .api import _model, build
from .weights import set_weights

#: Tolerances for float32 comparisons, as torch.testing uses.
ATOL, RTOL = 1e-5, 1e-4


def random_weights(model: ir.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical weights with non-trivial values everywhere (BatchNorm statistics too)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for layer in model.layers:
        for w in layer.weights:
            if w.name in ("gamma",):
                value = rng.uniform(0.5, 1.5, w.shape)
            elif w.name in ("moving_variance", "variance"):
                value = rng.uniform(0.5, 2.0, w.shape)
            elif w.name == "count":  # how many examples a normalization was adapted on
                value = rng.integers(1, 1000, w.shape)
            elif w.name in ("beta", "moving_mean", "bias", "mean"):
                value = rng.normal(0.0, 0.3, w.shape)
            else:
                fan_in = math.prod(w.shape[:-1]) if len(w.shape) > 1 else w.shape[0]
                value = rng.normal(0.0, 1.0 / math.sqrt(max(fan_in, 1)), w.shape)
            out[f"{layer.name}.{w.name}"] = value.astype(np.float32)
    return out


def random_input(model: ir.Model, batch: int = 2, seed: int = 1, padding: str = "pre") -> Any:
    """A random batch in the layout Keras and NumPy models take (``Input.fed_shape``); for a model
    with several inputs, a tuple of batches, one per input in declared order, each of its dtype.

    Token-id models get ids in ``[1, vocab)`` (``[0, 1)`` for a vocabulary of one) with padding zeros, and float
    sequence models that start with ``masking`` get padded timesteps: row i is
    padded by i steps (``pre``, ``post``, or ``random`` positions), so a batch
    has rows with no padding and rows with plenty.
    """
    rng = np.random.default_rng(seed)
    if len(model.inputs) > 1:
        return tuple(_random_batch(model, model_input, rng, batch, padding) for model_input in model.inputs)
    return _random_batch(model, model.input, rng, batch, padding)


def _random_batch(
    model: ir.Model, model_input: ir.Input, rng: np.random.Generator, batch: int, padding: str
) -> np.ndarray:
    shape = (batch, *model_input.fed_shape)
    readers = [layer for layer in model.layers if model_input.name in layer.inputs] or list(model.layers)
    if model_input.dtype.startswith("int"):
        embeddings = [layer for layer in (*readers, *model.layers) if layer.kind == "embedding"]
        vocab = embeddings[0].args["vocab"] if embeddings else 2
        x = rng.integers(1 if vocab > 1 else 0, vocab, shape).astype(model_input.dtype)
        _pad(x, rng, padding, value=0)
        return x
    x = rng.normal(0.0, 1.0, shape).astype(np.float32)
    masking = next((layer for layer in readers if layer.kind == "masking"), None)
    if masking is not None and x.ndim == 3:
        _pad(x, rng, padding, value=masking.args["value"])
    return x


def _pad(x: np.ndarray, rng: np.random.Generator, padding: str, value: float) -> None:
    steps = x.shape[1]
    for row in range(x.shape[0]):
        count = min(row, steps - 1)  # keep at least one real step per row
        if padding == "pre":
            positions = np.arange(count)
        elif padding == "post":
            positions = np.arange(steps - count, steps)
        else:
            positions = rng.choice(steps, size=count, replace=False)
        x[row, positions] = value


def _torch_layout(model_input: ir.Input, x: np.ndarray) -> np.ndarray:
    """Keras/NumPy input -> torch input: images become NCHW."""
    if len(model_input.shape) == 3 and model_input.layout == "channels_last":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _from_torch_layout(shape: ir.Shape, y: np.ndarray) -> np.ndarray:
    if len(shape) == 3:
        return y.transpose(0, 2, 3, 1)
    return y


def outputs_of(y: Any) -> tuple[np.ndarray, ...]:
    """A model's result as a tuple of arrays: one for a single output, one per output otherwise."""
    return tuple(np.asarray(part) for part in y) if isinstance(y, tuple | list) else (np.asarray(y),)


def run(target: str, live: Any, model: ir.Model, x: Any) -> Any:
    """Inference on a live model of ``target``; input and output in Keras layout. For a model with
    several inputs ``x`` is a tuple (one batch per input); with several outputs the result is a tuple."""
    arrays = tuple(x) if len(model.inputs) > 1 else (x,)
    if target in ("numpy", "onnx"):
        y = live(*arrays)
    elif target == "keras":
        y = live(list(arrays) if len(arrays) > 1 else arrays[0], training=False)
    elif target == "torch":
        torch = importlib.import_module("torch")
        live.eval()
        fed = [torch.from_numpy(_torch_layout(i, a)) for i, a in zip(model.inputs, arrays, strict=True)]
        with torch.no_grad():
            y = live(*fed)
        y = tuple(
            _from_torch_layout(shape, part.numpy())
            for shape, part in zip(model.output_shapes, y if isinstance(y, tuple) else (y,), strict=True)
        )
    else:
        raise ValueError(f"unknown target {target}")
    parts = outputs_of(y)
    return parts if len(model.outputs) > 1 else parts[0]


def available_targets() -> list[str]:
    """Targets whose framework is installed here."""
    found = ["numpy"]
    for target, modules in (("keras", ["keras"]), ("torch", ["torch"]), ("onnx", ["onnx", "onnxruntime"])):
        if all(importlib.util.find_spec(module) is not None for module in modules):
            found.append(target)
    return found


#: Targets checked against another than the common reference: ONNX Runtime against the NumPy backend.
REFERENCE_OF = {"onnx": "numpy"}


@dataclass
class Agreement:
    outputs: dict[str, Any]  # an array per target; a tuple of arrays for a model with several outputs
    max_abs_diff: dict[str, float]  # each target against its reference
    reference: str  # keras when present; see ``reference_of``

    def reference_of(self, target: str) -> str:
        other = REFERENCE_OF.get(target)
        return other if other in self.outputs else self.reference


def compare(
    model_or_text: ir.Model | str,
    targets: Iterable[str] | None = None,
    *,
    batch: int = 2,
    seed: int = 0,
    weights: dict[str, np.ndarray] | None = None,
    x: Any = None,
    padding: str = "pre",
) -> Agreement:
    """Build the model on each target, load the same weights, run the same input."""
    model = _model(model_or_text)
    targets = list(targets or available_targets())
    weights = weights if weights is not None else random_weights(model, seed)
    x = x if x is not None else random_input(model, batch, seed + 1, padding)
    outputs = {}
    for target in targets:
        live = build(model, target=target)
        set_weights(live, weights)
        outputs[target] = run(target, live, model, x)
    result = Agreement(outputs, {}, "keras" if "keras" in outputs else targets[0])
    for t, y in outputs.items():
        pairs = zip(outputs_of(y), outputs_of(outputs[result.reference_of(t)]), strict=True)
        result.max_abs_diff[t] = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    return result


def assert_backends_agree(
    model_or_text: ir.Model | str,
    targets: Iterable[str] | None = None,
    *,
    atol: float = ATOL,
    rtol: float = RTOL,
    **kwargs: Any,
) -> Agreement:
    """Assert every target computes the same outputs as the reference, at float32 tolerances."""
    result = compare(model_or_text, targets, **kwargs)
    for target, outputs in result.outputs.items():
        reference = result.reference_of(target)
        expected = outputs_of(result.outputs[reference])
        assert len(outputs_of(outputs)) == len(expected), f"{target} returned another number of outputs"
        for k, (y, ref) in enumerate(zip(outputs_of(outputs), expected, strict=True)):
            which = f" output {k}" if len(expected) > 1 else ""
            assert y.dtype == np.float32, f"{target}{which} returned {y.dtype}"
            assert y.shape == ref.shape, f"{target}{which} shape {y.shape} != {reference} {ref.shape}"
            np.testing.assert_allclose(y, ref, atol=atol, rtol=rtol, err_msg=f"{target}{which} vs {reference}")
    return result
