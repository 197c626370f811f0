"""The numpy backend: a standalone file that needs only NumPy.

The generated source carries its own copy of exactly the runtime pieces
(``numpy_runtime``, and ``numpy_runtime_graph`` for merges and the layers of
real architectures) the model uses, found as the sympy printers do: emitters
record each runtime name they write, and the pieces those pieces refer to
follow. The model class builds its layers from Keras's initializer
distributions, passed as literals, and ``__call__`` runs them in graph order,
a chain reusing ``x`` and each branching tensor held in a variable of its own.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import ir
from ..codegen import Code, SourceWriter, call, camel_case, ident, layer_comment, module_docstring, py, shape_comment
from ..initializers import distribution, segments
from ..specs import REGISTRY, padding_1d, spatial_padding
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


def _grouped(emit: Emitter) -> Emitter:
    """`groups=G`: the runtime's grouped convolution, which reads the groups off the kernel's shape."""

    def grouped(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
        if layer.args["groups"] == 1:
            return emit(layer, weights, use)
        return emit(layer, weights, lambda name: use(_GROUPED.get(name, name)))

    return grouped


_GROUPED = {"Conv2D": "GroupedConv2D", "Conv1D": "GroupedConv1D"}


def _pool(runtime_class: str) -> Emitter:
    def emit(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
        args = layer.args
        padding = spatial_padding(args, layer.input_shape, args["pool"])
        return call(use(runtime_class), args["pool"], args["stride"], **_unless_default(padding=padding))

    return emit


def _batchnorm(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return call(use("BatchNorm"), **weights, eps=layer.args["eps"])


def _conv1d(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    args = layer.args
    options = {
        "stride": args["stride"],
        "dilation": args["dilation"],
        "padding": padding_1d(args, layer.input_shape[0], args["kernel"]),
    }
    defaults = {"stride": 1, "dilation": 1, "padding": (0, 0)}
    options = {key: value for key, value in options.items() if value != defaults[key]}
    return call(use("Conv1D"), **weights, **options, **_activation(args["activation"], use))


def _pool1d(runtime_class: str) -> Emitter:
    def emit(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
        args = layer.args
        padding = padding_1d(args, layer.input_shape[0], args["pool"])
        options = {"padding": padding} if padding != (0, 0) else {}
        return call(use(runtime_class), args["pool"], args["stride"], **options)

    return emit


def _embedding(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return call(use("Embedding"), **weights)  # the model makes the mask: `mask = ids != 0`


def _masking(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return call(use("Masking"), layer.args["value"])


_RECURRENT_CLASSES = {"simplernn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def _recurrent_call(kind: str, args: ir.Args, weights: dict[str, Code], use: Use, go_backwards: bool) -> Code:
    options: dict[str, Any] = {}
    if args["activation"] != "tanh":
        options["activation"] = use(args["activation"])
    if args.get("recurrent_activation", "sigmoid") != "sigmoid":
        options["recurrent_activation"] = use(args["recurrent_activation"])
    if kind == "gru" and not args["reset_after"]:
        options["reset_after"] = False
    if args["return_sequences"]:
        options["return_sequences"] = True
    if go_backwards:
        options["go_backwards"] = True
    return call(use(_RECURRENT_CLASSES[kind]), **weights, **options)


def _recurrent(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return _recurrent_call(layer.kind, layer.args, weights, use, layer.args["go_backwards"])


def _bidirectional(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    args, inner = layer.args, layer.args["inner"]
    directions = []
    for prefix, go_backwards in (("forward_", inner["go_backwards"]), ("backward_", not inner["go_backwards"])):
        own = {name[len(prefix) :]: value for name, value in weights.items() if name.startswith(prefix)}
        directions.append(_recurrent_call(args["layer"], inner, own, use, go_backwards))
    options = {"merge": args["merge"]} if args["merge"] != "concat" else {}
    return call(use("Bidirectional"), *directions, **options)


def _plain(runtime_class: str) -> Emitter:
    return lambda layer, weights, use: call(use(runtime_class))


def _global_pool(runtime_class: str) -> Emitter:
    return lambda layer, weights, use: call(use(runtime_class), **({"keepdims": True} if layer.args["keepdims"] else {}))


def _activation_layer(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return call(use("Activation"), use(layer.args["function"]))


def _concat(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    axis = layer.args["axis"]  # counted without the batch axis, as the IR shapes
    return call(use("Concatenate"), **({"axis": axis + 1 if axis >= 0 else axis} if axis != -1 else {}))


def _zeropad2d(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    args = layer.args
    return call(use("ZeroPad2D"), ((args["top"], args["bottom"]), (args["left"], args["right"])))


def _depthwise(runtime_class: str) -> Emitter:
    """Depthwise and separable convolutions: a conv2d's options on per-channel kernels."""

    def emit(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
        args = layer.args
        return call(
            use(runtime_class),
            **weights,
            **_unless_default(
                strides=args["stride"],
                dilation=args["dilation"],
                padding=spatial_padding(args, layer.input_shape, args["kernel"]),
            ),
            **_activation(args["activation"], use),
        )

    return emit


def _conv2dtranspose(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    args = layer.args
    options = _unless_default(strides=args["stride"])
    if args["pad"] != "valid":
        options["padding"] = args["pad"]
    return call(use("Conv2DTranspose"), **weights, **options, **_activation(args["activation"], use))


def _upsample2d(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    interpolation = layer.args["interpolation"]
    options = {"interpolation": interpolation} if interpolation != "nearest" else {}
    return call(use("UpSample2D"), layer.args["size"], **options)


def _layernorm(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    return call(use("LayerNorm"), **weights, eps=layer.args["eps"])


def _normalization(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    if layer.args["mean"] is None:
        return call(use("Normalization"), **weights)
    return call(use("Normalization"), mean=layer.args["mean"], variance=layer.args["variance"])


def _cropping2d(layer: ir.Layer, weights: dict[str, Code], use: Use) -> Code:
    args = layer.args
    return call(use("Cropping"), ((args["top"], args["bottom"]), (args["left"], args["right"])))


EMITTERS: dict[str, Emitter] = {
    "dense": _dense,
    "conv2d": _grouped(_conv2d),
    "maxpool": _pool("MaxPool2D"),
    "avgpool": _pool("AvgPool2D"),
    "batchnorm": _batchnorm,
    "flatten": _plain("Flatten"),
    "dropout": _plain("Dropout"),
    "activation": _activation_layer,
    "embedding": _embedding,
    "masking": _masking,
    "simplernn": _recurrent,
    "lstm": _recurrent,
    "gru": _recurrent,
    "bidirectional": _bidirectional,
    "conv1d": _grouped(_conv1d),
    "maxpool1d": _pool1d("MaxPool1D"),
    "avgpool1d": _pool1d("AvgPool1D"),
    "globalmaxpool1d": _global_pool("GlobalMaxPool"),
    "globalavgpool1d": _global_pool("GlobalAvgPool"),
    "globalmaxpool": _global_pool("GlobalMaxPool"),
    "globalavgpool": _global_pool("GlobalAvgPool"),
    "add": _plain("Add"),
    "multiply": _plain("Multiply"),
    "average": _plain("Average"),
    "concat": _concat,
    "zeropad2d": _zeropad2d,
    "depthwiseconv2d": _depthwise("DepthwiseConv2D"),
    "separableconv2d": _depthwise("SeparableConv2D"),
    "conv2dtranspose": _conv2dtranspose,
    "upsample2d": _upsample2d,
    "layernorm": _layernorm,
    "reshape": lambda layer, weights, use: call(use("Reshape"), layer.args["target"]),
    "permute": lambda layer, weights, use: call(use("Permute"), layer.args["dims"]),
    "subtract": _plain("Subtract"),
    "maximum": _plain("Maximum"),
    "minimum": _plain("Minimum"),
    "rescaling": lambda layer, weights, use: call(use("Rescaling"), layer.args["scale"], layer.args["offset"]),
    "normalization": _normalization,
    "layerscale": lambda layer, weights, use: call(use("LayerScale"), **weights),
    "cropping2d": _cropping2d,
    "cropping1d": lambda layer, weights, use: call(use("Cropping"), ((layer.args["start"], layer.args["end"]),)),
    "upsample1d": lambda layer, weights, use: call(use("UpSample1D"), layer.args["size"]),
}

_DISTRIBUTION_PARAMS = {
    "uniform": "limit",
    "normal": "std",
    "truncated_normal": "std",
    "constant": "value",
    "orthogonal": "gain",
}


def _draw(initializer: str, shape: tuple[int, ...], use: Use) -> Code:
    dist = distribution(initializer, shape)
    param = _DISTRIBUTION_PARAMS[dist.kind]
    return call(use("draw"), Code("rng"), dist.kind, shape, **{param: getattr(dist, param)})


def _initial_value(weight: ir.Weight, use: Use) -> Code:
    pieces = segments(weight.initializer, weight.shape[-1] if weight.shape else 1)  # a count is a scalar
    if len(pieces) == 1:
        return _draw(weight.initializer, weight.shape, use)
    # Keras draws each piece on its own shape (an LSTM's unit_forget_bias), then concatenates.
    return call("np.concatenate", [_draw(name, (length,), use) for name, length in pieces])


# --- which runtime pieces a source needs -------------------------------------------------


@cache
def _runtime_pieces() -> dict[str, str]:
    """Name -> source of each function or class defined in the runtime modules, in definition
    order (the graph pieces build on the base ones, so they come after). The modules are read
    as text, not imported, so generating NumPy source needs no NumPy (the browser playground)."""
    out: dict[str, str] = {}
    for module in ("numpy_runtime", "numpy_runtime_graph"):
        loaded = sys.modules.get(f"{__package__}.{module}")  # benchmarks/run.py swaps in a baseline runtime
        file = Path(loaded.__file__) if loaded is not None else resources.files(__package__).joinpath(f"{module}.py")
        source = file.read_text(encoding="utf-8")
        lines = source.splitlines(keepends=True)
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                assert node.name not in out, f"runtime piece {node.name} is defined twice"
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                out[node.name] = "".join(lines[first - 1 : node.end_lineno])
    return out


@cache
def _piece_source(name: str) -> str:
    return _runtime_pieces()[name]


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
            for line in _call_lines(model, attributes):
                body.line(line)

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


#: Names ``__call__`` uses of its own, which no tensor variable may take.
_CALL_NAMES = frozenset({"self", "x", "np", "mask", "inputs"})


def tensor_variables(model: ir.Model) -> dict[str, str]:
    """Tensor (a layer name, or ``"input"``) -> the variable that holds it in ``__call__``.

    Along a chain, where a tensor feeds only the next layer, that is ``x``; a tensor that
    branches, or is read further on, gets a variable named after its layer.
    """
    readers: dict[str, list[int]] = {}
    previous = ir.INPUT_NAME
    for position, layer in enumerate(model.layers):
        for name in layer.inputs or (previous,):
            readers.setdefault(name, []).append(position)
        previous = layer.name
    output = model.output or previous
    readers.setdefault(output, []).append(len(model.layers))  # `return` reads it last

    taken = set(_CALL_NAMES) | {layer.name for layer in model.layers}
    out = {}
    for position, name in enumerate([ir.INPUT_NAME] + [layer.name for layer in model.layers]):
        if readers.get(name) == [position]:
            out[name] = "x"
        elif name == ir.INPUT_NAME:
            out[name] = "inputs"
        elif name not in _CALL_NAMES:
            out[name] = ident(name)
        else:
            variable = f"{name}_out"
            while variable in taken:
                variable += "_"
            taken.add(variable)
            out[name] = ident(variable)
    return out


def _call_lines(model: ir.Model, attributes: dict[str, str]) -> list[str]:
    """The body of ``__call__``: the layers in order, each reading the variables of its inputs."""
    variables = tensor_variables(model)
    fed = variables[ir.INPUT_NAME]
    lines = [f"{fed} = np.asarray(x, dtype=np.{ident(model.input.dtype)})"]
    if model.input.layout == "channels_first":
        lines.append(f"{fed} = np.moveaxis({fed}, 1, -1)  # channels first -> last")
    previous, block = ir.INPUT_NAME, ()
    for layer in model.layers:
        if layer.block and layer.block != block:
            lines.append(f"# {' > '.join(layer.block)}")
        block = layer.block
        sources = ", ".join(variables[name] for name in layer.inputs or (previous,))
        lines.extend(_forward_lines(layer, f"self.{attributes[layer.name]}", sources, variables[layer.name]))
        previous = layer.name
    lines.append(f"return {variables[model.output or previous]}")
    return lines


def _forward_lines(layer: ir.Layer, attribute: str, sources: str, target: str) -> list[str]:
    """A layer's lines in ``__call__``: the mask is made where Keras makes it and passed to the layers that use it."""
    if layer.kind == "embedding" and layer.args["mask_zero"]:
        return [f"mask = {sources} != 0  # token id 0 is padding", f"{target} = {attribute}({sources})"]
    if layer.kind == "masking":
        return [f"{target}, mask = {attribute}({sources})"]
    if layer.input_masked and REGISTRY[layer.kind].takes_mask:  # the runtime layer takes it second
        return [f"{target} = {attribute}({sources}, mask)"]
    return [f"{target} = {attribute}({sources})"]


_LINE_LENGTH = 88


def _assignment(out: SourceWriter, target: str, value: Code) -> None:
    """``target = value``, with one argument a line when the call is long (and so on inside)."""
    _expression(out, f"{target} = ", value, "", len(target))


def _expression(out: SourceWriter, head: str, text: str, tail: str, width: int, depth: int = 0) -> None:
    """Writes ``head + text + tail``, splitting a long call or list one item a line, recursively.

    ``width`` counts what comes before ``text`` on its line, beyond the body's own indentation.
    """
    if width + len(text) + len(tail) <= _LINE_LENGTH:  # most lines: no need to parse
        out.line(f"{head}{text}{tail}")
        return
    node = ast.parse(text, mode="eval").body
    if not isinstance(node, ast.Call | ast.List):
        out.line(f"{head}{text}{tail}")
        return
    if isinstance(node, ast.Call):
        opening, closing = f"{_segment(text, node.func)}(", ")"
        items = [("", arg) for arg in node.args] + [(f"{kw.arg}=", kw.value) for kw in node.keywords]
    else:
        opening, closing, items = "[", "]", [("", element) for element in node.elts]
    out.line(f"{head}{opening}")
    with out.indent():
        for name, item in items:
            _expression(out, name, _segment(text, item), ",", 4 * (depth + 1) + len(name), depth + 1)
    out.line(f"{closing}{tail}")


def _segment(text: str, node: ast.expr) -> str:
    """The source of ``node`` within one-line ``text`` (``ast.get_source_segment`` re-splits the text per call)."""
    if "\n" in text:
        segment = ast.get_source_segment(text, node)
        assert segment is not None
        return segment
    return text.encode()[node.col_offset : node.end_col_offset].decode()  # offsets count UTF-8 bytes


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
