"""The onnx backend: an ``onnx.ModelProto`` built from the IR with ``onnx.helper`` (not through torch).

One emitter per layer kind, in ``EMITTERS``. Tensors keep the DSL's channels-last layout except
around the operators ONNX defines channels-first (Conv, pooling, BatchNormalization, Resize): each
tensor remembers the layouts it exists in, and a Transpose is added only where a layer needs the
other one, so a chain of convolutions stays channels-first between them. The model takes its input
as Keras and NumPy models do (``Input.fed_shape``, dynamic batch) and returns the channels-last
output. Recurrences without a mask are ONNX ``LSTM``/``GRU``/``RNN``; masked ones are ``Scan``
loops that keep the state through masked steps and repeat the previous output, as Keras does.

Importing this module imports neither onnx nor numpy; ``to_onnx`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from .. import ir
from ..errors import BackendError
from ..specs import REGISTRY, activation_function, padding_1d, spatial_padding
from .base import Backend, missing_framework, validated_weights

if TYPE_CHECKING:
    import numpy as np
    import onnx

DEFAULT_OPSET = 17
#: LayerNormalization, the oldest operator used, is opset 17.
MIN_OPSET = 17

LAST, FIRST = "channels_last", "channels_first"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise missing_framework("onnx", "onnx", "onnx") from None
    return onnx


# --- one graph (the model, or a Scan body) -------------------------------------------------


@dataclass
class _Names:
    """Names are unique across the model and its subgraphs (ONNX forbids shadowing outer names)."""

    taken: set[str] = field(default_factory=set)

    def new(self, base: str) -> str:
        name, count = base, 1
        while name in self.taken:
            count += 1
            name = f"{base}_{count}"
        self.taken.add(name)
        return name


class _Graph:
    """Nodes and initializers of one ONNX graph, with helpers that name every output."""

    def __init__(self, names: _Names, opset: int) -> None:
        self.names, self.opset = names, opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.layer: ir.Layer | None = None  # the layer being emitted: names and doc strings come from it

    def const(self, base: str, array: Any) -> str:
        onnx = _onnx()
        name = self.names.new(base)
        self.initializers.append(onnx.numpy_helper.from_array(array, name))
        return name

    def ints(self, values: Any) -> str:
        import numpy as np

        return self.const("ints", np.asarray(values, dtype=np.int64))

    def scalar(self, value: float) -> str:
        import numpy as np

        return self.const("scalar", np.asarray(value, dtype=np.float32))

    def op(self, op_type: str, inputs: list[str], name: str | None = None, outputs: int = 1, **attrs: Any) -> Any:
        """Adds a node; returns its output name (a list when ``outputs > 1``)."""
        onnx = _onnx()
        base = name or (f"{self.layer.name}_{op_type.lower()}" if self.layer else op_type.lower())
        node_name = self.names.new(base)
        outs = [node_name] if outputs == 1 else [self.names.new(f"{node_name}_{i}") for i in range(outputs)]
        doc = self.layer.source if self.layer else None
        self.nodes.append(onnx.helper.make_node(op_type, inputs, outs, name=node_name, doc_string=doc, **attrs))
        return outs[0] if outputs == 1 else outs

    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: bool = False) -> str:
        """ReduceMax/Min/Mean take ``axes`` as an input from opset 18 (ReduceSum from 13)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.op(op_type, [x], axes=axes, keepdims=int(keepdims))

    def transpose(self, x: str, perm: list[int], name: str | None = None) -> str:
        return self.op("Transpose", [x], name=name, perm=perm)


# --- activations --------------------------------------------------------------------------

ActivationEmitter = Callable[[_Graph, str, int, "str | None"], str]
"""(graph, x, channel axis, name of the last node or None) -> output."""


def _gelu(g: _Graph, x: str, axis: int, name: str | None) -> str:
    # The exact (erf) form, as Keras's default approximate=False: 0.5 * x * (1 + erf(x / sqrt 2)).
    scaled = g.op("Mul", [x, g.scalar(0.7071067811865476)])
    one_plus = g.op("Add", [g.op("Erf", [scaled]), g.scalar(1.0)])
    return g.op("Mul", [g.op("Mul", [x, g.scalar(0.5)]), one_plus], name=name)


def _gelu_approximate(g: _Graph, x: str, axis: int, name: str | None) -> str:
    # Keras's approximate=True: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))).
    cubed = g.op("Mul", [g.op("Mul", [x, x]), x])
    inner = g.op("Add", [x, g.op("Mul", [cubed, g.scalar(0.044715)])])
    one_plus = g.op("Add", [g.op("Tanh", [g.op("Mul", [inner, g.scalar(0.7978845608028654)])]), g.scalar(1.0)])
    return g.op("Mul", [g.op("Mul", [x, g.scalar(0.5)]), one_plus], name=name)


def _unary(op_type: str, **attrs: Any) -> ActivationEmitter:
    return lambda g, x, axis, name: g.op(op_type, [x], name=name, **attrs)


ACTIVATIONS: dict[str, ActivationEmitter] = {
    "linear": lambda g, x, axis, name: x,
    "relu": _unary("Relu"),
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "softmax": lambda g, x, axis, name: g.op("Softmax", [x], name=name, axis=axis),
    "elu": _unary("Elu", alpha=1.0),
    "selu": _unary("Selu"),  # ONNX's default constants are Keras's
    "gelu": _gelu,
    "gelu_approximate": _gelu_approximate,
    "softplus": _unary("Softplus"),
    "softsign": _unary("Softsign"),
    "leaky_relu": _unary("LeakyRelu", alpha=0.2),  # Keras 3's negative_slope
    "silu": lambda g, x, axis, name: g.op("Mul", [x, g.op("Sigmoid", [x])], name=name),
    "relu6": lambda g, x, axis, name: g.op("Clip", [x, g.scalar(0.0), g.scalar(6.0)], name=name),
    # Keras 3's definitions (thresholds 0.5, celu's alpha 1); ONNX's HardSigmoid with these constants is relu6(x+3)/6
    "hard_sigmoid": _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    "hard_swish": _unary("HardSwish"),
    "mish": lambda g, x, axis, name: g.op("Mul", [x, g.op("Tanh", [g.op("Softplus", [x])])], name=name),
    "hard_tanh": lambda g, x, axis, name: g.op("Clip", [x, g.scalar(-1.0), g.scalar(1.0)], name=name),
    "log_softmax": lambda g, x, axis, name: g.op("LogSoftmax", [x], name=name, axis=axis),
    "log_sigmoid": lambda g, x, axis, name: g.op("Neg", [g.op("Softplus", [g.op("Neg", [x])])], name=name),
    "celu": _unary("Celu", alpha=1.0),
    "tanh_shrink": lambda g, x, axis, name: g.op("Sub", [x, g.op("Tanh", [x])], name=name),
    "soft_shrink": _unary("Shrink", bias=0.5, lambd=0.5),
    "hard_shrink": _unary("Shrink", bias=0.0, lambd=0.5),
}


