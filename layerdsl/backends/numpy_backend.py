"""The numpy backend: a standalone file that needs only NumPy.

The generated source carries its own copy of exactly the runtime pieces
(``numpy_runtime``, and ``numpy_runtime_graph`` for merges and the layers of
real architectures) the model uses, found as the sympy printers do: emitters
record each runtime name they write, and the pieces those pieces refer to
follow. After them, from the line ``# --- the model ---``, comes the model's
own code, in the micrograd/tinygrad manner: one small ``Block`` class per
block definition (its instances unified by ``structure.unify``: what differs
between them is a constructor argument), then the model's class. Each builds
its layers from Keras's initializers (``initial(rng, "glorot_uniform", shape)``),
keyed by their canonical names; ``__call__`` runs them in graph order, a chain
reusing ``x``, a branching tensor held in a variable of its own (a tap's is named
after the tap), and a `repeat` of one block call a loop over its instances.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import codegen, ir
from ..codegen import (
    Code,
    Hint,
    SourceWriter,
    call,
    camel_case,
    ident,
    literal,
    module_docstring,
    py,
    shape_comment,
)
from ..initializers import segments
from ..specs import REGISTRY, activation_function, padding_1d, spatial_padding
from .base import IR_ATTRIBUTE, Backend
from .structure import (
    Fragment,
    Scope,
    Variant,
    mask_variables,
    rename_variable,
    self_contained,
    unify,
    unify_iterations,
    written_sizes,
)

if TYPE_CHECKING:
    import numpy as np

#: Marker class attribute by which ``owns`` knows a generated model without importing anything.
MARKER = "layerdsl_backend"

Use = Callable[[str], Code]
"""Records that the source uses a runtime piece and returns its name."""


@dataclass(frozen=True)
class Emission:
    """What a NumPy emitter is told besides the layer: its weights' initial-value expressions, by
    canonical name, and ``use``, which records a runtime piece the file must carry."""

    weights: dict[str, Code]
    use: Use


#: The emitter signature every backend shares, ``emit(layer, ctx)``; here it returns the
#: expression that builds the runtime layer.
Emitter = Callable[[ir.Layer, Emission], Code]


def _activation(name: str, use: Use) -> dict[str, Code]:
    return {} if name == "linear" else {"activation": use(name)}


def _dense(layer: ir.Layer, ctx: Emission) -> Code:
    return call(ctx.use("Dense"), *ctx.weights.values(), **_activation(layer.args["activation"], ctx.use))


_NO_PADDING = ((0, 0), (0, 0))


#: Set while the instances of a block differ in which options they leave out: the options that some
#: instance sets, which every instance then writes (``strides=(1, 1)`` beside ``strides=(2, 2)``).
_KEEP_DEFAULTS: ContextVar[frozenset[str]] = ContextVar("keep_defaults", default=frozenset())


def _unless_default(defaults: Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Leave out the options that equal the runtime's defaults, so the source reads short."""
    defaults = defaults or {"strides": (1, 1), "dilation": (1, 1), "padding": _NO_PADDING}
    kept = _KEEP_DEFAULTS.get()
    return {key: value for key, value in options.items() if key in kept or value != defaults[key]}


def _conv2d(layer: ir.Layer, ctx: Emission) -> Code:
    args = layer.args
    return call(
        ctx.use("Conv2D"),
        *ctx.weights.values(),
        **_unless_default(
            strides=args["stride"],
            dilation=args["dilation"],
            padding=spatial_padding(args, layer.input_shape, args["kernel"]),
        ),
        **_activation(args["activation"], ctx.use),
    )


def _grouped(emit: Emitter) -> Emitter:
    """`groups=G`: the runtime's grouped convolution, which reads the groups off the kernel's shape."""

    def grouped(layer: ir.Layer, ctx: Emission) -> Code:
        if layer.args["groups"] == 1:
            return emit(layer, ctx)
        return emit(layer, Emission(ctx.weights, lambda name: ctx.use(_GROUPED.get(name, name))))

    return grouped


_GROUPED = {"Conv2D": "GroupedConv2D", "Conv1D": "GroupedConv1D"}


def _pool(runtime_class: str) -> Emitter:
    def emit(layer: ir.Layer, ctx: Emission) -> Code:
        args = layer.args
        padding = spatial_padding(args, layer.input_shape, args["pool"])
        return call(ctx.use(runtime_class), args["pool"], args["stride"], **_unless_default(padding=padding))

    return emit


#: The initializers with which the runtime's BatchNorm starts its weights, as Keras does.
_BATCHNORM_STARTS = {"gamma": "ones", "beta": "zeros", "moving_mean": "zeros", "moving_variance": "ones"}


