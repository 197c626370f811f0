"""The torch backend: IR -> an ``nn.Module`` subclass computing what the Keras model computes.

Layout: an image tensor, (H, W, C) in the IR, is (N, C, H, W) in torch; every
other tensor keeps the IR's order, so vectors are (N, F).

Flatten: ``nn.Flatten`` orders an image's features (C, H, W) where Keras has
(H, W, C). When a dense layer consumes the flattened vector (possibly through
dropout, activations or batchnorm, which act per feature), the permutation is
folded into that dense kernel's rows (and those batchnorms' vectors) during
weight transfer, so the forward pass stays plain. Otherwise the generated
forward permutes to channels-last before flattening.

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

import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import codegen, initializers, ir, specs
from ..codegen import Code, call, py
from ..ir import Args
from .base import IR_ATTRIBUTE, Backend, missing_framework

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
}

_MINUS_INF = Code('float("-inf")')

#: Layers that act on each feature alike, so a flatten permutation passes through them.
_PER_FEATURE = frozenset({"dropout", "activation", "batchnorm", "flatten"})


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
    taken: set[str]  # every attribute name in use
    keras_order: bool = False  # flatten: no dense absorbs the permutation

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


def _conv2d(layer: ir.Layer, ctx: _Context) -> _Piece:
    args, a = layer.args, ctx.attr
    (top, bottom), (left, right) = specs.spatial_padding(args, layer.input_shape, args["kernel"])
    kwargs: dict[str, Any] = {"kernel_size": _size(args["kernel"])}
    if args["stride"] != (1, 1):
        kwargs["stride"] = _size(args["stride"])
    if args["dilation"] != (1, 1):
        kwargs["dilation"] = _size(args["dilation"])
    piece = _Piece(tensors={"kernel": f"{a}.weight", "bias": f"{a}.bias"})
    x = "x"
    if (top, left) != (bottom, right):
        pad = ctx.extra("pad")
        piece.init.append("# TensorFlow's `same` puts the odd padding row/column bottom/right")
        piece.init.append(f"self.{pad} = {call('nn.ZeroPad2d', (left, right, top, bottom))}")
        x = f"self.{pad}(x)"
    elif top or left:
        kwargs["padding"] = _size((top, left))
    if not args["bias"]:
        kwargs["bias"] = False
    piece.init.append(f"self.{a} = {call('nn.Conv2d', layer.input_shape[2], args['filters'], **kwargs)}")
    piece.forward.append(f"x = {_activate(args['activation'], f'self.{a}({x})', layer.output_shape)}")
    if args["maxnorm"] is not None:
        piece.constraint = f"max_norm_(self.{a}.weight, {py(args['maxnorm'])}, dim=(1, 2, 3))"
    return piece


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
        if reduction == "mean" and layer.input_masked:
            return _Piece(
                forward=[
                    "weights = mask[..., None].to(x.dtype)",
                    "x = (x * weights).sum(dim=1) / weights.sum(dim=1)  # the mean of the unmasked steps",
                ]
            )
        return _Piece(forward=[f"x = x.{reduction}(dim={axes})"])

    return emit


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
}


def _attribute_names(model: ir.Model) -> dict[str, str]:
    """Layer name -> attribute name, avoiding nn.Module's own attributes."""
    taken: set[str] = {layer.name for layer in model.layers}
    out = {}
    for layer in model.layers:
        name = layer.name
        if name.startswith("_"):  # torch's private attributes
            name = "layer" + name
        elif name in _MODULE_ATTRIBUTES:
            name += "_"
        if name != layer.name:
            while name in taken or name in _MODULE_ATTRIBUTES:
                name += "_"
            taken.add(name)
        out[layer.name] = codegen.ident(name)
    return out


