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
from .ir import Args, Shape, Weight

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
    ``AxBxC``).
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


def _require_rank(kind: str, shape: Shape, rank: int, what: str, hint: str | None = None) -> None:
    if len(shape) != rank:
        raise ShapeError(f"`{kind}` needs a {what} input, but receives shape {shape_text(shape)}", hint=hint)


def _flatten_hint(kind: str) -> str:
    return f"add `flatten` before `{kind}`: a dense layer after a convolution or pooling needs `flatten`"


# --- core layers -----------------------------------------------------------------------


class Dense(LayerSpec):
    kind = "dense"
    keras_type = "Dense"
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
        if len(shape) == 3:
            raise ShapeError(
                f"`dense` needs a 1-D input (features), but receives shape {shape_text(shape)}",
                hint=_flatten_hint("dense"),
            )
        if len(shape) not in (1, 2):
            raise ShapeError(f"`dense` needs a 1-D input (features), but receives shape {shape_text(shape)}")
        return (*shape[:-1], args["units"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        kernel = Weight("kernel", (shape[-1], args["units"]), True, args["init"])
        if not args["bias"]:
            return (kernel,)
        return (kernel, Weight("bias", (args["units"],), True, args["bias_init"]))


def _conv_out(size: int, kernel: int, stride: int, dilation: int, pad: str) -> int:
    effective = (kernel - 1) * dilation + 1
    if pad == "same":
        return -(-size // stride)
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
    dilation = args["dilation"] if "dilation" in args else (1, 1)
    return (
        tf_same_padding(shape[0], kernel[0], args["stride"][0], dilation[0]),
        tf_same_padding(shape[1], kernel[1], args["stride"][1], dilation[1]),
    )


class Conv2D(LayerSpec):
    kind = "conv2d"
    keras_type = "Conv2D"
    doc = "2-D convolution over (height, width, channels) input."
    params = (
        positive("filters", positional=True, doc="number of output channels"),
        Param("kernel", "size2", positional=True, low=1, doc="kernel size: K or HxW"),
        Param("stride", "size2", default=(1, 1), low=1, doc="stride: S or HxW"),
        Param("pad", "choice", default="valid", choices=("valid", "same"), doc="padding; `same` pads as TensorFlow does"),
        Param("dilation", "size2", default=(1, 1), low=1, doc="dilation rate: D or HxW"),
        Param("bias", "bool", default=True, doc="add a bias vector"),
        Param("init", "choice", default="glorot_uniform", choices=INITIALIZERS, doc="kernel initializer"),
        Param("bias_init", "choice", default="zeros", choices=INITIALIZERS, doc="bias initializer"),
        Param("maxnorm", "float", default=None, low=0, low_exclusive=True, doc="max-norm constraint on each filter"),
        Param("activation", "choice", default="linear", choices=ACTIVATIONS, doc="fused activation"),
    )

    def validate(self, args: Args, shape: Shape) -> None:
        if max(args["stride"]) > 1 and max(args["dilation"]) > 1:
            raise ShapeError(
                "`conv2d` cannot combine stride > 1 with dilation > 1 (Keras and TensorFlow refuse it)",
                option="dilation",
            )

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        _require_rank("conv2d", shape, 3, "3-D (height x width x channels)", hint=_image_hint(shape))
        return (*_window_out("conv2d", "kernel", shape, args["kernel"], args["stride"], args["dilation"], args["pad"]), args["filters"])

    def weights(self, args: Args, shape: Shape) -> tuple[Weight, ...]:
        kernel = Weight("kernel", (*args["kernel"], shape[-1], args["filters"]), True, args["init"])
        if not args["bias"]:
            return (kernel,)
        return (kernel, Weight("bias", (args["filters"],), True, args["bias_init"]))


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
    pad: str,
) -> tuple[int, int]:
    out = []
    for axis in range(2):
        effective = (window[axis] - 1) * dilation[axis] + 1
        if pad == "valid" and effective > shape[axis]:
            extent = "x".join(str((w - 1) * d + 1) for w, d in zip(window, dilation))
            raise ShapeError(
                f"`{kind}` {what} {extent} is larger than its {shape[0]}x{shape[1]} input",
                hint="use a smaller window, or pad=same",
                option=what,
            )
        out.append(_conv_out(shape[axis], window[axis], stride[axis], dilation[axis], pad))
    return out[0], out[1]


class _Pool2D(LayerSpec):
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
    doc = "Flattens each example to a vector, in channels-last (Keras) order."

    def output_shape(self, args: Args, shape: Shape) -> Shape:
        return (math.prod(shape),)


class Dropout(LayerSpec):
    kind = "dropout"
    keras_type = "Dropout"
    doc = "Zeroes a fraction `rate` of inputs while training; identity at inference."
    params = (Param("rate", "float", positional=True, low=0.0, high=1.0, doc="fraction to drop, 0 <= rate < 1"),)


class BatchNorm(LayerSpec):
    kind = "batchnorm"
    keras_type = "BatchNormalization"
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
    kind = "activation"
    keras_type = "Activation"
    doc = "An activation function as a layer; softmax acts on the last (channel) axis."
    params = (Param("function", "choice", positional=True, choices=ACTIVATIONS, doc="activation name"),)

    def __init__(self, fixed: str | None = None) -> None:
        self.fixed = fixed
        if fixed is not None:
            self.params = ()  # `relu` takes no arguments; `activation relu` takes one

    def fixed_args(self) -> dict[str, Any]:
        return {"function": self.fixed} if self.fixed else {}


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
}

#: Statement names that are directives, not layers.
DIRECTIVES = ("model", "input")


def layer_kinds() -> list[str]:
    """Every IR kind, once each (what each backend must handle)."""
    return sorted({spec.kind for spec in REGISTRY.values()})