def _batchnorm(layer: ir.Layer, ctx: Emission) -> Code:
    initializers = {w.name: w.initializer for w in layer.weights}
    channels = layer.weights[-1].shape[0]
    # Only what differs from the start: another initializer, or gamma or beta left out.
    changed = {
        name: ctx.weights[name] if name in ctx.weights else None
        for name, start in _BATCHNORM_STARTS.items()
        if initializers.get(name) != start
    }
    return call(ctx.use("BatchNorm"), _size(channels), eps=layer.args["eps"], **changed)


def _conv1d(layer: ir.Layer, ctx: Emission) -> Code:
    args = layer.args
    options = {
        "stride": args["stride"],
        "dilation": args["dilation"],
        "padding": padding_1d(args, layer.input_shape[0], args["kernel"]),
    }
    options = _unless_default({"stride": 1, "dilation": 1, "padding": (0, 0)}, **options)
    return call(ctx.use("Conv1D"), *ctx.weights.values(), **options, **_activation(args["activation"], ctx.use))


def _pool1d(runtime_class: str) -> Emitter:
    def emit(layer: ir.Layer, ctx: Emission) -> Code:
        args = layer.args
        padding = padding_1d(args, layer.input_shape[0], args["pool"])
        options = _unless_default({"padding": (0, 0)}, padding=padding)
        return call(ctx.use(runtime_class), args["pool"], args["stride"], **options)

    return emit


def _embedding(layer: ir.Layer, ctx: Emission) -> Code:
    return call(ctx.use("Embedding"), **ctx.weights)  # the model makes the mask: `mask = ids != 0`


def _masking(layer: ir.Layer, ctx: Emission) -> Code:
    return call(ctx.use("Masking"), layer.args["value"])


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


def _recurrent(layer: ir.Layer, ctx: Emission) -> Code:
    return _recurrent_call(layer.kind, layer.args, ctx.weights, ctx.use, layer.args["go_backwards"])


def _bidirectional(layer: ir.Layer, ctx: Emission) -> Code:
    args, inner = layer.args, layer.args["inner"]
    directions = []
    for prefix, go_backwards in (("forward_", inner["go_backwards"]), ("backward_", not inner["go_backwards"])):
        own = {name[len(prefix) :]: value for name, value in ctx.weights.items() if name.startswith(prefix)}
        directions.append(_recurrent_call(args["layer"], inner, own, ctx.use, go_backwards))
    options = {"merge": args["merge"]} if args["merge"] != "concat" else {}
    return call(ctx.use("Bidirectional"), *directions, **options)


def _plain(runtime_class: str) -> Emitter:
    return lambda layer, ctx: call(ctx.use(runtime_class))


def _global_pool(runtime_class: str) -> Emitter:
    return lambda layer, ctx: call(ctx.use(runtime_class), **({"keepdims": True} if layer.args["keepdims"] else {}))


def _activation_layer(layer: ir.Layer, ctx: Emission) -> Code:
    return call(ctx.use("Activation"), ctx.use(activation_function(layer.args)))


def _concat(layer: ir.Layer, ctx: Emission) -> Code:
    axis = layer.args["axis"]  # counted without the batch axis, as the IR shapes
    return call(ctx.use("Concatenate"), **({"axis": axis + 1 if axis >= 0 else axis} if axis != -1 else {}))


def _zeropad2d(layer: ir.Layer, ctx: Emission) -> Code:
    args = layer.args
    return call(ctx.use("ZeroPad2D"), ((args["top"], args["bottom"]), (args["left"], args["right"])))


def _depthwise(runtime_class: str) -> Emitter:
    """Depthwise and separable convolutions: a conv2d's options on per-channel kernels."""

    def emit(layer: ir.Layer, ctx: Emission) -> Code:
        args = layer.args
        return call(
            ctx.use(runtime_class),
            *ctx.weights.values(),
            **_unless_default(
                strides=args["stride"],
                dilation=args["dilation"],
                padding=spatial_padding(args, layer.input_shape, args["kernel"]),
            ),
            **_activation(args["activation"], ctx.use),
        )

    return emit


def _conv2dtranspose(layer: ir.Layer, ctx: Emission) -> Code:
    args = layer.args
    options = _unless_default(strides=args["stride"])
    if args["pad"] != "valid":
        options["padding"] = args["pad"]
    return call(ctx.use("Conv2DTranspose"), *ctx.weights.values(), **options, **_activation(args["activation"], ctx.use))