def _flatten_orders(model: ir.Model) -> tuple[set[str], dict[str, ir.Shape]]:
    """Flattens that must keep Keras's order, and the layers whose feature axis is in torch's.

    The second maps a layer name to the (H, W, C) image shape whose flatten (in
    torch's (C, H, W) order) feeds it, up to and including the dense that absorbs it.
    """
    keras_order: set[str] = set()
    permuted: dict[str, ir.Shape] = {}
    for i, layer in enumerate(model.layers):
        if layer.kind != "flatten" or not _is_image(layer.input_shape):
            continue
        downstream: dict[str, ir.Shape] = {}
        for later in model.layers[i + 1 :]:
            if later.kind == "dense":
                downstream[later.name] = layer.input_shape
                permuted.update(downstream)
                break
            if later.kind not in _PER_FEATURE:
                keras_order.add(layer.name)
                break
            downstream[later.name] = layer.input_shape
        else:  # the flattened vector is the model's output
            keras_order.add(layer.name)
    return keras_order, permuted


@dataclass
class _Plan:
    """One description of the module, read by both the source writer and weight transfer."""

    pieces: list[tuple[ir.Layer, _Piece]]
    permuted: dict[str, ir.Shape]


def _plan(model: ir.Model) -> _Plan:
    attrs = _attribute_names(model)
    taken = set(attrs.values())
    keras_order, permuted = _flatten_orders(model)
    pieces = []
    for layer in model.layers:
        ctx = _Context(attrs[layer.name], taken, keras_order=layer.name in keras_order)
        pieces.append((layer, EMITTERS[layer.kind](layer, ctx)))
    return _Plan(pieces, permuted)


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
        pieces = initializers.segments(weight.initializer, weight.shape[-1])
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


def _source(model: ir.Model) -> str:
    plan = _plan(model)
    class_name = codegen.camel_case(model.name)
    constraints = [p.constraint for _, p in plan.pieces if p.constraint]
    lines = [line for _, p in plan.pieces for line in p.forward]
    helpers = [name for name in _SCAN_HELPERS if any(name in p.helpers for _, p in plan.pieces)]
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
    if constraints:
        for line in _MAX_NORM_HELPER.splitlines():
            w.line(line)
        w.blank(2)
    for name in helpers:
        for line in _SCAN_HELPERS[name].splitlines():
            w.line(line)
        w.blank(2)
    fed = codegen.shape_comment(torch_shape(model.input.shape))
    out = codegen.shape_comment(torch_shape(model.output_shape))
    w.line(f"class {class_name}(nn.Module):")
    with w.indent():
        images = any(len(shape) == 3 for shape in (model.input.shape, model.output_shape))
        note = " (images channels-first)" if images else ""
        w.line(f'"""{model.name}: maps {fed} to {out}, as the Keras model does{note}."""')
        w.blank()
        w.line("def __init__(self) -> None:")
        with w.indent():
            w.line("super().__init__()")
            for layer, piece in plan.pieces:
                if piece.init:
                    w.line(codegen.layer_comment(layer, torch_shape(layer.output_shape)))
                    for line in piece.init:
                        w.line(line)
            w.line("self.reset_parameters()")
        w.blank()
        w.line("def forward(self, x: torch.Tensor) -> torch.Tensor:")
        with w.indent():
            for layer, piece in plan.pieces:
                if not piece.init:  # layers without a submodule are only visible here
                    w.line(codegen.layer_comment(layer, torch_shape(layer.output_shape)))
                for line in piece.forward:
                    w.line(line)
            w.line("return x")
        w.blank()
        w.line("def reset_parameters(self) -> None:")
        with w.indent():
            w.line('"""Draw every weight from the distribution of the Keras initializer it names."""')
            for layer, piece in plan.pieces:
                for line in _reset_lines(layer, piece):
                    w.line(line)
        if constraints:
            w.blank()
            w.line("@torch.no_grad()")
            w.line("def apply_constraints(self) -> None:")
            with w.indent():
                w.line('"""Apply the max-norm constraints, as Keras does after each optimizer step.')
                w.blank()
                w.line("Call it after every `optimizer.step()`, for example with")
                w.line("`optimizer.register_step_post_hook(lambda *args: model.apply_constraints())`.")
                w.line('"""')
                for line in constraints:
                    w.line(line)
    w.blank(2)
    w.line(f"def build_model() -> {class_name}:")
    with w.indent():
        w.line(f"return {class_name}()")
    return w.text()


