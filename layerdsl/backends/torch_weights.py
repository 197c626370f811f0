"""Canonical (Keras) weight layout <-> torch tensor layout, in NumPy.

One place for both directions, so the torch backend's weight transfer and
``layerdsl.from_torch`` cannot drift apart: kernels transposed, GRU gates
reordered, depthwise kernels reshaped, and a flattened image's feature order
permuted between torch's (C, H, W) and Keras's (H, W, C).

Pure NumPy; torch is never imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import ir
from ..specs import REGISTRY

if TYPE_CHECKING:
    import numpy as np

#: Kernel axes, Keras layout -> torch layout (inverted for the way back): conv2d (kh, kw, C, F) ->
#: (F, C, kh, kw) and conv2dtranspose (kh, kw, F, C) -> (C, F, kh, kw) alike; conv1d; dense and recurrent.
_KERNEL_AXES = {4: (3, 2, 0, 1), 3: (2, 1, 0), 2: (1, 0)}
_KERNELS = ("kernel", "recurrent_kernel", "pointwise_kernel")


def permutation(shape: ir.Shape) -> np.ndarray:
    """Torch-flattened feature j is Keras-flattened feature ``perm[j]``, for an (H, W, C) image."""
    import numpy as np

    return np.arange(np.prod(shape)).reshape(shape).transpose(2, 0, 1).ravel()


def feature_indexed(layer: ir.Layer, weight: ir.Weight) -> bool:
    """Whether Keras axis 0 of ``weight`` runs over the layer's input features (a fact of its spec)."""
    return weight.name in REGISTRY[layer.kind].feature_weights


def kind_and_name(layer: ir.Layer, weight: ir.Weight) -> tuple[str, str]:
    """The layer kind a weight belongs to, and its name there (a bidirectional's inner layer)."""
    if layer.kind == "bidirectional":
        return layer.args["layer"], weight.name.split("_", 1)[1]
    return layer.kind, weight.name


def _swap_gates(array: np.ndarray) -> np.ndarray:
    """Keras's GRU gates (z, r, h) <-> torch's (r, z, n) along the last axis (its own inverse)."""
    import numpy as np

    z, r, h = np.split(array, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


def depthwise(kind: str, name: str) -> bool:
    """A depthwise kernel: Keras (kh, kw, C, multiplier), torch (C * multiplier, 1, kh, kw)."""
    return (kind, name) in (("depthwiseconv2d", "kernel"), ("separableconv2d", "depthwise_kernel"))


def to_torch(layer: ir.Layer, weight: ir.Weight, array: np.ndarray) -> list[np.ndarray]:
    """A canonical array as the torch tensor(s) it fills: two for GRU's (input, recurrent) bias rows."""
    kind, name = kind_and_name(layer, weight)
    if kind == "attention":  # Keras (in, heads, dim) and (heads, dim, out) kernels -> torch's (out, in)
        if name == "output_kernel":
            return [array.reshape(-1, array.shape[-1]).T]
        return [array.reshape(len(array), -1).T if name.endswith("_kernel") else array.reshape(-1)]
    if kind == "gru":
        array = _swap_gates(array)
    if depthwise(kind, name):  # output channel c * multiplier + m, as in Keras
        height, width, channels, multiplier = array.shape
        array = array.reshape(height, width, channels * multiplier).transpose(2, 0, 1)[:, None]
    elif name in _KERNELS:
        array = array.transpose(_KERNEL_AXES[array.ndim])
    elif name == "bias" and array.ndim == 2:  # GRU reset_after: input row, recurrent row
        return [array[0], array[1]]
    return [array]


def to_keras(layer: ir.Layer, weight: ir.Weight, arrays: list[np.ndarray]) -> np.ndarray:
    """The inverse of ``to_torch``: torch tensor(s), as NumPy arrays, -> the canonical array."""
    import numpy as np

    kind, name = kind_and_name(layer, weight)
    array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
    if kind == "attention":
        return (array.T if name.endswith("_kernel") else array).reshape(weight.shape)
    if depthwise(kind, name):
        return array[:, 0].transpose(1, 2, 0).reshape(weight.shape)
    if name in _KERNELS:
        array = array.transpose(np.argsort(_KERNEL_AXES[array.ndim]))
    if kind in ("posembed", "classtoken"):  # torch's (1, T, F) and (1, 1, F)
        array = array.reshape(weight.shape)
    return _swap_gates(array) if kind == "gru" else array


def from_torch_order(array: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows in torch's flattened (C, H, W) feature order -> Keras's (H, W, C): row j goes to ``order[j]``."""
    import numpy as np

    keras = np.empty_like(array)
    keras[order] = array
    return keras


def to_torch_order(array: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The inverse of ``from_torch_order``."""
    return array[order]