def _upsample2d(layer: ir.Layer, ctx: Emission) -> Code:
    interpolation = layer.args["interpolation"]
    options = {"interpolation": interpolation} if interpolation != "nearest" else {}
    return call(ctx.use("UpSample2D"), layer.args["size"], **options)


def _layernorm(layer: ir.Layer, ctx: Emission) -> Code:
    return call(ctx.use("LayerNorm"), **ctx.weights, eps=layer.args["eps"])


def _normalization(layer: ir.Layer, ctx: Emission) -> Code:
    if layer.args["mean"] is None:
        return call(ctx.use("Normalization"), **ctx.weights)
    return call(ctx.use("Normalization"), mean=layer.args["mean"], variance=layer.args["variance"])


def _cropping2d(layer: ir.Layer, ctx: Emission) -> Code:
    args = layer.args
    return call(ctx.use("Cropping"), ((args["top"], args["bottom"]), (args["left"], args["right"])))


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
    "reshape": lambda layer, ctx: call(ctx.use("Reshape"), layer.args["target"]),
    "permute": lambda layer, ctx: call(ctx.use("Permute"), layer.args["dims"]),
    "subtract": _plain("Subtract"),
    "maximum": _plain("Maximum"),
    "minimum": _plain("Minimum"),
    "rescaling": lambda layer, ctx: call(ctx.use("Rescaling"), layer.args["scale"], layer.args["offset"]),
    "normalization": _normalization,
    "layerscale": lambda layer, ctx: call(ctx.use("LayerScale"), **ctx.weights),
    "cropping2d": _cropping2d,
    "cropping1d": lambda layer, ctx: call(ctx.use("Cropping"), ((layer.args["start"], layer.args["end"]),)),
    "upsample1d": lambda layer, ctx: call(ctx.use("UpSample1D"), layer.args["size"]),
    "posembed": lambda layer, ctx: call(ctx.use("PositionEmbedding"), **ctx.weights),
    "classtoken": lambda layer, ctx: call(ctx.use("ClassToken"), **ctx.weights),
    "select": lambda layer, ctx: call(ctx.use("Select"), layer.args["index"]),
    "attention": lambda layer, ctx: call(
        ctx.use("Attention"), **ctx.weights, **({"causal": True} if layer.args["causal"] else {})
    ),
}



def _initial_value(weight: ir.Weight, use: Use) -> Code:
    pieces = segments(weight.initializer, weight.shape[-1] if weight.shape else 1)  # a count is a scalar
    if len(pieces) == 1:
        return call(use("initial"), Code("rng"), weight.initializer, _shape(weight.shape))
    # Keras draws each piece on its own shape (an LSTM's unit_forget_bias), then concatenates.
    return call("np.concatenate", [call(use("initial"), Code("rng"), name, _shape((n,))) for name, n in pieces])


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

#: Where the model's own code starts: what comes before it (imports, runtime pieces) is the fixed header.
MODEL_CODE_MARKER = "# --- the model ---"

#: Attributes a generated block or model has of its own, which no layer or block attribute may take.
_CLASS_ATTRIBUTES = frozenset({"layers", "named_layers", MARKER, IR_ATTRIBUTE})

#: Names ``__call__`` uses of its own, which no tensor variable may take.
_CALL_NAMES = frozenset({"self", "x", "np", "mask", "inputs", "block"})

#: Names a block's constructor uses of its own, which no lifted parameter may take.
_INIT_NAMES = frozenset({"self", "rng", "name", "i", "np"})

#: Separates a block instance's constructor lines from its ``__call__`` lines in one fragment.
_CALL_SEPARATOR = "\n\x01\n"


def class_name(model: ir.Model) -> str:
    name = camel_case(model.name)
    # A model called `dense` must not shadow the runtime's Dense.
    return name if name not in _runtime_pieces() else ident(name + "Model")


def _local(name: str, prefix: str) -> str:
    """A tensor's or instance's name within the block instance ``prefix`` (the model: ``""``)."""
    return name[len(prefix) + 1 :] if prefix and name.startswith(prefix + "_") else name


def _unique(base: str, taken: set[str], suffix: str) -> str:
    name = base
    while name in taken:
        name += suffix
    taken.add(name)
    return ident(name)


#: Within a block: the block parameters the layer being written names (``conv2d growth 3``), by value.
_NAMED_SIZES: ContextVar[Mapping[int, str] | None] = ContextVar("named_sizes", default=None)


def _size(value: int) -> Code:
    """A size, hinted with the block parameter that the statement names and that has its value, so that
    the block's class takes ``growth`` even where every instance passes 32 (the planner checks it holds)."""
    meaning = (_NAMED_SIZES.get() or {}).get(value)
    return Code(py(Hint(value, meaning) if meaning else value))


