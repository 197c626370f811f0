"""The backend table. Adding a backend is one module plus one line here."""

from __future__ import annotations

from typing import Any

from ..errors import BackendError
from .base import IR_ATTRIBUTE, Backend
from .keras_backend import KerasBackend
from .numpy_backend import NumpyBackend
from .onnx_backend import OnnxBackend
from .torch_backend import TorchBackend

BACKENDS: dict[str, Backend] = {
    "keras": KerasBackend(),
    "torch": TorchBackend(),
    "numpy": NumpyBackend(),
    "onnx": OnnxBackend(),
}

TARGETS = tuple(BACKENDS)
#: The targets that generate Python source (the others write a binary model file).
SOURCE_TARGETS = tuple(name for name, backend in BACKENDS.items() if not backend.binary)


def get(target: str) -> Backend:
    try:
        return BACKENDS[target]
    except KeyError:
        raise BackendError(
            f"unknown target `{target}`", hint="choose one of: " + ", ".join(TARGETS)
        ) from None


def owner_of(obj: Any) -> Backend:
    """The backend a live model object belongs to."""
    for backend in BACKENDS.values():
        if backend.owns(obj):
            return backend
    raise TypeError(f"{type(obj).__name__} is not a model built by layerdsl (keras, torch, numpy or onnx)")


__all__ = ["BACKENDS", "IR_ATTRIBUTE", "SOURCE_TARGETS", "TARGETS", "Backend", "get", "owner_of"]
