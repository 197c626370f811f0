"""The torch backend: IR -> an ``nn.Module`` subclass computing what the Keras model computes.

Layout: an image tensor, (H, W, C) in the IR, is (N, C, H, W) in torch; every
other tensor keeps the IR's order, so vectors are (N, F). Layers that think in
Keras's channels-last order (concat's axis, layernorm, reshape, permute) map
their axes to it.

Graphs: the forward pass follows each layer's ``inputs``. A chain keeps reusing
``x``; a tensor read anywhere but by the next step gets a variable named after
its layer. Each block instance is a submodule (``self.conv_bn_1 = ConvBn()``),
so state_dict keys nest by instance; instances whose generated code is identical
share one class. A block that reads a tensor from outside (an outer ``@tap``)
takes it as an extra ``forward`` argument. Instances that read or pass a Keras
mask stay flat, their layers joining the enclosing module. Canonical weight keys
stay flat (``"<layer name>.<param>"``) whatever the nesting.

Flatten: ``nn.Flatten`` orders an image's features (C, H, W) where Keras has
(H, W, C). When a dense layer consumes the flattened vector (possibly through
dropout, activations or batchnorm, which act per feature), the permutation is
folded into that dense kernel's rows (and those batchnorms' vectors) during
weight transfer, so the forward pass stays plain. Otherwise the generated
forward permutes to channels-last before flattening.

Transposed convolutions are ``nn.ConvTranspose2d`` with the kernel unflipped;
``padding`` and ``output_padding`` reproduce TensorFlow's output, and `same`
with an odd excess, which TensorFlow crops at the bottom/right, slices one
extra row/column off.

Batchnorm with ``center=false`` or ``scale=false``: the module uses
``affine=False`` and holds the one vector that exists as its own
``nn.Parameter``, so the trainable parameters are exactly Keras's.
(In training, torch updates the moving variance with the unbiased batch
variance where Keras uses the biased one; inference is identical.)

Average pooling with ``pad=same`` leaves padding out of each average, as
TensorFlow does: symmetric padding uses ``count_include_pad=False``; the
asymmetric case zero-pads, pools, and divides by each window's share of real
inputs (a precomputed buffer).

Sequences stay (N, T, F), as in Keras. A mask (``embedding mask_zero``,
``masking``) is computed in ``forward`` from the input and read by the layers
that use it. Recurrent layers are ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (one
module, ``bidirectional=True``, for a bidirectional layer), called directly
when torch computes exactly what Keras does; otherwise (a mask of any pattern,
other activations, GRU ``reset_after=false``) a small step function emitted
into the generated module runs Keras's recurrence on that module's own weights.
Where Keras has one bias vector, torch's recurrent bias stays zero and untrained.

This module never imports torch at import time or while emitting source.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import keyword
import sys
import tokenize
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import codegen, initializers, ir, specs
from ..codegen import Code, call, py
from ..ir import Args
from .base import IR_ATTRIBUTE, Backend, missing_framework
from .torch_weights import feature_indexed, from_torch_order, permutation, to_keras, to_torch, to_torch_order

if TYPE_CHECKING:
    import numpy as np

#: Attribute names an ``nn.Module`` (or the generated class) already uses; a layer
#: with one of these names gets a suffixed attribute. Static: torch is not imported here.
_MODULE_ATTRIBUTES = frozenset(
    """
    T_destination add_module apply bfloat16 buffers call_super_init children compile cpu cuda
    double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
    get_submodule half ipu load_state_dict modules mtia named_buffers named_children
    named_modules named_parameters parameters register_backward_hook register_buffer
    register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
    set_extra_state set_submodule share_memory state_dict to to_empty train training type
    xpu zero_grad reset_parameters apply_constraints
    """.split()
) | {IR_ATTRIBUTE}

#: Keras activation -> torch expression around ``{x}``.
_ACTIVATIONS = {
    "linear": "{x}",
    "relu": "torch.relu({x})",
    "sigmoid": "torch.sigmoid({x})",
    "tanh": "torch.tanh({x})",
    "softmax": "torch.softmax({x}, dim={channels})",  # Keras: the channels-last axis
    "elu": "F.elu({x})",
    "selu": "F.selu({x})",
    "gelu": "F.gelu({x})",  # exact (erf) form, Keras's default
    "softplus": "F.softplus({x})",
    "softsign": "F.softsign({x})",
    "leaky_relu": "F.leaky_relu({x}, negative_slope=0.2)",  # Keras's slope, not torch's 0.01
    "silu": "F.silu({x})",
    "relu6": "F.relu6({x})",
    # Keras 3's definitions, each one torch's module of that name (thresholds and alpha at their defaults)
    "hard_sigmoid": "F.hardsigmoid({x})",  # relu6(x + 3) / 6
    "hard_swish": "F.hardswish({x})",  # Keras's hard_silu
    "mish": "F.mish({x})",
    "hard_tanh": "F.hardtanh({x})",
    "log_softmax": "torch.log_softmax({x}, dim={channels})",
    "log_sigmoid": "F.logsigmoid({x})",
    "celu": "F.celu({x})",
    "tanh_shrink": "F.tanhshrink({x})",
    "soft_shrink": "F.softshrink({x}, 0.5)",
    "hard_shrink": "F.hardshrink({x}, 0.5)",
}

_MINUS_INF = Code('float("-inf")')


def _is_image(shape: ir.Shape) -> bool:
    return len(shape) == 3


def torch_shape(shape: ir.Shape) -> ir.Shape:
    """The torch layout of an IR shape (no batch axis): images become (C, H, W)."""
    return (shape[2], shape[0], shape[1]) if _is_image(shape) else shape


def _activate(function: str, x: str, shape: ir.Shape) -> str:
    return _ACTIVATIONS[function].format(x=x, channels=1 if _is_image(shape) else -1)


def _size(pair: tuple[int, int]) -> int | tuple[int, int]:
    return pair[0] if pair[0] == pair[1] else pair


@dataclass
class _Piece:
    """What one layer contributes to the generated module."""

    init: list[str] = field(default_factory=list)  # __init__ lines
    forward: list[str] = field(default_factory=list)
    #: IR weight name -> path under the module; a tuple splits the weight's rows over several
    #: tensors (a GRU bias: input row, recurrent row)
    tensors: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    constraint: str | None = None  # apply_constraints line
    fixed_zero: list[str] = field(default_factory=list)  # torch-only tensors that stay zero, untrained
    helpers: set[str] = field(default_factory=set)  # module-level functions the forward pass calls


@dataclass
class _Context:
    """Model-level facts an emitter needs about its layer."""

    attr: str  # the layer's attribute name
    taken: set[str]  # every attribute name in use in its module
    keras_order: bool = False  # flatten: no dense absorbs the permutation
    #: the variables holding a merge's inputs, in order (other layers read `x`)
    inputs: tuple[str, ...] = ("x",)

    def extra(self, suffix: str) -> str:
        """A fresh attribute name for a helper module or parameter of this layer."""
        name = f"{self.attr}_{suffix}"
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return codegen.ident(name)


def _dense(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    kwargs = {} if args["bias"] else {"bias": False}
    return _Piece(
        init=[f"self.{a} = {call('nn.Linear', layer.input_shape[-1], args['units'], **kwargs)}"],
        forward=[f"x = {_activate(args['activation'], f'self.{a}(x)', layer.output_shape)}"],
        tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"},
        constraint=None if args["maxnorm"] is None else f"max_norm_(self.{a}.weight, {py(args['maxnorm'])}, dim=1)",
    )


def _windowed_conv(
    piece: _Piece, layer: ir.Layer, ctx: _Context, attr: str, out_channels: int, *, groups: int = 1, bias: bool
) -> str:
    """Add ``self.<attr> = nn.Conv2d(...)`` with the layer's kernel, stride, dilation and TensorFlow padding.

    Returns the expression applying it to ``x``.
    """
    args = layer.args
    (top, bottom), (left, right) = specs.spatial_padding(args, layer.input_shape, args["kernel"])
    kwargs: dict[str, Any] = {"kernel_size": _size(args["kernel"])}
    if args["stride"] != (1, 1):
        kwargs["stride"] = _size(args["stride"])
    if args["dilation"] != (1, 1):
        kwargs["dilation"] = _size(args["dilation"])
    x = "x"
    if (top, left) != (bottom, right):
        pad = ctx.extra("pad")
        piece.init.append("# TensorFlow's `same` puts the odd padding row/column bottom/right")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad2d', (left, right, top, bottom))}")
        x = f"self.{pad}(x)"
    elif top or left:
        kwargs["padding"] = _size((top, left))
    if groups != 1:
        kwargs["groups"] = groups
    if not bias:
        kwargs["bias"] = False
    piece.init.append(f"self.{attr} = {call('nn.Conv2d', layer.input_shape[2], out_channels, **kwargs)}")
    return f"self.{attr}({x})"


def _conv2d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    piece = _Piece(tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"})
    conv = _windowed_conv(piece, layer, ctx, a, args["filters"], groups=args["groups"], bias=args["bias"])
    piece.forward.append(f"x = {_activate(args['activation'], conv, layer.output_shape)}")
    if args["maxnorm"] is not None:
        piece.constraint = f"max_norm_(self.{a}.weight, {py(args['maxnorm'])}, dim=(1, 2, 3))"
    return piece


def _depthwiseconv2d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    channels = layer.input_shape[2]
    piece = _Piece(tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"})
    piece.init.append("# groups=channels: each input channel convolved on its own")
    conv = _windowed_conv(piece, layer, ctx, a, channels * args["multiplier"], groups=channels, bias=args["bias"])
    piece.forward.append(f"x = {_activate(args['activation'], conv, layer.output_shape)}")
    return piece


def _separableconv2d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args = layer.args
    channels = layer.input_shape[2]
    depth = channels * args["multiplier"]
    depthwise, pointwise = ctx.extra("depthwise"), ctx.extra("pointwise")
    piece = _Piece(tensors={"depthwise_kernel": f"{depthwise}.weight", "pointwise_kernel": f"{pointwise}.weight"})
    piece.init.append("# a depthwise convolution (groups=channels), then a 1x1 pointwise one")
    conv = _windowed_conv(piece, layer, ctx, depthwise, depth, groups=channels, bias=False)
    kwargs: dict[str, Any] = {} if args["bias"] else {"bias": False}
    piece.init.append(f"self.{pointwise} = {call('nn.Conv2d', depth, args['filters'], 1, **kwargs)}")
    if args["bias"]:
        piece.tensors["bias"] = f"{pointwise}.bias"
    piece.forward.append(f"x = {_activate(args['activation'], f'self.{pointwise}({conv})', layer.output_shape)}")
    return piece


def _transpose_padding(size: int, out: int, kernel: int, stride: int) -> tuple[int, int, bool]:
    """(padding, output_padding, crop) for nn.ConvTranspose2d to give TensorFlow's output along one axis.

    TensorFlow computes the full transposed convolution ((size - 1) * stride + kernel) and crops
    `same`'s padding with the odd row at the end; torch crops `padding` from both ends and adds
    `output_padding` zeros at the end, so an odd crop leaves one extra row to slice off (crop=True).
    """
    full = (size - 1) * stride + kernel
    if full <= out:  # valid, or a kernel smaller than the stride: zeros at the end
        return 0, out - full, False
    excess = full - out
    return excess // 2, 0, excess % 2 == 1


def _conv2dtranspose(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    (height, width, channels), (out_height, out_width, _) = layer.input_shape, layer.output_shape
    rows = _transpose_padding(height, out_height, args["kernel"][0], args["stride"][0])
    cols = _transpose_padding(width, out_width, args["kernel"][1], args["stride"][1])
    kwargs: dict[str, Any] = {"kernel_size": _size(args["kernel"])}
    if args["stride"] != (1, 1):
        kwargs["stride"] = _size(args["stride"])
    if rows[0] or cols[0]:
        kwargs["padding"] = _size((rows[0], cols[0]))
    if rows[1] or cols[1]:
        kwargs["output_padding"] = _size((rows[1], cols[1]))
    if not args["bias"]:
        kwargs["bias"] = False
    piece = _Piece(tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"})
    piece.init.append(f"self.{a} = {call('nn.ConvTranspose2d', channels, args['filters'], **kwargs)}")
    conv = f"self.{a}(x)"
    if rows[2] or cols[2]:
        piece.forward.append("# TensorFlow crops `same`'s odd row/column at the bottom/right")
        conv += f"[:, :, :{out_height}, :{out_width}]"
    piece.forward.append(f"x = {_activate(args['activation'], conv, layer.output_shape)}")
    return piece


def _zeropad2d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    sides = (args["left"], args["right"], args["top"], args["bottom"])
    padding = sides[0] if len(set(sides)) == 1 else sides
    return _Piece(init=[f"self.{a} = {call('nn.ZeroPad2d', padding)}"], forward=[f"x = self.{a}(x)"])


def _upsample2d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    kwargs: dict[str, Any] = {"scale_factor": _size(args["size"]), "mode": args["interpolation"]}
    if args["interpolation"] == "bilinear":
        kwargs["align_corners"] = False  # TensorFlow's half-pixel centers
    return _Piece(init=[f"self.{a} = {call('nn.Upsample', **kwargs)}"], forward=[f"x = self.{a}(x)"])


def _layernorm(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a, shape = layer.args, ctx.attr, layer.input_shape
    channels = shape[-1]
    kwargs: dict[str, Any] = {"eps": args["eps"]}
    if not args["scale"]:
        kwargs["elementwise_affine"] = False
    elif not args["center"]:
        kwargs["bias"] = False
    piece = _Piece(init=[f"self.{a} = {call('nn.LayerNorm', channels, **kwargs)}"])
    if _is_image(shape):
        piece.init.append("# Keras normalizes each pixel over its channels: dim 1 here, moved last and back")
        x = f"self.{a}(x.movedim(1, -1)).movedim(-1, 1)"
    else:
        x = f"self.{a}(x)"
    if args["scale"]:
        piece.tensors["gamma"] = f"{a}.weight"
        if args["center"]:
            piece.tensors["beta"] = f"{a}.bias"
    elif args["center"]:
        beta = ctx.extra("beta")
        piece.init.append("# Keras learns only beta (scale=false)")
        piece.init.append(f"self.{beta} = nn.Parameter(torch.zeros({py(channels)}))")
        piece.tensors["beta"] = beta
        x = f"{x} + self.{beta}{'[:, None, None]' if _is_image(shape) else ''}"
    piece.forward.append(f"x = {x}")
    return piece


def _torch_axis(shape: ir.Shape, axis: int) -> int:
    """The torch dimension (batch included) of IR axis ``axis`` (batch excluded) of a ``shape`` tensor."""
    axis %= len(shape)
    if _is_image(shape):
        return (2, 3, 1)[axis]  # (H, W, C) -> (N, C, H, W)
    return axis + 1


def _reshape(layer: ir.Layer, ctx: _Context) -> _Piece:
    target = layer.args["target"]
    x = "x"
    if _is_image(layer.input_shape):
        x = "x.permute(0, 2, 3, 1)"
    x = f"{x}.reshape(x.shape[0], {', '.join(py(d) for d in target)})"
    if _is_image(target):
        x += ".permute(0, 3, 1, 2)"
    piece = _Piece(forward=[f"x = {x}"])
    if _is_image(layer.input_shape) or _is_image(target):
        piece.forward.insert(0, "# Keras reshapes in channels-last order")
    return piece


def _permute(layer: ir.Layer, ctx: _Context) -> _Piece:
    shape, dims = layer.input_shape, layer.args["dims"]
    out = layer.output_shape
    order = [0] * (len(shape) + 1)
    for axis, source in enumerate(dims):  # output IR axis `axis` is input IR axis `source - 1`
        order[_torch_axis(out, axis)] = _torch_axis(shape, source - 1)
    if order == list(range(len(order))):
        return _Piece()  # the identity in torch's layout: only its comment shows
    return _Piece(forward=[f"x = x.permute({', '.join(map(str, order))})"])


def _elementwise(operator: str) -> Callable[[ir.Layer, _Context], _Piece]:
    def emit(layer: ir.Layer, ctx: _Context) -> _Piece:
        x = f" {operator} ".join(ctx.inputs)  # left to right, as Keras folds them
        if layer.kind == "average":
            x = f"({x}) / {len(ctx.inputs)}"
        return _Piece(forward=[f"x = {x}"])

    return emit


def _broadcasting(operator: str) -> Callable[[ir.Layer, _Context], _Piece]:
    """Merges of inputs of different ranks: Keras adds size-1 axes after the batch axis (a (C,) vector
    scales an (H, W, C) map per channel); here such an input is reshaped to the output's torch layout."""
    elementwise = _elementwise(operator)

    def emit(layer: ir.Layer, ctx: _Context) -> _Piece:
        return elementwise(layer, dataclasses.replace(ctx, inputs=_broadcast_inputs(layer, ctx)))

    return emit