def _shape(shape: tuple[int, ...]) -> Code:
    """A shape with a hole per dimension, so that a block's class can write ``(k, k, in_channels, filters)``."""
    return Code("(" + ", ".join(_size(d) for d in shape) + ("," if len(shape) == 1 else "") + ")")


def _args_text(call: ir.BlockCall, block: ir.BlockDef) -> str:
    """``conv_bn 64 7 stride=2`` for a comment: the block's name and its arguments as bound."""
    parts = [call.block]
    for param in block.signature:
        value = call.args[param]
        if param in block.defaults and value == block.defaults[param]:
            continue
        shown = "x".join(map(_dsl_value, value)) if isinstance(value, tuple) else _dsl_value(value)
        parts.append(shown if param in block.params else f"{param}={shown}")
    return " ".join(parts)


def _dsl_value(value: Any) -> str:
    """A bound argument as the DSL writes it: ``3``, ``same``, ``true`` (other strings repr'd, so a comment stays one line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.isidentifier():
        return value
    return literal(value)


@dataclass
class _Step:
    """One line of ``__call__``: a layer, a block instance or a loop over instances."""

    inputs: tuple[str, ...]
    output: str
    attribute: str
    construct: str
    line: int  # the DSL line it came from
    source: str | None  # what the line says, for the comment above it (None: nothing to say)
    layer: ir.Layer | None = None
    loop: bool = False


@dataclass
class _Instance:
    """Where one block instance's class is: its name, and its arguments."""

    class_name: str
    variant: Variant
    member: int