def _activate(g: _Graph, function: str, x: str, layout: str = LAST, name: str | None = None) -> str:
    return ACTIVATIONS[function](g, x, 1 if layout == FIRST else -1, name)


# --- emitting a model ---------------------------------------------------------------------


class _Emission:
    """The state of one export: the graph, each tensor's ONNX names by layout, and the masks."""

    def __init__(self, model: ir.Model, weights: Mapping[str, np.ndarray], opset: int) -> None:
        self.model, self.weights = model, weights
        self.output_names = graph_output_names(model)
        self.names = _Names({*model.input_names, *self.output_names})
        self.g = _Graph(self.names, opset)
        self.tensors: dict[str, dict[str, str]] = {}  # IR tensor -> layout -> ONNX name
        self.ranks: dict[str, int] = {}  # with the batch axis
        self.masks: dict[str, str] = {}  # IR tensor -> bool (N, T) mask, where one travels with it
        self.previous = model.input.name  # the tensor a layer without explicit inputs reads

    def w(self, layer: ir.Layer, param: str) -> np.ndarray:
        return self.weights[f"{layer.name}.{param}"]

    def const(self, layer: ir.Layer, param: str, array: Any) -> str:
        return self.g.const(f"{layer.name}.{param}", array)

    def sources(self, layer: ir.Layer) -> tuple[str, ...]:
        return layer.inputs or (self.previous,)

    def value(self, name: str, layout: str) -> str:
        """The ONNX tensor holding IR tensor ``name`` in ``layout``, transposed once when first asked."""
        have = self.tensors[name]
        if layout in have:
            return have[layout]
        rank = self.ranks[name]
        if rank <= 2:  # no channel axis to move
            return next(iter(have.values()))
        if layout == FIRST:
            perm, suffix = [0, rank - 1, *range(1, rank - 1)], "channels_first"
        else:
            perm, suffix = [0, *range(2, rank), 1], "channels_last"
        source = next(iter(have.values()))
        saved, self.g.layer = self.g.layer, None
        have[layout] = self.g.transpose(source, perm, name=f"{name}_{suffix}")
        self.g.layer = saved
        return have[layout]

    def x(self, layer: ir.Layer, layout: str = LAST, index: int = 0) -> str:
        return self.value(self.sources(layer)[index], layout)

    def any_layout(self, layer: ir.Layer, index: int = 0) -> tuple[str, str]:
        """The input as it already exists (channels-first preferred: the layout convolutions left it in)."""
        have = self.tensors[self.sources(layer)[index]]
        layout = FIRST if FIRST in have else LAST
        return have[layout], layout

    def mask(self, layer: ir.Layer) -> str | None:
        """The mask a layer reads: its input's; attention's keys are masked by its memory's (its last input)."""
        if not layer.input_masked:
            return None
        sources = self.sources(layer)
        return self.masks.get(sources[-1] if REGISTRY[layer.kind].reads_memory else sources[0])

    def emit(self) -> Any:
        onnx = _onnx()
        model, g = self.model, self.g
        graph_inputs = []
        for model_input in model.inputs:
            dtype = onnx.helper.np_dtype_to_tensor_dtype(_np_dtype(model_input.dtype))
            fed = model_input.fed_shape
            name = model_input.name
            graph_inputs.append(onnx.helper.make_tensor_value_info(name, dtype, ["batch", *fed]))
            rank = len(fed) + 1
            # A channels-first input is the IR's channels-last tensor with its channel axis moved to 1.
            self.tensors[name] = {FIRST if model_input.layout == FIRST and rank >= 3 else LAST: name}
            self.ranks[name] = rank
        for layer in model.layers:
            g.layer = layer
            out, layout = EMITTERS[layer.kind](layer, self)
            self.ranks[layer.name] = len(layer.output_shape) + 1
            self.tensors[layer.name] = {layout if self.ranks[layer.name] >= 3 else LAST: out}
            if layer.output_masked and layer.name not in self.masks:
                # a merge's masked inputs share one mask (the checker says so); unmasked ones add nothing
                self.masks[layer.name] = next(self.masks[s] for s in self.sources(layer) if s in self.masks)
            self.previous = layer.name
        g.layer = None
        graph_outputs = []
        for tensor, name in zip(model.outputs or (self.previous,), self.output_names, strict=True):
            g.nodes.append(onnx.helper.make_node("Identity", [self.value(tensor, LAST)], [name], name=name))
            shape = ["batch", *model.tensor_shape(tensor)]
            graph_outputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))
        return onnx.helper.make_graph(g.nodes, model.name, graph_inputs, graph_outputs, g.initializers)


def graph_output_names(model: ir.Model) -> tuple[str, ...]:
    """The ONNX graph's output names: ``output`` for one; for several, each output's tap name."""
    if len(model.outputs) <= 1:
        return ("output",)
    taps = {node.tensor: node.name for node in model.body if isinstance(node, ir.Tap)}
    names: list[str] = []
    for tensor in model.outputs:
        name = taps.get(tensor, tensor)
        while name in names or name in model.input_names:
            name += "_output"
        names.append(name)
    return tuple(names)


def _np_dtype(name: str) -> Any:
    import numpy as np

    return np.dtype(name)


Emitter = Callable[[ir.Layer, "_Emission"], tuple[str, str]]
"""(layer, emission) -> (ONNX output name, its layout): the emitter signature every backend shares."""


def _named(e: _Emission, layer: ir.Layer, x: str) -> str:
    """An Identity named after the layer, where it adds no operator of its own (ONNX Runtime removes it)."""
    return e.g.op("Identity", [x], name=layer.name)


