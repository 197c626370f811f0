"""Keras initializers as explicit distributions, so every backend draws from the same one.

Keras computes fans from the canonical (Keras-layout) weight shape; the
numbers here follow ``keras/src/initializers/random_initializers.py``:
variance scaling with ``scale / fan``; normal variants are truncated at two
standard deviations, with the standard deviation divided by 0.87962566103423978
so the truncated distribution keeps the intended variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "normal",
    "uniform",
    "zeros",
    "ones",
    "orthogonal",
)

_TRUNCATION_CORRECTION = 0.87962566103423978

# name -> (scale, fan mode, distribution) for Keras's VarianceScaling family
_VARIANCE_SCALING = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
}


@dataclass(frozen=True)
class Distribution:
    """What to draw a weight from.

    kind: ``uniform`` (between -limit and limit), ``normal`` (mean 0, std),
    ``truncated_normal`` (mean 0, std, redrawn outside two std), ``constant``
    (value), or ``orthogonal`` (gain).
    """

    kind: str
    limit: float = 0.0
    std: float = 0.0
    value: float = 0.0
    gain: float = 1.0


def segments(initializer: str, length: int) -> list[tuple[str, int]]:
    """Split an initializer over a bias vector into (initializer, length) pieces.

    Plain names cover the whole vector. ``unit_forget_bias:NAME`` is Keras's
    LSTM bias: NAME for the input gate, ones for the forget gate, NAME for the
    cell and output gates (each ``length // 4`` long).
    """
    if initializer.startswith("unit_forget_bias:"):
        base = initializer.split(":", 1)[1]
        units = length // 4
        return [(base, units), ("ones", units), (base, 2 * units)]
    return [(initializer, length)]


def keras_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's ``compute_fans`` for a canonical-layout shape."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def distribution(name: str, shape: tuple[int, ...]) -> Distribution:
    """The distribution Keras's initializer ``name`` draws from for ``shape``."""
    if name.startswith("constant:"):  # a fixed starting value (layer scale's 1e-6)
        return Distribution("constant", value=float(name.split(":", 1)[1]))
    if name == "zeros":
        return Distribution("constant", value=0.0)
    if name == "ones":
        return Distribution("constant", value=1.0)
    if name == "normal":  # keras.initializers.RandomNormal()
        return Distribution("normal", std=0.05)
    if name == "uniform":  # keras.initializers.RandomUniform()
        return Distribution("uniform", limit=0.05)
    if name == "orthogonal":
        return Distribution("orthogonal", gain=1.0)
    scale, mode, kind = _VARIANCE_SCALING[name]
    fan_in, fan_out = keras_fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    variance = scale / max(1.0, fan)
    if kind == "uniform":
        return Distribution("uniform", limit=math.sqrt(3.0 * variance))
    return Distribution("truncated_normal", std=math.sqrt(variance) / _TRUNCATION_CORRECTION)