class _Generator:
    """Writes the model's own code: a class per block definition, then the model's class."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.body: tuple[ir.Node, ...] = model.body or tuple(ir.LayerNode(layer) for layer in model.layers)
        self.used: set[str] = set()
        self.shapes = {**{i.name: i.shape for i in model.inputs}, **{layer.name: layer.output_shape for layer in model.layers}}
        self.masks = mask_variables(model)
        self.readers: dict[str, set[str]] = {}
        for layer in model.layers:
            for name in layer.inputs:
                self.readers.setdefault(name, set()).add(layer.name)
        self.instances: dict[str, _Instance] = {}
        #: Layer -> the arguments of the block instance whose body holds it.
        self.block_args: dict[str, Mapping[str, Any]] = {
            node.layer.name: call.args
            for call in ir.walk(self.body)
            if isinstance(call, ir.BlockCall)
            for node in call.body
            if isinstance(node, ir.LayerNode)
        }
        self.class_names = {class_name(model), *_runtime_pieces()}
        self.block_classes: set[str] = set()  # the classes written so far, which a constructor may call
        self.definitions: list[SourceWriter] = []

    def use(self, name: str) -> Code:
        self.used.add(ident(name))
        return Code(name)

    # -- which block instances become a class ------------------------------------------------

    def classable(self, block_call: ir.BlockCall) -> bool:
        """A function of its input alone, and no mask in or out (``__call__`` takes one tensor)."""
        layers = ir.layers_of(block_call.body)
        masked = any(
            layer.input_masked or layer.kind == "masking" or (layer.kind == "embedding" and layer.args["mask_zero"])
            for layer in layers
        )
        return bool(layers) and not masked and self_contained(block_call)

    def plan(self) -> None:
        """One class per block definition (a variant each where instances differ in structure),
        callees first: a block's code calls its callees' classes with their unified signatures."""
        calls: dict[str, list[ir.BlockCall]] = {}
        for node in ir.walk(self.body):
            if isinstance(node, ir.BlockCall) and self.classable(node):
                calls.setdefault(node.block, []).append(node)
        done: set[str] = set()

        def define(block: str) -> None:
            if block in done:
                return
            done.add(block)
            for block_call in calls[block]:
                for node in ir.walk(block_call.body):
                    if isinstance(node, ir.BlockCall) and node.block in calls:
                        define(node.block)
            self.define(self.model.block(block), calls[block])

        for block in calls:
            define(block)

    def define(self, block: ir.BlockDef, calls: list[ir.BlockCall]) -> None:
        variants = self.unify(block, calls)
        if len(variants) > 1:  # perhaps only because some instances leave out options that others set
            token = _KEEP_DEFAULTS.set(frozenset(re.findall(r"(\w+)=", "\n".join(v.text for v in variants))))
            try:
                variants = self.unify(block, calls)
            finally:
                _KEEP_DEFAULTS.reset(token)
        for number, variant in enumerate(variants, start=1):
            name = camel_case(block.name) + (str(number) if number > 1 else "")
            name = _unique(name, self.class_names, "_")
            self.block_classes.add(name)
            for member in variant.members:
                self.instances[calls[member].instance] = _Instance(name, variant, member)
            self.definitions.append(self.write_class(name, variant))

    def unify(self, block: ir.BlockDef, calls: list[ir.BlockCall]) -> list[Variant]:
        fragments, scopes = [], []
        for block_call in calls:
            with codegen.holes() as holes:
                init, forward = self.level(block_call.body, block_call.instance, block_call.input, block_call.output)
                text = "\n".join(init) + _CALL_SEPARATOR + "\n".join(forward)
            fragments.append(Fragment.of(text, holes))
            # A parameter named like the constructor's own names or a runtime piece would shadow it: not one to take.
            reserved = _INIT_NAMES | self.block_classes | self.used
            values = {k: v for k, v in block_call.args.items() if k not in reserved and not k.startswith("__")}
            input_shape = self.shapes[block_call.input]
            if input_shape and "in_channels" not in reserved:
                values.setdefault("in_channels", input_shape[-1])
            scopes.append(Scope(values, block.defaults, block_call.instance))
        return unify(fragments, scopes, reserved=reserved)

    def write_class(self, name: str, variant: Variant) -> SourceWriter:
        init, forward = variant.text.split(_CALL_SEPARATOR)
        parameters = ["self", "rng", *(["name"] if variant.uses_name else [])]
        parameters += [p.name if not p.has_default else f"{p.name}={literal(p.default)}" for p in variant.parameters]
        out = SourceWriter()
        out.line(f"class {name}({self.use('Block')}):")
        with out.indent():
            signature = f"def __init__({', '.join(parameters)}):"
            if 4 + len(signature) <= _LINE_LENGTH:
                out.line(signature)
            elif 8 + len(", ".join(parameters)) <= _LINE_LENGTH:  # as ruff splits a long signature
                out.lines += ["    def __init__(", f"        {', '.join(parameters)}", "    ):"]
            else:
                out.lines += ["    def __init__(", *(f"        {p}," for p in parameters), "    ):"]
            for line in init.split("\n"):
                out.lines += _formatted(line, 2)
            out.blank()
            for line in forward.split("\n"):
                out.lines += _formatted(line, 1)
        return out

    # -- one level: a block's body, or the model's ---------------------------------------------

    def steps(self, nodes: tuple[ir.Node, ...], prefix: str, previous: str, taps: dict[str, str]) -> list[_Step]:
        out: list[_Step] = []
        for node in nodes:
            if isinstance(node, ir.LayerNode):
                layer = node.layer
                out.append(self.layer_step(layer, prefix, layer.inputs or (previous,)))
                previous = layer.name
            elif isinstance(node, ir.Tap):
                if not node.name.startswith("__"):  # no variable may look like `__import__`
                    taps.setdefault(node.tensor, node.name)
            elif isinstance(node, ir.BlockCall) and node.instance in self.instances:
                out.append(self.call_step(node, prefix))
                previous = node.output
            elif isinstance(node, ir.BlockCall):  # reads more than its input: its layers, inline
                out.extend(self.steps(node.body, prefix, previous, taps))
                previous = node.output
            else:
                loop = self.loop_step(node, prefix)
                if loop is not None:
                    out.append(loop)
                else:
                    for iteration in node.iterations:
                        out.extend(self.steps(iteration, prefix, previous, taps))
                        previous = out[-1].output if out else previous
                previous = node.output
        return out

    def layer_step(self, layer: ir.Layer, prefix: str, inputs: tuple[str, ...]) -> _Step:
        args = self.block_args.get(layer.name, {}) if prefix else {}
        named = {p for p in re.findall(r"[A-Za-z_]\w*", layer.written) if p in args and not p.startswith("__")}
        sizes = {args[p]: p for p in sorted(named, reverse=True) if type(args[p]) is int}
        width = layer.input_shape[-1] if layer.input_shape else None
        sizes.pop(width, None)  # a size equal to the input's width may be either: name neither (no `(ff, ff)`)
        for value, written in written_sizes(layer).items():  # `conv2d max(8,in_channels//4) 1`
            if not written.isidentifier() and value != width:
                sizes.setdefault(value, written)
        token = _NAMED_SIZES.set(sizes)
        try:
            weights = {ident(w.name): _initial_value(w, self.use) for w in layer.weights}
            construct = EMITTERS[layer.kind](layer, Emission(weights, self.use))
        finally:
            _NAMED_SIZES.reset(token)
        construct = Code(f"{construct[:-1]}{'' if construct.endswith('()') else ', '}name={py(layer.name)})")
        source = (layer.written or None) if prefix else layer.source
        return _Step(inputs, layer.name, _local(layer.name, prefix), construct, layer.span.line, source, layer)

    def construct_call(self, block_call: ir.BlockCall) -> Code:
        instance = self.instances[block_call.instance]
        positional, keywords = instance.variant.call_arguments(instance.member)
        kept = _KEEP_DEFAULTS.get()
        if kept:  # the arguments that some instance of the caller passes, so that none leaves one out
            values = instance.variant.arguments[instance.variant.members.index(instance.member)]
            keywords = {p.name: values[p.name] for p in instance.variant.parameters if p.has_default and p.name in kept}
            keywords.update(instance.variant.call_arguments(instance.member)[1])
        name = [block_call.instance] if instance.variant.uses_name else []
        return codegen.call(instance.class_name, Code("rng"), *name, *positional, **keywords)

    def call_step(self, block_call: ir.BlockCall, prefix: str) -> _Step:
        # Within a block, the arguments differ between its instances: no comment there.
        source = None if prefix else _args_text(block_call, self.model.block(block_call.block))
        return _Step(
            (block_call.input,),
            block_call.output,
            _local(block_call.instance, prefix),
            self.construct_call(block_call),
            block_call.span.line,
            source,
        )

    def loop_step(self, repeat: ir.Repeat, prefix: str) -> _Step | None:
        """`repeat N { block call }` as a list of instances built in a loop, when every iteration
        is one instance of one class and nothing outside reads between iterations."""
        calls = [iteration[0] for iteration in repeat.iterations if len(iteration) == 1]
        if len(calls) != len(repeat.iterations) or not all(
            isinstance(block_call, ir.BlockCall) and block_call.instance in self.instances for block_call in calls
        ):
            return None
        inside = {layer.name for layer in ir.layers_of(tuple(calls))}
        if any(not self.readers.get(block_call.output, set()) <= inside for block_call in calls[:-1]):
            return None
        if set(self.model.outputs) & {block_call.output for block_call in calls[:-1]}:
            return None
        fragments = []
        for block_call in calls:
            with codegen.holes() as holes:
                text = self.construct_call(block_call)
            fragments.append(Fragment.of(text, holes))
        body = unify_iterations(fragments)
        if body is None:
            return None
        element = body.render(
            lambda k: py(Hint(body.values[k], body.meanings[k]) if body.meanings[k] else body.values[k])
        )
        construct = Code(f"[{element} for i in range({py(repeat.count)})]")
        source = (
            None if prefix else f"repeat {repeat.count} {{ {_args_text(calls[0], self.model.block(calls[0].block))} }}"
        )
        attribute = _local(calls[0].instance, prefix)
        return _Step((repeat.input,), repeat.output, attribute, construct, repeat.span.line, source, loop=True)

    def comment(self, prefix: str, steps: list[_Step]) -> str:
        """``# line 3: conv2d 32 3 | relu -> (N, 26, 26, 32)`` over the steps of one DSL line; in a
        block, the statements as written (``conv2d filters 3``), with no shapes (they vary between instances)."""
        text = " | ".join(step.source for step in steps if step.source)
        if prefix:
            return f"# {text}"
        return f"# line {steps[0].line}: {text} -> {shape_comment(self.shapes[steps[-1].output])}"

    def level(
        self, nodes: tuple[ir.Node, ...], prefix: str, fed: str, output: str, outputs: tuple[str, ...] = ()
    ) -> tuple[list[str], list[str]]:
        """The constructor lines and the ``__call__`` lines of one block instance (or the model)."""
        taps: dict[str, str] = {}
        steps = self.steps(nodes, prefix, fed, taps)
        attributes: set[str] = set(_CLASS_ATTRIBUTES)
        on_line: dict[int, list[_Step]] = {}
        for step in steps:
            on_line.setdefault(step.line, []).append(step)
        init: list[str] = []
        for step in steps:
            step.attribute = _unique(step.attribute, attributes, "_")
            same_line = on_line[step.line]
            # In a block, a line that calls blocks would say their arguments, which differ between instances.
            if step is same_line[0] and not (prefix and any(s.layer is None for s in same_line)):
                commented = [s for s in same_line if s.source]
                if commented:
                    init.append(self.comment(prefix, commented))
            init.append(f"self.{step.attribute} = {step.construct}")
        model = self.model
        several = not prefix and len(model.inputs) > 1
        variables = _variables(steps, fed, output, taps, model.input_names if several else (), outputs)
        forward = []
        if prefix:
            forward.append(f"def __call__(self, {variables[fed]}):")
        elif several:  # one array per input, in the order the inputs are declared
            forward.append(f"def __call__(self, {', '.join(variables[i.name] for i in model.inputs)}):")
            for model_input in model.inputs:
                held = variables[model_input.name]
                forward.append(f"    {held} = np.asarray({held}, dtype=np.{ident(model_input.dtype)})")
                if model_input.layout == "channels_first":
                    forward.append(f"    {held} = np.moveaxis({held}, 1, -1)  # channels first -> last")
        else:
            forward.append("def __call__(self, x):")
            forward.append(f"    {variables[fed]} = np.asarray(x, dtype=np.{ident(model.input.dtype)})")
            if model.input.layout == "channels_first":
                forward.append(f"    {variables[fed]} = np.moveaxis({variables[fed]}, 1, -1)  # channels first -> last")
        for step in steps:
            sources = ", ".join(variables[name] for name in step.inputs)
            target = variables[step.output]
            if step.loop:
                if target != sources:
                    forward.append(f"    {target} = {sources}")
                forward += [f"    for block in self.{step.attribute}:", f"        {target} = block({target})"]
            elif step.layer is not None:
                lines = _forward_lines(step.layer, f"self.{step.attribute}", sources, target)
                mask = self.masks.get(step.layer.name, "mask")  # several masks alive at once: one variable each
                forward += [f"    {line}" for line in rename_variable(lines, "mask", mask)]
            else:
                forward.append(f"    {target} = self.{step.attribute}({sources})")
        if len(outputs) > 1:
            forward.append(f"    return {', '.join(variables[name] for name in outputs)}")
            return init, forward
        last = f"    {variables[output]} = "
        if forward[-1].startswith(last):
            forward[-1] = f"    return {forward[-1][len(last) :]}"  # the last step's value, returned as it is made
        else:
            forward.append(f"    return {variables[output]}")
        return init, forward

    # -- the module -----------------------------------------------------------------------------

    def source(self) -> str:
        self.plan()
        model = self.model
        init, forward = self.level(self.body, "", model.input.name, model.output or self.body_output(), model.outputs)
        name = class_name(model)
        body = SourceWriter()
        body.line(f"class {name}({self.use('Block')}):")
        with body.indent():
            body.line(
                f'"""{model.name} for NumPy: call it on a batch of shape {shape_comment(model.input.fed_shape)}."""'
                if len(model.inputs) == 1
                else f'"""{model.name} for NumPy: call it on one batch per input, '
                + ", ".join(f"{i.name} {shape_comment(i.fed_shape)}" for i in model.inputs)
                + '."""'
            )
            body.blank()
            body.line(f"{MARKER} = {py('numpy')}")
            body.blank()
            body.line("def __init__(self, seed=None):")
            with body.indent():
                body.line("rng = np.random.default_rng(seed)")
                for line in init:
                    body.lines += _formatted(line, 2)
                body.line("self.layers = self.named_layers()")
            body.blank()
            for line in forward:
                body.lines += _formatted(line, 1)

        out = SourceWriter()
        out.line(module_docstring(model, "NumPy", "Needs only numpy."))
        out.blank()
        out.line("import numpy as np")
        out.blank(2)
        out.lines.extend(runtime_source(self.used).rstrip("\n").split("\n"))
        out.blank(2)
        out.line("def build_model(seed=None):")
        with out.indent():
            out.line(f"return {name}(seed)")
        out.blank(2)
        out.line(MODEL_CODE_MARKER)
        for definition in self.definitions:
            out.lines.extend(definition.text().rstrip("\n").split("\n"))
            out.blank(2)
        out.lines.extend(body.lines)
        return out.text()

    def body_output(self) -> str:
        return self.model.layers[-1].name