def _broadcast_inputs(layer: ir.Layer, ctx: _Context) -> tuple[str, ...]:
    """Each merge input as an expression of the output's rank, in torch's layout."""
    rank = len(layer.output_shape)
    inputs = []
    for variable, shape in zip(ctx.inputs, layer.input_shapes, strict=True):
        if len(shape) < rank:
            padded = (1,) * (rank - len(shape)) + shape
            if _is_image(padded) and len(shape) == 1:
                variable = f"{variable}[:, :, None, None]"
            else:
                variable = f"{variable}.reshape({variable}.shape[0], {', '.join(py(d) for d in padded)})"
                if _is_image(padded):
                    variable += ".permute(0, 3, 1, 2)"
        inputs.append(variable)
    return tuple(inputs)


def _extremum(function: str) -> Callable[[ir.Layer, _Context], _Piece]:
    """maximum / minimum: torch's two-argument function folded over the inputs, left to right."""

    def emit(layer: ir.Layer, ctx: _Context) -> _Piece:
        first, *rest = _broadcast_inputs(layer, ctx)
        x = first
        for variable in rest:
            x = f"torch.{function}({x}, {variable})"
        return _Piece(forward=[f"x = {x}"])

    return emit


def _concat(layer: ir.Layer, ctx: _Context) -> _Piece:
    dim = _torch_axis(layer.output_shape, layer.args["axis"])
    return _Piece(forward=[f"x = torch.cat([{', '.join(ctx.inputs)}], dim={dim})"])


