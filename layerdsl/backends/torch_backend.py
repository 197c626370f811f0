"""The torch backend: IR -> an ``nn.Module`` subclass computing what the Keras model computes.

Layout: an image tensor, (H, W, C) in the IR, is (N, C, H, W) in torch; every
other tensor keeps the IR's order, so vectors are (N, F). Layers that think in
Keras's channels-last order (concat's axis, layernorm, reshape, permute) map
their axes to it.

Graphs: the forward pass follows each layer's ``inputs``. A chain keeps reusing
``x``; a tensor read anywhere but by the next step gets a variable named after
its layer, or after the `tap` that names it.

Blocks: one ``nn.Module`` class per block definition, as torchvision writes
``BasicBlock``. Each instance's class is written with its literals as holes
(``codegen.holes``) and the shared planner (``structure.unify``) makes one
definition of them: a literal that holds a block parameter in every instance
becomes that parameter, one that holds the input's channel count becomes
``in_channels`` (``in_features``), one that varies with nothing the block knows
(TensorFlow's `same` pads of a strided convolution, which depend on the input
size) a constructor argument of its own. Code structure therefore never depends
on the input's height and width: such a convolution always has its
``nn.ZeroPad2d``, and an option a block binds to a parameter (``stride=stride``)
is always written. A `repeat` of one block is an ``nn.Sequential`` built in a
loop (``structure.unify_iterations``: DenseNet's ``in_channels + i * 32``);
other repeats are unrolled. A block instance that reads more than its input (an
outer ``@tap``) or reads or passes a Keras mask is written inline, its layers
joining the enclosing module. Canonical weight keys stay flat
(``"<layer name>.<param>"``) whatever the nesting (``basic.1.conv_bn.conv.weight``).

Idioms: an activation right after a dense or conv that only it reads joins
that layer's line (``torch.relu(self.conv(x))``); symmetric zero padding is
torch's ``padding=1``, TensorFlow's `same` at stride 1 torch's ``padding="same"``
(an even kernel pads explicitly, as torch would copy the input); a run of 1-D
convolutions and pools stays in torch's (N, C, T), transposed once in and once
out. ``reset_parameters`` computes each Keras initializer from the tensor's
shape (``nn.init.xavier_uniform_`` is Keras's glorot_uniform for torch's
layouts; ``variance_scaling_`` counts Keras's fans where torch's differ), so
block classes carry no per-instance numbers.

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
other activations, GRU ``reset_after=false``) one step function emitted into
the generated module, ``rnn_scan`` (for all three kinds: a file carries at most
one helper), runs Keras's recurrence on that module's own weights.
Where Keras has one bias vector, torch's recurrent bias stays zero and untrained.

This module never imports torch at import time or while emitting source.
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import keyword
import re
import sys
import tokenize
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import codegen, initializers, ir, specs
from ..codegen import Code, call, py
from ..ir import Args
from . import structure
from .base import IR_ATTRIBUTE, Backend, missing_framework
from .torch_weights import (
    depthwise,
    feature_indexed,
    from_torch_order,
    kind_and_name,
    permutation,
    to_keras,
    to_torch,
    to_torch_order,
)

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
    "gelu_approximate": 'F.gelu({x}, approximate="tanh")',  # `gelu approximate=true`
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
    note: str = ""  # said after the layer's comment: a value converted on the way to torch


@dataclass
class _Context:
    """Model-level facts an emitter needs about its layer."""

    attr: str  # the layer's attribute name
    taken: set[str]  # every attribute name in use in its module
    keras_order: bool = False  # flatten: no dense absorbs the permutation
    #: the variables holding a merge's inputs, in order (other layers read `x`)
    inputs: tuple[str, ...] = ("x",)
    #: in a block's class: the layer options bound to the block's parameters (``stride=stride``),
    #: always written so that every instance's code has one structure
    bound: frozenset[str] = frozenset()
    #: in a block's class: what the input's channel count is (``in_channels``, ``filters``)
    channels: str | None = None
    #: in a block's class whose instances pad differently (`valid` in one, `same` in another):
    #: a conv whose padding is bound to a parameter always pads with its own ``nn.ZeroPad2d``
    uniform: bool = False
    in_block: bool = False  # the layer is written in a block's class
    #: in a block's class: the values of the block parameters its statement names
    named_values: tuple[Any, ...] = ()
    #: conv1d and 1-D pools: whether the input, and the output, stay in torch's (N, C, T) layout
    channels_first: tuple[bool, bool] = (False, False)

    def hint(self, count: int) -> Any:
        """The input's channel count, marked with what it is for the block planner."""
        return codegen.Hint(count, self.channels) if self.channels else count

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
        init=[f"self.{a} = {call('nn.Linear', ctx.hint(layer.input_shape[-1]), args['units'], **kwargs)}"],
        forward=[f"x = {_activate(args['activation'], f'self.{a}(x)', layer.output_shape)}"],
        tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"},
        constraint=None if args["maxnorm"] is None else f"max_norm_(self.{a}.weight, {py(args['maxnorm'])}, dim=1)",
    )


def _windowed_conv(
    piece: _Piece, layer: ir.Layer, ctx: _Context, attr: str, out_channels: int, *, groups: int = 1, bias: bool
) -> str:
    """Add ``self.<attr> = nn.Conv2d(...)`` with the layer's kernel, stride, dilation and TensorFlow padding.

    Returns the expression applying it to ``x``. `same` with stride 1 is torch's own ``padding="same"``;
    with a stride its pads depend on the input size, so an ``nn.ZeroPad2d`` always comes first (the
    code's structure never depends on the input size, only its pads do).
    """
    args = layer.args
    kwargs: dict[str, Any] = {"kernel_size": _size(args["kernel"])}
    strided = args["stride"] != (1, 1) or "stride" in ctx.bound
    if strided:
        kwargs["stride"] = _size(args["stride"])
    if args["dilation"] != (1, 1) or "dilation" in ctx.bound:
        kwargs["dilation"] = _size(args["dilation"])
    x = "x"
    # torch's own `same` pads an odd total after, as TensorFlow does, but copies the input to do it
    uneven = any(d * (k - 1) % 2 for k, d in zip(args["kernel"], args["dilation"], strict=True))
    # `same` never pads a 1x1 kernel (unless the kernel is a block parameter: one structure for every size)
    pointwise = args["kernel"] == (1, 1) and not any(_equal(args["kernel"], v) for v in ctx.named_values)
    if (args["pad"] == "same" and (strided or uneven) and not pointwise) or (ctx.uniform and "pad" in ctx.bound):
        (top, bottom), (left, right) = specs.spatial_padding(args, layer.input_shape, args["kernel"])
        pad = ctx.extra("pad")
        if ctx.uniform and "pad" in ctx.bound:  # one comment for every instance, whatever its padding
            piece.init.append("# each instance's pads: `same` as TensorFlow pads depends on the input size")
        elif args["pad"] == "same":
            why = "with a stride its pads depend on the input size" if strided else "the odd row/column bottom/right"
            piece.init.append(f"# TensorFlow's `same`: {why}")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad2d', codegen.Hint((left, right, top, bottom), 'pads'))}")
        x = f"self.{pad}(x)"
    elif args["pad"] == "same" and not pointwise:
        kwargs["padding"] = "same"
    elif isinstance(args["pad"], tuple) and (args["pad"] != (0, 0) or "pad" in ctx.bound):
        kwargs["padding"] = _size(args["pad"])
    if groups != 1:
        kwargs["groups"] = ctx.hint(groups)
    if not bias:
        kwargs["bias"] = False
    piece.init.append(f"self.{attr} = {call('nn.Conv2d', ctx.hint(layer.input_shape[2]), out_channels, **kwargs)}")
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
    out = channels * args["multiplier"]
    conv = _windowed_conv(
        piece, layer, ctx, a, ctx.hint(out) if args["multiplier"] == 1 else out, groups=channels, bias=args["bias"]
    )
    piece.forward.append(f"x = {_activate(args['activation'], conv, layer.output_shape)}")
    return piece


