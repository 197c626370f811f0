"""Layer specs: each layer's arguments, validation, output shape and weights.

A spec is pure Python with no framework: the checker uses it to validate a
statement and infer shapes; backends read the resulting IR. Adding a layer is
one spec here plus one entry in each backend's table (a test enforces it).

Shapes are channels-last and leave out the batch axis, as in Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .initializers import INITIALIZERS
from .values import Args, Shape, Weight

MAX_DIM = 2**31 - 1

ACTIVATIONS = (
    "linear",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "elu",
    "selu",
    "gelu",
    "softplus",
    "softsign",
    "leaky_relu",
    "silu",
    "relu6",
    "hard_sigmoid",
    "hard_swish",
    "mish",
    "hard_tanh",
    "log_softmax",
    "log_sigmoid",
    "celu",
    "tanh_shrink",
    "soft_shrink",
    "hard_shrink",
)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One argument of a layer, positional or ``key=value``.

    type: ``int``, ``float``, ``bool``, ``choice`` (a name from ``choices``),
    ``size2`` (an int ``n`` meaning ``n x n``, or ``HxW``), ``shape`` (an int or
    ``AxBxC``), ``padding`` (a name from ``choices``, or zero padding on both sides of
    each axis as for ``size2``, which may be 0).
    """

    name: str
    type: str
    default: Any = REQUIRED
    positional: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # exclusive upper bound
    low_exclusive: bool = False
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class ShapeError(Exception):
    """Raised by a spec when its input shape does not fit; the checker adds the position."""

    def __init__(self, message: str, hint: str | None = None, option: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.option = option  # the argument to point at, when one is to blame


def positive(name: str, **kw: Any) -> Param:
    return Param(name, "int", low=1, **kw)


def _size_text(size: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in size)


def shape_text(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class LayerSpec:
    """Base of every spec. Subclasses set the class attributes and override the methods."""

    kind: ClassVar[str]  # the IR kind, also the backends' table key
    keras_type: ClassVar[str]  # Keras class name: summaries and default layer names
    params: ClassVar[tuple[Param, ...]] = ()
    doc: ClassVar[str] = ""
    takes_input_size: ClassVar[bool] = False  # accepts `in=N` as the model's input size
    input_dtype: ClassVar[str] = "float"  # "float", or "int" for token ids
    #: May receive a Keras mask (Keras's ``supports_masking``); a mask reaching a
    #: layer without it is refused, since Keras would drop it with only a warning.
    supports_mask: ClassVar[bool] = False
    #: For wrappers (``bidirectional lstm 32``): the layer kinds they can wrap.
    wraps: ClassVar[tuple[str, ...]] = ()
    #: Merges (add, concat, ...) read several tensors: see ``merge_shape``.
    merge: ClassVar[bool] = False
    #: Reads an optional second tensor from a tap (``attention 8 64 @memory``: cross-attention's
    #: keys and values); ``validate`` and ``weights`` then receive its shape as ``memory=``.
    reads_memory: ClassVar[bool] = False
    #: The diagram category (colour) of the layer, one of ``CATEGORIES``. Every spec sets it.
    category: ClassVar[str]
    #: Reads the Keras mask to compute its output: a recurrent layer skips masked timesteps,
    #: ``globalavgpool1d`` averages the unmasked ones. Backends pass the mask to these layers
    #: only; ``supports_mask`` alone lets a mask pass by untouched.
    takes_mask: ClassVar[bool] = False
    #: On a feature vector (rank 1), output feature i depends on input feature i alone (dropout,
    #: an elementwise activation, batchnorm) or on every feature alike (softmax, layernorm's
    #: statistics). Permuting the input's features then permutes the output's the same way, once
    #: the rows of ``feature_weights`` are permuted too, so a flatten's feature order ((H, W, C) in
    #: Keras, (C, H, W) in torch) passes through the layer unchanged to the dense that absorbs it.
    #: False where the layer mixes features, refuses a vector, or reads several inputs; False is
    #: always safe (the flatten then keeps Keras's order).
    per_feature: ClassVar[bool] = False
    #: The weights whose first axis runs over the input's feature (last) axis: a permutation of
    #: the input features permutes their rows (a dense kernel, batchnorm's gamma, beta and moving
    #: statistics, a recurrent layer's input kernel).
    feature_weights: ClassVar[tuple[str, ...]] = ()

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def fixed_args(self) -> dict[str, Any]:
        """Arguments fixed by the registry name (``relu`` is ``activation relu``)."""
        return {}

    def complete(self, values: dict[str, Any]) -> None:
        """Fill defaults that depend on other arguments (a pool's stride is its window)."""

    def validate(self, args: Args, shape: Shape) -> None:
        """Cross-argument checks beyond each argument's own range."""

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        return shape

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        return ()

    def output_mask(self, args: Args, masked: bool) -> bool:
        """Whether the output carries a mask; layers that support masking pass it on."""
        return masked and self.supports_mask

    def merge_shape(self, args: Args, shapes: tuple[Shape, ...]) -> Shape:
        """For merges: the output shape from every input's shape."""
        raise NotImplementedError


#: Diagram categories, each drawn in its own colour (``LayerSpec.category``).
CATEGORIES = (
    "conv", "pool", "dense", "activation", "norm", "reshape", "embedding", "recurrent", "attention", "merge", "other"
)


def _require_rank(kind: str, shape: Shape, rank: int, what: str, hint: str | None = None) -> None:
    if len(shape) != rank:
        raise ShapeError(f"`{kind}` needs a {what} input, but receives shape {shape_text(shape)}", hint=hint)


def _flatten_hint(kind: str, shape: Shape) -> str:
    return (
        f"add `flatten` before `{kind}`: a dense layer after a convolution or pooling needs `flatten`; "
        f"for a dense layer on each pixel, use `conv2d N 1` ({shape[-1]} channels in, N out)"
    )


# --- core layers -----------------------------------------------------------------------


class Dense(LayerSpec):
    supports_mask = True
    kind = "dense"
    keras_type = "Dense"
    category = "dense"
    feature_weights = ("kernel",)
    doc = "Fully connected layer: `y = activation(x @ kernel + bias)` over the last axis."
    takes_input_size = True
    params = (
        positive("units", positional=True, doc="output size"),
        positive("in", default=None, doc="input size; sets the model input when this is the first layer"),
        Param("bias", "bool", default=True, doc="add a bias vector"),
        Param("init", "choice", default="glorot_uniform", choices=INITIALIZERS, doc="kernel initializer"),
        Param("bias_init", "choice", default="zeros", choices=INITIALIZERS, doc="bias initializer"),
        Param("maxnorm", "float", default=None, low=0, low_exclusive=True, doc="max-norm constraint on each unit's incoming weights"),
        Param("activation", "choice", default="linear", choices=ACTIVATIONS, doc="fused activation"),
    )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        # On a (timesteps, features) sequence it acts on the last axis, as Keras's Dense on 3-D input.
        if len(shape) not in (1, 2):
            raise ShapeError(
                f"`dense` needs a 1-D input (features) or a 2-D sequence (timesteps x features), but receives "
                f"shape {shape_text(shape)}",
                hint=_flatten_hint("dense", shape) if len(shape) == 3 else None,
            )
        return (*shape[:-1], args["units"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        kernel = Weight("kernel", (shape[-1], args["units"]), True, args["init"])
        if not args["bias"]:
            return (kernel,)
        return (kernel, Weight("bias", (args["units"],), True, args["bias_init"]))


def _conv_out(size: int, kernel: int, stride: int, dilation: int, pad: str | int) -> int:
    """Output length of one axis; ``pad`` is `valid`, `same`, or zeros added on both sides."""
    effective = (kernel - 1) * dilation + 1
    if pad == "same":
        return -(-size // stride)
    if isinstance(pad, int):
        size += 2 * pad
    return (size - effective) // stride + 1


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's `same` padding (before, after) for one spatial axis: the extra goes after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def spatial_padding(args: Args, shape: Shape, kernel: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding ((top, bottom), (left, right)) that a 2-D conv or pool applies."""
    if args["pad"] == "valid":
        return (0, 0), (0, 0)
    if isinstance(args["pad"], tuple):
        rows, columns = args["pad"]
        return (rows, rows), (columns, columns)
    dilation = args["dilation"] if "dilation" in args else (1, 1)
    return (
        tf_same_padding(shape[0], kernel[0], args["stride"][0], dilation[0]),
        tf_same_padding(shape[1], kernel[1], args["stride"][1], dilation[1]),
    )


def _conv2d_options(dilation: bool = True, maxnorm: bool = False, zeros: bool = True) -> tuple[Param, ...]:
    """The options 2-D convolutions share (conv2d, depthwise, separable, transposed)."""
    pad = (
        Param("pad", "padding", default="valid", choices=("valid", "same"), low=0,
              doc="padding: `valid`, `same` (as TensorFlow pads), or zeros on each side: P or HxW")
        if zeros
        else Param("pad", "choice", default="valid", choices=("valid", "same"), doc="padding; `same` pads as TensorFlow does")
    )
    options = [Param("stride", "size2", default=(1, 1), low=1, doc="stride: S or HxW"), pad]
    if dilation:
        options.append(Param("dilation", "size2", default=(1, 1), low=1, doc="dilation rate: D or HxW"))
    return (*options, *_weight_options(maxnorm, "each filter"))


def _weight_options(maxnorm: bool, unit: str) -> tuple[Param, ...]:
    """bias, initializers, max-norm and the fused activation."""
    options = [
        Param("bias", "bool", default=True, doc="add a bias vector"),
        Param("init", "choice", default="glorot_uniform", choices=INITIALIZERS, doc="kernel initializer"),
        Param("bias_init", "choice", default="zeros", choices=INITIALIZERS, doc="bias initializer"),
    ]
    if maxnorm:
        options.append(Param("maxnorm", "float", default=None, low=0, low_exclusive=True, doc=f"max-norm constraint on {unit}"))
    options.append(Param("activation", "choice", default="linear", choices=ACTIVATIONS, doc="fused activation"))
    return tuple(options)


class Conv2D(LayerSpec):
    kind = "conv2d"
    keras_type = "Conv2D"
    category = "conv"
    doc = "2-D convolution over (height, width, channels) input."
    params = (
        positive("filters", positional=True, doc="number of output channels"),
        Param("kernel", "size2", positional=True, low=1, doc="kernel size: K or HxW"),
        *_conv2d_options(maxnorm=True),
        positive("groups", default=1, doc="grouped convolution: input and output channels split into G groups"),
    )

    def validate(self, args: Args, shape: Shape) -> None:
        if max(args["stride"]) > 1 and max(args["dilation"]) > 1:
            raise ShapeError(
                "`conv2d` cannot combine stride > 1 with dilation > 1 (Keras and TensorFlow refuse it)",
                option="dilation",
            )
        _check_groups(self.kind, args, shape)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank("conv2d", shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        return (*_window_out("conv2d", "kernel", shape, args["kernel"], args["stride"], args["dilation"], args["pad"]), args["filters"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        kernel = Weight("kernel", (*args["kernel"], shape[-1] // args["groups"], args["filters"]), True, args["init"])
        if not args["bias"]:
            return (kernel,)
        return (kernel, Weight("bias", (args["filters"],), True, args["bias_init"]))


def _check_groups(kind: str, args: Args, shape: Shape) -> None:
    """Grouped convolution: both channel counts split evenly into the groups (Keras refuses otherwise)."""
    groups = args.get("groups", 1)  # depthwise and separable convolutions share conv2d's checks
    if groups == 1 or not shape:
        return
    for what, count in (("input channels", shape[-1]), ("filters", args["filters"])):
        if count % groups:
            raise ShapeError(
                f"`{kind}` groups={groups} must divide its {what} ({count})",
                hint="choose groups among the common divisors of the input channels and filters",
                option="groups",
            )


def _image_hint(shape: Shape) -> str | None:
    if len(shape) == 1:
        return "give the model an image input such as `input 28x28x1` (height x width x channels)"
    return None


def _window_out(
    kind: str,
    what: str,
    shape: Shape,
    window: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pad: str | tuple[int, int],
) -> tuple[int, int]:
    out = []
    for axis in range(2):
        effective = (window[axis] - 1) * dilation[axis] + 1
        zeros = pad[axis] if isinstance(pad, tuple) else 0
        if pad != "same" and effective > shape[axis] + 2 * zeros:
            extent = "x".join(str((w - 1) * d + 1) for w, d in zip(window, dilation, strict=True))
            raise ShapeError(
                f"`{kind}` {what} {extent} is larger than its {shape[0]}x{shape[1]} input",
                hint="use a smaller window, or pad=same",
                option=what,
            )
        out.append(_conv_out(shape[axis], window[axis], stride[axis], dilation[axis], zeros or pad))
    return out[0], out[1]


class _Pool2D(LayerSpec):
    category = "pool"
    params = (
        Param("pool", "size2", positional=True, low=1, doc="window: P or HxW"),
        Param("stride", "size2", default=None, low=1, doc="stride; defaults to the window"),
        Param("pad", "choice", default="valid", choices=("valid", "same"), doc="padding; `same` pads as TensorFlow does"),
    )

    def complete(self, values: dict[str, Any]) -> None:
        if values["stride"] is None:
            values["stride"] = values["pool"]

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        return (*_window_out(self.kind, "pool", shape, args["pool"], args["stride"], (1, 1), args["pad"]), shape[2])


class MaxPool2D(_Pool2D):
    kind = "maxpool"
    keras_type = "MaxPooling2D"
    doc = "2-D max pooling."


class AvgPool2D(_Pool2D):
    kind = "avgpool"
    keras_type = "AveragePooling2D"
    doc = "2-D average pooling; with pad=same the padding is left out of each average, as in TensorFlow."


class Flatten(LayerSpec):
    kind = "flatten"
    keras_type = "Flatten"
    category = "reshape"
    doc = "Flattens each example to a vector, in channels-last (Keras) order."

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        if len(shape) == 1:
            raise ShapeError(
                f"`flatten` has nothing to flatten: its input {shape_text(shape)} is already 1-D",
                hint="remove `flatten`; after a recurrent layer, `return_sequences=true` keeps every timestep",
            )
        return (math.prod(shape),)


class Dropout(LayerSpec):
    supports_mask = True
    kind = "dropout"
    keras_type = "Dropout"
    category = "norm"
    per_feature = True
    doc = "Zeroes a fraction `rate` of inputs while training; identity at inference."
    params = (Param("rate", "float", positional=True, low=0.0, high=1.0, doc="fraction to drop, 0 <= rate < 1"),)


class BatchNorm(LayerSpec):
    supports_mask = True
    kind = "batchnorm"
    keras_type = "BatchNormalization"
    category = "norm"
    per_feature = True
    feature_weights = ("gamma", "beta", "moving_mean", "moving_variance")
    doc = "Batch normalization over the last (channel) axis; moving statistics at inference."
    params = (
        Param("eps", "float", default=1e-3, low=0.0, low_exclusive=True, doc="added to the variance"),
        Param("momentum", "float", default=0.99, low=0.0, high=1.0, doc="moving average momentum (Keras convention)"),
        Param("center", "bool", default=True, doc="learn an offset (beta)"),
        Param("scale", "bool", default=True, doc="learn a scale (gamma)"),
    )

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        channels = (shape[-1],)
        out = []
        if args["scale"]:
            out.append(Weight("gamma", channels, True, "ones"))
        if args["center"]:
            out.append(Weight("beta", channels, True, "zeros"))
        out.append(Weight("moving_mean", channels, False, "zeros"))
        out.append(Weight("moving_variance", channels, False, "ones"))
        return tuple(out)


class Activation(LayerSpec):
    supports_mask = True
    kind = "activation"
    keras_type = "Activation"
    category = "activation"
    per_feature = True
    doc = "An activation function as a layer; softmax acts on the last (channel) axis."
    params = (
        Param("function", "choice", positional=True, choices=ACTIVATIONS, doc="activation name"),
        Param("approximate", "bool", default=False, doc="gelu only: Keras's tanh approximation, not the exact erf"),
    )

    def __init__(self, fixed: str | None = None) -> None:
        self.fixed = fixed
        if fixed is not None:  # `relu` takes no arguments; `activation relu` takes the name
            self.params = tuple(p for p in Activation.params if p.name == "approximate" and fixed == "gelu")

    def fixed_args(self) -> dict[str, Any]:
        return {"function": self.fixed} if self.fixed else {}

    def complete(self, values: dict[str, Any]) -> None:
        values.setdefault("approximate", False)

    def validate(self, args: Args, shape: Shape) -> None:
        if args["approximate"] and args["function"] != "gelu":
            raise ShapeError(
                f"`approximate=true` is an option of `gelu` only, not of `{args['function']}`", option="approximate"
            )


def activation_function(args: Args) -> str:
    """The function an `activation` layer computes, as the backends' activation tables name it: its
    name, or ``gelu_approximate`` for `gelu approximate=true` (keras-nlp's name for that function)."""
    return "gelu_approximate" if args.get("approximate") else str(args["function"])


# --- sequences ---------------------------------------------------------------------------


def _sequence_hint(kind: str, shape: Shape) -> str | None:
    if len(shape) == 1:
        return f"`{kind}` reads (timesteps x features): use `input TxF`, or an `embedding` for token ids"
    if len(shape) == 3:
        return f"`{kind}` reads sequences, not images: use the 2-D layers, or `reshape` first"
    return None


class Embedding(LayerSpec):
    kind = "embedding"
    keras_type = "Embedding"
    category = "embedding"
    doc = "Maps integer token ids to dense vectors; `mask_zero=true` masks id 0 (padding) downstream."
    input_dtype = "int"
    params = (
        positive("vocab", positional=True, doc="vocabulary size: ids run from 0 to VOCAB-1"),
        positive("dim", positional=True, doc="embedding size"),
        Param("mask_zero", "bool", default=False, doc="treat id 0 as padding and mask it"),
        Param("init", "choice", default="uniform", choices=INITIALIZERS, doc="embeddings initializer"),
    )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        return (*shape, args["dim"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        return (Weight("embeddings", (args["vocab"], args["dim"]), True, args["init"]),)

    def output_mask(self, args: Args, masked: bool) -> bool:
        return bool(args["mask_zero"])


class Masking(LayerSpec):
    kind = "masking"
    keras_type = "Masking"
    category = "norm"
    doc = "Masks timesteps whose features all equal VALUE, and zeroes them."
    supports_mask = True
    params = (Param("value", "float", positional=True, default=0.0, doc="the padding value"),)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank("masking", shape, 2, "2-D (timesteps x features)", hint=_sequence_hint("masking", shape))
        return shape

    def output_mask(self, args: Args, masked: bool) -> bool:
        return True


def _recurrent_params(activations: bool) -> tuple[Param, ...]:
    params = [
        positive("units", positional=True, doc="size of the hidden state"),
        Param("return_sequences", "bool", default=False, doc="return every timestep, not only the last"),
        Param("go_backwards", "bool", default=False, doc="read the sequence backwards (output not reversed back)"),
        Param("activation", "choice", default="tanh", choices=ACTIVATIONS, doc="candidate/output activation"),
    ]
    if activations:
        params.append(
            Param("recurrent_activation", "choice", default="sigmoid", choices=ACTIVATIONS, doc="gate activation")
        )
    params += [
        Param("bias", "bool", default=True, doc="add bias vectors"),
        Param("init", "choice", default="glorot_uniform", choices=INITIALIZERS, doc="input kernel initializer"),
        Param("recurrent_init", "choice", default="orthogonal", choices=INITIALIZERS, doc="recurrent kernel initializer"),
        Param("bias_init", "choice", default="zeros", choices=INITIALIZERS, doc="bias initializer"),
    ]
    return tuple(params)


class _Recurrent(LayerSpec):
    category = "recurrent"
    takes_mask = True
    feature_weights = ("kernel",)
    supports_mask = True
    gates: ClassVar[int] = 1

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 2, "2-D (timesteps x features)", hint=_sequence_hint(self.kind, shape))
        return (shape[0], args["units"]) if args["return_sequences"] else (args["units"],)

    def output_mask(self, args: Args, masked: bool) -> bool:
        return masked and bool(args["return_sequences"])

    def bias_initializer(self, args: Args) -> str:
        return str(args["bias_init"])

    def bias_shape(self, args: Args) -> Shape:
        return (self.gates * args["units"],)

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        width = self.gates * args["units"]
        out = (
            Weight("kernel", (shape[-1], width), True, args["init"]),
            Weight("recurrent_kernel", (args["units"], width), True, args["recurrent_init"]),
        )
        if args["bias"]:
            out += (Weight("bias", self.bias_shape(args), True, self.bias_initializer(args)),)
        return out


class SimpleRNN(_Recurrent):
    kind = "simplernn"
    keras_type = "SimpleRNN"
    doc = "Fully connected recurrent layer: `h = activation(x @ kernel + h @ recurrent_kernel + bias)`."
    params = _recurrent_params(activations=False)


class LSTM(_Recurrent):
    kind = "lstm"
    keras_type = "LSTM"
    doc = "Long short-term memory; Keras gate order i, f, c, o; keeps its state through masked timesteps."
    gates = 4
    params = (
        *_recurrent_params(activations=True),
        Param("unit_forget_bias", "bool", default=True, doc="start the forget-gate bias at 1"),
    )

    def bias_initializer(self, args: Args) -> str:
        if args["unit_forget_bias"]:
            return f"unit_forget_bias:{args['bias_init']}"
        return str(args["bias_init"])


class GRU(_Recurrent):
    kind = "gru"
    keras_type = "GRU"
    doc = "Gated recurrent unit (Keras 3: gate order z, r, h; reset_after=true by default)."
    gates = 3
    params = (
        *_recurrent_params(activations=True),
        Param("reset_after", "bool", default=True, doc="apply the reset gate after the recurrent matmul (cuDNN style)"),
    )

    def bias_shape(self, args: Args) -> Shape:
        units = 3 * args["units"]
        return (2, units) if args["reset_after"] else (units,)


MERGE_MODES = ("concat", "sum", "mul", "ave")


class Bidirectional(LayerSpec):
    kind = "bidirectional"
    keras_type = "Bidirectional"
    category = "recurrent"
    takes_mask = True
    feature_weights = ("forward_kernel", "backward_kernel")
    doc = "Runs a recurrent layer forwards and backwards and merges the two outputs."
    supports_mask = True
    wraps = ("lstm", "gru", "simplernn")
    params = (Param("merge", "choice", default="concat", choices=MERGE_MODES, doc="how to merge the two directions"),)

    @staticmethod
    def inner(args: Args) -> LayerSpec:
        return REGISTRY[args["layer"]]

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        out = self.inner(args).output_shape(args["inner"], shape)
        if args["merge"] == "concat":
            return (*out[:-1], 2 * out[-1])
        return out

    def output_mask(self, args: Args, masked: bool) -> bool:
        return self.inner(args).output_mask(args["inner"], masked)

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        inner = self.inner(args).weights(args["inner"], shape)
        return tuple(
            Weight(f"{direction}_{w.name}", w.shape, w.trainable, w.initializer)
            for direction in ("forward", "backward")
            for w in inner
        )


def _window_out_1d(kind: str, what: str, length: int, window: int, stride: int, dilation: int, pad: str) -> int:
    effective = (window - 1) * dilation + 1
    if pad == "valid":
        if effective > length:
            raise ShapeError(
                f"`{kind}` {what} {effective} is longer than its {length} timesteps",
                hint="use a smaller window, or pad=same",
                option=what,
            )
        return (length - effective) // stride + 1
    if pad == "causal":
        return (length - 1) // stride + 1
    return -(-length // stride)


def padding_1d(args: Args, length: int, window: int) -> tuple[int, int]:
    """Padding (before, after) a 1-D conv or pool applies along time."""
    dilation = args["dilation"] if "dilation" in args else 1
    if args["pad"] == "causal":
        return (window - 1) * dilation, 0
    if args["pad"] == "same":
        return tf_same_padding(length, window, args["stride"], dilation)
    return 0, 0


class Conv1D(LayerSpec):
    kind = "conv1d"
    keras_type = "Conv1D"
    category = "conv"
    doc = "1-D convolution over (timesteps, channels) input; `pad=causal` looks only backwards."
    params = (
        positive("filters", positional=True, doc="number of output channels"),
        positive("kernel", positional=True, doc="kernel length"),
        positive("stride", default=1, doc="stride"),
        Param("pad", "choice", default="valid", choices=("valid", "same", "causal"), doc="padding"),
        positive("dilation", default=1, doc="dilation rate"),
        Param("bias", "bool", default=True, doc="add a bias vector"),
        Param("init", "choice", default="glorot_uniform", choices=INITIALIZERS, doc="kernel initializer"),
        Param("bias_init", "choice", default="zeros", choices=INITIALIZERS, doc="bias initializer"),
        Param("maxnorm", "float", default=None, low=0, low_exclusive=True, doc="max-norm constraint on each filter"),
        Param("activation", "choice", default="linear", choices=ACTIVATIONS, doc="fused activation"),
        positive("groups", default=1, doc="grouped convolution: input and output channels split into G groups"),
    )

    def validate(self, args: Args, shape: Shape) -> None:
        if args["stride"] > 1 and args["dilation"] > 1:
            raise ShapeError(
                "`conv1d` cannot combine stride > 1 with dilation > 1 (Keras and TensorFlow refuse it)",
                option="dilation",
            )
        _check_groups(self.kind, args, shape)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank("conv1d", shape, 2, "2-D (timesteps x channels)", hint=_sequence_hint("conv1d", shape))
        steps = _window_out_1d("conv1d", "kernel", shape[0], args["kernel"], args["stride"], args["dilation"], args["pad"])
        return (steps, args["filters"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        kernel = Weight("kernel", (args["kernel"], shape[-1] // args["groups"], args["filters"]), True, args["init"])
        if not args["bias"]:
            return (kernel,)
        return (kernel, Weight("bias", (args["filters"],), True, args["bias_init"]))


class _Pool1D(LayerSpec):
    category = "pool"
    params = (
        positive("pool", positional=True, doc="window length"),
        positive("stride", default=None, doc="stride; defaults to the window"),
        Param("pad", "choice", default="valid", choices=("valid", "same"), doc="padding; `same` pads as TensorFlow does"),
    )

    def complete(self, values: dict[str, Any]) -> None:
        if values["stride"] is None:
            values["stride"] = values["pool"]

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 2, "2-D (timesteps x channels)", hint=_sequence_hint(self.kind, shape))
        return (_window_out_1d(self.kind, "pool", shape[0], args["pool"], args["stride"], 1, args["pad"]), shape[1])


class MaxPool1D(_Pool1D):
    kind = "maxpool1d"
    keras_type = "MaxPooling1D"
    doc = "1-D max pooling over time."


class AvgPool1D(_Pool1D):
    kind = "avgpool1d"
    keras_type = "AveragePooling1D"
    doc = "1-D average pooling over time; `same` padding is left out of each average."


class _GlobalPool(LayerSpec):
    category = "pool"
    rank: ClassVar[int]
    params = (Param("keepdims", "bool", default=False, doc="keep the pooled axes with size 1: (1, 1, C) for images"),)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        what = "2-D (timesteps x channels)" if self.rank == 2 else "3-D (height x width x channels)"
        _require_rank(self.kind, shape, self.rank, what)
        return (*(1,) * (self.rank - 1), shape[-1]) if args["keepdims"] else (shape[-1],)

    def output_mask(self, args: Args, masked: bool) -> bool:
        return False


class GlobalMaxPool1D(_GlobalPool):
    kind = "globalmaxpool1d"
    keras_type = "GlobalMaxPooling1D"
    doc = "Maximum over time, per channel."
    rank = 2


class GlobalAvgPool1D(_GlobalPool):
    kind = "globalavgpool1d"
    keras_type = "GlobalAveragePooling1D"
    takes_mask = True
    doc = "Mean over time, per channel; with a mask, the mean of the unmasked timesteps (as Keras)."
    rank = 2
    supports_mask = True


class GlobalMaxPool2D(_GlobalPool):
    kind = "globalmaxpool"
    keras_type = "GlobalMaxPooling2D"
    doc = "Maximum over height and width, per channel."
    rank = 3


class GlobalAvgPool2D(_GlobalPool):
    kind = "globalavgpool"
    keras_type = "GlobalAveragePooling2D"
    doc = "Mean over height and width, per channel."
    rank = 3


# --- merges and the layers of real architectures ------------------------------------------


class _ElementwiseMerge(LayerSpec):
    category = "merge"
    merge = True
    supports_mask = True  # the checker lets a mask through only where every masked input shares it
    params = ()

    def merge_shape(self, args: Args, shapes: tuple[Shape, ...]) -> Shape:
        if len(shapes) < 2:
            raise ShapeError(f"`{self.kind}` needs at least two inputs, received {len(shapes)}")
        out = broadcast_shape(shapes)
        if out is None:
            listed = ", ".join(f"branch {i + 1} {shape_text(s)}" for i, s in enumerate(shapes))
            if self.kind == "add":
                hint = (
                    f"{_difference(shapes)}; project the branch that differs, e.g. `residual project=true {{ ... }}`, "
                    "or a shortcut body `residual { ... } { conv2d C 1 stride=S | batchnorm }`"
                )
            else:
                hint = f"{_difference(shapes)}; `{self.kind}` works elementwise: end each branch with the same shape"
            raise ShapeError(f"`{self.kind}` needs inputs of one shape, but receives {listed}", hint=hint)
        return out


def broadcast_shape(shapes: tuple[Shape, ...]) -> Shape | None:
    """NumPy's broadcast of shapes without the batch axis, aligned from the right, as Keras's merge
    layers do: (C,) and (1, 1, C) both scale an (H, W, C) map per channel. None when they do not fit."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(-rank, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _difference(shapes: tuple[Shape, ...], skip: int | None = None) -> str:
    """Which axes differ between merged shapes: ``width (axis 1): branch 1 has 8, branch 2 has 6 (2 fewer)``."""
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        return "the branches have different ranks"
    names = {3: ("height", "width", "channels"), 2: ("timesteps", "features"), 1: ("features",)}.get(rank)
    parts = []
    for axis in range(rank):
        if axis == skip or len({s[axis] for s in shapes}) == 1:
            continue
        first = shapes[0][axis]
        where = f"{names[axis]} (axis {axis})" if names else f"axis {axis}"
        sizes = [f"branch 1 has {first}"]
        for i, s in enumerate(shapes[1:], start=2):
            if s[axis] != first:
                change = f"{abs(s[axis] - first)} {'fewer' if s[axis] < first else 'more'}"
                sizes.append(f"branch {i} has {s[axis]} ({change})")
        parts.append(f"{where}: {', '.join(sizes)}")
    return "; ".join(parts)


class Add(_ElementwiseMerge):
    kind = "add"
    keras_type = "Add"
    doc = "Sums its inputs (a residual connection, or branches in braces)."


class Multiply(_ElementwiseMerge):
    kind = "multiply"
    keras_type = "Multiply"
    doc = "Multiplies its inputs elementwise."


class Average(_ElementwiseMerge):
    kind = "average"
    keras_type = "Average"
    doc = "Averages its inputs elementwise."


class Subtract(_ElementwiseMerge):
    kind = "subtract"
    keras_type = "Subtract"
    doc = "The first input minus the second, elementwise (exactly two inputs, as Keras)."

    def merge_shape(self, args: Args, shapes: tuple[Shape, ...]) -> Shape:
        if len(shapes) != 2:
            raise ShapeError(f"`subtract` needs exactly two inputs, received {len(shapes)}")
        return super().merge_shape(args, shapes)


class Maximum(_ElementwiseMerge):
    kind = "maximum"
    keras_type = "Maximum"
    doc = "The elementwise maximum of its inputs."


class Minimum(_ElementwiseMerge):
    kind = "minimum"
    keras_type = "Minimum"
    doc = "The elementwise minimum of its inputs."


class Concat(LayerSpec):
    kind = "concat"
    keras_type = "Concatenate"
    category = "merge"
    doc = "Concatenates its inputs along an axis (the channel axis by default)."
    merge = True
    params = (Param("axis", "int", default=-1, doc="axis to join along, counted without the batch axis (-1: channels)"),)

    def merge_shape(self, args: Args, shapes: tuple[Shape, ...]) -> Shape:
        if len(shapes) < 2:
            raise ShapeError(f"`concat` needs at least two inputs, received {len(shapes)}")
        rank = len(shapes[0])
        axis = args["axis"]
        if not -rank <= axis < rank:
            raise ShapeError(f"`concat` axis {axis} is out of range for rank-{rank} inputs", option="axis")
        axis %= rank
        others = [tuple(d for i, d in enumerate(s) if i != axis) for s in shapes]
        if any(len(s) != rank for s in shapes) or len(set(others)) > 1:
            listed = ", ".join(f"branch {i + 1} {shape_text(s)}" for i, s in enumerate(shapes))
            if any(len(s) != rank for s in shapes):
                hint = "the branches have different ranks: flatten or reshape one of them"
            else:
                hint = (
                    f"{_difference(shapes, skip=axis)}; `concat` joins along axis {args['axis']} only: resize the "
                    "branch that differs (pad=same or pad=P on its convolutions, pooling, upsample2d)"
                )
            raise ShapeError(
                f"`concat` needs inputs that agree except on axis {args['axis']}, but receives {listed}", hint=hint
            )
        return tuple(sum(s[axis] for s in shapes) if i == axis else d for i, d in enumerate(shapes[0]))


class ZeroPad2D(LayerSpec):
    kind = "zeropad2d"
    keras_type = "ZeroPadding2D"
    category = "reshape"
    doc = "Pads images with zeros: `zeropad2d 3`, `zeropad2d 1x2` (height x width), or per side."
    params = (
        Param("pad", "size2", positional=True, default=None, low=0, doc="symmetric padding: P or HxW"),
        Param("top", "int", default=None, low=0, doc="rows added on top"),
        Param("bottom", "int", default=None, low=0, doc="rows added at the bottom"),
        Param("left", "int", default=None, low=0, doc="columns added on the left"),
        Param("right", "int", default=None, low=0, doc="columns added on the right"),
    )

    def complete(self, values: dict[str, Any]) -> None:
        sides = ("top", "bottom", "left", "right")
        pad = values["pad"]
        if pad is None:  # Keras's default is one on every side, unless sides are given
            pad = (0, 0) if any(values[k] is not None for k in sides) else (1, 1)
        for key, default in (("top", pad[0]), ("bottom", pad[0]), ("left", pad[1]), ("right", pad[1])):
            if values[key] is None:
                values[key] = default
        values["pad"] = pad

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank("zeropad2d", shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        return (shape[0] + args["top"] + args["bottom"], shape[1] + args["left"] + args["right"], shape[2])


class DepthwiseConv2D(LayerSpec):
    kind = "depthwiseconv2d"
    keras_type = "DepthwiseConv2D"
    category = "conv"
    doc = "Depthwise 2-D convolution: each input channel convolved on its own (times `multiplier`)."
    params = (
        Param("kernel", "size2", positional=True, low=1, doc="kernel size: K or HxW"),
        positive("multiplier", default=1, doc="output channels per input channel"),
        *_conv2d_options(),
    )

    def validate(self, args: Args, shape: Shape) -> None:
        Conv2D.validate(self, args, shape)  # type: ignore[arg-type]
        if args["stride"][0] != args["stride"][1]:
            raise ShapeError(
                f"`{self.kind}` needs equal strides along height and width (TensorFlow's depthwise "
                "convolution refuses others)",
                option="stride",
            )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        out = _window_out(self.kind, "kernel", shape, args["kernel"], args["stride"], args["dilation"], args["pad"])
        return (*out, shape[2] * args["multiplier"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        kernel = Weight("kernel", (*args["kernel"], shape[2], args["multiplier"]), True, args["init"])
        if not args["bias"]:
            return (kernel,)
        return (kernel, Weight("bias", (shape[2] * args["multiplier"],), True, args["bias_init"]))


class SeparableConv2D(LayerSpec):
    kind = "separableconv2d"
    keras_type = "SeparableConv2D"
    category = "conv"
    doc = "Depthwise convolution followed by a 1x1 pointwise convolution."
    params = (
        positive("filters", positional=True, doc="number of output channels"),
        Param("kernel", "size2", positional=True, low=1, doc="kernel size: K or HxW"),
        positive("multiplier", default=1, doc="depthwise channels per input channel"),
        *_conv2d_options(),
    )

    def validate(self, args: Args, shape: Shape) -> None:
        Conv2D.validate(self, args, shape)  # type: ignore[arg-type]
        if args["stride"][0] != args["stride"][1]:
            raise ShapeError(
                f"`{self.kind}` needs equal strides along height and width (TensorFlow's depthwise "
                "convolution refuses others)",
                option="stride",
            )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        out = _window_out(self.kind, "kernel", shape, args["kernel"], args["stride"], args["dilation"], args["pad"])
        return (*out, args["filters"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        depth = shape[2] * args["multiplier"]
        out = (
            Weight("depthwise_kernel", (*args["kernel"], shape[2], args["multiplier"]), True, args["init"]),
            Weight("pointwise_kernel", (1, 1, depth, args["filters"]), True, args["init"]),
        )
        if args["bias"]:
            out += (Weight("bias", (args["filters"],), True, args["bias_init"]),)
        return out


class Conv2DTranspose(LayerSpec):
    kind = "conv2dtranspose"
    keras_type = "Conv2DTranspose"
    category = "conv"
    doc = "Transposed 2-D convolution (learned upsampling), as Keras computes its output size."
    params = (
        positive("filters", positional=True, doc="number of output channels"),
        Param("kernel", "size2", positional=True, low=1, doc="kernel size: K or HxW"),
        *_conv2d_options(dilation=False, zeros=False),
    )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        out = []
        for axis in range(2):
            k, s = args["kernel"][axis], args["stride"][axis]
            out.append(shape[axis] * s if args["pad"] == "same" else shape[axis] * s + max(k - s, 0))
        return (out[0], out[1], args["filters"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        kernel = Weight("kernel", (*args["kernel"], args["filters"], shape[2]), True, args["init"])
        if not args["bias"]:
            return (kernel,)
        return (kernel, Weight("bias", (args["filters"],), True, args["bias_init"]))


class UpSample2D(LayerSpec):
    kind = "upsample2d"
    keras_type = "UpSampling2D"
    category = "reshape"
    doc = "Repeats rows and columns (nearest) or interpolates (bilinear) by an integer factor."
    params = (
        Param("size", "size2", positional=True, default=(2, 2), low=1, doc="factor: N or HxW"),
        Param("interpolation", "choice", default="nearest", choices=("nearest", "bilinear"), doc="how to fill"),
    )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        return (shape[0] * args["size"][0], shape[1] * args["size"][1], shape[2])


class LayerNorm(LayerSpec):
    kind = "layernorm"
    keras_type = "LayerNormalization"
    category = "norm"
    per_feature = True
    feature_weights = ("gamma", "beta")
    doc = "Layer normalization over the last axis (Keras's default epsilon 1e-3)."
    supports_mask = True
    params = (
        Param("eps", "float", default=1e-3, low=0.0, low_exclusive=True, doc="added to the variance"),
        Param("center", "bool", default=True, doc="learn an offset (beta)"),
        Param("scale", "bool", default=True, doc="learn a scale (gamma)"),
    )

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        out = []
        if args["scale"]:
            out.append(Weight("gamma", (shape[-1],), True, "ones"))
        if args["center"]:
            out.append(Weight("beta", (shape[-1],), True, "zeros"))
        return tuple(out)


class Reshape(LayerSpec):
    kind = "reshape"
    keras_type = "Reshape"
    category = "reshape"
    doc = "Reshapes each example (channels-last order, as Keras): `reshape 7x7x64`, `reshape 3136`."
    params = (Param("target", "shape", positional=True, low=1, doc="the new shape without the batch axis"),)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        target = args["target"]
        if math.prod(target) != math.prod(shape):
            raise ShapeError(
                f"`reshape` to {shape_text(target)} ({math.prod(target):,} values) cannot hold its input "
                f"{shape_text(shape)} ({math.prod(shape):,} values)",
                option="target",
            )
        return target


class Permute(LayerSpec):
    kind = "permute"
    keras_type = "Permute"
    category = "reshape"
    doc = "Permutes the axes of each example, numbered from 1 as in Keras: `permute 2x1`."
    params = (Param("dims", "shape", positional=True, low=1, doc="the new order of axes 1..rank"),)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        dims = args["dims"]
        if sorted(dims) != list(range(1, len(shape) + 1)):
            raise ShapeError(
                f"`permute` {'x'.join(map(str, dims))} is not an order of the axes 1..{len(shape)} "
                f"of its input {shape_text(shape)}",
                option="dims",
            )
        return tuple(shape[d - 1] for d in dims)


# --- preprocessing and per-channel layers --------------------------------------------------


class Rescaling(LayerSpec):
    kind = "rescaling"
    keras_type = "Rescaling"
    doc = "Multiplies by `scale` and adds `offset`: `rescaling 0.00392156862745098` maps 0..255 to 0..1."
    supports_mask = True
    category = "norm"
    per_feature = True
    params = (
        Param("scale", "float", positional=True, doc="the factor"),
        Param("offset", "float", default=0.0, doc="added after scaling"),
    )


class Normalization(LayerSpec):
    kind = "normalization"
    keras_type = "Normalization"
    supports_mask = True
    category = "norm"
    per_feature = True
    feature_weights = ("mean", "variance")
    doc = (
        "Keras's `Normalization`: (x - mean) / sqrt(variance) per channel. With `mean=` and `variance=` the "
        "values are constants (no weights); without them mean, variance and count are non-trainable weights."
    )
    params = (
        Param("mean", "float", default=None, doc="the mean subtracted from every channel (a constant)"),
        Param("variance", "float", default=None, low=0.0, doc="the variance every channel is divided by the root of"),
    )

    def validate(self, args: Args, shape: Shape) -> None:
        if (args["mean"] is None) != (args["variance"] is None):
            given = "mean" if args["mean"] is not None else "variance"
            raise ShapeError(
                "`normalization` takes both mean= and variance=, or neither (then they are weights)", option=given
            )

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        if args["mean"] is not None:
            return ()
        channels = (shape[-1],)
        return (
            Weight("mean", channels, False, "zeros"),
            Weight("variance", channels, False, "ones"),
            Weight("count", (), False, "zeros"),
        )


class LayerScale(LayerSpec):
    kind = "layerscale"
    keras_type = "LayerScale"
    doc = "A learned scale per channel (ConvNeXt's layer scale), starting at `init`."
    category = "norm"
    per_feature = True
    feature_weights = ("gamma",)
    params = (Param("init", "float", positional=True, default=1e-6, doc="the scale's starting value"),)

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        return (Weight("gamma", (shape[-1],), True, f"constant:{args['init']!r}"),)


class Cropping2D(LayerSpec):
    kind = "cropping2d"
    keras_type = "Cropping2D"
    category = "reshape"
    doc = "Crops rows and columns off images: `cropping2d 1`, `cropping2d 1x2` (height x width), or per side."
    params = (
        Param("crop", "size2", positional=True, default=(0, 0), low=0, doc="symmetric cropping: C or HxW"),
        Param("top", "int", default=None, low=0, doc="rows cropped at the top"),
        Param("bottom", "int", default=None, low=0, doc="rows cropped at the bottom"),
        Param("left", "int", default=None, low=0, doc="columns cropped on the left"),
        Param("right", "int", default=None, low=0, doc="columns cropped on the right"),
    )

    def complete(self, values: dict[str, Any]) -> None:
        crop = values["crop"]
        for key, default in (("top", crop[0]), ("bottom", crop[0]), ("left", crop[1]), ("right", crop[1])):
            if values[key] is None:
                values[key] = default

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        height = shape[0] - args["top"] - args["bottom"]
        width = shape[1] - args["left"] - args["right"]
        if height < 1 or width < 1:
            raise ShapeError(f"`cropping2d` crops all of its {shape[0]}x{shape[1]} input", option="crop")
        return (height, width, shape[2])


class Cropping1D(LayerSpec):
    kind = "cropping1d"
    keras_type = "Cropping1D"
    category = "reshape"
    doc = "Crops timesteps off sequences: `cropping1d 2` from both ends, or start= and end=."
    params = (
        Param("crop", "int", positional=True, default=1, low=0, doc="steps cropped at each end"),
        Param("start", "int", default=None, low=0, doc="steps cropped at the start"),
        Param("end", "int", default=None, low=0, doc="steps cropped at the end"),
    )

    def complete(self, values: dict[str, Any]) -> None:
        for key in ("start", "end"):
            if values[key] is None:
                values[key] = values["crop"]

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 2, "2-D (timesteps x channels)", hint=_sequence_hint(self.kind, shape))
        steps = shape[0] - args["start"] - args["end"]
        if steps < 1:
            raise ShapeError(f"`cropping1d` crops all of its {shape[0]} timesteps", option="crop")
        return (steps, shape[1])


class UpSample1D(LayerSpec):
    kind = "upsample1d"
    keras_type = "UpSampling1D"
    category = "reshape"
    doc = "Repeats each timestep `size` times."
    params = (Param("size", "int", positional=True, default=2, low=1, doc="the factor"),)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank(self.kind, shape, 2, "2-D (timesteps x channels)", hint=_sequence_hint(self.kind, shape))
        return (shape[0] * args["size"], shape[1])


# --- sequence layers transformers need ------------------------------------------------------


def _sequence_only(kind: str, shape: Shape) -> None:
    _require_rank(kind, shape, 2, "2-D (timesteps x features)", hint=_sequence_hint(kind, shape))


class PositionEmbedding(LayerSpec):
    kind = "posembed"
    keras_type = "PositionEmbedding"
    category = "embedding"
    doc = (
        "A learned position embedding added to a (timesteps, features) sequence: `x + embeddings`, one row "
        "per position (keras-io's position Embedding, ViT's pos_embedding)."
    )
    supports_mask = True
    params = (Param("init", "choice", default="uniform", choices=INITIALIZERS, doc="embeddings initializer"),)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _sequence_only(self.kind, shape)
        return shape

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        return (Weight("embeddings", shape, True, args["init"]),)


class ClassToken(LayerSpec):
    kind = "classtoken"
    keras_type = "ClassToken"
    category = "embedding"
    doc = (
        "Prepends one learned vector to a sequence (ViT's class token): (T, F) -> (T + 1, F); with a mask, "
        "the new first position is unmasked."
    )
    supports_mask = True
    params = (
        Param(
            "init", "choice", default="zeros", choices=tuple(i for i in INITIALIZERS if i != "orthogonal"),
            doc="token initializer",
        ),
    )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _sequence_only(self.kind, shape)
        return (shape[0] + 1, shape[1])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        return (Weight("token", (shape[-1],), True, args["init"]),)


class Select(LayerSpec):
    kind = "select"
    keras_type = "Select"
    category = "reshape"
    doc = "One position of a sequence, (T, F) -> (F,): `select 0` the first (a class token), `select -1` the last."
    supports_mask = True  # and drops it: the result is no sequence
    params = (Param("index", "int", positional=True, doc="the position; negative counts from the end"),)

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _sequence_only(self.kind, shape)
        index = args["index"]
        if not -shape[0] <= index < shape[0]:
            raise ShapeError(
                f"`select {index}` is out of range for a sequence of length {shape[0]}",
                hint=f"choose an index from {-shape[0]} to {shape[0] - 1}",
                option="index",
            )
        return (shape[1],)

    def output_mask(self, args: Args, masked: bool) -> bool:
        return False


# --- attention ----------------------------------------------------------------------------


class Attention(LayerSpec):
    """Keras ``MultiHeadAttention``: queries from the current tensor, keys and values from it too
    (self-attention) or from an optional ``@tap`` (cross-attention); output projected back to the
    query's features. Weights in Keras's layout: ``query_kernel`` (F, H, Dk) ... ``output_bias`` (F,)."""

    kind = "attention"
    keras_type = "MultiHeadAttention"
    category = "attention"
    doc = (
        "Multi-head dot-product attention (Keras `MultiHeadAttention`): `attention HEADS KEY_DIM` on the "
        "current sequence, or `attention HEADS KEY_DIM @memory` reading keys and values from a tap."
    )
    reads_memory = True
    supports_mask = True
    takes_mask = True
    params = (
        positive("heads", positional=True, doc="number of attention heads"),
        positive("key_dim", positional=True, doc="size of each head's queries and keys"),
        positive("value_dim", default=None, doc="size of each head's values (default: key_dim)"),
        Param("dropout", "float", default=0.0, low=0, high=1, doc="dropout rate on the attention probabilities"),
        Param("bias", "bool", default=True, doc="add biases to the four projections"),
        Param("causal", "bool", default=False, doc="each position attends only to itself and earlier ones"),
        Param("init", "choice", default="glorot_uniform", choices=INITIALIZERS, doc="kernel initializer"),
        Param("bias_init", "choice", default="zeros", choices=INITIALIZERS, doc="bias initializer"),
    )

    def validate(self, args: Args, shape: Shape, memory: Shape | None = None) -> None:
        _require_rank("attention", shape, 2, "2-D (timesteps x features)", hint=_attention_hint(shape))
        if memory is not None and len(memory) != 2:
            raise ShapeError(
                f"`attention` reads keys and values of shape (timesteps, features), but the memory has shape "
                f"{shape_text(memory)}",
                hint=_attention_hint(memory),
            )
        if args["causal"] and memory is not None and memory[0] != shape[0]:
            raise ShapeError(
                f"`attention causal=true` masks position t from later ones, which needs a memory as long as the "
                f"query, but the query has {shape[0]} steps and the memory {memory[0]}",
                option="causal",
            )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank("attention", shape, 2, "2-D (timesteps x features)", hint=_attention_hint(shape))
        return shape

    def weights(self, args: Args, shape: Shape, memory: Shape | None = None) -> tuple[Weight, ...]:
        features, heads, key_dim = shape[-1], args["heads"], args["key_dim"]
        value_dim = args["value_dim"] or key_dim
        source = (memory or shape)[-1]
        out: list[Weight] = []
        for name, rows, width in (
            ("query", features, key_dim),
            ("key", source, key_dim),
            ("value", source, value_dim),
        ):
            out.append(Weight(f"{name}_kernel", (rows, heads, width), True, args["init"]))
            if args["bias"]:
                out.append(Weight(f"{name}_bias", (heads, width), True, args["bias_init"]))
        out.append(Weight("output_kernel", (heads, value_dim, features), True, args["init"]))
        if args["bias"]:
            out.append(Weight("output_bias", (features,), True, args["bias_init"]))
        return tuple(out)


def _attention_hint(shape: Shape) -> str | None:
    if len(shape) == 1:
        return "`attention` reads a sequence (timesteps x features): use `input TxF`, or an `embedding` for token ids"
    if len(shape) == 3:
        return "for an image, make a sequence of patches first: `conv2d F P stride=P`, then `reshape` to (patches x F), as ViT does"
    return None


# --- the registry ------------------------------------------------------------------------

#: DSL name -> spec. Names other than a spec's own kind are aliases (`relu` is `activation relu`).
REGISTRY: dict[str, LayerSpec] = {
    "dense": Dense(),
    "conv2d": Conv2D(),
    "maxpool": MaxPool2D(),
    "avgpool": AvgPool2D(),
    "flatten": Flatten(),
    "dropout": Dropout(),
    "batchnorm": BatchNorm(),
    "activation": Activation(),
    **{name: Activation(fixed=name) for name in ACTIVATIONS},
    "embedding": Embedding(),
    "masking": Masking(),
    "simplernn": SimpleRNN(),
    "lstm": LSTM(),
    "gru": GRU(),
    "bidirectional": Bidirectional(),
    "conv1d": Conv1D(),
    "maxpool1d": MaxPool1D(),
    "avgpool1d": AvgPool1D(),
    "globalmaxpool1d": GlobalMaxPool1D(),
    "globalavgpool1d": GlobalAvgPool1D(),
    "globalmaxpool": GlobalMaxPool2D(),
    "globalavgpool": GlobalAvgPool2D(),
    "add": Add(),
    "multiply": Multiply(),
    "average": Average(),
    "subtract": Subtract(),
    "maximum": Maximum(),
    "minimum": Minimum(),
    "concat": Concat(),
    "zeropad2d": ZeroPad2D(),
    "depthwiseconv2d": DepthwiseConv2D(),
    "separableconv2d": SeparableConv2D(),
    "conv2dtranspose": Conv2DTranspose(),
    "upsample2d": UpSample2D(),
    "layernorm": LayerNorm(),
    "reshape": Reshape(),
    "permute": Permute(),
    "rescaling": Rescaling(),
    "normalization": Normalization(),
    "layerscale": LayerScale(),
    "cropping2d": Cropping2D(),
    "cropping1d": Cropping1D(),
    "upsample1d": UpSample1D(),
    "posembed": PositionEmbedding(),
    "classtoken": ClassToken(),
    "select": Select(),
    "attention": Attention(),
}

#: Statement names that are directives, not layers.
DIRECTIVES = ("model", "input", "output", "block", "repeat", "residual", "tap")


def layer_kinds() -> list[str]:
    """Every IR kind, once each (what each backend must handle)."""
    return sorted({spec.kind for spec in REGISTRY.values()})
