"""The numpy backend: a standalone file that needs only NumPy.

The generated source carries its own copy of exactly the runtime pieces
(``numpy_runtime``) the model uses, found as the sympy printers do: emitters
record each runtime name they write, and the pieces those pieces refer to
follow. The model class builds its layers from Keras's initializer
distributions, passed as literals, and runs them in order.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from .. import ir
from ..codegen import Code, SourceWriter, call, camel_case, ident, layer_comment, module_docstring, py, shape_comment
from ..initializers import distribution
from ..specs import spatial_padding
from .base import IR_ATTRIBUTE, Backend

if TYPE_CHECKING:
    import numpy as np

#: Marker class attribute by which ``owns`` knows a generated model without importing anything.
MARKER = "layerdsl_backend"

Use = Callable[[str], Code]
"""Records that the source uses a runtime piece and returns its name."""

Emitter = Callable[[ir.Layer, dict[str, Code], Use], Code]
"""(layer, weight name -> initial-value expression, use) -> the expression that builds the layer."""


def _activation(name: str, use: Use) -> dict[str, Code]:
    return {} if name == "linear" else {"activation": use(name)}


def _dense(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return call(use("Dense"), **weights, **_activation(layer.args["activation"], use))


_NO_PADDING = ((0, 0), (0, 0))


def _unless_default(**options: Any) -> dict[str, Any]:
    """Leave out the options that equal the runtime's defaults, so the source reads short."""
    defaults = {"strides": (1, 1), "dilation": (1, 1), "padding": _NO_PADDING}
    return {key: value for key, value in options.items() if value != defaults[key]}