def _permutation(shape: ir.Shape) -> np.ndarray:
    """Torch-flattened feature j is Keras-flattened feature ``perm[j]``, for an (H, W, C) image."""
    import numpy as np

    return np.arange(np.prod(shape)).reshape(shape).transpose(2, 0, 1).ravel()


def _feature_indexed(layer: ir.Layer, weight: ir.Weight) -> bool:
    """Whether Keras axis 0 of ``weight`` runs over the layer's input features."""
    return layer.kind == "batchnorm" or (layer.kind == "dense" and weight.name == "kernel")


def _kind_and_name(layer: ir.Layer, weight: ir.Weight) -> tuple[str, str]:
    """The layer kind a weight belongs to, and its name there (a bidirectional's inner layer)."""
    if layer.kind == "bidirectional":
        return layer.args["layer"], weight.name.split("_", 1)[1]
    return layer.kind, weight.name


def _swap_gates(array: np.ndarray) -> np.ndarray:
    """Keras's GRU gates (z, r, h) <-> torch's (r, z, n) along the last axis (its own inverse)."""
    import numpy as np

    z, r, h = np.split(array, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


#: Kernel axes, Keras layout -> torch layout (inverted for the way back).
_KERNEL_AXES = {4: (3, 2, 0, 1), 3: (2, 1, 0), 2: (1, 0)}  # conv2d, conv1d, dense and recurrent


def _to_torch(layer: ir.Layer, weight: ir.Weight, array: np.ndarray) -> list[np.ndarray]:
    """A canonical array as the torch tensor(s) it fills, in the order of the piece's paths."""
    kind, name = _kind_and_name(layer, weight)
    if kind == "gru":
        array = _swap_gates(array)
    if name in ("kernel", "recurrent_kernel"):
        array = array.transpose(_KERNEL_AXES[array.ndim])
    elif name == "bias" and array.ndim == 2:  # GRU reset_after: input row, recurrent row
        return [array[0], array[1]]
    return [array]


def _to_keras(layer: ir.Layer, weight: ir.Weight, arrays: list[np.ndarray]) -> np.ndarray:
    import numpy as np

    kind, name = _kind_and_name(layer, weight)
    array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
    if name in ("kernel", "recurrent_kernel"):
        array = array.transpose(np.argsort(_KERNEL_AXES[array.ndim]))
    return _swap_gates(array) if kind == "gru" else array


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
        for layer, piece in plan.pieces:
            shape = plan.permuted.get(layer.name)
            for weight in layer.weights:
                tensors = []
                for path in _paths(piece.tensors[weight.name]):
                    tensor = obj
                    for part in path.split("."):
                        tensor = getattr(tensor, part)
                    tensors.append(tensor)
                order = _permutation(shape) if shape is not None and _feature_indexed(layer, weight) else None
                yield f"{layer.name}.{weight.name}", tensors, layer, weight, order

    def get_weights(self, obj: Any, model: ir.Model) -> dict[str, np.ndarray]:
        import numpy as np

        out = {}
        for key, tensors, layer, weight, order in self._tensors(obj, model):
            array = _to_keras(layer, weight, [tensor.detach().cpu().float().numpy() for tensor in tensors])
            if order is not None:
                keras = np.empty_like(array)
                keras[order] = array
                array = keras
            out[key] = np.array(array, dtype=np.float32)  # a contiguous copy, not a view of the module
        return out

    def set_weights(self, obj: Any, model: ir.Model, weights: Mapping[str, np.ndarray]) -> None:
        import numpy as np
        import torch

        with torch.no_grad():
            for key, tensors, layer, weight, order in self._tensors(obj, model):
                array = np.asarray(weights[key], dtype=np.float32)
                if order is not None:
                    array = array[order]
                for tensor, part in zip(tensors, _to_torch(layer, weight, array), strict=True):
                    tensor.copy_(torch.from_numpy(np.ascontiguousarray(part)))
