"""The plain values a layer spec computes and the IR carries: shapes, bound arguments, weights.

Kept apart from ``ir.py`` so that the specs (and the diagram, which reads them) need no IR.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from math import prod
from typing import Any

Shape = tuple[int, ...]



@dataclass(frozen=True)
class Args(Mapping[str, Any]):
    """A layer's validated arguments, by DSL name, defaults filled in (immutable)."""

    items_: tuple[tuple[str, Any], ...]

    def __getitem__(self, key: str) -> Any:
        for k, v in self.items_:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def __repr__(self) -> str:
        return "Args(" + ", ".join(f"{k}={v!r}" for k, v in self.items_) + ")"


@dataclass(frozen=True)
class Weight:
    """One weight tensor in canonical (Keras) layout."""

    name: str  # e.g. "kernel", "moving_mean"
    shape: Shape
    trainable: bool
    initializer: str  # a name from initializers.INITIALIZERS

    @property
    def size(self) -> int:
        return prod(self.shape)