def emit_source(model: ir.Model) -> str:
    return _Generator(model).source()


def _variables(
    steps: list[_Step],
    fed: str,
    output: str,
    taps: dict[str, str],
    inputs: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
) -> dict[str, str]:
    """Tensor -> the variable that holds it in ``__call__``.

    Along a chain, where a tensor feeds only the next step, that is ``x``; a tensor that
    branches, or is read further on, gets a variable named after its tap, or its step's attribute.
    """
    readers: dict[str, list[int]] = {}
    for position, step in enumerate(steps, start=1):
        for name in step.inputs:
            readers.setdefault(name, []).append(position)
    for name in outputs if len(outputs) > 1 else (output,):
        readers.setdefault(name, []).append(len(steps) + 1)  # `return` reads it last

    taken = set(_CALL_NAMES) | {step.attribute for step in steps} | set(taps.values())
    labels = {step.output: step.attribute for step in steps}
    out = {name: _unique(ident(name), taken, "_") for name in inputs}  # several inputs: each a parameter
    for position, name in enumerate([fed] + [step.output for step in steps]):
        label = taps.get(name) or labels.get(name)
        if name in out:
            continue
        if len(outputs) > 1 and name in outputs and label is not None and label not in _CALL_NAMES:
            out[name] = ident(label)
        elif readers.get(name) == [position + 1]:
            out[name] = "x"
        elif label is None:
            out[name] = "inputs"
        elif label not in _CALL_NAMES:
            out[name] = ident(label)
        else:
            out[name] = _unique(f"{label}_out", taken, "_")
    return out