def _pool(torch_class: str) -> Callable[[ir.Layer, _Context], _Piece]:
    def emit(layer: ir.Layer, ctx: _Context) -> _Piece:
        args, a = layer.args, ctx.attr
        (top, bottom), (left, right) = specs.spatial_padding(args, layer.input_shape, args["pool"])
        kwargs: dict[str, Any] = {} if args["stride"] == args["pool"] else {"stride": _size(args["stride"])}
        piece = _Piece()
        if (top, left) == (bottom, right):
            if top or left:
                # torch pads max pools with -inf; count_include_pad=False is TensorFlow's average
                kwargs["padding"] = _size((top, left))
                if torch_class == "nn.AvgPool2d":
                    kwargs["count_include_pad"] = False
            piece.init.append(f"self.{a} = {call(torch_class, _size(args['pool']), **kwargs)}")
            piece.forward.append(f"x = self.{a}(x)")
            return piece
        # TensorFlow's `same` puts the odd padding row/column bottom/right, which torch's
        # pooling `padding` cannot express: pad explicitly
        pad = ctx.extra("pad")
        sides = (left, right, top, bottom)
        pooled = f"self.{a}(self.{pad}(x))"
        if torch_class == "nn.MaxPool2d":
            piece.init.append("# padding never wins a max")
            piece.init.append(f"self.{pad} = {call('nn.ConstantPad2d', sides, _MINUS_INF)}")
            piece.init.append(f"self.{a} = {call(torch_class, _size(args['pool']), **kwargs)}")
            piece.forward.append(f"x = {pooled}")
            return piece
        coverage = ctx.extra("coverage")
        h, w = layer.input_shape[:2]
        piece.init.append("# padding is left out of each average: divide by the window's share of real inputs")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad2d', sides)}")
        piece.init.append(f"self.{a} = {call(torch_class, _size(args['pool']), **kwargs)}")
        piece.init.append(f"coverage = self.{a}(self.{pad}(torch.ones(1, 1, {py(h)}, {py(w)})))")
        piece.init.append(f"self.register_buffer({py(coverage)}, coverage, persistent=False)")
        piece.forward.append(f"x = {pooled} / self.{coverage}")
        return piece

    return emit


def _flatten(layer: ir.Layer, ctx: _Context) -> _Piece:
    a = ctx.attr
    forward = f"x = self.{a}(x)"
    if ctx.keras_order:  # no dense absorbs torch's (C, H, W) order, so produce Keras's
        forward = f"x = self.{a}(x.permute(0, 2, 3, 1))  # Keras's (H, W, C) feature order"
    return _Piece(init=[f"self.{a} = nn.Flatten()"], forward=[forward])


def _dropout(layer: ir.Layer, ctx: _Context) -> _Piece:
    a = ctx.attr
    return _Piece(init=[f"self.{a} = {call('nn.Dropout', layer.args['rate'])}"], forward=[f"x = self.{a}(x)"])