def _separableconv2d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args = layer.args
    channels = layer.input_shape[2]
    depth = channels * args["multiplier"]
    depthwise, pointwise = ctx.extra("depthwise"), ctx.extra("pointwise")
    piece = _Piece(tensors={"depthwise_kernel": f"{depthwise}.weight", "pointwise_kernel": f"{pointwise}.weight"})
    piece.init.append("# a depthwise convolution (groups=channels), then a 1x1 pointwise one")
    depth_ = ctx.hint(depth) if args["multiplier"] == 1 else depth
    conv = _windowed_conv(piece, layer, ctx, depthwise, depth_, groups=channels, bias=False)
    kwargs: dict[str, Any] = {} if args["bias"] else {"bias": False}
    piece.init.append(f"self.{pointwise} = {call('nn.Conv2d', depth_, args['filters'], 1, **kwargs)}")
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
    if args["stride"] != (1, 1) or "stride" in ctx.bound:
        kwargs["stride"] = _size(args["stride"])
    if rows[0] or cols[0]:
        kwargs["padding"] = _size((rows[0], cols[0]))
    if rows[1] or cols[1]:
        kwargs["output_padding"] = _size((rows[1], cols[1]))
    if not args["bias"]:
        kwargs["bias"] = False
    piece = _Piece(tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"})
    piece.init.append(f"self.{a} = {call('nn.ConvTranspose2d', ctx.hint(channels), args['filters'], **kwargs)}")
    conv = f"self.{a}(x)"
    if rows[2] or cols[2]:
        piece.forward.append("# TensorFlow crops `same`'s odd row/column at the bottom/right")
        conv += f"[:, :, {':-1' if rows[2] else ':'}, {':-1' if cols[2] else ':'}]"
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
    piece = _Piece(init=[f"self.{a} = {call('nn.LayerNorm', ctx.hint(channels), **kwargs)}"])
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
        piece.init.append(f"self.{beta} = nn.Parameter(torch.zeros({py(ctx.hint(channels))}))")
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
        explicit = "stride" in ctx.bound or args["stride"] != args["pool"]
        kwargs: dict[str, Any] = {"stride": _size(args["stride"])} if explicit else {}
        piece = _Piece()
        # with a stride, `same`'s pads depend on the input size: always pad explicitly (one structure)
        strided = args["stride"] != (1, 1) or "stride" in ctx.bound
        if (top, left) == (bottom, right) and not (args["pad"] == "same" and strided):
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
            piece.init.append(f"self.{pad} = {call('nn.ConstantPad2d', codegen.Hint(sides, 'pads'), _MINUS_INF)}")
            piece.init.append(f"self.{a} = {call(torch_class, _size(args['pool']), **kwargs)}")
            piece.forward.append(f"x = {pooled}")
            return piece
        coverage = ctx.extra("coverage")
        h, w = layer.input_shape[:2]
        piece.init.append("# padding is left out of each average: divide by the window's share of real inputs")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad2d', codegen.Hint(sides, 'pads'))}")
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
    momentum = float(1 - Decimal(repr(args["momentum"])))
    kwargs: dict[str, Any] = {"eps": args["eps"], "momentum": momentum}
    affine = args["center"] and args["scale"]
    if not affine:
        kwargs["affine"] = False
    torch_class = "nn.BatchNorm2d" if _is_image(shape) else "nn.BatchNorm1d"
    piece = _Piece(init=[f"self.{a} = {call(torch_class, ctx.hint(channels), **kwargs)}"])
    piece.note = f"Keras momentum {args['momentum']!r} is torch momentum={momentum!r}"
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
            piece.init.append(f"self.{gamma} = nn.Parameter(torch.ones({py(ctx.hint(channels))}))")
            piece.tensors["gamma"] = gamma
            x = f"{x} * self.{gamma}{broadcast}"
        if args["center"]:
            beta = ctx.extra("beta")
            piece.init.append(f"self.{beta} = nn.Parameter(torch.zeros({py(ctx.hint(channels))}))")
            piece.tensors["beta"] = beta
            x = f"{x} + self.{beta}{broadcast}"
    piece.forward.append(f"x = {x}")
    return piece


def _activation(layer: ir.Layer, ctx: _Context) -> _Piece:
    function = specs.activation_function(layer.args)
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
    piece = _Piece(
        init=[f"self.{a} = {call(_TORCH_RNN[kind], ctx.hint(layer.input_shape[-1]), args['units'], **kwargs)}"]
    )

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
    helper = "rnn_scan"
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
        return call(helper, kind, Code("x"), mask, Code(f"self.{a}.all_weights[{weights}]"), **extra)

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


def _channels_first_1d(expression: str, ctx: _Context) -> str:
    """``expression`` applied to (N, C, T): transposed from the (N, T, C) sequence layout where its input
    is in it, and back where its output leaves the run of 1-D convolutions and pools."""
    inner = expression.format(x="x" if ctx.channels_first[0] else "x.transpose(1, 2)")
    return inner if ctx.channels_first[1] else f"{inner}.transpose(1, 2)"


def _conv1d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    before, after = specs.padding_1d(args, layer.input_shape[0], args["kernel"])
    kwargs: dict[str, Any] = {}
    strided = args["stride"] != 1 or "stride" in ctx.bound
    if strided:
        kwargs["stride"] = args["stride"]
    if args["dilation"] != 1 or "dilation" in ctx.bound:
        kwargs["dilation"] = args["dilation"]
    piece = _Piece(tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"})
    x = "{x}"
    if args["pad"] == "causal" or (args["pad"] == "same" and (strided or args["dilation"] * (args["kernel"] - 1) % 2)):
        pad = ctx.extra("pad")
        why = "causal: pad only the past" if args["pad"] == "causal" else "TensorFlow's `same` pads the odd step after"
        piece.init.append(f"# {why}")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad1d', codegen.Hint((before, after), 'pads'))}")
        x = f"self.{pad}({{x}})"
    elif args["pad"] == "same":
        kwargs["padding"] = "same"  # as TensorFlow pads: an odd step goes after
    if args["groups"] != 1:
        kwargs["groups"] = args["groups"]
    if not args["bias"]:
        kwargs["bias"] = False
    piece.init.append(
        f"self.{a} = {call('nn.Conv1d', ctx.hint(layer.input_shape[1]), args['filters'], args['kernel'], **kwargs)}"
    )
    conv = _channels_first_1d(f"self.{a}({x})", ctx)
    channels = 1 if ctx.channels_first[1] else -1
    piece.forward.append(f"x = {_ACTIVATIONS[args['activation']].format(x=conv, channels=channels)}")
    if args["maxnorm"] is not None:
        piece.constraint = f"max_norm_(self.{a}.weight, {py(args['maxnorm'])}, dim=(1, 2))"
    return piece


def _pool1d(torch_class: str) -> Callable[[ir.Layer, _Context], _Piece]:
    def emit(layer: ir.Layer, ctx: _Context) -> _Piece:
        args, a = layer.args, ctx.attr
        before, after = specs.padding_1d(args, layer.input_shape[0], args["pool"])
        explicit = "stride" in ctx.bound or args["stride"] != args["pool"]
        kwargs: dict[str, Any] = {"stride": args["stride"]} if explicit else {}
        piece = _Piece()
        strided = args["stride"] != 1 or "stride" in ctx.bound
        if before == after and not (args["pad"] == "same" and strided):
            if before:
                # torch pads max pools with -inf; count_include_pad=False is TensorFlow's average
                kwargs["padding"] = before
                if torch_class == "nn.AvgPool1d":
                    kwargs["count_include_pad"] = False
            piece.init.append(f"self.{a} = {call(torch_class, args['pool'], **kwargs)}")
            piece.forward.append(f"x = {_channels_first_1d(f'self.{a}({{x}})', ctx)}")
            return piece
        # TensorFlow's `same` puts the odd padding step after, which torch's `padding` cannot express
        pad = ctx.extra("pad")
        pooled = f"self.{a}(self.{pad}({{x}}))"
        if torch_class == "nn.MaxPool1d":
            piece.init.append("# padding never wins a max")
            piece.init.append(
                f"self.{pad} = {call('nn.ConstantPad1d', codegen.Hint((before, after), 'pads'), _MINUS_INF)}"
            )
            piece.init.append(f"self.{a} = {call(torch_class, args['pool'], **kwargs)}")
            piece.forward.append(f"x = {_channels_first_1d(pooled, ctx)}")
            return piece
        coverage = ctx.extra("coverage")
        piece.init.append("# padding is left out of each average: divide by the window's share of real steps")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad1d', codegen.Hint((before, after), 'pads'))}")
        piece.init.append(f"self.{a} = {call(torch_class, args['pool'], **kwargs)}")
        piece.init.append(f"coverage = self.{a}(self.{pad}(torch.ones(1, 1, {py(layer.input_shape[0])})))")
        piece.init.append(f"self.register_buffer({py(coverage)}, coverage, persistent=False)")
        divided = f"{pooled.format(x='x' if ctx.channels_first[0] else 'x.transpose(1, 2)')} / self.{coverage}"
        piece.forward.append(f"x = {divided}" if ctx.channels_first[1] else f"x = ({divided}).transpose(1, 2)")
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
    piece.forward.append(f"x = x - self.{mean}{axes}")
    piece.forward.append(f"x = x / self.{variance}{axes}.sqrt().clamp(min=1e-7)")
    return piece


def _layerscale(layer: ir.Layer, ctx: _Context) -> _Piece:
    gamma = ctx.extra("gamma")
    init = f"torch.full(({py(layer.input_shape[-1])},), {py(layer.args['init'])})"
    return _Piece(
        init=[f"self.{gamma} = nn.Parameter({init})  # layer scale"],
        forward=[f"x = x * self.{gamma}{_per_channel(layer.input_shape)}"],
        tensors={"gamma": gamma},
    )


def _attention(layer: ir.Layer, ctx: _Context) -> _Piece:
    """torch's ``nn.MultiheadAttention`` where it computes Keras's layer (heads x key_dim = features,
    value_dim = key_dim); otherwise the file's own ``MultiHeadAttention``, one Linear per projection.
    Masked keys and (``causal``) later steps get -1e9 added to their scores, as Keras's softmax does."""
    args, a = layer.args, ctx.attr
    features, heads, key_dim = layer.input_shape[-1], args["heads"], args["key_dim"]
    value_dim = args["value_dim"] or key_dim
    memory_features = layer.input_shapes[1][-1] if len(layer.inputs) > 1 else features
    query, memory = (ctx.inputs[0], ctx.inputs[1]) if len(ctx.inputs) > 1 else ("x", "x")
    options: dict[str, Any] = {"dropout": args["dropout"]} if args["dropout"] else {}
    if not args["bias"]:
        options["bias"] = False
    if heads * key_dim != features or value_dim != key_dim:
        if memory_features != features:
            options["memory_features"] = memory_features
        keywords: dict[str, Any] = {"mask": Code("mask")} if layer.input_masked else {}
        if args["causal"]:
            keywords["causal"] = True
        projections = ("query", "key", "value", "output")
        return _Piece(
            init=[f"self.{a} = {call('MultiHeadAttention', ctx.hint(features), heads, key_dim, value_dim, **options)}"],
            forward=[f"x = {call(f'self.{a}', Code(query), Code(memory), **keywords)}"],
            tensors={f"{p}_{w}": f"{a}.{p}.{w.replace('kernel', 'weight')}" for p in projections for w in ("kernel", "bias")},
            helpers={"MultiHeadAttention"},
        )
    separate = memory_features != features  # torch then keeps q/k/v_proj_weight apart
    if separate:
        options.update(kdim=memory_features, vdim=memory_features)
    masks, lines = {}, []
    if layer.input_masked:
        lines.append(f"padding = (~mask).to({query}.dtype) * -1e9  # masked keys get no weight, as in Keras")
        masks["key_padding_mask"] = Code("padding")
    if args["causal"]:
        steps = f"{query}.shape[1], {memory}.shape[1]"
        lines.append(f"causal = {query}.new_full(({steps}), -1e9).triu(1)  # later steps get no weight, as in Keras")
        masks["attn_mask"] = Code("causal")
    attend = call(f"self.{a}", Code(query), Code(memory), Code(memory), **masks, need_weights=False)
    piece = _Piece(
        init=[f"self.{a} = {call('nn.MultiheadAttention', ctx.hint(features), heads, **options, batch_first=True)}"],
        forward=[*lines, f"x = {attend}[0]"],
        tensors={"output_kernel": f"{a}.out_proj.weight", "output_bias": f"{a}.out_proj.bias"},
    )
    for i, name in enumerate(("query", "key", "value")):
        piece.tensors[f"{name}_kernel"] = f"{a}.{name[0]}_proj_weight" if separate else f"{a}.in_proj_weight.chunk(3)[{i}]"
        piece.tensors[f"{name}_bias"] = f"{a}.in_proj_bias.chunk(3)[{i}]"  # [bq; bk; bv] either way
    return piece


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


def _posembed(layer: ir.Layer, ctx: _Context) -> _Piece:
    # the model's own parameter, (1, T, F) as torchvision's ViT holds its pos_embedding
    embeddings = ctx.attr
    steps, features = layer.input_shape
    return _Piece(
        init=[f"self.{embeddings} = nn.Parameter(torch.empty(1, {py(steps)}, {py(ctx.hint(features))}))"],
        forward=[f"x = x + self.{embeddings}  # learned position embedding"],
        tensors={"embeddings": embeddings},
    )


def _classtoken(layer: ir.Layer, ctx: _Context) -> _Piece:
    # (1, 1, F), expanded over the batch and prepended, as torchvision's ViT does its class_token
    token = ctx.attr
    piece = _Piece(
        init=[f"self.{token} = nn.Parameter(torch.zeros(1, 1, {py(ctx.hint(layer.input_shape[-1]))}))"],
        forward=[f"x = torch.cat([self.{token}.expand(x.shape[0], -1, -1), x], dim=1)"],
        tensors={"token": token},
    )
    if layer.input_masked:
        piece.forward.append("mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)  # the token counts")
    return piece


def _select(layer: ir.Layer, ctx: _Context) -> _Piece:
    return _Piece(forward=[f"x = x[:, {py(layer.args['index'])}]"])


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
    "posembed": _posembed,
    "classtoken": _classtoken,
    "select": _select,
    "attention": _attention,
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
    previous = model.input.name
    for layer in model.layers:
        out[layer.name] = layer.inputs or (previous,)
        previous = layer.name
    return out


def _output_name(model: ir.Model) -> str:
    return model.output_layer.name if model.layers else model.input.name


def _output_names(model: ir.Model) -> list[str]:
    return list(model.outputs) if model.layers else [model.input.name]


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
    outputs = set(_output_names(model))
    for layer in model.layers:
        if layer.kind != "flatten" or not _is_image(layer.input_shape):
            continue
        downstream: dict[str, ir.Shape] = {}
        pending, absorbed = [layer], True
        while pending and absorbed:
            node = pending.pop()
            absorbed = node.name not in outputs
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


#: Layers that read and write torch's (N, C, T) layout of a sequence.
_CHANNELS_FIRST_1D = frozenset({"conv1d", "maxpool1d", "avgpool1d"})

#: Layers with Keras's ``activation=`` option: an activation right after one folds into its forward line.
_FUSES_ACTIVATION = frozenset({"dense", "conv2d", "conv1d", "depthwiseconv2d", "separableconv2d", "conv2dtranspose"})


@dataclass
class _Unit:
    """One step of a module's forward pass: a layer, a block instance, or a repeat of block instances."""

    local: str  # its name inside the module
    tensor: str  # the model-level name of the tensor it produces
    reads: tuple[str, ...]  # the model-level names of the tensors it reads
    layer: ir.Layer | None = None
    modules: list[_Module] = field(default_factory=list)  # the block instance(s) it runs
    sequential: bool = False  # a repeat: ``nn.Sequential`` of ``modules``
    span: ir.Span | None = None  # the repeat's
    attr: str = ""
    piece: _Piece = field(default_factory=_Piece)
    init: list[str] = field(default_factory=list)  # __init__ lines, with the comment
    forward: list[str] = field(default_factory=list)  # forward lines, bound to the module's variables
    reset: list[str] = field(default_factory=list)  # reset_parameters lines
    constraint: list[str] = field(default_factory=list)  # apply_constraints lines


@dataclass
class _Module:
    """The model, or one block instance: an ``nn.Module`` of its own."""

    instance: str  # the model-level instance name; "" for the model
    units: list[_Unit]
    inputs: list[str]  # the tensor it reads
    output: str  # the tensor it returns
    call: ir.BlockCall | None = None
    height: int = 0  # 1 + the height of the tallest block instance inside it; 0 for the model
    class_name: str = ""
    positional: list[tuple[str, Any]] = field(default_factory=list)  # constructor arguments: (parameter, value)
    keywords: dict[str, Any] = field(default_factory=dict)  # those that differ from their defaults
    optional: dict[str, Any] = field(default_factory=dict)  # every parameter with a default: its value
    params: list[str] = field(default_factory=list)  # forward's parameters
    prologue: list[str] = field(default_factory=list)  # forward's first lines (an alias of `x`)
    returns: str = "x"
    #: The model's outputs, when it has several (``output`` is the first); empty for a block.
    outputs: list[str] = field(default_factory=list)

    def walk(self, path: str = "") -> Iterator[tuple[_Module, str]]:
        """This module and every submodule below it, each with its attribute path."""
        yield self, path
        for unit in self.units:
            for k, module in enumerate(unit.modules):
                yield from module.walk(f"{path}{unit.attr}.{k}." if unit.sequential else f"{path}{unit.attr}.")

    @property
    def has_weights(self) -> bool:
        return any(
            any(m.has_weights for m in unit.modules) if unit.modules else bool(unit.layer and unit.layer.weights)
            for unit in self.units
        )

    @property
    def has_constraints(self) -> bool:
        return any(
            any(m.has_constraints for m in unit.modules) if unit.modules else unit.piece.constraint is not None
            for unit in self.units
        )


#: Names a forward pass uses besides its tensors: never a tensor's variable.
_RESERVED_VARIABLES = (
    frozenset(keyword.kwlist)
    | frozenset(dir(builtins))
    | {"self", "x", "i", "mask", "forward", "backward", "weights", "torch", "nn", "F", "block", "padding", "causal"}
    | {"max_norm_", "variance_scaling_", "rnn_scan", "MultiHeadAttention"}  # the helpers
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
    classes: list[tuple[str, str]]  # block classes, callees first: name, body text
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


#: Where a block class's constructor parameters go, once the planner has found them.
_SIGNATURE = "\x01"
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BOUND = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=([A-Za-z_][A-Za-z0-9_]*)")


def _plain_name(name: str) -> bool:
    """A user's name that may name a variable or parameter: not private, dunder or one the code uses."""
    return not name.startswith("_") and name not in _RESERVED_VARIABLES


def _equal(value: Any, candidate: Any) -> bool:
    """``value`` (a literal in the code) is ``candidate`` (a block argument), a square size included."""
    if type(value) is type(candidate):
        return bool(value == candidate)
    return (
        isinstance(value, tuple)
        and bool(value)
        and type(candidate) is int
        and all(type(v) is int and v == candidate for v in value)
    )


def _only(candidates: list[str]) -> str | None:
    return candidates[0] if len(candidates) == 1 else None


def _dsl_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def _type_name(value: Any) -> str:
    if isinstance(value, tuple):
        return "tuple[int, ...]" if all(type(v) is int for v in value) else "tuple"
    return type(value).__name__ if isinstance(value, bool | int | float | str) else ""


_LINE_LENGTH = 120


class _Planner:
    """Builds the module tree of a model: one class per block definition, a forward per module."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.reads = _reads(model)
        self.consumers = _consumers(model, self.reads)
        self.keras_order, self.permuted = _flatten_orders(model, self.consumers)
        self.output = _output_name(model)
        self.outputs = _output_names(model)
        self.masks = structure.mask_variables(model)  # several masks alive at once: one variable each
        self.tap_names: dict[str, str] = {}
        self.uniform = False
        self.instances: dict[str, list[_Module]] = {}  # block -> its instances with a class, in model order
        self.classes: list[tuple[str, str]] = []
        #: never a block class's name: the model's class, `F` (torch.nn.functional), Python's builtins
        self.class_names = {_model_class(model), "F", "MultiHeadAttention", *dir(builtins)}
        body = model.body or tuple(ir.LayerNode(layer) for layer in model.layers)
        self.root = self._build(body, None)
        self.root.inputs = list(model.input_names)
        self.root.output = self.output
        self.root.outputs = self.outputs if len(self.outputs) > 1 else []

    def plan(self) -> _Plan:
        definitions = {block.name: (i, block) for i, block in enumerate(self.model.blocks)}
        for name in sorted(self.instances, key=lambda b: (max(m.height for m in self.instances[b]), definitions[b][0])):
            self._define(definitions[name][1], self.instances[name])
        self._emit(self.root, None)
        return _Plan(self.root, self.permuted, self.classes, [layer.name for layer in self.model.layers])

    def shape(self, tensor: str) -> ir.Shape:
        return self.model.tensor_shape(tensor)

    def channels(self, tensor: str) -> int | None:
        shape = self.shape(tensor)
        return shape[-1] if shape else None

    # --- the module tree -----------------------------------------------------------------------

    def _own_class(self, call: ir.BlockCall) -> bool:
        """Whether a block instance becomes a module of its own (else its layers join the enclosing one).

        It must read only its input and let only its output leave, and neither read nor pass a Keras
        mask (computed once, in the model's forward).
        """
        layers = ir.layers_of(call.body)
        if not layers or not structure.self_contained(call):
            return False
        if any(layer.input_masked or layer.output_masked for layer in layers):
            return False
        names = {layer.name for layer in layers}
        leaving = {
            name
            for name in names
            if name in self.outputs or any(c.name not in names for c in self.consumers.get(name, []))
        }
        return leaving == {call.output}

    def _build(self, nodes: tuple[ir.Node, ...], call: ir.BlockCall | None) -> _Module:
        prefix = f"{call.instance}_" if call is not None else ""
        units: list[_Unit] = []

        def local(name: str) -> str:
            return name[len(prefix) :] if prefix and name.startswith(prefix) else name

        def add(nodes: tuple[ir.Node, ...]) -> None:
            for node in nodes:
                if isinstance(node, ir.LayerNode):
                    layer = node.layer
                    units.append(_Unit(local(layer.name), layer.name, self.reads[layer.name], layer=layer))
                elif isinstance(node, ir.Tap) and _plain_name(node.name):
                    self.tap_names.setdefault(node.tensor, node.name)
                elif isinstance(node, ir.BlockCall):
                    if self._own_class(node):
                        module = self._build(node.body, node)
                        units.append(_Unit(local(node.instance), node.output, (node.input,), modules=[module]))
                    else:
                        add(node.body)
                elif isinstance(node, ir.Repeat):
                    calls = [it[0] for it in node.iterations if len(it) == 1 and isinstance(it[0], ir.BlockCall)]
                    if (
                        calls
                        and len(calls) == len(node.iterations)
                        and len({c.block for c in calls}) == 1
                        and all(self._own_class(c) for c in calls)
                    ):
                        modules = [self._build(c.body, c) for c in calls]
                        units.append(
                            _Unit(
                                local(calls[0].instance),
                                node.output,
                                (node.input,),
                                modules=modules,
                                sequential=True,
                                span=node.span,
                            )
                        )
                    else:
                        for iteration in node.iterations:
                            add(iteration)

        add(nodes)
        if call is None:
            return _Module("", units, [], "")
        module = _Module(call.instance, units, [call.input], call.output, call=call)
        module.height = 1 + max((m.height for unit in units for m in unit.modules), default=0)
        self.instances.setdefault(call.block, []).append(module)
        return module

    # --- one class per block definition ------------------------------------------------------

    def _inferred(self, tensor: str) -> str:
        """What a block's input channel count is called in its constructor."""
        return "in_channels" if len(self.shape(tensor)) >= 2 else "in_features"

    def _define(self, block: ir.BlockDef, modules: list[_Module]) -> None:
        """Write every instance's class under ``codegen.holes()`` and let the planner make one definition.

        When the instances' code differs in more than literals, it is written again with padding
        made uniform (see ``_Context.uniform``) before settling for a class per variant.
        """
        variants = self._variants(block, modules)
        if len(variants) > 1:
            self.uniform = True
            uniform = self._variants(block, modules)
            self.uniform = False
            if len(uniform) < len(variants):
                variants = uniform
            else:
                self._variants(block, modules)  # the units as the first variants wrote them
        self._name_classes(block, modules, variants)

    def _variants(self, block: ir.BlockDef, modules: list[_Module]) -> list[structure.Variant]:
        fragments, scopes = [], []
        for module in modules:
            assert module.call is not None
            # a parameter whose name Python would read otherwise (`__import__`, `self`) is never a name here
            args = {k: v for k, v in module.call.args.items() if _plain_name(k)}
            values = {self._inferred(module.call.input): self.channels(module.call.input), **args}
            scope = structure.Scope(values, {k: v for k, v in block.defaults.items() if k in args})
            with codegen.holes() as holes:
                self._emit(module, scope)
                w = codegen.SourceWriter()
                with w.indent():
                    signature = " ".join(
                        [block.name, *block.params, *(f"{k}={_dsl_value(v)}" for k, v in block.defaults.items())]
                    )
                    w.line(f'"""Block `{codegen.docstring_text(signature)}` (line {block.span.line})."""')
                    _write_methods(w, module, is_model=False)
                text = "\n".join(w.lines)
            fragments.append(structure.Fragment.of(text, holes))
            scopes.append(scope)
        return structure.unify(fragments, scopes, reserved=_RESERVED_VARIABLES | self.class_names)

    def _name_classes(self, block: ir.BlockDef, modules: list[_Module], variants: list[structure.Variant]) -> None:
        for variant in variants:
            base = codegen.camel_case(block.name)
            separator = "_" if base[-1].isdigit() else ""  # BnRelu6_2, not BnRelu62
            name, n = base, 1
            while name in self.class_names:
                n += 1
                name = f"{base}{separator}{n}"
            self.class_names.add(name)
            first = variant.arguments[0]
            params = []
            for p in variant.parameters:
                annotation = _type_name(first[p.name])
                text = f"{p.name}: {annotation}" if annotation else p.name
                if p.has_default:
                    text += f" = {codegen.literal(p.default)}" if annotation else f"={codegen.literal(p.default)}"
                params.append(text)
            lines = []
            for line in variant.text.split("\n"):
                if _SIGNATURE in line:
                    lines.extend(_wrapped(line.replace(_SIGNATURE, "".join(f", {p}" for p in params))))
                else:
                    lines.append(line)
            self.classes.append((name, "\n".join(lines)))
            for member, values in zip(variant.members, variant.arguments, strict=True):
                module = modules[member]
                module.class_name = name
                module.positional = [(p.name, values[p.name]) for p in variant.parameters if not p.has_default]
                module.keywords = variant.call_arguments(member)[1]
                module.optional = {p.name: values[p.name] for p in variant.parameters if p.has_default}

    # --- the code of one module ----------------------------------------------------------------

    def _meaning(self, value: Any, scope: structure.Scope | None, words: set[str] | None = None) -> str | None:
        """The one block parameter (among ``words``, if given) whose value ``value`` is, if any;
        ``in_channels`` only where the statement names it (`dense in_channels`)."""
        if scope is None:
            return None
        derived = ("in_channels", "in_features")
        names = [n for n in scope.values if n not in derived or (words is not None and n in words)]
        return _only([n for n in names if (words is None or n in words) and _equal(value, scope.values[n])])

    def _written(self, span: ir.Span) -> str:
        """The source text of a statement (its first line), for the names it binds."""
        lines = self.model.source_text.splitlines()
        if not 0 < span.line <= len(lines):
            return ""
        line = lines[span.line - 1]
        return line[span.column - 1 : span.end_column - 1] if span.end_line == span.line else line[span.column - 1 :]

    def _construct(self, module: _Module, channels: str | None, scope: structure.Scope | None) -> str:
        """``ClassName(arguments)`` for a block instance, each argument marked with what it is.

        In a block, an option the call binds to a parameter (``stride=stride``) is always passed,
        so that every instance's code has one structure.
        """
        assert module.call is not None
        written = self._written(module.call.span) if scope is not None else ""
        words = set(_WORD.findall(written)[1:])
        bound = {k for k, v in _BOUND.findall(written) if scope is not None and v in scope.values}

        def argument(name: str, value: Any) -> Any:
            meaning = channels if name in ("in_channels", "in_features") else self._meaning(value, scope, words)
            return codegen.Hint(value, meaning) if meaning else value

        positional = [argument(name, value) for name, value in module.positional]
        chosen = {**module.keywords, **{k: v for k, v in module.optional.items() if k in bound}}
        keywords = {name: argument(name, module.optional[name]) for name in module.optional if name in chosen}
        return call(module.class_name, *positional, **keywords)

    def _instances(self, unit: _Unit, channels: str | None, scope: structure.Scope | None) -> str:
        """The expression that makes a unit's block instance(s)."""
        if not unit.sequential:
            return self._construct(unit.modules[0], channels, scope)
        fragments = []
        for k, module in enumerate(unit.modules):
            with codegen.holes() as holes:
                text = self._construct(module, channels if k == 0 else None, scope)
            fragments.append(structure.Fragment.of(text, holes))
        loop = structure.unify_iterations(fragments)
        if loop is None:
            return f"nn.Sequential({', '.join(_embed(f) for f in fragments)})"
        count = len(unit.modules)
        repeat = self._written(unit.span) if scope is not None and unit.span is not None else ""
        meaning = self._meaning(count, scope, set(_WORD.findall(repeat)[1:2]))
        index = "i" if re.search(r"\bi\b", loop.render()) else "_"
        return f"nn.Sequential(*[{_embed(loop)} for {index} in range({py(codegen.Hint(count, meaning) if meaning else count)})])"

    def _emit(self, module: _Module, scope: structure.Scope | None) -> None:
        """Fill in each unit's attribute, piece and lines. ``scope``: the block instance's, None for the model."""
        in_block = scope is not None
        attrs = _attribute_names([unit.local for unit in module.units])
        taken = set(attrs.values())

        # Chains reuse `x`; a tensor read anywhere but right after it is made gets a variable.
        uses: dict[str, list[int]] = {}
        for i, unit in enumerate(module.units):
            for tensor in unit.reads:
                uses.setdefault(tensor, []).append(i)
        for output in module.outputs or [module.output]:
            uses.setdefault(output, []).append(len(module.units))
        variables: set[str] = set()
        module.params = ["x"]
        module.prologue = []
        made_at = {tensor: -1 for tensor in module.inputs}
        if len(module.inputs) > 1:  # forward(self, ids, segments): each input is a parameter named after it
            module.params = [_fresh(self.tap_names.get(name, name), variables) for name in module.inputs]
        variable = dict(zip(module.inputs, module.params, strict=True))
        chained = {module.inputs[0]} if 0 in uses.get(module.inputs[0], []) and len(module.inputs) == 1 else set()
        if len(module.inputs) == 1 and any(i != 0 for i in uses.get(module.inputs[0], [])):
            variable[module.inputs[0]] = _fresh(self.tap_names.get(module.inputs[0], "inputs"), variables)
            module.prologue = [f"{variable[module.inputs[0]]} = x"]
        for i, unit in enumerate(module.units):
            made_at[unit.tensor] = i
            if i + 1 in uses.get(unit.tensor, []):
                chained.add(unit.tensor)
            if any(j != i + 1 for j in uses.get(unit.tensor, [])) or unit.tensor not in chained:
                variable[unit.tensor] = _fresh(self.tap_names.get(unit.tensor, unit.local), variables)

        def read(tensor: str, at: int) -> str:
            return "x" if tensor in chained and made_at[tensor] == at - 1 else variable[tensor]

        # An activation right after a dense or conv that only it reads folds into that layer's line.
        fused: dict[int, str] = {}
        for i, unit in enumerate(module.units[1:], start=1):
            before = module.units[i - 1]
            if (
                unit.layer is not None
                and unit.layer.kind == "activation"
                and unit.layer.args["function"] != "linear"
                and before.layer is not None
                and before.layer.kind in _FUSES_ACTIVATION
                and before.layer.args["activation"] == "linear"
                and unit.reads == (before.tensor,)
                and uses.get(before.tensor) == [i]
            ):
                fused[i - 1] = specs.activation_function(unit.layer.args)

        # A run of 1-D convolutions and pools stays in torch's (N, C, T): one transpose in, one out.
        def runs_1d(j: int) -> bool:
            layer = module.units[j].layer if j < len(module.units) else None
            return layer is not None and layer.kind in _CHANNELS_FIRST_1D

        channels_first = {
            unit.tensor
            for i, unit in enumerate(module.units)
            if runs_1d(i) and unit.tensor not in (module.outputs or [module.output]) and all(runs_1d(j) for j in uses.get(unit.tensor, [-1]))
        }

        meanings: dict[str, str | None] = {module.inputs[0]: self._inferred(module.inputs[0]) if in_block else None}
        for i, unit in enumerate(module.units):
            unit.attr = attrs[unit.local]
            sources = [read(tensor, i) for tensor in unit.reads]
            target = "x" if unit.tensor in chained else variable[unit.tensor]
            channels = meanings.get(unit.reads[0]) if unit.reads else None
            words = None
            if unit.modules:
                unit.init = [f"self.{unit.attr} = {self._instances(unit, channels, scope)}"]
                if not in_block:
                    what = self._call_text(unit.modules[0].call)
                    if unit.sequential:
                        what = f"repeat {len(unit.modules)} {{ {what} }}"
                    shape = codegen.shape_comment(torch_shape(self.shape(unit.tensor)))
                    unit.init = _commented(unit.init, f"# line {unit.modules[0].call.span.line}: {what} -> {shape}")
                unit.forward = _bind([f"x = self.{unit.attr}(x)"], sources[0], target)
                if any(m.has_weights for m in unit.modules):
                    unit.reset = (
                        [f"for block in self.{unit.attr}:", "    block.reset_parameters()"]
                        if unit.sequential
                        else [f"self.{unit.attr}.reset_parameters()"]
                    )
                if any(m.has_constraints for m in unit.modules):
                    unit.constraint = (
                        [f"for block in self.{unit.attr}:", "    block.apply_constraints()"]
                        if unit.sequential
                        else [f"self.{unit.attr}.apply_constraints()"]
                    )
            else:
                layer = unit.layer
                assert layer is not None
                emitted = layer
                if i in fused:
                    items = tuple((k, fused[i] if k == "activation" else v) for k, v in layer.args.items())
                    emitted = dataclasses.replace(layer, args=Args(items))
                if in_block:
                    words = set(_WORD.findall(layer.written)[1:])
                    bound = frozenset(k for k, v in _BOUND.findall(layer.written) if v in scope.values)
                    ctx = _Context(
                        unit.attr,
                        taken,
                        keras_order=layer.name in self.keras_order,
                        inputs=tuple(sources),
                        bound=bound,
                        channels=channels,
                        uniform=self.uniform,
                        in_block=True,
                        named_values=tuple(scope.values[w] for w in words if w in scope.values),
                        channels_first=(unit.reads[0] in channels_first, unit.tensor in channels_first),
                    )
                    with codegen.holes() as holes:
                        piece = _Piece() if i - 1 in fused else EMITTERS[layer.kind](emitted, ctx)
                        reset = _reset_lines(layer, piece)

                    sizes = structure.written_sizes(layer)  # `in_channels//heads` as written

                    def marked(text: str, holes: Any = holes, words: set[str] = words, sizes: Any = sizes) -> str:
                        fragment = structure.Fragment.of(text, holes)
                        meanings_ = [
                            m if m is not None else (self._meaning(v, scope, words) or _written_size(v, sizes))
                            for v, m in zip(fragment.values, fragment.meanings, strict=True)
                        ]
                        return _embed(structure.Fragment(fragment.text, fragment.values, tuple(meanings_)))

                    def plain(text: str, holes: Any = holes) -> str:
                        return structure.Fragment.of(text, holes).render()

                    init = [marked(line) for line in piece.init]
                    forward = [plain(line) for line in piece.forward]
                    unit.reset = [plain(line) for line in reset]
                    unit.constraint = [plain(piece.constraint)] if piece.constraint else []
                    comment = f"# line {layer.span.line}: {layer.written}"
                else:
                    ctx = _Context(
                        unit.attr,
                        taken,
                        keras_order=layer.name in self.keras_order,
                        inputs=tuple(sources),
                        channels_first=(unit.reads[0] in channels_first, unit.tensor in channels_first),
                    )
                    piece = _Piece() if i - 1 in fused else EMITTERS[layer.kind](emitted, ctx)
                    init, forward = piece.init, structure.rename_variable(
                        piece.forward, "mask", self.masks.get(layer.name, "mask")
                    )
                    unit.reset = _reset_lines(layer, piece)
                    unit.constraint = [piece.constraint] if piece.constraint else []
                    comment = codegen.layer_comment(layer, torch_shape(layer.output_shape))
                unit.piece = piece
                if piece.note:
                    comment += f" ({piece.note})"
                source = sources[0] if len(sources) == 1 else "x"
                body = _bind(forward, source, target)
                if not forward and source != target:
                    body = [f"{target} = {source}"]
                if in_block:  # the comment above its layer (its length varies with what the planner names)
                    unit.init = [comment, *init] if init else []
                    unit.forward = body
                elif i - 1 in fused:  # the activation's comment goes with the line it joined
                    unit.forward = body
                    module.units[i - 1].forward = _commented(module.units[i - 1].forward, comment)
                else:
                    unit.init = _commented(init, comment) if init else []
                    unit.forward = body if init else _commented(body, comment)
            if unit.tensor in chained and unit.tensor in variable:
                unit.forward.append(f"{variable[unit.tensor]} = x")
            meanings[unit.tensor] = self._channel_meaning(unit, scope, channels, words)
        module.returns = ", ".join(read(output, len(module.units)) for output in module.outputs or [module.output])

    def _call_text(self, node: ir.BlockCall | None) -> str:
        """``down 128 stride=2``: a block call as the DSL writes it, for a comment."""
        assert node is not None
        block = self.model.block(node.block)
        words = [node.block, *(_dsl_value(node.args[p]) for p in block.params)]
        words += [f"{k}={_dsl_value(node.args[k])}" for k, v in block.defaults.items() if node.args[k] != v]
        return " ".join(words)

    def _channel_meaning(
        self, unit: _Unit, scope: structure.Scope | None, channels: str | None, words: set[str] | None
    ) -> str | None:
        """What the channel count of a unit's output is, in a block: a parameter, or its input's."""
        count = self.channels(unit.tensor)
        if scope is None or count is None:
            return None
        meaning = self._meaning(count, scope, words)
        if meaning is None and unit.reads and count == self.channels(unit.reads[0]):
            meaning = channels
        if meaning is None and unit.layer is not None:  # `conv2d max(8,in_channels//4) 1`: its output's width
            meaning = _written_size(count, structure.written_sizes(unit.layer))
        return meaning


def _commented(lines: list[str], comment: str) -> list[str]:
    """A one-line statement with its comment after it when that fits a line of a method, else above it."""
    if len(lines) == 1 and not lines[0].startswith("#") and 8 + len(lines[0]) + 2 + len(comment) <= _LINE_LENGTH:
        return [f"{lines[0]}  {comment}"]
    return [comment, *lines]


def _wrapped(line: str) -> list[str]:
    """A statement as ruff formats one too long for a line: its outermost brackets' contents on a line
    of their own, or one item a line (with a trailing comma) when they do not fit either."""
    code = line.lstrip()
    if (
        len(line) <= _LINE_LENGTH
        or code.startswith("#")
        or "#" in code
        or "(" not in code
        or not code.endswith((")", ":"))
    ):
        return [line]
    indent = line[: len(line) - len(code)]
    head, rest = line.split("(", 1)
    inner, tail = rest.rsplit(")", 1)
    if len(indent) + 4 + len(inner) <= _LINE_LENGTH:
        return [f"{head}(", f"{indent}    {inner}", f"{indent}){tail}"]
    items, depth, start, quote = [], 0, 0, ""
    for k, ch in enumerate(inner):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:k].strip())
            start = k + 1
    items.append(inner[start:].strip())
    return [f"{head}(", *(f"{indent}    {item}," for item in items), f"{indent}){tail}"]


def _embed(fragment: structure.Fragment) -> str:
    """A fragment's text in the code being written: its holes become holes there (or literals)."""

    def hole(index: int) -> str:
        value, meaning = fragment.values[index], fragment.meanings[index]
        return py(codegen.Hint(value, meaning) if meaning else value)

    return fragment.render(hole)


def _written_size(value: Any, sizes: Mapping[int, str]) -> str | None:
    """An expression the statement wrote for this size (a parameter's name is found by value already)."""
    written = sizes.get(value) if type(value) is int else None
    return written if written is not None and not written.isidentifier() else None


def _plan(model: ir.Model) -> _Plan:
    return _Planner(model).plan()


_MAX_NORM_HELPER = '''\
def max_norm_(weight: torch.Tensor, max_value: float, dim: int | tuple[int, ...]) -> None:
    """Keras's MaxNorm, in place: shrink each slice whose L2 norm over `dim` exceeds `max_value`."""
    norm = torch.linalg.vector_norm(weight, dim=dim, keepdim=True)
    weight.mul_(norm.clamp(0, max_value) / (1e-7 + norm))
'''


#: Keras's MultiHeadAttention where nn.MultiheadAttention cannot hold it (heads x key_dim other than
#: the features, value_dim other than key_dim): written into the generated file once.
_ATTENTION_HELPER = '''\
class MultiHeadAttention(nn.Module):
    """Keras's MultiHeadAttention: queries from `x`, keys and values from `memory`, one Linear per
    projection. Keys where `mask` (N, S) is False, and with `causal` later steps, get no weight."""

    def __init__(self, features, heads, key_dim, value_dim, memory_features=None, dropout=0.0, bias=True):
        super().__init__()
        memory_features = memory_features or features
        self.heads, self.scale = heads, key_dim**-0.5
        self.query = nn.Linear(features, heads * key_dim, bias=bias)
        self.key = nn.Linear(memory_features, heads * key_dim, bias=bias)
        self.value = nn.Linear(memory_features, heads * value_dim, bias=bias)
        self.output = nn.Linear(heads * value_dim, features, bias=bias)
        self.dropout = nn.Dropout(dropout)  # on the attention probabilities, as Keras

    def forward(self, x, memory, mask=None, causal=False):
        n, t, s = x.shape[0], x.shape[1], memory.shape[1]
        query = self.query(x).view(n, t, self.heads, -1).transpose(1, 2) * self.scale
        key = self.key(memory).view(n, s, self.heads, -1).transpose(1, 2)
        value = self.value(memory).view(n, s, self.heads, -1).transpose(1, 2)
        scores = query @ key.transpose(2, 3)  # (N, heads, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], -1e9)
        if causal:
            scores = scores.masked_fill(torch.ones(t, s, dtype=torch.bool, device=x.device).triu(1), -1e9)
        heads = self.dropout(scores.softmax(dim=-1)) @ value  # (N, heads, T, value_dim)
        return self.output(heads.transpose(1, 2).reshape(n, t, -1))
'''


#: Keras's recurrent layers step by step, for what torch's fused modules cannot express: masks of
#: any pattern, other activations, GRU reset_after=false. It reads one direction of the layer's
#: torch module (``module.all_weights[i]``), so parameters stay where torch keeps them.
_SCAN_HELPER = '''\
def rnn_scan(
    cell, x, mask, weights, activation=torch.tanh, recurrent_activation=torch.sigmoid, reset_after=True, reverse=False
):
    """Keras's SimpleRNN, LSTM or GRU (`cell`) over (N, T, F): every step's output (N, T, units), in reading order.

    Where `mask` (N, T) is False the state and output carry over from the step before, as in Keras.
    GRU reset_after=False (Keras's original GRU) resets the state before the recurrent matmul.
    """
    w_ih, w_hh, b_ih, b_hh = (*weights, None, None)[:4]
    inputs = F.linear(x, w_ih, b_ih)  # every step's input projection at once
    units = w_hh.shape[1]
    h = c = x.new_zeros(x.shape[0], units)
    outputs = []
    for t in reversed(range(x.shape[1])) if reverse else range(x.shape[1]):
        keep = None if mask is None else mask[:, t, None]
        if cell == "simplernn":
            h_new = activation(inputs[:, t] + F.linear(h, w_hh, b_hh))
        elif cell == "lstm":
            i, f, g, o = (inputs[:, t] + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
            c_new = recurrent_activation(f) * c + recurrent_activation(i) * activation(g)
            h_new = recurrent_activation(o) * activation(c_new)
            c = c_new if keep is None else torch.where(keep, c_new, c)
        else:  # gru, in torch's gate order: reset, update, new
            x_r, x_z, x_n = inputs[:, t].chunk(3, dim=-1)
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
        h = h_new if keep is None else torch.where(keep, h_new, h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)
'''


_VARIANCE_SCALING_HELPER = '''\
@torch.no_grad()
def variance_scaling_(
    weight: torch.Tensor, scale: float, mode: str, distribution: str, multiplier: int = 0
) -> torch.Tensor:
    """Keras's VarianceScaling initializer (glorot, he and lecun, uniform or truncated normal), in place.

    Fans are Keras's, counted on torch's layout (out, in, *window); a depthwise kernel,
    (channels * multiplier, 1, *window), passes its multiplier.
    """
    window = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * window, weight.shape[0] * window
    if multiplier:
        fan_in, fan_out = weight.shape[0] // multiplier * window, multiplier * window
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    variance = scale / max(1.0, fan)
    if distribution == "uniform":
        return nn.init.uniform_(weight, -((3 * variance) ** 0.5), (3 * variance) ** 0.5)
    std = variance**0.5 / 0.87962566103423978  # the truncated distribution keeps the variance
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
'''

#: Keras initializer -> the torch initializer that draws exactly from it, fans counted alike.
_TORCH_INITIALIZERS = {
    "glorot_uniform": ("nn.init.xavier_uniform_", {}),
    "he_uniform": ("nn.init.kaiming_uniform_", {"nonlinearity": "relu"}),
    "lecun_uniform": ("nn.init.kaiming_uniform_", {"nonlinearity": "linear"}),
}


def _short(value: float) -> float:
    """Nine significant digits: exact for float32 weights, and readable."""
    return float(f"{value:.9g}")


#: Kinds whose torch tensor is the Keras weight as it is (behind leading axes of one): its
#: initializer's limits come from the Keras shape, not from torch's (out, in) reading of it.
#: Kinds whose Keras weight shape gives other fans than their torch tensor's: the limits are written out
#: (an attention kernel's fans are those of its (F, heads, dim) Keras kernel).
_OWN_LAYOUT = frozenset({"embedding", "posembed", "classtoken", "attention"})
_LEADING_ONES = frozenset({"posembed", "classtoken"})


def _init_line(path: str, weight: ir.Weight, layer: ir.Layer) -> str:
    """``reset_parameters`` line drawing ``self.<path>`` from Keras's distribution for ``weight``.

    Limits and deviations that depend on the weight's shape are computed from the torch tensor's
    shape (by torch's own initializers, or ``variance_scaling_``), never written in: the line is the
    same for every instance of a block.
    """
    dist = initializers.distribution(weight.initializer, weight.shape)
    target = Code(f"self.{path}")
    if dist.kind == "constant":
        if dist.value not in (0.0, 1.0):  # layer scale's 1e-6
            return call("nn.init.constant_", target, dist.value)
        return call("nn.init.ones_" if dist.value == 1.0 else "nn.init.zeros_", target)
    kind, name = kind_and_name(layer, weight)
    if kind in _LEADING_ONES:  # (1, T, F) and (1, 1, F) hold the Keras weight
        target = Code(f"self.{path}[0]" if kind == "posembed" else f"self.{path}[0, 0]")
    if weight.initializer in initializers._VARIANCE_SCALING and len(weight.shape) >= 2 and kind not in _OWN_LAYOUT:
        if weight.initializer in _TORCH_INITIALIZERS and not depthwise(kind, name):
            function, kwargs = _TORCH_INITIALIZERS[weight.initializer]
            return f"{call(function, target, **kwargs)}  # Keras {weight.initializer}"
        scale, mode, distribution = initializers._VARIANCE_SCALING[weight.initializer]
        extra = {"multiplier": layer.args["multiplier"]} if depthwise(kind, name) else {}
        return f"{call('variance_scaling_', target, scale, mode, distribution, **extra)}  # Keras {weight.initializer}"
    limit, std = _short(dist.limit), _short(dist.std)
    if dist.kind == "uniform":
        line = call("nn.init.uniform_", target, -limit, limit)
    elif dist.kind == "normal":
        line = call("nn.init.normal_", target, std=std)
    elif dist.kind == "truncated_normal":  # Keras redraws beyond two standard deviations
        line = call("nn.init.trunc_normal_", target, std=std, a=_short(-2 * dist.std), b=_short(2 * dist.std))
    else:  # orthogonal: torch's (out, in) is Keras's matrix transposed, the same distribution
        line = call("nn.init.orthogonal_", target, gain=dist.gain)
    return f"{line}  # Keras {weight.initializer}"


_CHUNK = re.compile(r"chunk\((\d+)\)\[(\d+)\]")


def _paths(target: str | tuple[str, ...]) -> tuple[str, ...]:
    return (target,) if isinstance(target, str) else target


#: Keras's defaults that torch's own ``reset_parameters`` of a normalization draws alike.
_TORCH_NORM_DEFAULTS = {"gamma": "ones", "beta": "zeros", "moving_mean": "zeros", "moving_variance": "ones"}
_TORCH_NORM_PATHS = {
    "gamma": ".weight",
    "beta": ".bias",
    "moving_mean": ".running_mean",
    "moving_variance": ".running_var",
}


def _reset_lines(layer: ir.Layer, piece: _Piece) -> list[str]:
    """``reset_parameters`` lines for one layer's weights (and torch's extra zero biases)."""
    owner = str(piece.tensors.get("gamma", "")).rsplit(".", 1)[0]
    if (
        layer.kind in ("batchnorm", "layernorm")
        and owner
        and all(_TORCH_NORM_DEFAULTS[w.name] == w.initializer for w in layer.weights)
        and all(piece.tensors[w.name] == owner + _TORCH_NORM_PATHS[w.name] for w in layer.weights)
        and len(layer.weights) == (4 if layer.kind == "batchnorm" else 2)
    ):
        return [f"self.{owner}.reset_parameters()  # Keras's ones and zeros"]
    lines = []
    tensors = dict(piece.tensors)
    for kind in ("kernel", "bias"):  # nn.MultiheadAttention's in_proj: one draw when its thirds draw alike
        thirds = [w for w in layer.weights if w.name in (f"query_{kind}", f"key_{kind}", f"value_{kind}")]
        whole = str(tensors.get(f"query_{kind}", "")).removesuffix(".chunk(3)[0]")
        if len(thirds) == 3 and whole.endswith("in_proj_" + ("weight" if kind == "kernel" else "bias")) and len(
            {(w.shape, w.initializer) for w in thirds}
        ) == 1:
            tensors[f"query_{kind}"] = whole
            del tensors[f"key_{kind}"], tensors[f"value_{kind}"]
    for weight in layer.weights:
        if weight.name not in tensors:
            continue
        pieces = initializers.segments(weight.initializer, weight.shape[-1] if weight.shape else 1)
        for path in _paths(tensors[weight.name]):
            if len(pieces) == 1:
                lines.append(_init_line(path, weight, layer))
                continue
            # Keras's unit_forget_bias: the base initializer, then ones for the forget gate (i, f, c, o)
            base = ir.Weight(weight.name, weight.shape, weight.trainable, pieces[0][0])
            lines.append(f"# Keras {weight.initializer.split(':')[0]}: the forget gate's bias starts at 1")
            lines.append(_init_line(path, base, layer))
            lines.append(f"nn.init.ones_(self.{path}.chunk(4)[1])  # gates i, f, c, o")
    lines.extend(f"nn.init.zeros_(self.{path})  # Keras has no second bias" for path in piece.fixed_zero)
    return lines


def _write_methods(w: codegen.SourceWriter, module: _Module, *, is_model: bool) -> None:
    """``__init__``, ``forward``, ``reset_parameters`` (and ``apply_constraints``) of one module's class."""
    w.blank()
    w.line("def __init__(self) -> None:" if is_model else f"def __init__(self{_SIGNATURE}) -> None:")
    with w.indent():
        w.line("super().__init__()")
        for unit in module.units:
            for line in unit.init:
                w.line(line)
        if is_model:  # a block's weights are drawn by the model's reset_parameters
            w.line("self.reset_parameters()")
    w.blank()
    params = ", ".join(f"{param}: torch.Tensor" for param in module.params)
    returns = f"tuple[{', '.join(['torch.Tensor'] * len(module.outputs))}]" if module.outputs else "torch.Tensor"
    w.line(f"def forward(self, {params}) -> {returns}:")
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
                for line in unit.reset:
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
                for line in unit.constraint:
                    w.line(line)


def _model_class(model: ir.Model) -> str:
    name = codegen.camel_case(model.name)
    # a model called `multi_head_attention` must not shadow the file's own attention module
    return name if name != "MultiHeadAttention" else codegen.ident(name + "_")


def _source(model: ir.Model) -> str:
    plan = _plan(model)
    class_name = _model_class(model)
    units = [unit for module, _ in plan.root.walk() for unit in module.units]
    lines = [line for unit in units for line in (*unit.init, *unit.forward, *unit.reset)]
    scans = any("rnn_scan" in unit.piece.helpers for unit in units)
    uses_functional = scans or any("F." in line for line in lines)

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
    functions = [_MAX_NORM_HELPER] if plan.root.has_constraints else []
    if any("variance_scaling_(" in line for line in lines):
        functions.append(_VARIANCE_SCALING_HELPER)
    if scans:
        functions.append(_SCAN_HELPER)
    if any("MultiHeadAttention" in unit.piece.helpers for unit in units):
        functions.append(_ATTENTION_HELPER)
    for function in functions:
        for line in function.splitlines():
            w.line(line)
        w.blank(2)
    for name, body in plan.classes:
        w.line(f"class {name}(nn.Module):")
        w.lines.extend(body.split("\n"))
        w.blank(2)
    fed = " and ".join(codegen.shape_comment(torch_shape(i.shape)) for i in model.inputs)
    out = " and ".join(codegen.shape_comment(torch_shape(shape)) for shape in model.output_shapes)
    w.line(f"class {class_name}(nn.Module):")
    with w.indent():
        images = any(len(shape) == 3 for shape in (*(i.shape for i in model.inputs), *model.output_shapes))
        note = " (images channels-first)" if images else ""
        w.line(f'"""{model.name}: maps {fed} to {out}, as the Keras model does{note}."""')
        _write_methods(w, plan.root, is_model=True)
    w.blank(2)
    w.line(f"def build_model() -> {class_name}:")
    with w.indent():
        w.line(f"return {class_name}()")
    w.lines = [part for line in w.lines for part in _wrapped(line)]
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
                        chunk = _CHUNK.fullmatch(part)  # a third of nn.MultiheadAttention's in_proj_weight
                        tensor = tensor.chunk(int(chunk[1]))[int(chunk[2])] if chunk else getattr(tensor, part)
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