def _conv2d(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    args = layer.args
    return call(
        use("Conv2D"),
        **weights,
        **_unless_default(
            strides=args["stride"],
            dilation=args["dilation"],
            padding=spatial_padding(args, layer.input_shape, args["kernel"]),
        ),
        **_activation(args["activation"], use),
    )


def _pool(runtime_class: str) -> Emitter:
    def emit(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
        args = layer.args
        padding = spatial_padding(args, layer.input_shape, args["pool"])
        return call(use(runtime_class), args["pool"], args["stride"], **_unless_default(padding=padding))

    return emit


def _batchnorm(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return call(use("BatchNorm"), **weights, eps=layer.args["eps"])


def _plain(runtime_class: str) -> Emitter:
    return lambda layer, weights, use: call(use(runtime_class))


def _activation_layer(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return call(use("Activation"), use(layer.args["function"]))


EMITTERS: dict[str, Emitter] = {
    "dense": _dense,
    "conv2d": _conv2d,
    "maxpool": _pool("MaxPool2D"),
    "avgpool": _pool("AvgPool2D"),
    "batchnorm": _batchnorm,
    "flatten": _plain("Flatten"),
    "dropout": _plain("Dropout"),
    "activation": _activation_layer,
}

_DISTRIBUTION_PARAMS = {
    "uniform": "limit",
    "normal": "std",
    "truncated_normal": "std",
    "constant": "value",
    "orthogonal": "gain",
}


def _initial_value(weight: ir.Weight, use: Use) -> Code:
    dist = distribution(weight.initializer, weight.shape)
    param = _DISTRIBUTION_PARAMS[dist.kind]
    return call(use("draw"), Code("rng"), dist.kind, weight.shape, **{param: getattr(dist, param)})


# --- which runtime pieces a source needs -------------------------------------------------


@cache
def _runtime_pieces() -> dict[str, Any]:
    """Name -> function or class defined in the runtime, in definition order."""
    from . import numpy_runtime  # numpy stays out of `import layerdsl`

    pieces = [
        obj
        for obj in vars(numpy_runtime).values()
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == numpy_runtime.__name__
    ]
    pieces.sort(key=lambda obj: inspect.getsourcelines(obj)[1])
    return {obj.__name__: obj for obj in pieces}


@cache
def _piece_source(name: str) -> str:
    return inspect.getsource(_runtime_pieces()[name])


@cache
def _direct_needs(name: str) -> frozenset[str]:
    tree = ast.parse(_piece_source(name))
    named = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return frozenset(named & set(_runtime_pieces()) - {name})


def runtime_source(used: set[str]) -> str:
    """The source of the runtime pieces in ``used`` and all they need, in definition order."""
    needed, todo = set(), list(used)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(_direct_needs(name))
    return "\n\n".join(_piece_source(name) for name in _runtime_pieces() if name in needed)


# --- the generated module ----------------------------------------------------------------

#: Attributes the generated class has of its own, which no layer attribute may take.
_CLASS_ATTRIBUTES = frozenset({"layers", MARKER, IR_ATTRIBUTE})


def attribute_names(model: ir.Model) -> dict[str, str]:
    """Layer name -> attribute name on the generated class; clashes get a suffix."""
    taken = {layer.name for layer in model.layers} | _CLASS_ATTRIBUTES
    out = {}
    for layer in model.layers:
        attribute = layer.name
        if attribute in _CLASS_ATTRIBUTES:
            attribute = f"{layer.name}_layer"
            while attribute in taken:
                attribute += "_"
            taken.add(attribute)
        out[layer.name] = ident(attribute)
    return out


def class_name(model: ir.Model) -> str:
    name = camel_case(model.name)
    # A model called `dense` must not shadow the runtime's Dense.
    return name if name not in _runtime_pieces() else ident(name + "Model")


def emit_source(model: ir.Model) -> str:
    used: set[str] = set()

    def use(name: str) -> Code:
        used.add(ident(name))
        return Code(name)

    attributes = attribute_names(model)
    body = SourceWriter()
    with body.indent():
        body.line(f'"""{model.name} for NumPy: call it on a batch of shape {shape_comment(model.input.fed_shape)}."""')
        body.blank()
        body.line(f"{MARKER} = {py('numpy')}")
        body.blank()
        body.line("def __init__(self, seed=None):")
        with body.indent():
            body.line("rng = np.random.default_rng(seed)")
            for layer in model.layers:
                weights = {ident(w.name): _initial_value(w, use) for w in layer.weights}
                body.line(layer_comment(layer, layer.output_shape))
                _assignment(body, f"self.{attributes[layer.name]}", EMITTERS[layer.kind](layer, weights, use))
            body.line("self.layers = {")
            with body.indent():
                for layer in model.layers:
                    body.line(f"{py(layer.name)}: self.{attributes[layer.name]},")
            body.line("}")
        body.blank()
        body.line("def __call__(self, x):")
        with body.indent():
            body.line("x = np.asarray(x, dtype=np.float32)")
            if model.input.layout == "channels_first":
                body.line("x = np.moveaxis(x, 1, -1)  # channels first -> last")
            for layer in model.layers:
                body.line(f"x = self.{attributes[layer.name]}(x)")
            body.line("return x")

    name = class_name(model)
    out = SourceWriter()
    out.line(module_docstring(model, "NumPy", "Needs only numpy."))
    out.blank()
    out.line("import numpy as np")
    out.blank(2)
    runtime = runtime_source(used)
    if runtime:
        out.lines.extend(runtime.rstrip("\n").split("\n"))
        out.blank(2)
    out.line(f"class {name}:")
    out.lines.extend(body.lines)
    out.blank(2)
    out.line("def build_model(seed=None):")
    with out.indent():
        out.line(f"return {name}(seed)")
    return out.text()


def _assignment(out: SourceWriter, target: str, value: Code) -> None:
    """``target = value``, with one argument a line when the call is long."""
    if len(target) + len(value) <= 88:
        out.line(f"{target} = {value}")
        return
    node = ast.parse(value, mode="eval").body
    assert isinstance(node, ast.Call)
    parts = [ast.get_source_segment(value, arg) for arg in node.args]
    parts += [f"{kw.arg}={ast.get_source_segment(value, kw.value)}" for kw in node.keywords]
    out.line(f"{target} = {ast.get_source_segment(value, node.func)}(")
    with out.indent():
        for part in parts:
            out.line(f"{part},")
    out.line(")")


class NumpyBackend(Backend):
    name = "numpy"
    emitters = EMITTERS

    def emit_source(self, model: ir.Model) -> str:
        self.check_supported(model)
        return emit_source(model)

    def owns(self, obj: Any) -> bool:
        return getattr(type(obj), MARKER, None) == "numpy"

    def get_weights(self, obj: Any, model: ir.Model) -> dict[str, np.ndarray]:
        out = {}
        for layer in model.layers:
            arrays = obj.layers[layer.name].weights
            for w in layer.weights:
                out[f"{layer.name}.{w.name}"] = arrays[w.name].astype("float32", copy=True)
        return out

    def set_weights(self, obj: Any, model: ir.Model, weights: Mapping[str, np.ndarray]) -> None:
        for layer in model.layers:
            if layer.weights:
                obj.layers[layer.name].weights = {w.name: weights[f"{layer.name}.{w.name}"] for w in layer.weights}