def _dense(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    x = e.x(layer)
    kernel = e.const(layer, "kernel", e.w(layer, "kernel"))
    has_bias = layer.args["bias"]
    activation = layer.args["activation"]
    name = layer.name if activation == "linear" else None
    if len(layer.input_shape) == 1:
        inputs = [x, kernel] + ([e.const(layer, "bias", e.w(layer, "bias"))] if has_bias else [])
        y = e.g.op("Gemm", inputs, name=name)
    else:
        y = e.g.op("MatMul", [x, kernel], name=None if has_bias else name)
        if has_bias:
            y = e.g.op("Add", [y, e.const(layer, "bias", e.w(layer, "bias"))], name=name)
    return _activate(e.g, activation, y), LAST


def _conv_weights(e: _Emission, layer: ir.Layer, kernel: np.ndarray) -> list[str]:
    """Keras (…, in, out) kernel -> ONNX (out, in, …), and the bias if any."""
    rank = kernel.ndim
    onnx_kernel = kernel.transpose(rank - 1, rank - 2, *range(rank - 2)).copy()
    inputs = [e.const(layer, "kernel", onnx_kernel)]
    if layer.args["bias"]:
        inputs.append(e.const(layer, "bias", e.w(layer, "bias")))
    return inputs


def _pads(padding: Any) -> list[int]:
    """((before, after), ...) per axis -> ONNX ``pads`` (every begin, then every end)."""
    return [p[0] for p in padding] + [p[1] for p in padding]


def _conv2d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    args = layer.args
    padding = spatial_padding(args, layer.input_shape, args["kernel"])
    y = e.g.op(
        "Conv",
        [e.x(layer, FIRST), *_conv_weights(e, layer, e.w(layer, "kernel"))],
        name=layer.name if args["activation"] == "linear" else None,
        kernel_shape=list(args["kernel"]),
        strides=list(args["stride"]),
        dilations=list(args["dilation"]),
        pads=_pads(padding),
        **_group(args),
    )
    return _activate(e.g, args["activation"], y, FIRST), FIRST


def _group(args: Any) -> dict[str, int]:
    """`groups=G`: ONNX's `group` (the kernel (out, in / G, ...) converts as an ungrouped one does)."""
    return {"group": args["groups"]} if args["groups"] != 1 else {}


def _conv1d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    args = layer.args
    y = e.g.op(
        "Conv",
        [e.x(layer, FIRST), *_conv_weights(e, layer, e.w(layer, "kernel"))],
        name=layer.name if args["activation"] == "linear" else None,
        kernel_shape=[args["kernel"]],
        strides=[args["stride"]],
        dilations=[args["dilation"]],
        pads=_pads([padding_1d(args, layer.input_shape[0], args["kernel"])]),
        **_group(args),
    )
    return _activate(e.g, args["activation"], y, FIRST), FIRST


def _depthwise_kernel(kernel: np.ndarray) -> np.ndarray:
    """Keras (KH, KW, C, M) -> ONNX grouped (C*M, 1, KH, KW): output channel c*M + m reads channel c."""
    kh, kw, channels, multiplier = kernel.shape
    return kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw).copy()


def _depthwise_conv(e: _Emission, layer: ir.Layer, kernel_param: str, bias: bool, name: str | None) -> str:
    args = layer.args
    kernel = e.w(layer, kernel_param)
    inputs = [e.x(layer, FIRST), e.const(layer, kernel_param, _depthwise_kernel(kernel))]
    if bias:
        inputs.append(e.const(layer, "bias", e.w(layer, "bias")))
    return e.g.op(
        "Conv",
        inputs,
        name=name,
        group=kernel.shape[2],
        kernel_shape=list(args["kernel"]),
        strides=list(args["stride"]),
        dilations=list(args["dilation"]),
        pads=_pads(spatial_padding(args, layer.input_shape, args["kernel"])),
    )


def _depthwiseconv2d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    activation = layer.args["activation"]
    y = _depthwise_conv(e, layer, "kernel", layer.args["bias"], layer.name if activation == "linear" else None)
    return _activate(e.g, activation, y, FIRST), FIRST


def _separableconv2d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    activation = layer.args["activation"]
    depthwise = _depthwise_conv(e, layer, "depthwise_kernel", False, None)
    pointwise = e.w(layer, "pointwise_kernel").transpose(3, 2, 0, 1).copy()
    inputs = [depthwise, e.const(layer, "pointwise_kernel", pointwise)]
    if layer.args["bias"]:
        inputs.append(e.const(layer, "bias", e.w(layer, "bias")))
    y = e.g.op("Conv", inputs, name=layer.name if activation == "linear" else None, kernel_shape=[1, 1])
    return _activate(e.g, activation, y, FIRST), FIRST


