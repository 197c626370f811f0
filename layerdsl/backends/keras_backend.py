"""The Keras 3 backend: IR -> a functional-API ``build_model()`` that a person would write.

As keras.applications writes models: one function of a tensor per block definition,
``def conv_bn(x, filters, k, stride=1, name=None)``, whose layers are named ``name + "_conv"``;
a `repeat` is a ``for`` loop; an activation straight after a conv or dense is its
``activation=``; a convolution's zero padding (`pad=1`) is a ``ZeroPadding2D`` line before it.
Layer names are the IR's, so Keras is the canonical layout and weights map one to one:
``"<layer>.<param>"`` is the variable ``param`` of ``model.get_layer(layer)`` (for a
``Bidirectional``, ``forward_kernel`` is the ``kernel`` of its ``forward_layer``, and so on).
The DSL's defaults are Keras's, so each emitter writes only the arguments that differ (or that
differ between the instances of one block statement), plus ``name=``. A chain of layers keeps
reassigning ``x``; a tensor read again later, or read by a merge, gets a variable named after
its layer (or its tap). Keras and TensorFlow are imported only to build or read live models.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import codegen, ir
from ..codegen import Code, Hint, call, ident, layer_comment, literal, module_docstring, py, shape_comment
from ..errors import BackendError
from ..specs import REGISTRY, activation_function
from . import structure
from .base import IR_ATTRIBUTE, Backend, missing_framework
from .structure import Fragment, Scope, Variant

if TYPE_CHECKING:
    import numpy as np

LINE_WIDTH = 100  # generated lines longer than this are wrapped as black would


#: What a block function calls the channel count of its input, read off the input tensor.
_IN_CHANNELS = "in_channels"


@dataclass(frozen=True)
class LayerCall:
    """A Keras layer constructor call: ``layers.Dense(10, activation="relu", name="dense")``.

    An argument may itself be a LayerCall (the layer a ``Bidirectional`` wraps).
    """

    func: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: A layer applied to the input first, on a line of its own (``ZeroPadding2D`` for a
    #: convolution's `pad=1`, as keras.applications writes it).
    before: LayerCall | None = None
    #: Keywords of the layer's call on its inputs (``use_causal_mask=True``).
    applied: tuple[tuple[str, Any], ...] = ()

    def code(self) -> Code:
        """The call on one line."""
        return call(self.func, *map(_inline, self.args), **{k: _inline(v) for k, v in self.kwargs.items()})


def _inline(value: Any) -> Any:
    return value.code() if isinstance(value, LayerCall) else value


def keras_layer(func: str, *args: Any, **kwargs: Any) -> LayerCall:
    return LayerCall(func, args, kwargs)


#: DSL arguments that every instance of the statement being written spells out, default or not:
#: those that differ between the statement's instances, so that one block definition fits all.
_SPELLED_OUT: ContextVar[frozenset[str]] = ContextVar("_SPELLED_OUT", default=frozenset())


def _given(layer: ir.Layer, dsl: str, default: Any) -> bool:
    """Whether the emitter writes the DSL argument ``dsl``: it is not the default, or it varies."""
    return layer.args[dsl] != default or dsl in _SPELLED_OUT.get()


@dataclass(frozen=True)
class Emission:
    """What a Keras emitter is told besides the layer: the name its Keras layer takes."""

    name: str


#: The emitter signature every backend shares, ``emit(layer, ctx)``; here it returns the layer call.
Emitter = Callable[[ir.Layer, Emission], LayerCall]


def _options(layer: ir.Layer, defaults: Mapping[str, Any], keras_names: Mapping[str, str]) -> dict[str, Any]:
    """Keras keyword arguments for the DSL arguments that differ from their defaults (a `pad`
    of zeros is a ZeroPadding2D before the layer: see ``_zero_padded``)."""
    return {
        keras_names[dsl]: layer.args[dsl]
        for dsl, default in defaults.items()
        if _given(layer, dsl, default) and not (dsl == "pad" and isinstance(layer.args[dsl], tuple))
    }


def _zero_padded(emit: Emitter) -> Emitter:
    """Symmetric zero padding (`pad=1`, `pad=1x2`): Keras pads with a ZeroPadding2D, then convolves `valid`."""

    def padded(layer: ir.Layer, ctx: Emission) -> LayerCall:
        layer_call = emit(layer, ctx)
        pad = layer.args["pad"]
        if not isinstance(pad, tuple) or not _given(layer, "pad", (0, 0)):
            return layer_call
        padding = pad[0] if pad[0] == pad[1] else pad
        before = keras_layer("layers.ZeroPadding2D", padding, name=f"{ctx.name}_pad")
        return dataclasses.replace(layer_call, before=before)

    return padded


def _weighted(layer: ir.Layer, maxnorm_axis: int | list[int]) -> dict[str, Any]:
    """Activation, bias, initializer and constraint keywords shared by Dense and Conv2D."""
    args = layer.args
    kwargs: dict[str, Any] = {}
    if _given(layer, "activation", "linear"):
        kwargs["activation"] = args["activation"]
    if _given(layer, "bias", True):
        kwargs["use_bias"] = args["bias"]
    if _given(layer, "init", "glorot_uniform"):
        kwargs["kernel_initializer"] = args["init"]
    if args["bias"] and _given(layer, "bias_init", "zeros"):
        kwargs["bias_initializer"] = args["bias_init"]
    if args["maxnorm"] is not None:
        kwargs["kernel_constraint"] = call("keras.constraints.MaxNorm", float(args["maxnorm"]), axis=maxnorm_axis)
    return kwargs


def _dense(layer: ir.Layer, ctx: Emission) -> LayerCall:
    # axis 0 of the (in, units) kernel: each unit's incoming weight vector is bounded.
    return keras_layer("layers.Dense", layer.args["units"], **_weighted(layer, 0), name=ctx.name)


def _conv2d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = _options(
        layer,
        {"stride": (1, 1), "pad": "valid", "dilation": (1, 1)},
        {"stride": "strides", "pad": "padding", "dilation": "dilation_rate"},
    )
    # Per-filter max-norm: the kernel is (height, width, in, filters), so the norm runs
    # over axes 0-2 and bounds each filter as a whole, as the MaxNorm docstring advises
    # for Conv2D (axis=0 alone would bound each (width, in) slice separately).
    kwargs = {**options, **_weighted(layer, [0, 1, 2])}
    return keras_layer("layers.Conv2D", layer.args["filters"], layer.args["kernel"], **kwargs, name=ctx.name)


def _grouped(emit: Emitter) -> Emitter:
    """`groups=G`: Keras's own grouped convolution (the kernel is (..., in / G, filters))."""

    def grouped(layer: ir.Layer, ctx: Emission) -> LayerCall:
        layer_call = emit(layer, ctx)
        if layer.args["groups"] == 1:
            return layer_call
        kwargs = {k: v for k, v in layer_call.kwargs.items() if k != "name"}
        return dataclasses.replace(layer_call, kwargs={**kwargs, "groups": layer.args["groups"], "name": ctx.name})

    return grouped