def _batchnorm(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a, shape = layer.args, ctx.attr, layer.input_shape
    channels = shape[-1]
    # Keras's momentum weights the old average, torch's the new batch (0.99 -> 0.01)
    kwargs: dict[str, Any] = {"eps": args["eps"], "momentum": float(1 - Decimal(repr(args["momentum"])))}
    affine = args["center"] and args["scale"]
    if not affine:
        kwargs["affine"] = False
    torch_class = "nn.BatchNorm2d" if _is_image(shape) else "nn.BatchNorm1d"
    piece = _Piece(init=[f"self.{a} = {call(torch_class, channels, **kwargs)}"])
    piece.tensors = {"moving_mean": f"{a}.running_mean", "moving_variance": f"{a}.running_var"}
    # BatchNorm1d wants (N, C): fold leading axes of a sequence into the batch
    x = f"self.{a}(x)" if len(shape) in (1, 3) else f"self.{a}(x.flatten(0, -2)).reshape(x.shape)"
    if affine:
        piece.tensors.update(gamma=f"{a}.weight", beta=f"{a}.bias")
    else:
        broadcast = "[:, None, None]" if _is_image(shape) else ""
        if args["scale"] or args["center"]:
            learned = "gamma (center=false)" if args["scale"] else "beta (scale=false)"
            piece.init.append(f"# Keras learns only {learned}")
        if args["scale"]:
            gamma = ctx.extra("gamma")
            piece.init.append(f"self.{gamma} = nn.Parameter(torch.ones({py(channels)}))")
            piece.tensors["gamma"] = gamma
            x = f"{x} * self.{gamma}{broadcast}"
        if args["center"]:
            beta = ctx.extra("beta")
            piece.init.append(f"self.{beta} = nn.Parameter(torch.zeros({py(channels)}))")
            piece.tensors["beta"] = beta
            x = f"{x} + self.{beta}{broadcast}"
    piece.forward.append(f"x = {x}")
    return piece


def _activation(layer: ir.Layer, ctx: _Context) -> _Piece:
    function = layer.args["function"]
    if function == "linear":
        return _Piece()  # the identity: only its comment shows
    return _Piece(forward=[f"x = {_activate(function, 'x', layer.input_shape)}"])


# --- sequences ---------------------------------------------------------------------------


def _embedding(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    piece = _Piece(
        init=[f"self.{a} = {call('nn.Embedding', args['vocab'], args['dim'])}"],
        tensors={"embeddings": f"{a}.weight"},
    )
    if args["mask_zero"]:
        piece.forward.append("mask = x != 0  # id 0 is padding")
    piece.forward.append(f"x = self.{a}(x)")
    return piece


def _masking(layer: ir.Layer, ctx: _Context) -> _Piece:
    return _Piece(
        forward=[
            f"mask = (x != {py(layer.args['value'])}).any(dim=-1)  # a step is padding when every feature is",
            "x = x * mask[..., None]",
        ]
    )


_TORCH_RNN = {"lstm": "nn.LSTM", "gru": "nn.GRU", "simplernn": "nn.RNN"}

#: Keras activation -> a torch callable, for the recurrent step helpers.
_ACTIVATION_FUNCTIONS = {
    "linear": "nn.Identity()",
    "relu": "torch.relu",
    "sigmoid": "torch.sigmoid",
    "tanh": "torch.tanh",
    "softmax": "nn.Softmax(dim=-1)",
    "elu": "F.elu",
    "selu": "F.selu",
    "gelu": "F.gelu",
    "softplus": "F.softplus",
    "softsign": "F.softsign",
    "leaky_relu": "nn.LeakyReLU(0.2)",
    "silu": "F.silu",
    "relu6": "F.relu6",
    "hard_sigmoid": "F.hardsigmoid",
    "hard_swish": "F.hardswish",
    "mish": "F.mish",
    "hard_tanh": "F.hardtanh",
    "log_softmax": "nn.LogSoftmax(dim=-1)",
    "log_sigmoid": "F.logsigmoid",
    "celu": "F.celu",
    "tanh_shrink": "F.tanhshrink",
    "soft_shrink": "F.softshrink",
    "hard_shrink": "F.hardshrink",
}

_MERGES = {
    "concat": "torch.cat([forward, backward], dim=-1)",
    "sum": "forward + backward",
    "mul": "forward * backward",
    "ave": "(forward + backward) / 2",
}


def _torch_runs_it(kind: str, args: Args) -> bool:
    """Whether torch's own module computes this recurrent layer exactly (without a mask)."""
    if kind == "simplernn":
        return args["activation"] in ("tanh", "relu")
    if (args["activation"], args["recurrent_activation"]) != ("tanh", "sigmoid"):
        return False
    return kind == "lstm" or args["reset_after"]


def _one_bias(kind: str, args: Args) -> bool:
    """Keras has one bias vector where torch has two: torch's recurrent one stays zero."""
    return args["bias"] and (kind != "gru" or not args["reset_after"])


def _recurrent(layer: ir.Layer, ctx: _Context) -> _Piece:
    """lstm, gru, simplernn, and bidirectional around one of them (one torch module either way)."""
    a = ctx.attr
    bidirectional = layer.kind == "bidirectional"
    kind = layer.args["layer"] if bidirectional else layer.kind
    args: Args = layer.args["inner"] if bidirectional else layer.args
    kwargs: dict[str, Any] = {"batch_first": True}
    if not args["bias"]:
        kwargs["bias"] = False
    if kind == "simplernn" and args["activation"] == "relu":
        kwargs["nonlinearity"] = "relu"
    if bidirectional:
        kwargs["bidirectional"] = True
    piece = _Piece(init=[f"self.{a} = {call(_TORCH_RNN[kind], layer.input_shape[-1], args['units'], **kwargs)}"])

    directions = [("forward_", "_l0"), ("backward_", "_l0_reverse")] if bidirectional else [("", "_l0")]
    for prefix, suffix in directions:
        piece.tensors[f"{prefix}kernel"] = f"{a}.weight_ih{suffix}"
        piece.tensors[f"{prefix}recurrent_kernel"] = f"{a}.weight_hh{suffix}"
        if _one_bias(kind, args):
            piece.tensors[f"{prefix}bias"] = f"{a}.bias_ih{suffix}"
            piece.fixed_zero.append(f"{a}.bias_hh{suffix}")
        elif args["bias"]:
            piece.tensors[f"{prefix}bias"] = (f"{a}.bias_ih{suffix}", f"{a}.bias_hh{suffix}")
    if piece.fixed_zero:
        piece.init.append("# Keras has one bias vector: torch's recurrent bias stays zero, untrained")
        piece.init.extend(f"self.{path}.requires_grad_(False)" for path in piece.fixed_zero)

    return_sequences, backwards = args["return_sequences"], args["go_backwards"]
    if not layer.input_masked and _torch_runs_it(kind, args):
        x = "x.flip(1)" if backwards else "x"
        note = "  # go_backwards: read the sequence reversed" if backwards else ""
        piece.forward.append(f"x, _ = self.{a}({x}){note}")
        if not bidirectional:
            if not return_sequences:
                piece.forward.append("x = x[:, -1]  # the last step's output")
            return piece
        if return_sequences and layer.args["merge"] == "concat":
            return piece  # torch already aligns the backward output with time and concatenates
        piece.forward.append("forward, backward = x.chunk(2, dim=-1)")
        if not return_sequences:
            piece.forward.append("forward, backward = forward[:, -1], backward[:, 0]  # each direction's last step")
        piece.forward.append(f"x = {_MERGES[layer.args['merge']]}")
        return piece

    # Keras semantics step by step: masks (any pattern), other activations, GRU reset_after=false
    helper = f"{kind}_scan"
    piece.helpers.add(helper)
    options: dict[str, Any] = {}
    if args["activation"] != "tanh":
        options["activation"] = Code(_ACTIVATION_FUNCTIONS[args["activation"]])
    if kind != "simplernn" and args["recurrent_activation"] != "sigmoid":
        options["recurrent_activation"] = Code(_ACTIVATION_FUNCTIONS[args["recurrent_activation"]])
    if kind == "gru" and not args["reset_after"]:
        options["reset_after"] = False
    mask = Code("mask" if layer.input_masked else "None")

    def scan(weights: int, reverse: bool) -> Code:
        extra = {**options, "reverse": True} if reverse else options
        return call(helper, Code("x"), mask, Code(f"self.{a}.all_weights[{weights}]"), **extra)

    if not bidirectional:
        piece.forward.append(f"x = {scan(0, backwards)}")
        if not return_sequences:
            piece.forward.append("x = x[:, -1]  # the last step's output")
        return piece
    piece.forward.append(f"forward = {scan(0, backwards)}")
    piece.forward.append(f"backward = {scan(1, not backwards)}")
    if return_sequences:
        piece.forward.append("backward = backward.flip(1)  # align the backward output with time")
    else:
        piece.forward.append("forward, backward = forward[:, -1], backward[:, -1]  # each direction's last step")
    piece.forward.append(f"x = {_MERGES[layer.args['merge']]}")
    if return_sequences and layer.input_masked:
        # Keras's Bidirectional sets zero_output_for_mask when it returns sequences
        aligned = "mask.flip(1)" if backwards else "mask"
        piece.forward.append(f"x = torch.where({aligned}[..., None], x, 0.0)  # masked steps output zeros")
    return piece


def _channels_first_1d(expression: str) -> str:
    """``expression`` applied to (N, C, T), from and back to the (N, T, C) sequence layout."""
    return f"{expression.format(x='x.transpose(1, 2)')}.transpose(1, 2)"


def _conv1d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    before, after = specs.padding_1d(args, layer.input_shape[0], args["kernel"])
    kwargs: dict[str, Any] = {}
    if args["stride"] != 1:
        kwargs["stride"] = args["stride"]
    if args["dilation"] != 1:
        kwargs["dilation"] = args["dilation"]
    piece = _Piece(tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"})
    x = "{x}"
    if before != after:
        pad = ctx.extra("pad")
        why = "causal: pad only the past" if args["pad"] == "causal" else "TensorFlow's `same` pads the odd step after"
        piece.init.append(f"# {why}")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad1d', (before, after))}")
        x = f"self.{pad}({{x}})"
    elif before:
        kwargs["padding"] = before
    if args["groups"] != 1:
        kwargs["groups"] = args["groups"]
    if not args["bias"]:
        kwargs["bias"] = False
    piece.init.append(
        f"self.{a} = {call('nn.Conv1d', layer.input_shape[1], args['filters'], args['kernel'], **kwargs)}"
    )
    conv = _channels_first_1d(f"self.{a}({x})")
    piece.forward.append(f"x = {_activate(args['activation'], conv, layer.output_shape)}")
    if args["maxnorm"] is not None:
        piece.constraint = f"max_norm_(self.{a}.weight, {py(args['maxnorm'])}, dim=(1, 2))"
    return piece


def _pool1d(torch_class: str) -> Callable[[ir.Layer, _Context], _Piece]:
    def emit(layer: ir.Layer, ctx: _Context) -> _Piece:
        args, a = layer.args, ctx.attr
        before, after = specs.padding_1d(args, layer.input_shape[0], args["pool"])
        kwargs: dict[str, Any] = {} if args["stride"] == args["pool"] else {"stride": args["stride"]}
        piece = _Piece()
        if before == after:
            if before:
                # torch pads max pools with -inf; count_include_pad=False is TensorFlow's average
                kwargs["padding"] = before
                if torch_class == "nn.AvgPool1d":
                    kwargs["count_include_pad"] = False
            piece.init.append(f"self.{a} = {call(torch_class, args['pool'], **kwargs)}")
            piece.forward.append(f"x = {_channels_first_1d(f'self.{a}({{x}})')}")
            return piece
        # TensorFlow's `same` puts the odd padding step after, which torch's `padding` cannot express
        pad = ctx.extra("pad")
        pooled = f"self.{a}(self.{pad}({{x}}))"
        if torch_class == "nn.MaxPool1d":
            piece.init.append("# padding never wins a max")
            piece.init.append(f"self.{pad} = {call('nn.ConstantPad1d', (before, after), _MINUS_INF)}")
            piece.init.append(f"self.{a} = {call(torch_class, args['pool'], **kwargs)}")
            piece.forward.append(f"x = {_channels_first_1d(pooled)}")
            return piece
        coverage = ctx.extra("coverage")
        piece.init.append("# padding is left out of each average: divide by the window's share of real steps")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad1d', (before, after))}")
        piece.init.append(f"self.{a} = {call(torch_class, args['pool'], **kwargs)}")
        piece.init.append(f"coverage = self.{a}(self.{pad}(torch.ones(1, 1, {py(layer.input_shape[0])})))")
        piece.init.append(f"self.register_buffer({py(coverage)}, coverage, persistent=False)")
        piece.forward.append(f"x = ({pooled.format(x='x.transpose(1, 2)')} / self.{coverage}).transpose(1, 2)")
        return piece

    return emit


def _global_pool(reduction: str) -> Callable[[ir.Layer, _Context], _Piece]:
    def emit(layer: ir.Layer, ctx: _Context) -> _Piece:
        axes = "(2, 3)" if _is_image(layer.input_shape) else "1"  # images are (N, C, H, W)
        keep = ", keepdim=True" if layer.args["keepdims"] else ""
        if reduction == "mean" and layer.input_masked:
            return _Piece(
                forward=[
                    "weights = mask[..., None].to(x.dtype)",
                    f"x = (x * weights).sum(dim=1{keep}) / weights.sum(dim=1{keep})  # the mean of the unmasked steps",
                ]
            )
        return _Piece(forward=[f"x = x.{reduction}(dim={axes}{keep})"])

    return emit


def _per_channel(shape: ir.Shape) -> str:
    """Indexing that lines a (C,) vector up with the channels of a tensor of IR ``shape``."""
    return "[:, None, None]" if _is_image(shape) else ""


def _rescaling(layer: ir.Layer, ctx: _Context) -> _Piece:
    args = layer.args
    x = f"x * {py(args['scale'])}"
    return _Piece(forward=[f"x = {x} + {py(args['offset'])}" if args["offset"] else f"x = {x}"])


def _normalization(layer: ir.Layer, ctx: _Context) -> _Piece:
    """Keras's Normalization: (x - mean) / max(sqrt(variance), 1e-7)."""
    args, shape = layer.args, layer.input_shape
    if args["mean"] is not None:
        std = max(float(args["variance"]) ** 0.5, 1e-7)
        return _Piece(forward=[f"x = (x - {py(args['mean'])}) / {py(std)}"])
    mean, variance, count = ctx.extra("mean"), ctx.extra("variance"), ctx.extra("count")
    channels = shape[-1]
    piece = _Piece(
        init=[
            "# Keras's Normalization statistics: buffers, not trained",
            f"self.register_buffer({py(mean)}, torch.zeros({py(channels)}))",
            f"self.register_buffer({py(variance)}, torch.ones({py(channels)}))",
            f"self.register_buffer({py(count)}, torch.zeros(()))",
        ],
        tensors={"mean": mean, "variance": variance, "count": count},
    )
    axes = _per_channel(shape)
    piece.forward.append(f"x = (x - self.{mean}{axes}) / self.{variance}{axes}.sqrt().clamp(min=1e-7)")
    return piece


def _layerscale(layer: ir.Layer, ctx: _Context) -> _Piece:
    gamma = ctx.extra("gamma")
    init = f"torch.full(({py(layer.input_shape[-1])},), {py(layer.args['init'])})"
    return _Piece(
        init=[f"self.{gamma} = nn.Parameter({init})  # layer scale"],
        forward=[f"x = x * self.{gamma}{_per_channel(layer.input_shape)}"],
        tensors={"gamma": gamma},
    )


def _cropping2d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args = layer.args
    height, width = layer.input_shape[:2]
    rows = f"{py(args['top'])}:{py(height - args['bottom'])}"
    columns = f"{py(args['left'])}:{py(width - args['right'])}"
    return _Piece(forward=[f"x = x[:, :, {rows}, {columns}]"])


def _cropping1d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args = layer.args
    return _Piece(forward=[f"x = x[:, {py(args['start'])}:{py(layer.input_shape[0] - args['end'])}]"])


def _upsample1d(layer: ir.Layer, ctx: _Context) -> _Piece:
    return _Piece(forward=[f"x = x.repeat_interleave({py(layer.args['size'])}, dim=1)"])


#: IR kind -> emitter(layer, context) -> _Piece.
EMITTERS: dict[str, Callable[[ir.Layer, _Context], _Piece]] = {
    "dense": _dense,
    "conv2d": _conv2d,
    "maxpool": _pool("nn.MaxPool2d"),
    "avgpool": _pool("nn.AvgPool2d"),
    "flatten": _flatten,
    "dropout": _dropout,
    "batchnorm": _batchnorm,
    "activation": _activation,
    "embedding": _embedding,
    "masking": _masking,
    "simplernn": _recurrent,
    "lstm": _recurrent,
    "gru": _recurrent,
    "bidirectional": _recurrent,
    "conv1d": _conv1d,
    "maxpool1d": _pool1d("nn.MaxPool1d"),
    "avgpool1d": _pool1d("nn.AvgPool1d"),
    "globalmaxpool1d": _global_pool("amax"),
    "globalavgpool1d": _global_pool("mean"),
    "globalmaxpool": _global_pool("amax"),
    "globalavgpool": _global_pool("mean"),
    "add": _broadcasting("+"),
    "multiply": _broadcasting("*"),
    "average": _broadcasting("+"),
    "concat": _concat,
    "zeropad2d": _zeropad2d,
    "depthwiseconv2d": _depthwiseconv2d,
    "separableconv2d": _separableconv2d,
    "conv2dtranspose": _conv2dtranspose,
    "upsample2d": _upsample2d,
    "layernorm": _layernorm,
    "reshape": _reshape,
    "permute": _permute,
    "subtract": _broadcasting("-"),
    "maximum": _extremum("maximum"),
    "minimum": _extremum("minimum"),
    "rescaling": _rescaling,
    "normalization": _normalization,
    "layerscale": _layerscale,
    "cropping2d": _cropping2d,
    "cropping1d": _cropping1d,
    "upsample1d": _upsample1d,
}


def _attribute_names(names: list[str]) -> dict[str, str]:
    """Local name -> attribute name in one module, avoiding nn.Module's own attributes."""
    taken: set[str] = set(names)
    out = {}
    for local in names:
        name = local
        if name.startswith("_"):  # torch's private attributes
            name = "layer" + name
        elif name in _MODULE_ATTRIBUTES:
            name += "_"
        if name != local:
            while name in taken or name in _MODULE_ATTRIBUTES:
                name += "_"
            taken.add(name)
        out[local] = codegen.ident(name)
    return out


def _reads(model: ir.Model) -> dict[str, tuple[str, ...]]:
    """Layer name -> the tensors it reads (a layer without ``inputs`` reads the one before it)."""
    out = {}
    previous = ir.INPUT_NAME
    for layer in model.layers:
        out[layer.name] = layer.inputs or (previous,)
        previous = layer.name
    return out


def _output_name(model: ir.Model) -> str:
    return model.output_layer.name if model.layers else ir.INPUT_NAME


def _consumers(model: ir.Model, reads: Mapping[str, tuple[str, ...]]) -> dict[str, list[ir.Layer]]:
    """Tensor name -> the layers that read it, in model order."""
    out: dict[str, list[ir.Layer]] = {}
    for layer in model.layers:
        for name in dict.fromkeys(reads[layer.name]):
            out.setdefault(name, []).append(layer)
    return out


def _flatten_orders(model: ir.Model, consumers: Mapping[str, list[ir.Layer]]) -> tuple[set[str], dict[str, ir.Shape]]:
    """Flattens that must keep Keras's order, and the layers whose feature axis is in torch's.

    The second maps a layer name to the (H, W, C) image shape whose flatten (in torch's
    (C, H, W) order) feeds it, through per-feature layers, up to and including the denses
    that absorb it. A flattened vector that reaches anything else (a merge, a reshape, the
    model output) keeps Keras's order instead.
    """
    keras_order: set[str] = set()
    permuted: dict[str, ir.Shape] = {}
    output = _output_name(model)
    for layer in model.layers:
        if layer.kind != "flatten" or not _is_image(layer.input_shape):
            continue
        downstream: dict[str, ir.Shape] = {}
        pending, absorbed = [layer], True
        while pending and absorbed:
            node = pending.pop()
            absorbed = node.name != output
            for later in consumers.get(node.name, []):
                if later.kind == "dense":
                    downstream[later.name] = layer.input_shape
                elif specs.REGISTRY[later.kind].per_feature:
                    downstream[later.name] = layer.input_shape
                    pending.append(later)
                else:
                    absorbed = False
        if absorbed:
            permuted.update(downstream)
        else:
            keras_order.add(layer.name)
    return keras_order, permuted


@dataclass
class _Unit:
    """One step of a module's forward pass: a layer, or a block instance's submodule."""

    local: str  # its name inside the module
    tensor: str  # the model-level name of the tensor it produces
    reads: tuple[str, ...]  # the model-level names of the tensors it reads
    layer: ir.Layer | None = None
    module: _Module | None = None
    attr: str = ""
    piece: _Piece = field(default_factory=_Piece)
    init: list[str] = field(default_factory=list)  # __init__ lines, with the comment
    forward: list[str] = field(default_factory=list)  # forward lines, bound to the module's variables


@dataclass
class _Module:
    """The model, or one block instance: an ``nn.Module`` of its own."""

    instance: str  # the model-level instance name; "" for the model
    units: list[_Unit]
    inputs: list[str]  # tensors it reads from outside, in order of first use (`x`, then the skips)
    output: str  # the tensor it returns
    class_name: str = ""
    params: list[str] = field(default_factory=list)  # forward's parameters, one per input
    prologue: list[str] = field(default_factory=list)  # forward's first lines (an alias of `x`)
    returns: str = "x"

    def walk(self, path: str = "") -> Iterator[tuple[_Module, str]]:
        """This module and every submodule below it, each with its attribute path."""
        yield self, path
        for unit in self.units:
            if unit.module is not None:
                yield from unit.module.walk(f"{path}{unit.attr}.")

    @property
    def has_weights(self) -> bool:
        return any(
            unit.module.has_weights if unit.module is not None else bool(unit.layer and unit.layer.weights)
            for unit in self.units
        )

    @property
    def has_constraints(self) -> bool:
        return any(
            unit.module.has_constraints if unit.module is not None else unit.piece.constraint is not None
            for unit in self.units
        )


def _submodules(
    model: ir.Model, reads: Mapping[str, tuple[str, ...]], consumers: Mapping[str, list[ir.Layer]]
) -> dict[str, str]:
    """Block instance -> its output tensor, for the instances that become submodules.

    An instance stays flat (its layers join the enclosing module) when its layers are not
    contiguous, when anything but its one output leaves it, or when it reads or passes a
    Keras mask (computed once, in the model's forward).
    """
    members: dict[str, list[int]] = {}
    for i, layer in enumerate(model.layers):
        for instance in layer.block:
            members.setdefault(instance, []).append(i)
    output = _output_name(model)
    out = {}
    for instance, indices in members.items():
        if indices != list(range(indices[0], indices[-1] + 1)):
            continue
        layers = [model.layers[i] for i in indices]
        if any(layer.input_masked or layer.output_masked for layer in layers):
            continue
        names = {layer.name for layer in layers}
        leaving = [
            name for name in names if name == output or any(c.name not in names for c in consumers.get(name, []))
        ]
        if len(leaving) == 1:
            out[instance] = leaving[0]
    return out


def _module(
    instance: str,
    layers: list[ir.Layer],
    depth: int,
    reads: Mapping[str, tuple[str, ...]],
    submodules: Mapping[str, str],
) -> _Module:
    """The module of one block instance (or of the model, ``instance=""``) over its layers."""

    def owner(layer: ir.Layer) -> str | None:
        chain = layer.block[: depth + 1]
        if len(layer.block) <= depth or not all(name in submodules for name in chain):
            return None
        return layer.block[depth]

    def local(name: str) -> str:
        prefix = f"{instance}_"
        return name[len(prefix) :] if instance and name.startswith(prefix) else name

    units = []
    i = 0
    while i < len(layers):
        child = owner(layers[i])
        if child is None:
            layer = layers[i]
            units.append(_Unit(local(layer.name), layer.name, reads[layer.name], layer=layer))
            i += 1
            continue
        end = i + 1
        while end < len(layers) and owner(layers[end]) == child:
            end += 1
        module = _module(child, layers[i:end], depth + 1, reads, submodules)
        units.append(_Unit(local(child), module.output, tuple(module.inputs), module=module))
        i = end
    names = {layer.name for layer in layers}
    inputs = [name for layer in layers for name in reads[layer.name] if name not in names]
    return _Module(instance, units, list(dict.fromkeys(inputs)), submodules.get(instance, ""))


#: Names a forward pass uses besides its tensors: never a tensor's variable.
_RESERVED_VARIABLES = (
    frozenset(keyword.kwlist)
    | frozenset(dir(builtins))
    | {"self", "x", "mask", "forward", "backward", "weights", "torch", "nn", "F", "max_norm_"}
    | {"simplernn_scan", "lstm_scan", "gru_scan"}  # _SCAN_HELPERS
)


def _fresh(base: str, taken: set[str]) -> str:
    name = base
    while name in taken or name in _RESERVED_VARIABLES:
        name += "_"
    taken.add(name)
    return codegen.ident(name)


def _bind(lines: list[str], source: str, target: str) -> list[str]:
    """Forward lines written on ``x``, reading ``source`` and leaving their result in ``target``.

    Reads of ``x`` before the lines first assign it become ``source``; the assigned ``x``, and
    every read after, become ``target``.
    """
    if source == target == "x":
        return lines
    out = []
    current = source
    for line in lines:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(line).readline) if t.type != tokenize.NL]
        depth, assignment = 0, None
        for token in tokens:
            if token.type == tokenize.OP:
                if token.string in "([{":
                    depth += 1
                elif token.string in ")]}":
                    depth -= 1
                elif token.string == "=" and depth == 0 and assignment is None:
                    assignment = token.start[1]
        edits = []
        assigns = False
        previous = None
        for token in tokens:
            if token.type == tokenize.NAME and token.string == "x" and previous != ".":
                column = token.start[1]
                if assignment is not None and column < assignment:
                    edits.append((column, target))
                    assigns = True
                else:
                    edits.append((column, current))
            previous = token.string
        for column, name in reversed(edits):
            line = line[:column] + name + line[column + 1 :]
        if assigns:
            current = target
        out.append(line)
    return out


@dataclass
class _Plan:
    """One description of the generated module tree, read by both the source writer and weight transfer."""

    root: _Module
    permuted: dict[str, ir.Shape]
    classes: list[tuple[str, list[str]]]  # block classes in definition order: name, body lines
    order: list[str]  # layer names in model order

    def layers(self) -> Iterator[tuple[ir.Layer, _Piece, str]]:
        """Every layer, in model order, with its piece and the attribute path of the module holding it."""
        found = {}
        for module, path in self.root.walk():
            for unit in module.units:
                if unit.layer is not None:
                    found[unit.layer.name] = (unit.layer, unit.piece, path)
        for name in self.order:
            yield found[name]


def _block_definitions(model: ir.Model) -> dict[str, str]:
    """Block instance name -> the block definition it calls (``conv_bn_2`` -> ``conv_bn``)."""
    return {
        instance: definition
        for layer in model.layers
        for instance, definition in zip(layer.block, layer.block_defs, strict=True)
    }


class _Planner:
    """Builds the module tree of a model: a forward per module, and one class per distinct block body."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        reads = _reads(model)
        consumers = _consumers(model, reads)
        self.keras_order, self.permuted = _flatten_orders(model, consumers)
        submodules = _submodules(model, reads, consumers)
        self.root = _module("", list(model.layers), 0, reads, submodules)
        self.root.inputs = [ir.INPUT_NAME]
        self.root.output = _output_name(model)
        self.blocks = _block_definitions(model)
        self.classes: list[tuple[str, list[str]]] = []
        self.class_of: dict[tuple[str, tuple[str, ...]], str] = {}
        #: never a block class's name: the model's class, `F` (torch.nn.functional), Python's builtins
        self.class_names = {codegen.camel_case(model.name), "F", *dir(builtins)}

    def plan(self) -> _Plan:
        self._emit(self.root)
        return _Plan(self.root, self.permuted, self.classes, [layer.name for layer in self.model.layers])

    def shape(self, tensor: str) -> ir.Shape:
        return self.model.input.shape if tensor == ir.INPUT_NAME else self.model.layer(tensor).output_shape

    def _emit(self, module: _Module) -> None:
        """Fill in each unit's attribute, piece and lines; name the block classes below, children first."""
        for unit in module.units:
            if unit.module is not None:
                self._emit(unit.module)
                self._name_class(unit.module, self.blocks[unit.module.instance])
        attrs = _attribute_names([unit.local for unit in module.units])
        taken = set(attrs.values())

        # Chains reuse `x`; a tensor read anywhere but right after it is made gets a variable.
        uses: dict[str, list[int]] = {}
        for i, unit in enumerate(module.units):
            for tensor in unit.reads:
                uses.setdefault(tensor, []).append(i)
        uses.setdefault(module.output, []).append(len(module.units))
        variables: set[str] = set()
        module.params = ["x", *(_fresh("skip", variables) for _ in module.inputs[1:])]
        made_at = {tensor: -1 for tensor in module.inputs}
        variable = dict(zip(module.inputs, module.params, strict=True))
        chained = {module.inputs[0]} if 0 in uses.get(module.inputs[0], []) else set()
        if any(i != 0 for i in uses.get(module.inputs[0], [])):
            variable[module.inputs[0]] = _fresh("inputs", variables)
            module.prologue = [f"{variable[module.inputs[0]]} = x"]
        for i, unit in enumerate(module.units):
            made_at[unit.tensor] = i
            if i + 1 in uses.get(unit.tensor, []):
                chained.add(unit.tensor)
            if any(j != i + 1 for j in uses.get(unit.tensor, [])) or unit.tensor not in chained:
                variable[unit.tensor] = _fresh(unit.local, variables)

        def read(tensor: str, at: int) -> str:
            return "x" if tensor in chained and made_at[tensor] == at - 1 else variable[tensor]

        for i, unit in enumerate(module.units):
            unit.attr = attrs[unit.local]
            sources = [read(tensor, i) for tensor in unit.reads]
            target = "x" if unit.tensor in chained else variable[unit.tensor]
            if unit.module is not None:
                shape = codegen.shape_comment(torch_shape(self.shape(unit.tensor)))
                block = self.blocks[unit.module.instance]
                unit.init = [f"# block {block} -> {shape}", f"self.{unit.attr} = {unit.module.class_name}()"]
                unit.forward = _bind([f"x = self.{unit.attr}({', '.join(sources)})"], "x", target)
            else:
                layer = unit.layer
                assert layer is not None
                ctx = _Context(unit.attr, taken, keras_order=layer.name in self.keras_order, inputs=tuple(sources))
                unit.piece = piece = EMITTERS[layer.kind](layer, ctx)
                comment = codegen.layer_comment(layer, torch_shape(layer.output_shape))
                source = sources[0] if len(sources) == 1 else "x"
                body = _bind(piece.forward, source, target)
                if not piece.forward and source != target:
                    body = [f"{target} = {source}"]
                unit.init = [comment, *piece.init] if piece.init else []
                unit.forward = body if piece.init else [comment, *body]
            if unit.tensor in chained and unit.tensor in variable:
                unit.forward.append(f"{variable[unit.tensor]} = x")
        module.returns = read(module.output, len(module.units))

    def _name_class(self, module: _Module, block: str) -> None:
        """Name the class of a block instance's module: one class per distinct generated body."""
        w = codegen.SourceWriter()
        with w.indent():
            fed = [codegen.shape_comment(torch_shape(self.shape(tensor))) for tensor in module.inputs]
            if len(fed) > 1:  # name each argument
                fed = [f"{param} {shape}" for param, shape in zip(module.params, fed, strict=True)]
            out = codegen.shape_comment(torch_shape(self.shape(module.output)))
            w.line(f'"""The `{block}` block: maps {", ".join(fed)} to {out}."""')
            _write_methods(w, module, is_model=False)
        body = tuple(w.lines)
        key = (block, body)
        if key not in self.class_of:
            base = codegen.camel_case(block)
            separator = "_" if base[-1].isdigit() else ""  # BnRelu6_2, not BnRelu62
            name, n = base, 1
            while name in self.class_names:
                n += 1
                name = f"{base}{separator}{n}"
            self.class_names.add(name)
            self.class_of[key] = name
            self.classes.append((name, list(body)))
        module.class_name = self.class_of[key]


def _plan(model: ir.Model) -> _Plan:
    return _Planner(model).plan()


_MAX_NORM_HELPER = '''\
def max_norm_(weight: torch.Tensor, max_value: float, dim: int | tuple[int, ...]) -> None:
    """Keras's MaxNorm, in place: shrink each slice whose L2 norm over `dim` exceeds `max_value`."""
    norm = torch.linalg.vector_norm(weight, dim=dim, keepdim=True)
    weight.mul_(norm.clamp(0, max_value) / (1e-7 + norm))
'''


#: Keras's recurrent layers step by step, for what torch's fused modules cannot express: masks of
#: any pattern, other activations, GRU reset_after=false. Each reads one direction of the layer's
#: torch module (``module.all_weights[i]``), so parameters stay where torch keeps them.
_SCAN_HELPERS = {
    "simplernn_scan": '''\
def simplernn_scan(x, mask, weights, activation=torch.tanh, reverse=False):
    """Keras's SimpleRNN over (N, T, F): every step's output (N, T, units), in reading order.

    Where `mask` (N, T) is False the state and output carry over from the step before, as in Keras.
    """
    w_ih, w_hh, b_ih, b_hh = (*weights, None, None)[:4]
    inputs = F.linear(x, w_ih, b_ih)  # every step's input projection at once
    h = x.new_zeros(x.shape[0], w_hh.shape[1])
    outputs = []
    for t in reversed(range(x.shape[1])) if reverse else range(x.shape[1]):
        h_new = activation(inputs[:, t] + F.linear(h, w_hh, b_hh))
        h = h_new if mask is None else torch.where(mask[:, t, None], h_new, h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)
''',
    "lstm_scan": '''\
def lstm_scan(x, mask, weights, activation=torch.tanh, recurrent_activation=torch.sigmoid, reverse=False):
    """Keras's LSTM over (N, T, F): every step's output (N, T, units), in reading order.

    Where `mask` (N, T) is False the state and output carry over from the step before, as in Keras.
    """
    w_ih, w_hh, b_ih, b_hh = (*weights, None, None)[:4]
    inputs = F.linear(x, w_ih, b_ih)  # every step's input projection at once
    h = c = x.new_zeros(x.shape[0], w_hh.shape[1])
    outputs = []
    for t in reversed(range(x.shape[1])) if reverse else range(x.shape[1]):
        i, f, g, o = (inputs[:, t] + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
        c_new = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
        h_new = recurrent_activation(o) * activation(c_new)
        if mask is None:
            h, c = h_new, c_new
        else:
            keep = mask[:, t, None]
            h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        outputs.append(h)
    return torch.stack(outputs, dim=1)
''',
    "gru_scan": '''\
def gru_scan(
    x, mask, weights, activation=torch.tanh, recurrent_activation=torch.sigmoid, reset_after=True, reverse=False
):
    """Keras's GRU over (N, T, F): every step's output (N, T, units), in reading order.

    Where `mask` (N, T) is False the state and output carry over from the step before, as in Keras.
    reset_after=False (Keras's original GRU) resets the state before the recurrent matmul.
    """
    w_ih, w_hh, b_ih, b_hh = (*weights, None, None)[:4]
    inputs = F.linear(x, w_ih, b_ih)  # every step's input projection at once
    units = w_hh.shape[1]
    h = x.new_zeros(x.shape[0], units)
    outputs = []
    for t in reversed(range(x.shape[1])) if reverse else range(x.shape[1]):
        x_r, x_z, x_n = inputs[:, t].chunk(3, dim=-1)  # torch's gate order: reset, update, new
        if reset_after:
            h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
            r = recurrent_activation(x_r + h_r)
            n = activation(x_n + r * h_n)
        else:
            h_r, h_z = F.linear(h, w_hh[: 2 * units]).chunk(2, dim=-1)
            r = recurrent_activation(x_r + h_r)
            n = activation(x_n + F.linear(r * h, w_hh[2 * units :]))
        z = recurrent_activation(x_z + h_z)
        h_new = z * h + (1 - z) * n
        h = h_new if mask is None else torch.where(mask[:, t, None], h_new, h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)
''',
}


def _short(value: float) -> float:
    """Nine significant digits: exact for float32 weights, and readable."""
    return float(f"{value:.9g}")


def _init_line(path: str, weight: ir.Weight) -> str:
    """``reset_parameters`` line drawing ``self.<path>`` from Keras's distribution for ``weight``."""
    dist = initializers.distribution(weight.initializer, weight.shape)
    limit, std = _short(dist.limit), _short(dist.std)
    target = Code(f"self.{path}")
    if dist.kind == "constant":
        if dist.value not in (0.0, 1.0):  # layer scale's 1e-6
            return call("nn.init.constant_", target, dist.value)
        return call("nn.init.ones_" if dist.value == 1.0 else "nn.init.zeros_", target)
    if dist.kind == "uniform":
        line = call("nn.init.uniform_", target, -limit, limit)
    elif dist.kind == "normal":
        line = call("nn.init.normal_", target, std=std)
    elif dist.kind == "truncated_normal":  # Keras redraws beyond two standard deviations
        line = call("nn.init.trunc_normal_", target, std=std, a=_short(-2 * dist.std), b=_short(2 * dist.std))
    else:  # orthogonal: torch's (out, in) is Keras's matrix transposed, the same distribution
        line = call("nn.init.orthogonal_", target, gain=dist.gain)
    return f"{line}  # Keras {weight.initializer}"


def _paths(target: str | tuple[str, ...]) -> tuple[str, ...]:
    return (target,) if isinstance(target, str) else target


def _reset_lines(layer: ir.Layer, piece: _Piece) -> list[str]:
    """``reset_parameters`` lines for one layer's weights (and torch's extra zero biases)."""
    lines = []
    for weight in layer.weights:
        pieces = initializers.segments(weight.initializer, weight.shape[-1] if weight.shape else 1)
        for path in _paths(piece.tensors[weight.name]):
            if len(pieces) == 1:
                lines.append(_init_line(path, weight))
                continue
            start = 0
            lines.append(f"# Keras {weight.initializer.split(':')[0]}: the forget gate's bias starts at 1")
            for initializer, length in pieces:
                part = ir.Weight(weight.name, (length,), weight.trainable, initializer)
                lines.append(_init_line(f"{path}[{start}:{start + length}]", part))
                start += length
    lines.extend(f"nn.init.zeros_(self.{path})  # Keras has no second bias" for path in piece.fixed_zero)
    return lines


def _write_methods(w: codegen.SourceWriter, module: _Module, *, is_model: bool) -> None:
    """``__init__``, ``forward``, ``reset_parameters`` (and ``apply_constraints``) of one module's class."""
    w.blank()
    w.line("def __init__(self) -> None:")
    with w.indent():
        w.line("super().__init__()")
        for unit in module.units:
            for line in unit.init:
                w.line(line)
        if is_model:  # a block's weights are drawn by the model's reset_parameters
            w.line("self.reset_parameters()")
    w.blank()
    params = ", ".join(f"{param}: torch.Tensor" for param in module.params)
    w.line(f"def forward(self, {params}) -> torch.Tensor:")
    with w.indent():
        for line in module.prologue:
            w.line(line)
        for unit in module.units:
            for line in unit.forward:
                w.line(line)
        w.line(f"return {module.returns}")
    if is_model or module.has_weights:
        w.blank()
        w.line("def reset_parameters(self) -> None:")
        with w.indent():
            w.line('"""Draw every weight from the distribution of the Keras initializer it names."""')
            for unit in module.units:
                if unit.module is not None:
                    if unit.module.has_weights:
                        w.line(f"self.{unit.attr}.reset_parameters()")
                    continue
                assert unit.layer is not None
                for line in _reset_lines(unit.layer, unit.piece):
                    w.line(line)
    if module.has_constraints:
        w.blank()
        w.line("@torch.no_grad()")
        w.line("def apply_constraints(self) -> None:")
        with w.indent():
            if is_model:
                w.line('"""Apply the max-norm constraints, as Keras does after each optimizer step.')
                w.blank()
                w.line("Call it after every `optimizer.step()`, for example with")
                w.line("`optimizer.register_step_post_hook(lambda *args: model.apply_constraints())`.")
                w.line('"""')
            else:
                w.line('"""Apply the max-norm constraints of this block\'s layers."""')
            for unit in module.units:
                if unit.module is not None:
                    if unit.module.has_constraints:
                        w.line(f"self.{unit.attr}.apply_constraints()")
                elif unit.piece.constraint:
                    w.line(unit.piece.constraint)


def _source(model: ir.Model) -> str:
    plan = _plan(model)
    class_name = codegen.camel_case(model.name)
    pieces = [piece for _, piece, _ in plan.layers()]
    lines = [line for module, _ in plan.root.walk() for unit in module.units for line in unit.forward]
    helpers = [name for name in _SCAN_HELPERS if any(name in p.helpers for p in pieces)]
    uses_functional = bool(helpers) or any("F." in line for line in lines)

    w = codegen.SourceWriter()
    images = any(len(layer.input_shape) == 3 or len(layer.output_shape) == 3 for layer in model.layers)
    note = "Needs only torch; image tensors are (N, C, H, W)." if images else "Needs only torch."
    w.line(codegen.module_docstring(model, "PyTorch", note))
    w.blank()
    w.line("import torch")
    if uses_functional:
        w.line("import torch.nn.functional as F")
    w.line("from torch import nn")
    w.blank(2)
    if plan.root.has_constraints:
        for line in _MAX_NORM_HELPER.splitlines():
            w.line(line)
        w.blank(2)
    for name in helpers:
        for line in _SCAN_HELPERS[name].splitlines():
            w.line(line)
        w.blank(2)
    for name, body in plan.classes:
        w.line(f"class {name}(nn.Module):")
        w.lines.extend(body)
        w.blank(2)
    fed = codegen.shape_comment(torch_shape(model.input.shape))
    out = codegen.shape_comment(torch_shape(model.output_shape))
    w.line(f"class {class_name}(nn.Module):")
    with w.indent():
        images = any(len(shape) == 3 for shape in (model.input.shape, model.output_shape))
        note = " (images channels-first)" if images else ""
        w.line(f'"""{model.name}: maps {fed} to {out}, as the Keras model does{note}."""')
        _write_methods(w, plan.root, is_model=True)
    w.blank(2)
    w.line(f"def build_model() -> {class_name}:")
    with w.indent():
        w.line(f"return {class_name}()")
    return w.text()


class TorchBackend(Backend):
    name = "torch"
    extra = "torch"
    emitters = EMITTERS
    unsupported: Mapping[str, str] = {}

    def emit_source(self, model: ir.Model) -> str:
        self.check_supported(model)
        return _source(model)

    def import_framework(self) -> Any:
        try:
            import torch
        except ImportError:
            raise missing_framework("torch", "torch", "torch") from None
        return torch

    def owns(self, obj: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(obj, torch.nn.Module)

    def _tensors(self, obj: Any, model: ir.Model) -> Iterator[tuple[str, list[Any], ir.Layer, ir.Weight, Any]]:
        """(canonical key, live tensors, layer, weight, flatten permutation or None) per weight."""
        plan = _plan(model)
        for layer, piece, module_path in plan.layers():
            shape = plan.permuted.get(layer.name)
            for weight in layer.weights:
                tensors = []
                for path in _paths(piece.tensors[weight.name]):
                    tensor = obj
                    for part in f"{module_path}{path}".split("."):
                        tensor = getattr(tensor, part)
                    tensors.append(tensor)
                order = permutation(shape) if shape is not None and feature_indexed(layer, weight) else None
                yield f"{layer.name}.{weight.name}", tensors, layer, weight, order

    def get_weights(self, obj: Any, model: ir.Model) -> dict[str, np.ndarray]:
        import numpy as np

        out = {}
        for key, tensors, layer, weight, order in self._tensors(obj, model):
            array = to_keras(layer, weight, [tensor.detach().cpu().float().numpy() for tensor in tensors])
            if order is not None:
                array = from_torch_order(array, order)
            out[key] = np.array(array, dtype=np.float32)  # a contiguous copy, not a view of the module
        return out

    def set_weights(self, obj: Any, model: ir.Model, weights: Mapping[str, np.ndarray]) -> None:
        import numpy as np
        import torch

        with torch.no_grad():
            for key, tensors, layer, weight, order in self._tensors(obj, model):
                array = np.asarray(weights[key], dtype=np.float32)
                if order is not None:
                    array = to_torch_order(array, order)
                for tensor, part in zip(tensors, to_torch(layer, weight, array), strict=True):
                    tensor.copy_(torch.from_numpy(np.ascontiguousarray(part)).reshape(tensor.shape))  # 0-d: a count