def _conv2dtranspose(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    """Keras's output size: ``valid`` is ``in * s + max(k - s, 0)`` (zeros past the patches when the
    kernel is smaller than the stride: ONNX's ``output_padding``); ``same`` crops that to ``in * s``,
    the extra row or column off the end, as TensorFlow."""
    args = layer.args
    kernel = e.w(layer, "kernel")  # (KH, KW, filters, in) -> ONNX (in, filters, KH, KW)
    inputs = [e.x(layer, FIRST), e.const(layer, "kernel", kernel.transpose(3, 2, 0, 1).copy())]
    if args["bias"]:
        inputs.append(e.const(layer, "bias", e.w(layer, "bias")))
    begin, end, extra = [], [], []
    for k, s in zip(args["kernel"], args["stride"], strict=True):
        crop = max(k - s, 0) if args["pad"] == "same" else 0
        begin.append(crop // 2)
        end.append(crop - crop // 2)
        extra.append(max(s - k, 0))
    y = e.g.op(
        "ConvTranspose",
        inputs,
        name=layer.name if args["activation"] == "linear" else None,
        kernel_shape=list(args["kernel"]),
        strides=list(args["stride"]),
        pads=begin + end,
        output_padding=extra,
    )
    return _activate(e.g, args["activation"], y, FIRST), FIRST


def _pool(op_type: str, one_d: bool) -> Emitter:
    def emit(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
        args = layer.args
        if one_d:
            window, strides = [args["pool"]], [args["stride"]]
            padding: Any = [padding_1d(args, layer.input_shape[0], args["pool"])]
        else:
            window, strides = list(args["pool"]), list(args["stride"])
            padding = spatial_padding(args, layer.input_shape, args["pool"])
        options = {"count_include_pad": 0} if op_type == "AveragePool" else {}  # as TensorFlow
        y = e.g.op(
            op_type, [e.x(layer, FIRST)], name=layer.name, kernel_shape=window, strides=strides, pads=_pads(padding), **options
        )
        return y, FIRST

    return emit


def _global_pool(op_type: str) -> Emitter:
    def emit(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
        x, layout = e.any_layout(layer)
        rank = len(layer.input_shape) + 1
        axes = list(range(2, rank)) if layout == FIRST else list(range(1, rank - 1))
        if layer.args["keepdims"]:  # (N, C, 1, 1) or (N, 1, 1, C): the pooled axes stay, in their layout
            return e.g.reduce(op_type, x, axes, keepdims=True), layout
        return e.g.reduce(op_type, x, axes), LAST

    return emit


def _globalavgpool1d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    mask = e.mask(layer)
    if mask is None:
        return _global_pool("ReduceMean")(layer, e)
    g = e.g
    counted = g.op("Unsqueeze", [g.op("Cast", [mask], to=_onnx().TensorProto.FLOAT), g.ints([-1])])
    keep = bool(layer.args["keepdims"])
    total = g.reduce("ReduceSum", g.op("Mul", [e.x(layer), counted]), [1], keepdims=keep)
    count = g.reduce("ReduceSum", counted, [1], keepdims=keep)
    return g.op("Div", [total, count], name=layer.name), LAST  # mean of unmasked steps


def _batchnorm(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    import numpy as np

    channels = layer.input_shape[-1]
    params = {w.name for w in layer.weights}
    inputs = [e.x(layer, FIRST)]
    for param, default in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", None), ("moving_variance", None)):
        array = e.w(layer, param) if param in params else np.full(channels, default, dtype=np.float32)
        inputs.append(e.const(layer, param, array))
    return e.g.op("BatchNormalization", inputs, name=layer.name, epsilon=layer.args["eps"]), FIRST


def _layernorm(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    import numpy as np

    channels = layer.input_shape[-1]
    params = {w.name for w in layer.weights}
    inputs = [e.x(layer)]
    for param, default in (("gamma", 1.0), ("beta", 0.0)):
        array = e.w(layer, param) if param in params else np.full(channels, default, dtype=np.float32)
        inputs.append(e.const(layer, param, array))
    return e.g.op("LayerNormalization", inputs, name=layer.name, axis=-1, epsilon=layer.args["eps"]), LAST


def _flatten(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    return e.g.op("Flatten", [e.x(layer)], name=layer.name, axis=1), LAST  # channels-last order, as Keras


def _passthrough(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    x, layout = e.any_layout(layer)
    return _named(e, layer, x), layout


def _activation_layer(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    x, layout = e.any_layout(layer)
    function = activation_function(layer.args)
    if function == "linear":
        return _named(e, layer, x), layout
    return _activate(e.g, function, x, layout, name=layer.name), layout


def _embedding(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    g, ids = e.g, e.x(layer)
    if layer.args["mask_zero"]:
        dtype = next((i.dtype for i in e.model.inputs if i.name == e.sources(layer)[0]), e.model.input.dtype)
        zero = g.const("zero", _np_dtype(dtype).type(0))
        e.masks[layer.name] = g.op("Not", [g.op("Equal", [ids, zero])], name=f"{layer.name}_mask")
    return g.op("Gather", [e.const(layer, "embeddings", e.w(layer, "embeddings")), ids], name=layer.name), LAST


def _masking(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    onnx = _onnx()
    g, x = e.g, e.x(layer)
    padding = g.op("Cast", [g.op("Equal", [x, g.scalar(layer.args["value"])])], to=onnx.TensorProto.FLOAT)
    all_padding = g.reduce("ReduceMin", padding, [-1])
    mask = g.op("Less", [all_padding, g.scalar(0.5)], name=f"{layer.name}_mask")  # some feature differs
    e.masks[layer.name] = mask
    kept = g.op("Unsqueeze", [g.op("Cast", [mask], to=onnx.TensorProto.FLOAT), g.ints([-1])])
    return g.op("Mul", [x, kept], name=layer.name), LAST  # Keras zeroes the masked steps


# --- recurrences --------------------------------------------------------------------------

#: Keras activation -> the name ONNX LSTM/GRU/RNN take; others run in a Scan loop.
_NATIVE_RECURRENT_ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu"}


@dataclass(frozen=True)
class _Direction:
    """One recurrent pass: its Keras weights, and which way it reads and returns time."""

    kind: str
    args: ir.Args
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    go_backwards: bool
    reverse_output: bool  # a Bidirectional's backward pass returns its sequence in input order
    zero_output_for_mask: bool
    prefix: str  # initializer names: "<layer>." or "<layer>.forward_"


def _recurrent(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    args = layer.args
    bias = e.w(layer, "bias") if args["bias"] else None
    direction = _Direction(
        layer.kind,
        args,
        e.w(layer, "kernel"),
        e.w(layer, "recurrent_kernel"),
        bias,
        args["go_backwards"],
        False,
        False,
        f"{layer.name}.",
    )
    return _run_direction(e, layer, direction, e.x(layer), e.mask(layer), name=layer.name), LAST


def _bidirectional(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    args, inner = layer.args, layer.args["inner"]
    x, mask, outputs = e.x(layer), e.mask(layer), []
    for prefix, go_backwards in (("forward", inner["go_backwards"]), ("backward", not inner["go_backwards"])):
        direction = _Direction(
            args["layer"],
            inner,
            e.w(layer, f"{prefix}_kernel"),
            e.w(layer, f"{prefix}_recurrent_kernel"),
            e.w(layer, f"{prefix}_bias") if inner["bias"] else None,
            go_backwards,
            prefix == "backward" and inner["return_sequences"],
            inner["return_sequences"],  # as Keras's Bidirectional forces on both layers
            f"{layer.name}.{prefix}_",
        )
        outputs.append(_run_direction(e, layer, direction, x, mask, name=f"{layer.name}_{prefix}"))
    merge = args["merge"]
    g = e.g
    if merge == "concat":
        return g.op("Concat", outputs, name=layer.name, axis=-1), LAST
    if merge == "sum":
        return g.op("Add", outputs, name=layer.name), LAST
    if merge == "mul":
        return g.op("Mul", outputs, name=layer.name), LAST
    return g.op("Mul", [g.op("Add", outputs), g.scalar(0.5)], name=layer.name), LAST


def _run_direction(e: _Emission, layer: ir.Layer, d: _Direction, x: str, mask: str | None, name: str) -> str:
    native = mask is None and all(
        d.args[key] in _NATIVE_RECURRENT_ACTIVATIONS for key in ("activation", "recurrent_activation") if key in d.args
    )
    return (_native_recurrence if native else _scan_recurrence)(e, layer, d, x, mask, name)


def _reverse_time(g: _Graph, x: str, axis: int, name: str | None = None) -> str:
    big = 2**62
    return g.op("Slice", [x, g.ints([-1]), g.ints([-big]), g.ints([axis]), g.ints([-1])], name=name)


def _native_recurrence(e: _Emission, layer: ir.Layer, d: _Direction, x: str, mask: str | None, name: str) -> str:
    """ONNX LSTM/GRU/RNN, time-major (``layout=0``: ONNX Runtime refuses 1), gates reordered to ONNX's."""
    import numpy as np

    g = e.g
    units = d.recurrent_kernel.shape[0]
    zeros = np.zeros(units * {"lstm": 4, "gru": 3, "simplernn": 1}[d.kind], dtype=np.float32)
    input_bias, recurrent_bias = (d.bias, zeros) if d.bias is not None else (zeros, zeros)
    attrs: dict[str, Any] = {}
    if d.kind == "lstm":
        op_type = "LSTM"
        order = np.concatenate([np.arange(units) + units * gate for gate in (0, 3, 1, 2)])  # Keras i,f,c,o -> i,o,f,c
        activations = [d.args["recurrent_activation"], d.args["activation"], d.args["activation"]]
    elif d.kind == "gru":
        op_type = "GRU"
        order = np.arange(3 * units)  # z, r, h in both
        activations = [d.args["recurrent_activation"], d.args["activation"]]
        attrs["linear_before_reset"] = int(d.args["reset_after"])
        if d.bias is not None and d.args["reset_after"]:
            input_bias, recurrent_bias = d.bias[0], d.bias[1]
    else:
        op_type = "RNN"
        order = np.arange(units)
        activations = [d.args["activation"]]
    weights = [
        g.const(f"{d.prefix}kernel", d.kernel[:, order].T[None].copy()),
        g.const(f"{d.prefix}recurrent_kernel", d.recurrent_kernel[:, order].T[None].copy()),
        g.const(f"{d.prefix}bias", np.concatenate([input_bias[order], recurrent_bias[order]])[None].astype(np.float32)),
    ]
    time_major = g.transpose(x, [1, 0, 2])
    outputs = g.op(
        op_type,
        [time_major, *weights],
        name=f"{name}_{op_type.lower()}",
        outputs=2,
        hidden_size=units,
        direction="reverse" if d.go_backwards else "forward",
        activations=[_NATIVE_RECURRENT_ACTIVATIONS[a] for a in activations],
        **attrs,
    )
    if not d.args["return_sequences"]:
        return g.op("Squeeze", [outputs[1], g.ints([0])], name=name)
    sequence = g.transpose(g.op("Squeeze", [outputs[0], g.ints([1])]), [1, 0, 2])
    # ONNX writes a reverse pass's outputs at their input positions; Keras returns them in reading order.
    if d.go_backwards != d.reverse_output:
        return _reverse_time(g, sequence, 1, name=name)
    return g.op("Identity", [sequence], name=name)


def _scan_recurrence(e: _Emission, layer: ir.Layer, d: _Direction, x: str, mask: str | None, name: str) -> str:
    """A Scan over time, as the NumPy runtime's loop: one MatMul projects every step's input first;
    each step multiplies the state by the recurrent kernel; at a masked step the state is kept and
    the output repeats it (or is zero, for a Bidirectional's sequences)."""

    onnx = _onnx()
    g = e.g
    units = d.recurrent_kernel.shape[0]
    projected = g.op("MatMul", [x, g.const(f"{d.prefix}kernel", d.kernel)])
    recurrent_bias = None
    if d.bias is not None:
        input_bias = d.bias
        if d.kind == "gru" and d.args["reset_after"]:
            input_bias, recurrent_bias = d.bias[0], d.bias[1]
        projected = g.op("Add", [projected, g.const(f"{d.prefix}bias", input_bias.copy())])

    body = _Graph(e.names, g.opset)
    body.layer = layer
    state_names = ["h", "c"] if d.kind == "lstm" else ["h"]
    states = [e.names.new(f"{name}_{s}_prev") for s in state_names]
    x_t = e.names.new(f"{name}_x_t")
    m_t = e.names.new(f"{name}_mask_t") if mask is not None else None
    new_states = _STEPS[d.kind](body, d, units, x_t, *states, recurrent_bias=recurrent_bias)
    if m_t is not None:
        kept = [body.op("Where", [m_t, new, old]) for new, old in zip(new_states, states, strict=True)]
    else:
        kept = list(new_states)
    out = kept[0]
    if m_t is not None and d.zero_output_for_mask:
        out = body.op("Where", [m_t, kept[0], body.scalar(0.0)])
    state_outs = [body.op("Identity", [k]) for k in kept]
    step_out = body.op("Identity", [out])

    float_type = onnx.TensorProto.FLOAT
    body_inputs = [onnx.helper.make_tensor_value_info(s, float_type, ["batch", units]) for s in states]
    body_inputs.append(onnx.helper.make_tensor_value_info(x_t, float_type, ["batch", d.kernel.shape[1]]))
    if m_t is not None:
        body_inputs.append(onnx.helper.make_tensor_value_info(m_t, onnx.TensorProto.BOOL, ["batch", 1]))
    body_outputs = [onnx.helper.make_tensor_value_info(s, float_type, ["batch", units]) for s in state_outs]
    body_outputs.append(onnx.helper.make_tensor_value_info(step_out, float_type, ["batch", units]))
    graph = onnx.helper.make_graph(body.nodes, f"{name}_step", body_inputs, body_outputs, body.initializers)

    batch = g.op("Shape", [x], start=0, end=1)
    zeros = g.op(
        "ConstantOfShape",
        [g.op("Concat", [batch, g.ints([units])], axis=0)],
        value=onnx.helper.make_tensor("zero", float_type, [1], [0.0]),
    )
    scan_inputs = [projected]
    if mask is not None:
        scan_inputs.append(g.op("Unsqueeze", [mask, g.ints([-1])]))
    backwards = int(d.go_backwards)
    outputs = g.op(
        "Scan",
        [*([zeros] * len(states)), *scan_inputs],
        name=f"{name}_scan",
        outputs=len(states) + 1,
        body=graph,
        num_scan_inputs=len(scan_inputs),
        scan_input_axes=[1] * len(scan_inputs),
        scan_input_directions=[backwards] * len(scan_inputs),
        scan_output_axes=[1],
        scan_output_directions=[int(d.reverse_output)],
    )
    result = outputs[-1] if d.args["return_sequences"] else outputs[0]
    return g.op("Identity", [result], name=name)


def _split(g: _Graph, x: str, parts: int, units: int) -> list[str]:
    return g.op("Split", [x, g.ints([units] * parts)], outputs=parts, axis=1)


def _lstm_step(g: _Graph, d: _Direction, units: int, x: str, h: str, c: str, recurrent_bias: Any = None) -> list[str]:
    z = g.op("Add", [g.op("MatMul", [h, g.const(f"{d.prefix}recurrent_kernel", d.recurrent_kernel)]), x])
    i, f, candidate, o = _split(g, z, 4, units)  # Keras order i, f, c, o
    gate, act = d.args["recurrent_activation"], d.args["activation"]
    c_new = g.op(
        "Add",
        [
            g.op("Mul", [_activate(g, gate, f), c]),
            g.op("Mul", [_activate(g, gate, i), _activate(g, act, candidate)]),
        ],
    )
    h_new = g.op("Mul", [_activate(g, gate, o), _activate(g, act, c_new)])
    return [h_new, c_new]


def _gru_step(g: _Graph, d: _Direction, units: int, x: str, h: str, recurrent_bias: Any = None) -> list[str]:
    gate, act = d.args["recurrent_activation"], d.args["activation"]
    x_z, x_r, x_h = _split(g, x, 3, units)
    kernel = d.recurrent_kernel
    if d.args["reset_after"]:
        hidden = g.op("MatMul", [h, g.const(f"{d.prefix}recurrent_kernel", kernel)])
        if recurrent_bias is not None:
            hidden = g.op("Add", [hidden, g.const(f"{d.prefix}recurrent_bias", recurrent_bias.copy())])
        h_z, h_r, h_h = _split(g, hidden, 3, units)
    else:
        gates = g.op("MatMul", [h, g.const(f"{d.prefix}recurrent_kernel", kernel[:, : 2 * units].copy())])
        h_z, h_r = _split(g, gates, 2, units)
    z = _activate(g, gate, g.op("Add", [x_z, h_z]))
    r = _activate(g, gate, g.op("Add", [x_r, h_r]))
    if d.args["reset_after"]:
        reset = g.op("Mul", [r, h_h])
    else:
        candidate_kernel = g.const(f"{d.prefix}candidate_kernel", kernel[:, 2 * units :].copy())
        reset = g.op("MatMul", [g.op("Mul", [r, h]), candidate_kernel])
    candidate = _activate(g, act, g.op("Add", [x_h, reset]))
    # z * h + (1 - z) * candidate
    keep = g.op("Mul", [z, h])
    return [g.op("Add", [keep, g.op("Mul", [g.op("Sub", [g.scalar(1.0), z]), candidate])])]


def _simplernn_step(g: _Graph, d: _Direction, units: int, x: str, h: str, recurrent_bias: Any = None) -> list[str]:
    z = g.op("Add", [g.op("MatMul", [h, g.const(f"{d.prefix}recurrent_kernel", d.recurrent_kernel)]), x])
    return [_activate(g, d.args["activation"], z)]


_STEPS: dict[str, Callable[..., list[str]]] = {"lstm": _lstm_step, "gru": _gru_step, "simplernn": _simplernn_step}


# --- merges and the layers of real architectures -------------------------------------------


def _same_layout_inputs(e: _Emission, layer: ir.Layer) -> tuple[list[str], str]:
    """Every input of a merge in one layout: the first input's. Inputs of lower rank (a broadcasting
    merge) get size-1 axes after the batch axis, channels-last, as Keras's merge layers add them."""
    if layer.kind != "concat" and len({len(shape) for shape in layer.input_shapes}) > 1:
        rank = len(layer.output_shape) + 1
        inputs = []
        for name, shape in zip(e.sources(layer), layer.input_shapes, strict=True):
            x = e.value(name, LAST)
            missing = rank - 1 - len(shape)
            inputs.append(e.g.op("Unsqueeze", [x, e.g.ints(list(range(1, missing + 1)))]) if missing else x)
        return inputs, LAST
    _, layout = e.any_layout(layer)
    return [e.value(name, layout) for name in e.sources(layer)], layout


def _chain(op_type: str) -> Emitter:
    def emit(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
        inputs, layout = _same_layout_inputs(e, layer)
        total = inputs[0]
        for i, x in enumerate(inputs[1:], start=2):  # in input order, as Keras sums
            total = e.g.op(op_type, [total, x], name=layer.name if i == len(inputs) else None)
        return total, layout

    return emit


def _average(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    import numpy as np

    total, layout = _chain("Add")(layer, e)
    count = e.g.const("count", np.float32(len(e.sources(layer))))
    return e.g.op("Div", [total, count], name=f"{layer.name}_mean"), layout


def _rescaling(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    x, layout = e.any_layout(layer)
    y = e.g.op("Mul", [x, e.g.scalar(layer.args["scale"])], name=layer.name if not layer.args["offset"] else None)
    if layer.args["offset"]:
        y = e.g.op("Add", [y, e.g.scalar(layer.args["offset"])], name=layer.name)
    return y, layout


def _normalization(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    """Keras's Normalization: (x - mean) / max(sqrt(variance), 1e-7), per channel (channels-last)."""
    import numpy as np

    args, x = layer.args, e.x(layer)
    if args["mean"] is not None:
        mean, variance = np.float32(args["mean"]), np.float32(args["variance"])
    else:
        mean, variance = e.w(layer, "mean"), e.w(layer, "variance")
    std = np.maximum(np.sqrt(variance), np.float32(1e-7)).astype(np.float32)
    centered = e.g.op("Sub", [x, e.const(layer, "mean", np.asarray(mean, dtype=np.float32))])
    return e.g.op("Div", [centered, e.const(layer, "std", np.asarray(std))], name=layer.name), LAST


def _layerscale(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    return e.g.op("Mul", [e.x(layer), e.const(layer, "gamma", e.w(layer, "gamma"))], name=layer.name), LAST


def _posembed(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    return e.g.op("Add", [e.x(layer), e.const(layer, "embeddings", e.w(layer, "embeddings"))], name=layer.name), LAST


def _classtoken(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    """The (F,) token expanded to (N, 1, F) and put first; a mask gets an unmasked first step."""
    import numpy as np

    g, x = e.g, e.x(layer)
    batch = g.op("Shape", [x], start=0, end=1)
    token = e.const(layer, "token", e.w(layer, "token").reshape(1, 1, -1))
    tokens = g.op("Expand", [token, g.op("Concat", [batch, g.ints([1, 1])], axis=0)])
    mask = e.mask(layer)
    if mask is not None:
        unmasked = g.op("Expand", [g.const("true", np.ones((1, 1), dtype=bool)), g.op("Concat", [batch, g.ints([1])], axis=0)])
        e.masks[layer.name] = g.op("Concat", [unmasked, mask], name=f"{layer.name}_mask", axis=1)
    return g.op("Concat", [tokens, x], name=layer.name, axis=1), LAST


def _select(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    import numpy as np

    index = e.g.const(f"{layer.name}.index", np.asarray(layer.args["index"], dtype=np.int64))  # a scalar: the axis goes
    return e.g.op("Gather", [e.x(layer), index], name=layer.name, axis=1), LAST


def _crop(e: _Emission, layer: ir.Layer, axes: list[int], sides: list[tuple[int, int]], layout: str) -> tuple[str, str]:
    sizes = layer.input_shape[:-1]
    starts = [start for start, _ in sides]
    ends = [size - end for size, (_, end) in zip(sizes, sides, strict=True)]
    x = e.x(layer, layout)
    return e.g.op("Slice", [x, e.g.ints(starts), e.g.ints(ends), e.g.ints(axes)], name=layer.name), layout


def _cropping2d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    args = layer.args
    sides = [(args["top"], args["bottom"]), (args["left"], args["right"])]
    return _crop(e, layer, [2, 3], sides, FIRST)


def _cropping1d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    return _crop(e, layer, [1], [(layer.args["start"], layer.args["end"])], LAST)


def _upsample1d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    import numpy as np

    scales = e.g.const(f"{layer.name}.scales", np.array([1, layer.args["size"], 1], dtype=np.float32))
    options = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    return e.g.op("Resize", [e.x(layer), "", scales], name=layer.name, **options), LAST


def _attention(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    """Keras's MultiHeadAttention: a MatMul per projection, heads an axis of (N, H, T, D); keys at
    masked or (``causal``) later steps get -1e9 for a score, as in Keras's softmax."""
    import numpy as np

    g, args = e.g, layer.args
    heads = args["heads"]
    query_in = e.x(layer)
    memory_in = e.x(layer, index=1) if len(layer.inputs) > 1 else query_in
    scale = np.float32(1.0 / np.sqrt(args["key_dim"]))  # folded into the query projection

    def project(x: str, name: str, perm: list[int], factor: Any = 1.0) -> str:
        kernel = e.w(layer, f"{name}_kernel")
        y = g.op("MatMul", [x, e.const(layer, f"{name}_kernel", (kernel.reshape(len(kernel), -1) * factor))])
        if args["bias"]:
            y = g.op("Add", [y, e.const(layer, f"{name}_bias", e.w(layer, f"{name}_bias").reshape(-1) * factor)])
        return g.transpose(g.op("Reshape", [y, g.ints([0, 0, heads, -1])]), perm)

    query = project(query_in, "query", [0, 2, 1, 3], scale)  # (N, H, T, Dk)
    key = project(memory_in, "key", [0, 2, 3, 1])  # (N, H, Dk, S)
    value = project(memory_in, "value", [0, 2, 1, 3])  # (N, H, S, Dv)
    scores = g.op("MatMul", [query, key])  # (N, H, T, S)
    keep = None
    if args["causal"]:
        steps = layer.input_shape[0]
        keep = g.const(f"{layer.name}.causal", np.tri(steps, steps, dtype=bool))
    mask = e.mask(layer)
    if mask is not None:
        keys = g.op("Unsqueeze", [mask, g.ints([1, 2])])  # (N, 1, 1, S)
        keep = keys if keep is None else g.op("And", [keep, keys])
    if keep is not None:
        scores = g.op("Where", [keep, scores, g.scalar(-1e9)])
    heads_out = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), value])  # (N, H, T, Dv)
    merged = g.op("Reshape", [g.transpose(heads_out, [0, 2, 1, 3]), g.ints([0, 0, -1])])
    output_kernel = e.w(layer, "output_kernel")
    y = g.op("MatMul", [merged, e.const(layer, "output_kernel", output_kernel.reshape(-1, output_kernel.shape[-1]))])
    if args["bias"]:
        y = g.op("Add", [y, e.const(layer, "output_bias", e.w(layer, "output_bias"))])
    return _named(e, layer, y), LAST


def _channel_axis(rank: int, axis: int, layout: str) -> int:
    """A channels-last axis (with the batch axis) in ``layout``."""
    axis %= rank
    if layout == LAST or rank <= 2 or axis == 0:
        return axis
    return 1 if axis == rank - 1 else axis + 1


def _concat(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    inputs, layout = _same_layout_inputs(e, layer)
    rank = len(layer.output_shape) + 1
    axis = layer.args["axis"]
    axis = _channel_axis(rank, axis + 1 if axis >= 0 else axis, layout)
    return e.g.op("Concat", inputs, name=layer.name, axis=axis), layout


def _zeropad2d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    args = layer.args
    x = e.x(layer, FIRST)
    pads = [0, 0, args["top"], args["left"], 0, 0, args["bottom"], args["right"]]
    return e.g.op("Pad", [x, e.g.ints(pads)], name=layer.name), FIRST


def _upsample2d(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    import numpy as np

    size = layer.args["size"]
    scales = e.g.const(f"{layer.name}.scales", np.array([1, 1, *size], dtype=np.float32))
    if layer.args["interpolation"] == "bilinear":  # TensorFlow's bilinear resize, half-pixel centers
        options = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    else:  # repeats rows and columns
        options = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    return e.g.op("Resize", [e.x(layer, FIRST), "", scales], name=layer.name, **options), FIRST


def _reshape(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    shape = e.g.ints([0, *layer.args["target"]])  # 0: the batch axis as it comes
    return e.g.op("Reshape", [e.x(layer), shape], name=layer.name), LAST


def _permute(layer: ir.Layer, e: _Emission) -> tuple[str, str]:
    return e.g.transpose(e.x(layer), [0, *layer.args["dims"]], name=layer.name), LAST


EMITTERS: dict[str, Emitter] = {
    "dense": _dense,
    "conv2d": _conv2d,
    "maxpool": _pool("MaxPool", one_d=False),
    "avgpool": _pool("AveragePool", one_d=False),
    "batchnorm": _batchnorm,
    "flatten": _flatten,
    "dropout": _passthrough,
    "activation": _activation_layer,
    "embedding": _embedding,
    "masking": _masking,
    "simplernn": _recurrent,
    "lstm": _recurrent,
    "gru": _recurrent,
    "bidirectional": _bidirectional,
    "conv1d": _conv1d,
    "maxpool1d": _pool("MaxPool", one_d=True),
    "avgpool1d": _pool("AveragePool", one_d=True),
    "globalmaxpool1d": _global_pool("ReduceMax"),
    "globalavgpool1d": _globalavgpool1d,
    "globalmaxpool": _global_pool("ReduceMax"),
    "globalavgpool": _global_pool("ReduceMean"),
    "add": _chain("Add"),
    "multiply": _chain("Mul"),
    "average": _average,
    "concat": _concat,
    "zeropad2d": _zeropad2d,
    "depthwiseconv2d": _depthwiseconv2d,
    "separableconv2d": _separableconv2d,
    "conv2dtranspose": _conv2dtranspose,
    "upsample2d": _upsample2d,
    "layernorm": _layernorm,
    "reshape": _reshape,
    "permute": _permute,
    "subtract": _chain("Sub"),
    "maximum": _chain("Max"),
    "minimum": _chain("Min"),
    "rescaling": _rescaling,
    "normalization": _normalization,
    "layerscale": _layerscale,
    "cropping2d": _cropping2d,
    "cropping1d": _cropping1d,
    "upsample1d": _upsample1d,
    "posembed": _posembed,
    "classtoken": _classtoken,
    "select": _select,
    "attention": _attention,
}

#: IR kind -> why ONNX cannot express it. Every kind in the registry exports today.
UNSUPPORTED: dict[str, str] = {}


# --- the public entry points --------------------------------------------------------------


def initial_weights(model: ir.Model, seed: int | None = 0) -> dict[str, np.ndarray]:
    """Weights drawn from the DSL's initializers, exactly as the NumPy target draws them for ``seed``."""
    from .numpy_backend import NumpyBackend

    numpy_backend = NumpyBackend()
    return numpy_backend.get_weights(numpy_backend.build(model, seed=seed), model)


def to_onnx(
    model: ir.Model, weights: Mapping[str, Any] | None = None, opset: int = DEFAULT_OPSET, seed: int = 0
) -> onnx.ModelProto:
    """The model as an ``onnx.ModelProto``: input ``input`` (the layout the DSL declares, batch axis
    dynamic), output ``output`` (channels-last). ``weights`` are canonical (``{"<layer>.<param>":
    array}``, Keras layout, as ``save_weights`` writes); without them they are drawn from the DSL's
    initializers with ``seed``. Raises BackendError for a layer ONNX cannot express and WeightsError
    for weights that do not match the model."""
    onnx = _onnx()
    maximum = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= maximum:
        raise BackendError(f"opset {opset} is not supported", hint=f"choose an opset from {MIN_OPSET} to {maximum}")
    OnnxBackend().check_supported(model)
    arrays = validated_weights(model, weights) if weights is not None else initial_weights(model, seed)
    graph = _Emission(model, arrays, opset).emit()
    from .._version import __version__

    origin = PurePath(model.filename).name if model.filename != "<string>" else "text"
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="layerdsl",
        producer_version=__version__,
        doc_string=f"{model.name}: compiled by layerdsl {__version__} from {origin}",
        # The oldest IR version that carries this opset, so older runtimes load the file too.
        ir_version=onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)]),
    )
    return proto


class OnnxModel:
    """A live ONNX model: the IR and its weights, run by onnxruntime. ``model(x)`` takes and returns
    what the NumPy target's model does; ``proto()`` is the ``onnx.ModelProto`` it runs."""

    def __init__(self, model: ir.Model, weights: dict[str, np.ndarray], opset: int = DEFAULT_OPSET) -> None:
        self.model, self.opset = model, opset
        self._weights = weights
        self._session: Any = None

    @property
    def weights(self) -> dict[str, np.ndarray]:
        return dict(self._weights)

    @weights.setter
    def weights(self, arrays: dict[str, np.ndarray]) -> None:
        self._weights, self._session = dict(arrays), None

    def proto(self) -> onnx.ModelProto:
        return to_onnx(self.model, self._weights, self.opset)

    def session(self, **options: Any) -> Any:
        """An onnxruntime InferenceSession (CPU); ``options`` are SessionOptions attributes."""
        try:
            import onnxruntime
        except ImportError:
            raise missing_framework("onnx", "onnxruntime", "test") from None
        settings = onnxruntime.SessionOptions()
        for key, value in options.items():
            setattr(settings, key, value)
        return onnxruntime.InferenceSession(
            self.proto().SerializeToString(), settings, providers=["CPUExecutionProvider"]
        )

    def __call__(self, *arrays: Any) -> Any:
        """Run on one batch per input, in the inputs' order; a tuple when the model has several outputs."""
        import numpy as np

        if self._session is None:
            self._session = self.session()
        if len(arrays) != len(self.model.inputs):
            raise TypeError(f"{self.model.name} takes {len(self.model.inputs)} input(s), received {len(arrays)}")
        feed = {i.name: np.asarray(x, dtype=i.dtype) for i, x in zip(self.model.inputs, arrays, strict=True)}
        outputs = self._session.run(None, feed)
        return tuple(outputs) if len(outputs) > 1 else outputs[0]


class OnnxBackend(Backend):
    name = "onnx"
    extra = "onnx"
    binary = True
    emitters = EMITTERS
    unsupported = UNSUPPORTED

    def emit_source(self, model: ir.Model) -> str:
        raise BackendError(
            "ONNX is a binary format, not Python source",
            hint="use layerdsl.compile(model, 'onnx') for the bytes, or `layerdsl compile --target onnx -o MODEL.onnx`",
        )

    def emit_bytes(self, model: ir.Model, weights: Mapping[str, Any] | None = None, **options: Any) -> bytes:
        return to_onnx(model, weights, **options).SerializeToString()

    def import_framework(self) -> Any:
        return _onnx()

    def build(self, model: ir.Model, seed: int | None = None, opset: int = DEFAULT_OPSET) -> OnnxModel:
        """An ``OnnxModel``; weights drawn as the NumPy target's ``build_model(seed)`` draws them."""
        self.import_framework()
        self.check_supported(model)
        obj = OnnxModel(model, initial_weights(model, seed), opset)
        self.attach(obj, model)
        return obj

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, OnnxModel)

    def get_weights(self, obj: Any, model: ir.Model) -> dict[str, np.ndarray]:
        return {key: value.astype("float32", copy=True) for key, value in obj.weights.items()}

    def set_weights(self, obj: Any, model: ir.Model, weights: Mapping[str, np.ndarray]) -> None:
        obj.weights = dict(weights)

