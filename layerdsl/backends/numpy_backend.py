"""The numpy backend (placeholder; being written)."""

from __future__ import annotations

from typing import Any

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    emitters: dict[str, Any] = {}

    def emit_source(self, model):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def owns(self, obj: Any) -> bool:
        return False

    def get_weights(self, obj, model):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def set_weights(self, obj, model, weights):  # type: ignore[no-untyped-def]
        raise NotImplementedError