def _pool(keras_class: str) -> Emitter:
    def emit(layer: ir.Layer, ctx: Emission) -> LayerCall:
        kwargs: dict[str, Any] = {}
        if _given(layer, "stride", layer.args["pool"]):  # Keras's stride defaults to the window too
            kwargs["strides"] = layer.args["stride"]
        if _given(layer, "pad", "valid"):
            kwargs["padding"] = layer.args["pad"]
        return keras_layer(keras_class, layer.args["pool"], **kwargs, name=ctx.name)

    return emit


def _flatten(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("layers.Flatten", name=ctx.name)


def _dropout(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("layers.Dropout", float(layer.args["rate"]), name=ctx.name)


def _batchnorm(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = _options(
        layer,
        {"momentum": 0.99, "eps": 1e-3, "center": True, "scale": True},
        {"momentum": "momentum", "eps": "epsilon", "center": "center", "scale": "scale"},
    )
    return keras_layer("layers.BatchNormalization", **options, name=ctx.name)


def _activation(layer: ir.Layer, ctx: Emission) -> LayerCall:
    # Keras's own functions, as named: leaky_relu has slope 0.2, gelu is the exact (erf) form;
    # gelu's tanh form is a registered function of the generated file (a string cannot name it).
    function = activation_function(layer.args)
    return keras_layer("layers.Activation", Code(function) if function in DEFINITIONS else function, name=ctx.name)


def _embedding(layer: ir.Layer, ctx: Emission) -> LayerCall:
    args = layer.args
    options = _options(
        layer, {"mask_zero": False, "init": "uniform"}, {"mask_zero": "mask_zero", "init": "embeddings_initializer"}
    )
    return keras_layer("layers.Embedding", args["vocab"], args["dim"], **options, name=ctx.name)


def _masking(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = {"mask_value": float(layer.args["value"])} if _given(layer, "value", 0.0) else {}
    return keras_layer("layers.Masking", **options, name=ctx.name)


#: recurrent IR kind -> (Keras class, the name Keras would give it)
RECURRENT = {
    "simplernn": ("layers.SimpleRNN", "simple_rnn"),
    "lstm": ("layers.LSTM", "lstm"),
    "gru": ("layers.GRU", "gru"),
}

#: DSL argument -> Keras keyword, for the optional arguments of the recurrent layers
_RECURRENT_KEYWORDS = {
    "return_sequences": "return_sequences",
    "go_backwards": "go_backwards",
    "activation": "activation",
    "recurrent_activation": "recurrent_activation",
    "bias": "use_bias",
    "init": "kernel_initializer",
    "recurrent_init": "recurrent_initializer",
    "bias_init": "bias_initializer",
    "unit_forget_bias": "unit_forget_bias",
    "reset_after": "reset_after",
}
_BIAS_ONLY = ("bias_init", "unit_forget_bias")  # meaningless without a bias, so left out then


def _recurrent_call(kind: str, args: ir.Args, name: str) -> LayerCall:
    # the DSL's defaults are Keras's, so the spec says which arguments to write
    defaults = {p.name: p.default for p in REGISTRY[kind].params}
    options = {
        keyword: args[dsl]
        for dsl, keyword in _RECURRENT_KEYWORDS.items()
        if dsl in args and args[dsl] != defaults[dsl] and (args["bias"] or dsl not in _BIAS_ONLY)
    }
    return keras_layer(RECURRENT[kind][0], args["units"], **options, name=name)


def _recurrent(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return _recurrent_call(layer.kind, layer.args, ctx.name)


def _bidirectional(layer: ir.Layer, ctx: Emission) -> LayerCall:
    # The wrapped layer is named as Keras would name it alone, so its two copies read
    # `forward_lstm` and `backward_lstm`, whatever the session's name counters hold.
    kind, args = layer.args["layer"], layer.args["inner"]
    keras_name = RECURRENT[kind][1]
    options: dict[str, Any] = {}
    if args["go_backwards"]:
        # Keras copies the layer with go_backwards=True for the backward pass and refuses
        # two backward layers, so the opposite direction has to be given explicitly.
        forward_args = ir.Args(tuple((k, False if k == "go_backwards" else v) for k, v in args.items()))
        options["backward_layer"] = _recurrent_call(kind, forward_args, f"backward_{keras_name}")
    if layer.args["merge"] != "concat":
        options["merge_mode"] = layer.args["merge"]
    return keras_layer("layers.Bidirectional", _recurrent_call(kind, args, keras_name), **options, name=ctx.name)


def _conv1d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = _options(
        layer,
        {"stride": 1, "pad": "valid", "dilation": 1},
        {"stride": "strides", "pad": "padding", "dilation": "dilation_rate"},
    )
    # The kernel is (length, in, filters): the norm over axes 0-1 bounds each filter whole.
    kwargs = {**options, **_weighted(layer, [0, 1])}
    return keras_layer("layers.Conv1D", layer.args["filters"], layer.args["kernel"], **kwargs, name=ctx.name)


def _global_pool(keras_class: str) -> Emitter:
    def emit(layer: ir.Layer, ctx: Emission) -> LayerCall:
        return keras_layer(keras_class, **({"keepdims": True} if layer.args["keepdims"] else {}), name=ctx.name)

    return emit


def _merge(keras_class: str) -> Emitter:
    def emit(layer: ir.Layer, ctx: Emission) -> LayerCall:
        return keras_layer(keras_class, name=ctx.name)

    return emit


def _concat(layer: ir.Layer, ctx: Emission) -> LayerCall:
    # IR axes leave out the batch; Keras counts it, so axis a >= 0 is a + 1 (negative axes agree).
    axis = layer.args["axis"]
    options = {"axis": axis + 1 if axis >= 0 else axis} if _given(layer, "axis", -1) else {}
    return keras_layer("layers.Concatenate", **options, name=ctx.name)


def _zeropad2d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    top, bottom, left, right = (layer.args[side] for side in ("top", "bottom", "left", "right"))
    if top == bottom == left == right:
        padding: Any = top
    elif top == bottom and left == right:
        padding = (top, left)
    else:
        padding = ((top, bottom), (left, right))
    return keras_layer("layers.ZeroPadding2D", padding, name=ctx.name)


_WINDOW_KEYWORDS = {"stride": "strides", "pad": "padding", "dilation": "dilation_rate"}
_WINDOW_DEFAULTS = {"stride": (1, 1), "pad": "valid", "dilation": (1, 1)}


def _fused(layer: ir.Layer, kernel_initializers: tuple[str, ...]) -> dict[str, Any]:
    """Multiplier, activation, bias and initializer keywords of the newer convolutions.

    ``init`` sets every kernel named in ``kernel_initializers`` (SeparableConv2D has two).
    """
    args = layer.args
    kwargs: dict[str, Any] = {}
    if "multiplier" in args and _given(layer, "multiplier", 1):
        kwargs["depth_multiplier"] = args["multiplier"]
    if _given(layer, "activation", "linear"):
        kwargs["activation"] = args["activation"]
    if _given(layer, "bias", True):
        kwargs["use_bias"] = args["bias"]
    if _given(layer, "init", "glorot_uniform"):
        kwargs.update(dict.fromkeys(kernel_initializers, args["init"]))
    if args["bias"] and _given(layer, "bias_init", "zeros"):
        kwargs["bias_initializer"] = args["bias_init"]
    return kwargs


def _depthwiseconv2d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    kwargs = {**_options(layer, _WINDOW_DEFAULTS, _WINDOW_KEYWORDS), **_fused(layer, ("depthwise_initializer",))}
    return keras_layer("layers.DepthwiseConv2D", layer.args["kernel"], **kwargs, name=ctx.name)


def _separableconv2d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    initializers = ("depthwise_initializer", "pointwise_initializer")
    kwargs = {**_options(layer, _WINDOW_DEFAULTS, _WINDOW_KEYWORDS), **_fused(layer, initializers)}
    return keras_layer("layers.SeparableConv2D", layer.args["filters"], layer.args["kernel"], **kwargs, name=ctx.name)


def _conv2dtranspose(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = _options(layer, {"stride": (1, 1), "pad": "valid"}, _WINDOW_KEYWORDS)
    kwargs = {**options, **_fused(layer, ("kernel_initializer",))}
    return keras_layer("layers.Conv2DTranspose", layer.args["filters"], layer.args["kernel"], **kwargs, name=ctx.name)


def _upsample2d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = _options(layer, {"interpolation": "nearest"}, {"interpolation": "interpolation"})
    return keras_layer("layers.UpSampling2D", layer.args["size"], **options, name=ctx.name)


def _layernorm(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = _options(
        layer,
        {"eps": 1e-3, "center": True, "scale": True},
        {"eps": "epsilon", "center": "center", "scale": "scale"},
    )
    return keras_layer("layers.LayerNormalization", **options, name=ctx.name)


def _reshape(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("layers.Reshape", tuple(layer.args["target"]), name=ctx.name)


def _permute(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("layers.Permute", tuple(layer.args["dims"]), name=ctx.name)


def _rescaling(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = {"offset": float(layer.args["offset"])} if layer.args["offset"] != 0.0 else {}
    return keras_layer("layers.Rescaling", float(layer.args["scale"]), **options, name=ctx.name)


def _normalization(layer: ir.Layer, ctx: Emission) -> LayerCall:
    # With constants Keras holds no weights; without, mean, variance and count come with the weights file.
    args = layer.args
    options = {} if args["mean"] is None else {"mean": float(args["mean"]), "variance": float(args["variance"])}
    return keras_layer("layers.Normalization", **options, name=ctx.name)


def _layerscale(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("LayerScale", float(layer.args["init"]), name=ctx.name)


def _posembed(layer: ir.Layer, ctx: Emission) -> LayerCall:
    options = _options(layer, {"init": "uniform"}, {"init": "embeddings_initializer"})
    return keras_layer("PositionEmbedding", **options, name=ctx.name)


def _classtoken(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("ClassToken", **_options(layer, {"init": "zeros"}, {"init": "token_initializer"}), name=ctx.name)


def _select(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("Select", layer.args["index"], name=ctx.name)


def _cropping2d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    top, bottom, left, right = (layer.args[side] for side in ("top", "bottom", "left", "right"))
    return keras_layer("layers.Cropping2D", ((top, bottom), (left, right)), name=ctx.name)


def _cropping1d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("layers.Cropping1D", (layer.args["start"], layer.args["end"]), name=ctx.name)


def _upsample1d(layer: ir.Layer, ctx: Emission) -> LayerCall:
    return keras_layer("layers.UpSampling1D", layer.args["size"], name=ctx.name)




def _attention(layer: ir.Layer, ctx: Emission) -> LayerCall:
    args = layer.args
    options: dict[str, Any] = {}
    if args["value_dim"] is not None:
        options["value_dim"] = args["value_dim"]
    if _given(layer, "dropout", 0.0):
        options["dropout"] = float(args["dropout"])
    if _given(layer, "bias", True):
        options["use_bias"] = args["bias"]
    if _given(layer, "init", "glorot_uniform"):
        options["kernel_initializer"] = args["init"]
    if args["bias"] and _given(layer, "bias_init", "zeros"):
        options["bias_initializer"] = args["bias_init"]
    applied = (("use_causal_mask", True),) if args["causal"] else ()
    return LayerCall(
        "layers.MultiHeadAttention",
        (),
        {"num_heads": args["heads"], "key_dim": args["key_dim"], **options, "name": ctx.name},
        applied=applied,
    )


#: Layers and functions without a core Keras name, written into the generated file (by the name they
#: define). Registered as serializable, so a saved `.keras` file loads under safe_mode once the
#: generated module is imported, and ``from_keras`` knows them by their registered names.
DEFINITIONS: dict[str, str] = {
    "LayerScale": '''\
@keras.saving.register_keras_serializable(package="layerdsl")
class LayerScale(layers.Layer):
    """A learned scale per channel (ConvNeXt's layer scale): x * gamma."""

    def __init__(self, init_value=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init_value)
        )

    def call(self, x):
        return x * self.gamma

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}
''',
    "PositionEmbedding": '''\
@keras.saving.register_keras_serializable(package="layerdsl")
class PositionEmbedding(layers.Layer):
    """A learned position embedding added to a (timesteps, features) sequence; masks pass."""

    def __init__(self, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        steps, features = input_shape[-2:]
        self.embeddings = self.add_weight(
            name="embeddings", shape=(steps, features), initializer=self.embeddings_initializer
        )

    def call(self, x):
        return x + self.embeddings

    def get_config(self):
        initializer = keras.initializers.serialize(self.embeddings_initializer)
        return {**super().get_config(), "embeddings_initializer": initializer}
''',
    "ClassToken": '''\
@keras.saving.register_keras_serializable(package="layerdsl")
class ClassToken(layers.Layer):
    """Prepends a learned vector to a sequence (ViT's class token); masks gain an unmasked step."""

    def __init__(self, token_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.token_initializer = keras.initializers.get(token_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token", shape=(input_shape[-1],), initializer=self.token_initializer
        )

    def call(self, x):
        batch, _, features = keras.ops.shape(x)
        token = keras.ops.broadcast_to(keras.ops.cast(self.token, x.dtype), (batch, 1, features))
        return keras.ops.concatenate([token, x], axis=1)

    def compute_mask(self, x, mask=None):
        if mask is None:
            return None
        return keras.ops.pad(mask, [(0, 0), (1, 0)], constant_values=True)

    def get_config(self):
        initializer = keras.initializers.serialize(self.token_initializer)
        return {**super().get_config(), "token_initializer": initializer}
''',
    "Select": '''\
@keras.saving.register_keras_serializable(package="layerdsl")
class Select(layers.Layer):
    """One position of a sequence: (timesteps, features) -> (features,); -1 is the last."""

    def __init__(self, index, **kwargs):
        super().__init__(**kwargs)
        self.index = index
        self.supports_masking = True

    def call(self, x):
        return x[:, self.index]

    def compute_mask(self, x, mask=None):
        return None  # one position is no sequence

    def get_config(self):
        return {**super().get_config(), "index": self.index}
''',
    "gelu_approximate": '''\
@keras.saving.register_keras_serializable(package="layerdsl")
def gelu_approximate(x):
    """gelu's tanh approximation (Keras's default is the exact erf form)."""
    return keras.activations.gelu(x, approximate=True)
''',
}

#: IR kind -> the definition it is written as.
_DEFINED_KINDS = {
    "layerscale": "LayerScale",
    "posembed": "PositionEmbedding",
    "classtoken": "ClassToken",
    "select": "Select",
}


def _definition(layer: ir.Layer) -> str | None:
    """The generated definition the layer needs, if any."""
    if layer.kind == "activation":
        function = activation_function(layer.args)
        return function if function in DEFINITIONS else None
    return _DEFINED_KINDS.get(layer.kind)


#: IR kind -> a function rendering the Keras layer constructor.
EMITTERS: dict[str, Emitter] = {
    "dense": _dense,
    "conv2d": _zero_padded(_grouped(_conv2d)),
    "maxpool": _pool("layers.MaxPooling2D"),
    "avgpool": _pool("layers.AveragePooling2D"),
    "flatten": _flatten,
    "dropout": _dropout,
    "batchnorm": _batchnorm,
    "activation": _activation,
    "embedding": _embedding,
    "masking": _masking,
    "simplernn": _recurrent,
    "lstm": _recurrent,
    "gru": _recurrent,
    "bidirectional": _bidirectional,
    "conv1d": _grouped(_conv1d),
    "maxpool1d": _pool("layers.MaxPooling1D"),
    "avgpool1d": _pool("layers.AveragePooling1D"),
    "globalmaxpool1d": _global_pool("layers.GlobalMaxPooling1D"),
    "globalavgpool1d": _global_pool("layers.GlobalAveragePooling1D"),
    "globalmaxpool": _global_pool("layers.GlobalMaxPooling2D"),
    "globalavgpool": _global_pool("layers.GlobalAveragePooling2D"),
    "add": _merge("layers.Add"),
    "multiply": _merge("layers.Multiply"),
    "average": _merge("layers.Average"),
    "concat": _concat,
    "zeropad2d": _zeropad2d,
    "depthwiseconv2d": _zero_padded(_depthwiseconv2d),
    "separableconv2d": _zero_padded(_separableconv2d),
    "conv2dtranspose": _conv2dtranspose,
    "upsample2d": _upsample2d,
    "layernorm": _layernorm,
    "reshape": _reshape,
    "permute": _permute,
    "subtract": _merge("layers.Subtract"),
    "maximum": _merge("layers.Maximum"),
    "minimum": _merge("layers.Minimum"),
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


def _free_name(wanted: str, taken: set[str]) -> str:
    """``wanted``, or ``wanted_1``... when a DSL layer already has that name."""
    name, n = wanted, 0
    while name in taken:
        n += 1
        name = f"{wanted}_{n}"
    return ident(name)


class KerasBackend(Backend):
    name = "keras"
    extra = "keras"
    emitters = EMITTERS

    def emit_source(self, model: ir.Model) -> str:
        self.check_supported(model)
        return _Writer(model, self.emitters).source()

    def import_framework(self) -> Any:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            import keras
        except ImportError:
            raise missing_framework("keras", "keras", "keras") from None
        return keras

    def attach(self, obj: Any, model: ir.Model) -> None:
        # object.__setattr__ keeps Keras's attribute tracker away from the IR: it is plain
        # data, not a layer or variable, and must not be wrapped or saved with the model.
        object.__setattr__(obj, IR_ATTRIBUTE, model)

    def owns(self, obj: Any) -> bool:
        keras = sys.modules.get("keras")
        return keras is not None and isinstance(obj, keras.Model)

    def _variables(self, obj: Any, layer: ir.Layer) -> dict[str, Any]:
        """The Keras variables of ``layer``, by canonical weight name."""
        try:
            keras_layer = obj.get_layer(layer.name)
        except ValueError:
            raise BackendError(f"the Keras model has no layer `{layer.name}`") from None
        if layer.kind == "bidirectional":
            # both directions hold a `kernel`, `recurrent_kernel`...: prefix them as the IR does
            directions = (("forward", keras_layer.forward_layer), ("backward", keras_layer.backward_layer))
            variables = {f"{d}_{v.name}": v for d, sublayer in directions for v in sublayer.weights}
        elif layer.kind == "attention":
            # four EinsumDense sublayers, each with its `kernel` and `bias`: `query_kernel`...
            projections = {
                "query": keras_layer.query_dense,
                "key": keras_layer.key_dense,
                "value": keras_layer.value_dense,
                "output": keras_layer.output_dense,
            }
            variables = {f"{p}_{v.name}": v for p, sublayer in projections.items() for v in sublayer.weights}
        else:
            variables = {v.name: v for v in keras_layer.weights}
        missing = [w.name for w in layer.weights if w.name not in variables]
        if missing:
            raise BackendError(f"Keras layer `{layer.name}` has no variable " + ", ".join(f"`{m}`" for m in missing))
        return variables

    def get_weights(self, obj: Any, model: ir.Model) -> dict[str, np.ndarray]:
        import numpy as np

        weights: dict[str, np.ndarray] = {}
        for layer in model.layers:
            if not layer.weights:
                continue
            variables = self._variables(obj, layer)
            for w in layer.weights:
                weights[f"{layer.name}.{w.name}"] = np.array(variables[w.name].numpy(), dtype=np.float32)
        return weights

    def set_weights(self, obj: Any, model: ir.Model, weights: Mapping[str, np.ndarray]) -> None:
        for layer in model.layers:
            if not layer.weights:
                continue
            variables = self._variables(obj, layer)
            for w in layer.weights:
                variables[w.name].assign(weights[f"{layer.name}.{w.name}"].astype(variables[w.name].dtype))
            if layer.kind == "normalization":  # Keras derives its constants from these weights once
                obj.get_layer(layer.name).finalize_state()


#: Layers whose `activation=` takes an activation that straight follows them.
_FUSABLE = frozenset({"dense", "conv1d", "conv2d", "depthwiseconv2d", "separableconv2d", "conv2dtranspose"})
#: Names the generated code uses for itself: never a variable, parameter or function of the model's.
_RESERVED = frozenset({"x", "inputs", "keras", "layers", "build_model", "name", "range", "i", "j", *DEFINITIONS})
_LOOP_INDEXES = ("i", "j")


@dataclass
class _Step:
    """One statement of a function body: a layer (with the activation fused into it), a call
    of a block's function, or a loop over a `repeat`'s iterations."""

    reads: tuple[str, ...]
    produces: str
    layer: ir.Layer | None = None
    activation: ir.Layer | None = None
    call: ir.BlockCall | None = None
    repeat: ir.Repeat | None = None
    comment: str = ""  # the inlined block this step starts

    @property
    def merge(self) -> bool:
        return self.layer is not None and REGISTRY[self.layer.kind].merge


@dataclass(frozen=True)
class _Function:
    """The function that one block instance calls, and how it calls it."""

    name: str
    variant: Variant
    member: int
    spelled_out: frozenset[str]  # parameters passed even when they equal their default


class _Writer:
    """Writes the Keras source of one model: a function per block definition, then ``build_model()``.

    Each block instance is written under ``codegen.holes()`` and ``structure.unify`` makes the
    instances of one block one function; definitions go bottom-up, as a block's body calls the
    functions of the blocks it uses. A `repeat` whose iterations differ only in literals is a
    ``for`` loop. Blocks that read more than their input are written inline, as are repeats
    that cannot be a loop. Layer names stay the IR's: ``name + "_conv"`` inside a function.
    """

    def __init__(self, model: ir.Model, emitters: Mapping[str, Emitter]) -> None:
        self.model = model
        self.emitters = emitters
        self.body = model.body or tuple(ir.LayerNode(layer) for layer in model.layers)
        self.output = model.output_layer.name
        # (only layers in blocks have instances that a definition must fit)
        self.varying_layer_args = _varying(
            ((layer.span, layer.kind), layer.args) for layer in model.layers if layer.block
        )
        self.calls = [node for node in ir.walk(self.body) if isinstance(node, ir.BlockCall)] if model.blocks else []
        self.varying_call_args = _varying((call.span, call.args) for call in self.calls)
        self.instances = {call.instance: call for call in self.calls}
        self.block_names = frozenset(block.name for block in model.blocks)
        self.function_names = set(self.block_names)
        self.functions: dict[str, _Function] = {}  # block instance -> its function
        self.definitions: list[list[str]] = []
        self._callable: dict[str, bool] = {}
        self._loops: dict[int, Fragment | None] = {}

    @functools.cached_property
    def readers(self) -> dict[str, list[str]]:
        """Tensor -> the layers that read it."""
        readers: dict[str, list[str]] = {}
        for layer in self.model.layers:
            for tensor in layer.inputs:
                readers.setdefault(tensor, []).append(layer.name)
        return readers

    @functools.cached_property
    def layer_names(self) -> set[str]:
        return {layer.name for layer in self.model.layers}

    # --- the file -------------------------------------------------------------------------

    def source(self) -> str:
        instances: dict[str, list[ir.BlockCall]] = {}
        for node in self.calls:
            if self.is_callable(node):
                instances.setdefault(node.block, []).append(node)
        for block in self._bottom_up(instances):
            self._define(block, instances[block])
        lines = [
            module_docstring(self.model, "Keras", "Needs only Keras 3."),
            "",
            "import keras",
            "from keras import layers",
        ]
        used = {_definition(layer) for layer in self.model.layers}
        for definition in (name for name in DEFINITIONS if name in used):
            lines += ["", "", *DEFINITIONS[definition].rstrip("\n").split("\n")]
        for definition in self.definitions:
            lines += ["", "", *definition]
        lines += ["", "", "def build_model():"]
        lines += [f"    {line}" for line in self._build_model()]
        # long lines split as `ruff format` splits them
        return "\n".join(line if len(line) <= LINE_WIDTH else "\n".join(_wrap(line)) for line in lines) + "\n"

    def _build_model(self) -> list[str]:
        model = self.model
        if len(model.inputs) > 1 or len(model.outputs) > 1:
            return self._build_graph_model()
        inputs_kwargs: dict[str, Any] = {"shape": model.input.fed_shape}
        if model.input.dtype != "float32":
            inputs_kwargs["dtype"] = model.input.dtype
        inputs_kwargs["name"] = _free_name(model.input.name, self.layer_names)
        lines = [f"inputs = {call('keras.Input', **inputs_kwargs)}"]
        channels_first = model.input.layout == "channels_first"
        reserved = _RESERVED | self.function_names

        def input_variable(lasting: bool) -> str:
            if not channels_first:
                return "inputs"
            return _free_name("to_channels_last", self.layer_names | reserved) if lasting else "x"

        if self._is_chain():
            first = input_variable(False)
            body, output = self._chain(first), "x" if model.layers else first
        else:
            body, output, first = self._scope(self.body, model.input.name, self.output, "model", "", 0, input_variable)
        if channels_first:
            rank = len(model.input.shape)
            order = (*range(2, rank + 1), 1)  # Permute counts axes from 1, without the batch
            lines.append(f"# the model is fed {_axes_text(rank)}; Keras layers work channels-last")
            permute = keras_layer("layers.Permute", order, name=_free_name("to_channels_last", self.layer_names))
            lines.append(f"{first} = {permute.code()}(inputs)")
        lines += body
        lines.append(f"return {call('keras.Model', Code('inputs'), Code(output), name=ident(model.name))}")
        return lines

    def _build_graph_model(self) -> list[str]:
        """A model with several inputs or outputs: a ``keras.Input`` per input, named after it."""
        model = self.model
        taken = set(self.layer_names | _RESERVED | self.function_names)
        lines: list[str] = []
        held: dict[str, str] = {}
        variables: list[str] = []
        for model_input in model.inputs:
            kwargs: dict[str, Any] = {"shape": model_input.fed_shape}
            if model_input.dtype != "float32":
                kwargs["dtype"] = model_input.dtype
            kwargs["name"] = _free_name(model_input.name, self.layer_names)
            variable = "inputs" if model_input.name == ir.INPUT_NAME else _free_name(_identifier(model_input.name), taken)
            taken.add(variable)
            variables.append(variable)
            lines.append(f"{variable} = {call('keras.Input', **kwargs)}")
            held[model_input.name] = variable
            if model_input.layout == "channels_first":
                rank = len(model_input.shape)
                order = (*range(2, rank + 1), 1)  # Permute counts axes from 1, without the batch
                last = _free_name(f"{variable}_channels_last", taken)
                taken.add(last)
                permute = keras_layer("layers.Permute", order, name=_free_name(last, self.layer_names))
                lines.append(f"# `{model_input.name}` is fed {_axes_text(rank)}; Keras layers work channels-last")
                lines.append(f"{last} = {permute.code()}({variable})")
                held[model_input.name] = last
        first = model.input.name
        body, _, _ = self._scope(self.body, first, self.output, "model", "", 0, lambda lasting: held[first],
                                 held=held)
        lines += body
        outputs = [self.held[name] for name in model.outputs]
        inputs_code = Code(f"[{', '.join(variables)}]" if len(variables) > 1 else variables[0])
        outputs_code = Code(f"[{', '.join(outputs)}]" if len(outputs) > 1 else outputs[0])
        lines.append(f"return {call('keras.Model', inputs_code, outputs_code, name=ident(model.name))}")
        return lines

    # --- block definitions ----------------------------------------------------------------

    def _is_chain(self) -> bool:
        """The model is one chain of layers, without blocks, repeats or taps."""
        return self.model.is_sequential and all(isinstance(node, ir.LayerNode) for node in self.body)

    def _chain(self, source: str) -> list[str]:
        """A chain: each layer (with an activation that follows it fused in) reassigns ``x``."""
        layers = self.model.layers
        lines: list[str] = []
        i = 0
        while i < len(layers):
            fused = layers[i + 1] if i + 1 < len(layers) and _fusable(layers[i], layers[i + 1]) else None
            lines += self._layer(layers[i], fused, "x", [source], "model")
            source = "x"
            i += 2 if fused else 1
        return lines

    def is_callable(self, node: ir.BlockCall) -> bool:
        """A block instance is a function call when it reads only its input and only its output is read outside."""
        if node.instance not in self._callable:
            inside = structure.produced(node.body)
            parameters = self.model.block(node.block).signature
            self._callable[node.instance] = (
                node.output != node.input
                and all(_usable_parameter(p) and p not in self.block_names for p in parameters)
                and structure.self_contained(node)
                and all(output not in inside or output == node.output for output in self.model.outputs)
                and all(
                    reader in inside for tensor in inside - {node.output} for reader in self.readers.get(tensor, ())
                )
            )
        return self._callable[node.instance]

    def _bottom_up(self, instances: dict[str, list[ir.BlockCall]]) -> list[str]:
        """Block definitions in an order where each comes after those whose functions it calls."""
        uses = {
            block: {
                node.block
                for instance in calls
                for node in ir.walk(instance.body)
                if isinstance(node, ir.BlockCall) and self.is_callable(node)
            }
            for block, calls in instances.items()
        }
        order: list[str] = []

        def visit(block: str) -> None:
            if block not in order:
                for used in sorted(uses[block]):
                    visit(used)
                order.append(block)

        for block in instances:
            visit(block)
        return order

    def _define(self, block: str, instances: list[ir.BlockCall]) -> None:
        definition = self.model.block(block)
        fragments, scopes = [], []
        for instance in instances:
            with codegen.holes() as holes:
                lines, output, parameter = self._scope(
                    instance.body,
                    instance.input,
                    instance.output,
                    "function",
                    instance.instance + "_",
                    0,
                    lambda lasting: "inputs" if lasting else "x",
                    set(definition.signature),
                )
            fragments.append(Fragment.of("\n".join([parameter, *lines, f"return {output}"]), holes))
            # A size that is the input's channel count in every instance is read off the input in the
            # function (`in_channels = inputs.shape[-1]`), as keras.applications does, not passed in.
            values = dict(instance.args)
            if _IN_CHANNELS not in definition.signature:  # a parameter of that name takes precedence
                values[_IN_CHANNELS] = self.model.tensor_shape(instance.input)[-1]
            scopes.append(Scope(values, dict(definition.defaults), instance.instance))
        variants = structure.unify(fragments, scopes, reserved=_RESERVED | self.function_names)
        for number, variant in enumerate(variants):
            parameter, *body = variant.text.split("\n")
            if _IN_CHANNELS not in definition.signature and any(p.name == _IN_CHANNELS for p in variant.parameters):
                body.insert(0, f"{_IN_CHANNELS} = {parameter}.shape[-1]")
                kept = tuple(p for p in variant.parameters if p.name != _IN_CHANNELS)
                variant = dataclasses.replace(variant, text="\n".join([parameter, *body]), parameters=kept)
            # (a block named `keras` or `layers` must not hide the modules: `keras_1`)
            taken = (self.function_names - {block} if number == 0 else self.function_names) | _RESERVED
            name = _free_name(block if number == 0 else f"{block}_{number + 1}", taken)
            self.function_names.add(name)
            signature = [parameter] + [
                f"{ident(p.name)}={literal(p.default)}" if p.has_default else ident(p.name) for p in variant.parameters
            ]
            if variant.uses_name:
                signature.append("name=None")
            self.definitions.append([f"def {ident(name)}({', '.join(signature)}):", *(f"    {line}" for line in body)])
            for member in variant.members:
                instance = instances[member]
                spelled_out = self.varying_call_args.get(instance.span, frozenset())
                self.functions[instance.instance] = _Function(name, variant, member, spelled_out)

    # --- a scope: the body of a function, of a loop, or of build_model ----------------------

    def _scope(
        self,
        nodes: tuple[ir.Node, ...],
        input_tensor: str,
        output_tensor: str,
        mode: str,
        prefix: str,
        depth: int,
        input_variable: Callable[[bool], str | None],
        parameters: set[str] | None = None,
        held: Mapping[str, str] | None = None,
    ) -> tuple[list[str], str, str]:
        """The lines of one scope, the variable holding its output, and the one holding its input.

        ``mode`` is "model" (comments with the DSL line and the output shape), "function" or
        "loop" (comments with the statement as written: no shapes, which differ between uses).
        """
        taps: dict[str, str] = {}
        steps = self._steps(nodes, mode, depth, taps)
        reads: dict[str, int] = {}  # tensor -> how many statements of the scope read it (none outside does)
        for step in steps:
            for tensor in step.reads:
                reads[tensor] = reads.get(tensor, 0) + 1
        steps = self._fuse(steps, taps, reads, output_tensor)
        names, input_lasting = self._names(steps, input_tensor, output_tensor, taps, reads, prefix, parameters or set())
        first = input_variable(input_lasting)
        if first is None:
            raise _NotALoop
        variables = {**(held or {}), input_tensor: first}  # the model's other inputs, when it has several
        lines: list[str] = []
        for step in steps:
            target = names.get(step.produces, "x")
            start = codegen.hole_count()
            lines += self._step(step, target, [variables[tensor] for tensor in step.reads], mode, depth)
            if mode == "function" and step.layer is not None:  # `dense in_channels`: not a literal 768
                for value, written in structure.written_sizes(step.layer).items():
                    codegen.name_hole(start, value, written)
            variables[step.produces] = target
        self.held = variables
        return lines, variables[output_tensor], first

    def _steps(self, nodes: tuple[ir.Node, ...], mode: str, depth: int, taps: dict[str, str]) -> list[_Step]:
        steps: list[_Step] = []
        for node in nodes:
            if isinstance(node, ir.LayerNode):
                steps.append(_Step(node.layer.inputs, node.layer.name, layer=node.layer))
            elif isinstance(node, ir.Tap):
                taps[node.tensor] = node.name
            elif isinstance(node, ir.BlockCall):
                if self.is_callable(node):
                    steps.append(_Step((node.input,), node.output, call=node))
                else:
                    inlined = self._steps(node.body, mode, depth, taps)
                    if inlined:
                        inlined[0].comment = f"# block {node.instance if mode == 'model' else node.block}"
                    steps += inlined
            elif self._loop(node, mode, depth) is not None:
                steps.append(_Step((node.input,), node.output, repeat=node))
            else:
                for iteration in node.iterations:
                    steps += self._steps(iteration, mode, depth, taps)
        return steps

    def _fuse(self, steps: list[_Step], taps: dict[str, str], reads: dict[str, int], output: str) -> list[_Step]:
        """``conv2d ... | relu``: the activation becomes the layer's ``activation=`` when nothing else reads the conv."""
        out: list[_Step] = []
        for step in steps:
            before = out[-1] if out and step.layer is not None and step.layer.kind == "activation" else None
            if (
                before is not None
                and before.layer is not None
                and before.activation is None
                and _fusable(before.layer, step.layer)
                and not step.comment
                and step.reads == (before.produces,)
                and reads[before.produces] == 1
                and before.produces not in taps
                and before.produces != output
            ):
                before.activation, before.produces = step.layer, step.layer.name
            else:
                out.append(step)
        return out

    def _names(
        self,
        steps: list[_Step],
        input_tensor: str,
        output_tensor: str,
        taps: dict[str, str],
        reads: dict[str, int],
        prefix: str,
        parameters: set[str],
    ) -> tuple[dict[str, str], bool]:
        """Variables for the tensors of a scope that ``x`` cannot hold: those read more than once,
        by a merge or not by the next statement, and taps. Also whether the input is one of them."""
        position = {input_tensor: -1}
        for i, step in enumerate(steps):
            position[step.produces] = i
        lasting: list[str] = []
        input_lasting = False
        last = len(steps) - 1
        for tensor, index in position.items():
            if tensor == output_tensor or tensor in self.model.outputs:
                held = index != last or len(self.model.outputs) > 1
            else:
                # `x` holds a tensor that the next statement alone reads, and reads alone
                held = reads.get(tensor) != 1 or index == last or tensor not in steps[index + 1].reads
                held = held or steps[index + 1].merge
            if tensor == input_tensor:
                input_lasting = held
            elif held or tensor in taps:
                lasting.append(tensor)
        if not lasting:
            return {}, input_lasting
        # a tensor a block's function returns is named after the call (`up_1`), others after their
        # layer (a layer with its activation fused in after the layer: the Keras layer it is)
        wanted = {
            step.produces: step.call.instance if step.call else step.layer.name if step.layer else step.produces
            for step in steps
        }
        own = {_local(wanted.get(tensor, tensor), prefix) for tensor in position} if taps else set()
        used = set(_RESERVED | self.function_names | parameters)
        names: dict[str, str] = {}
        for tensor in lasting:
            if tensor in taps:
                names[tensor] = _free_name(_identifier(taps[tensor]), used | own | self.layer_names)
            else:
                names[tensor] = _free_name(_local(wanted[tensor], prefix), used)
            used.add(names[tensor])
        return names, input_lasting

    # --- statements -----------------------------------------------------------------------

    def _step(self, step: _Step, target: str, sources: list[str], mode: str, depth: int) -> list[str]:
        if step.layer is not None:
            layer_lines = self._layer(step.layer, step.activation, target, sources, mode)
            return [step.comment, *layer_lines] if step.comment else layer_lines
        lines = [step.comment] if step.comment else []
        if step.call is not None:
            node = step.call
            if mode == "model":
                lines.append(f"# line {node.span.line}: {node.block} -> {shape_comment(self._shape(node.output))}")
            return [*lines, f"{target} = {self._call(node, sources[0])}"]
        assert step.repeat is not None
        repeat = step.repeat
        loop = self._loop(repeat, mode, depth)
        assert loop is not None
        if mode == "model":
            lines.append(
                f"# line {repeat.span.line}: repeat {repeat.count} -> {shape_comment(self._shape(repeat.output))}"
            )
        if sources[0] != "x":
            lines.append(f"x = {sources[0]}")
        lines.append(f"for {_LOOP_INDEXES[depth]} in range({py(repeat.count)}):")
        text = loop.render(lambda k: py(Hint(loop.values[k], loop.meanings[k]) if loop.meanings[k] else loop.values[k]))
        lines += [f"    {line}" if line else line for line in text.split("\n")]
        if target != "x":
            lines.append(f"{target} = x")
        return lines

    def _layer(
        self, layer: ir.Layer, activation: ir.Layer | None, target: str, sources: list[str], mode: str
    ) -> list[str]:
        """``target = layers.X(...)(source)``, after the DSL line(s) it comes from; a merge reads a list."""
        lines = [_comment(layer, mode)]
        if activation is not None:
            lines.append(_comment(activation, mode))
            function = activation.args["function"]
            layer = dataclasses.replace(
                layer, args=ir.Args(tuple((k, function if k == "activation" else v) for k, v in layer.args.items()))
            )
        spelled_out = self.varying_layer_args.get((layer.span, layer.kind)) if layer.block else None
        if spelled_out is None:
            layer_call = self.emitters[layer.kind](layer, Emission(layer.name))
        else:
            token = _SPELLED_OUT.set(spelled_out)
            try:
                layer_call = self.emitters[layer.kind](layer, Emission(layer.name))
            finally:
                _SPELLED_OUT.reset(token)
        if mode != "model":
            layer_call = self._hinted(layer_call, layer)
        if layer_call.before is not None:
            lines.append(f"x = {layer_call.before.code()}({sources[0]})")
            sources = ["x"]
        spec = REGISTRY[layer.kind]
        if spec.merge:
            argument = "[" + ", ".join(sources) + "]"
        elif spec.reads_memory:  # query, then keys and values: `mha(x, x)` is self-attention
            argument = ", ".join([sources[0], sources[-1], *(f"{k}={py(v)}" for k, v in layer_call.applied)])
        else:
            argument = sources[0]
        lines.append(f"{target} = {layer_call.code()}({argument})")
        return lines

    def _hinted(self, layer_call: LayerCall, layer: ir.Layer) -> LayerCall:
        """The call with each argument that the statement, as written, takes from a block parameter
        marked as that parameter (``Hint``), so that the function names it even where every
        instance passes the same value (``bottleneck=128``, DenseNet's default)."""
        instance = self.instances.get(layer.block[-1]) if layer.block else None
        if instance is None:
            return layer_call
        arguments = dict(instance.args.items())
        named = [token.rpartition("=")[2] for token in layer.written.split()[1:]]
        values = {p: arguments[p] for p in named if p in arguments}
        if not values:
            return layer_call

        def hint(value: Any) -> Any:
            for parameter, given in values.items():
                if _equal(value, given) or (isinstance(value, tuple) and all(_equal(v, given) for v in value)):
                    return Hint(value, parameter)
            return value

        return dataclasses.replace(
            layer_call,
            args=tuple(map(hint, layer_call.args)),
            kwargs={k: v if k == "name" else hint(v) for k, v in layer_call.kwargs.items()},
        )

    def _call(self, node: ir.BlockCall, source: str) -> Code:
        function = self.functions[node.instance]
        variant = function.variant
        positional, keywords = variant.call_arguments(function.member)
        values = variant.arguments[variant.members.index(function.member)]
        keywords = {
            p.name: values[p.name]
            for p in variant.parameters
            if p.has_default and (p.name in keywords or p.name in function.spelled_out)
        }
        if variant.uses_name:
            keywords["name"] = node.instance
        return call(function.name, Code(source), *positional, **keywords)

    def _loop(self, repeat: ir.Repeat, mode: str, depth: int) -> Fragment | None:
        """The body of the `for` loop a repeat becomes, or None where it is written out iteration by iteration."""
        key = id(repeat)
        if key not in self._loops:
            self._loops[key] = None
            if repeat.count >= (2 if mode == "model" else 1) and depth < len(_LOOP_INDEXES):
                self._loops[key] = self._loop_body(repeat, depth)
        return self._loops[key]

    def _loop_body(self, repeat: ir.Repeat, depth: int) -> Fragment | None:
        fragments = []
        previous = repeat.input
        for iteration in repeat.iterations:
            made = structure.produced(iteration)
            if any(isinstance(node, ir.Tap) for node in ir.walk(iteration)):
                return None
            if not structure.reads(iteration) <= made | {previous}:
                return None
            output = next(_output(node) for node in reversed(iteration) if not isinstance(node, ir.Tap))
            if any(reader not in made for tensor in made - {output} for reader in self.readers.get(tensor, ())):
                return None
            with codegen.holes() as holes:
                try:
                    lines, result, _ = self._scope(
                        iteration, previous, output, "loop", "", depth + 1, lambda lasting: None if lasting else "x"
                    )
                except _NotALoop:
                    return None
            if result != "x":
                return None
            fragments.append(Fragment.of("\n".join(lines), holes))
            previous = output
        if previous != repeat.output:
            return None
        return structure.unify_iterations(fragments, _LOOP_INDEXES[depth])

    def _shape(self, tensor: str) -> tuple[int, ...]:
        return self.model.tensor_shape(tensor)


class _NotALoop(Exception):
    """An iteration of a repeat reads its input after the first statement: written out, not looped."""


def _fusable(layer: ir.Layer, activation: ir.Layer | None) -> bool:
    """Whether ``activation`` can be the ``activation=`` of ``layer``, the layer it reads."""
    return (
        activation is not None
        and activation.kind == "activation"
        and layer.kind in _FUSABLE
        and layer.args["activation"] == "linear"
        and not activation.input_masked
        and not activation.args.get("approximate")  # a layer of its own, as from_keras reads it back
    )


def _comment(layer: ir.Layer, mode: str) -> str:
    """The DSL line a layer came from: with its output shape in ``build_model``, as written in a block
    (without shapes, which differ between the block's instances) in a function or loop."""
    if mode == "model":
        return layer_comment(layer, layer.output_shape)
    return f"# line {layer.span.line}: {layer.written or layer.source}"


def _usable_parameter(name: str) -> bool:
    """A block parameter that can be a Python parameter of the block's function as it is (not a
    dunder name such as ``__import__``: those blocks are written inline)."""
    return _identifier(name) == name and name not in _RESERVED


def _local(name: str, prefix: str) -> str:
    """A name inside a block instance without the instance's prefix: ``conv_bn_1_bn`` in ``basic_conv_bn_1_bn``."""
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def _output(node: ir.Node) -> str:
    if isinstance(node, ir.LayerNode):
        return node.layer.name
    if isinstance(node, ir.BlockCall | ir.Repeat):
        return node.output
    raise TypeError(node)


def _varying(items: Iterable[tuple[Any, Mapping[str, Any]]]) -> dict[Any, frozenset[str]]:
    """For each key (a statement), the arguments whose values differ between its instances."""
    seen: dict[Any, list[Mapping[str, Any]]] = {}
    for key, args in items:
        seen.setdefault(key, []).append(args)
    varying: dict[Any, frozenset[str]] = {}
    for key, instances in seen.items():
        rows = [tuple(args.items()) for args in instances]
        if any(row != rows[0] for row in rows[1:]):
            first, *others = map(dict, rows)
            varying[key] = frozenset(
                name for name in first if any(not _equal(other.get(name), first[name]) for other in others)
            )
    return varying


def _equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _identifier(text: str, fallback: str = "tap") -> str:
    """``text`` as a variable name, or ``fallback`` where it is not a plain one (a keyword, ``__import__``)."""
    return text if text.isidentifier() and not keyword.iskeyword(text) and not text.startswith("__") else fallback


# --- formatting: long lines split as `ruff format` splits them -------------------------------


def _wrap(line: str, width: int = LINE_WIDTH) -> list[str]:
    """``line`` split at its brackets as ruff format (and black) would: the last bracket whose
    opening line fits, its contents on one line, or one item a line with a trailing comma."""
    if len(line) <= width:
        return [line]
    stripped = line.lstrip()
    if stripped.startswith("#"):
        return [line]
    indent = line[: len(line) - len(stripped)]
    for opening, closing in reversed(_groups(stripped)):
        head, inner, tail = stripped[: opening + 1], stripped[opening + 1 : closing], stripped[closing:]
        if len(indent) + len(head) > width or len(indent) + len(tail) > width:
            continue
        return [indent + head, *_wrap_items(inner, indent + "    ", width), indent + tail]
    return [line]


def _wrap_items(inner: str, indent: str, width: int) -> list[str]:
    if len(indent) + len(inner) <= width:
        return [indent + inner]
    items = _split(inner)
    if len(items) == 1:
        return _wrap(indent + inner, width)
    return [wrapped for item in items for wrapped in _wrap(f"{indent}{item},", width)]


def _scan(text: str) -> Iterator[tuple[int, str, int]]:
    """(index, character, bracket depth before it) for each character outside string literals."""
    depth, quote, index = 0, "", 0
    while index < len(text):
        ch = text[index]
        if quote:
            if ch == "\\":
                index += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        else:
            yield index, ch, depth
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
        index += 1


def _groups(text: str) -> list[tuple[int, int]]:
    """(opening, closing) index of every outermost bracket pair."""
    groups, opening = [], 0
    for index, ch, depth in _scan(text):
        if ch in "([{" and depth == 0:
            opening = index
        elif ch in ")]}" and depth == 1:
            groups.append((opening, index))
    return groups


def _split(inner: str) -> list[str]:
    """The comma-separated items of a bracket's contents."""
    items, start = [], 0
    for index, ch, depth in _scan(inner):
        if ch == "," and depth == 0:
            items.append(inner[start:index].strip())
            start = index + 1
    items.append(inner[start:].strip())
    return [item for item in items if item]


def _axes_text(rank: int) -> str:
    if rank == 3:
        return "(N, C, H, W)"
    return "(N, C, " + ", ".join(f"D{i}" for i in range(1, rank)) + ")"


__all__ = ["EMITTERS", "KerasBackend"]