def _forward_lines(layer: ir.Layer, attribute: str, sources: str, target: str) -> list[str]:
    """A layer's lines in ``__call__``: the mask is made where Keras makes it and passed to the layers that use it."""
    if layer.kind == "embedding" and layer.args["mask_zero"]:
        return [f"mask = {sources} != 0  # token id 0 is padding", f"{target} = {attribute}({sources})"]
    if layer.kind == "masking":
        return [f"{target}, mask = {attribute}({sources})"]
    if layer.input_masked and REGISTRY[layer.kind].reads_memory:  # the keys' mask, after query and memory
        return [f"{target} = {attribute}({sources}, mask=mask)"]
    if layer.input_masked and REGISTRY[layer.kind].takes_mask:  # the runtime layer takes it second
        return [f"{target} = {attribute}({sources}, mask)"]
    if layer.kind == "classtoken" and layer.input_masked:
        return [f"{target} = {attribute}({sources})", "mask = np.pad(mask, ((0, 0), (1, 0)), constant_values=True)"]
    return [f"{target} = {attribute}({sources})"]


# --- formatting: as `ruff format` writes it ------------------------------------------------

_LINE_LENGTH = 120  # as the runtime pieces the file carries are written (the project's ruff setting)


def _formatted(line: str, indent: int) -> list[str]:
    """One line of code at ``indent`` levels (plus its own leading spaces), split as `ruff format`
    splits a long assignment or call: the arguments on one line of their own if they fit, else one a line."""
    text = line.lstrip(" ")
    indent += (len(line) - len(text)) // 4
    if 4 * indent + len(text) <= _LINE_LENGTH or text.startswith(("#", "def ", "for ", "return ")):
        return ["    " * indent + text]
    node = ast.parse(text).body[0]
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        return _expression(indent, _segment(text, node.targets[0]) + " = ", _segment(text, node.value), "")
    return ["    " * indent + text]


