"""What every importer shares: the result, the error, one statement in the making, small value readers."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import ir
from ..checker import keras_snake_case
from ..errors import LayerDSLError
from ..specs import tf_same_padding

if TYPE_CHECKING:
    import numpy as np


class ModelImportError(LayerDSLError):
    """A Keras or torch model (or a part of one) that layerdsl cannot express."""


@dataclass(frozen=True)
class Imported:
    """An imported model: `.layers` text, its checked IR, and canonical weights."""

    text: str
    weights: dict[str, np.ndarray] = field(repr=False)
    model: ir.Model = field(repr=False)
    #: What was approximated, e.g. an initializer layerdsl has no name for (never the weights).
    notes: tuple[str, ...] = ()


class Refused(Exception):
    """Raised inside a converter; the caller adds which layer it is."""


@dataclass
class Statement:
    """One DSL statement in the making."""

    kind: str  # a REGISTRY name: `dense`, `relu`, `bidirectional`...
    args: dict[str, Any]  # DSL arguments by name; left out = the default
    label: str  # how error messages name the framework layer: "'conv2d_3' (Conv3D)"
    wanted_name: str | None = None  # the framework's layer name, when it is a valid DSL name
    source: Any = None  # the framework object holding this layer's weights
    flatten_order: str = "keras"  # flatten only: the feature order the framework produces


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = frozenset({"input", "inputs", "x", "model", "self"})


def valid_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and bool(_IDENTIFIER.match(name))
        and not keyword.iskeyword(name)
        and not name.startswith("__")
        and name not in _RESERVED
        and len(name) <= 200
    )


def model_name(name: Any, fallback: str) -> str:
    if name == "model" or valid_name(name):
        return str(name)
    if isinstance(name, str):
        cleaned = keras_snake_case(name)
        if valid_name(cleaned):
            return cleaned
    return fallback


def pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


def single(value: Any) -> int:
    if isinstance(value, int):
        return value
    (n,) = value
    return int(n)


def zeropad_args(padding: tuple[tuple[int, int], tuple[int, int]], symmetric: str = "pad") -> dict[str, Any]:
    """`zeropad2d` (or, with ``symmetric="crop"``, `cropping2d`) arguments for ((top, bottom), (left, right))."""
    (top, bottom), (left, right) = padding
    if (top, left) == (bottom, right):
        return {symmetric: (top, left)}
    sides = {"top": top, "bottom": bottom, "left": left, "right": right}
    return {side: n for side, n in sides.items() if n}  # sides left out are zero


def pad_kind(
    padding: tuple[tuple[int, int], ...],
    sizes: tuple[int, ...],
    window: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> str | None:
    """`valid` or `same` for this (before, after) padding per axis; None when it is neither."""
    if all(p == (0, 0) for p in padding):
        return "valid"
    return "same" if tuple(padding) == same_padding(sizes, window, stride, dilation) else None


def same_padding(
    sizes: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[tuple[int, int], ...]:
    """TensorFlow's `same` padding, (before, after) per axis."""
    return tuple(tf_same_padding(n, k, s, d) for n, k, s, d in zip(sizes, window, stride, dilation, strict=True))


def same_or_valid(
    padding: tuple[tuple[int, int], ...],
    sizes: tuple[int, ...],
    window: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> str:
    """`valid` or `same` for this (before, after) padding per axis, or refuse."""
    kind = pad_kind(padding, sizes, window, stride, dilation)
    if kind is None:
        same = same_padding(sizes, window, stride, dilation)
        raise Refused(
            f"its padding {[list(p) for p in padding]} is neither none nor TensorFlow's `same` "
            f"{[list(p) for p in same]} for this input size"
        )
    return kind
