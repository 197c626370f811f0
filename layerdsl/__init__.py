"""layerdsl: a compact text language for neural networks, compiled to Keras, PyTorch and NumPy, and exported to ONNX.

    >>> import layerdsl
    >>> model = layerdsl.parse("dense 100 in=20 | batchnorm | relu | dropout 0.2")
    >>> model.layers[0].output_shape
    (100,)
"""

from . import summary as _summary_module  # noqa: F401  (loaded first: its import would rebind `summary` below)
from ._version import __version__ as __version__
from .api import build, compile, format_text, load, parse, summary, to_onnx
from .diagnostics import Diagnostic, diagnose
from .errors import LayerCheckError, LayerDSLError, LayerSyntaxError, WeightsError
from .ir import Layer, Model
from .weights import get_weights, load_weights, save_weights, set_weights


def __getattr__(name: str):
    if name == "pad_sequences":
        from .preprocessing import pad_sequences

        return pad_sequences
    if name in ("from_keras", "from_torch", "Imported", "ModelImportError"):
        from . import importers  # imports keras or torch only when called

        return getattr(importers, name)
    raise AttributeError(f"module 'layerdsl' has no attribute {name!r}")


__all__ = [
    "Diagnostic",
    "Imported",
    "Layer",
    "LayerCheckError",
    "LayerDSLError",
    "LayerSyntaxError",
    "Model",
    "ModelImportError",
    "WeightsError",
    "build",
    "compile",
    "diagnose",
    "format_text",
    "from_keras",
    "from_torch",
    "get_weights",
    "load",
    "load_weights",
    "pad_sequences",
    "parse",
    "save_weights",
    "set_weights",
    "summary",
    "to_onnx",
]