def _expression(indent: int, head: str, text: str, tail: str) -> list[str]:
    """``head + text + tail`` at ``indent``, split at the brackets of a long call, list or comprehension."""
    if 4 * indent + len(head) + len(text) + len(tail) <= _LINE_LENGTH:
        return ["    " * indent + head + text + tail]
    node = ast.parse(text, mode="eval").body
    margin, inner = "    " * indent, "    " * (indent + 1)
    if isinstance(node, ast.ListComp):
        element = _segment(text, node.elt)
        clauses = text[len("[") + len(element) : -len("]")].strip()
        if 4 * (indent + 1) + len(element) + 1 + len(clauses) <= _LINE_LENGTH:
            middle = [f"{inner}{element} {clauses}"]
        else:
            middle = [*_expression(indent + 1, "", element, ""), inner + clauses]
        return [f"{margin}{head}[", *middle, f"{margin}]{tail}"]
    if isinstance(node, ast.Call):
        opening, closing = f"{_segment(text, node.func)}(", ")"
        items = [("", arg) for arg in node.args] + [(f"{kw.arg}=", kw.value) for kw in node.keywords]
    elif isinstance(node, ast.List | ast.Tuple) and node.elts:
        opening, closing = ("[", "]") if isinstance(node, ast.List) else ("(", ")")
        items = [("", element) for element in node.elts]
    else:
        return [margin + head + text + tail]
    pieces = [f"{name}{_segment(text, item)}" for name, item in items]
    one_line = ", ".join(pieces) + ("," if isinstance(node, ast.Tuple) and len(pieces) == 1 else "")
    if 4 * (indent + 1) + len(one_line) <= _LINE_LENGTH:
        middle = [inner + one_line]
    else:
        middle = [line for name, item in items for line in _expression(indent + 1, name, _segment(text, item), ",")]
    return [f"{margin}{head}{opening}", *middle, f"{margin}{closing}{tail}"]


def _segment(text: str, node: ast.AST) -> str:
    """The source of ``node`` within one-line ``text`` (``ast.get_source_segment`` re-splits the text per call)."""
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
