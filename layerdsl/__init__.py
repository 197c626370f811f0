"""layerdsl: a compact text language for neural networks, compiled to Keras, PyTorch and NumPy.

    >>> import layerdsl
    >>> model = layerdsl.parse("dense 100 in=20 | batchnorm | relu | dropout 0.2")
    >>> model.layers[0].output_shape
    (100,)
"""

from .api import build, compile, load, parse, summary
from .errors import LayerCheckError, LayerDSLError, LayerSyntaxError, WeightsError
from .ir import Layer, Model
from .weights import get_weights, load_weights, save_weights, set_weights

__version__ = "0.1.0"

__all__ = [
    "LayerCheckError",
    "LayerDSLError",
    "LayerSyntaxError",
    "Layer",
    "Model",
    "WeightsError",
    "build",
    "compile",
    "get_weights",
    "load",
    "load_weights",
    "parse",
    "save_weights",
    "set_weights",
    "summary",
]
