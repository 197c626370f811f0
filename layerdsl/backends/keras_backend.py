"""The Keras 3 backend: IR -> a functional-API ``build_model()`` that a person would write.

Keras is the canonical layout, so weights map one to one: ``"<layer>.<param>"``
is the variable ``param`` of ``model.get_layer(layer)`` (for a ``Bidirectional``,
``forward_kernel`` is the ``kernel`` of its ``forward_layer``, and so on). The DSL's defaults are
Keras's, so each emitter writes only the arguments that differ, plus ``name=``.
A chain of layers keeps reassigning ``x``; in a graph (residuals, taps, merges) a tensor
read again later, or read by a merge, gets a variable named after its layer.
Keras and TensorFlow are imported only to build or read live models.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import ir
from ..codegen import Code, SourceWriter, call, dotted, ident, layer_comment, module_docstring, py
from ..errors import BackendError
from ..specs import REGISTRY
from .base import IR_ATTRIBUTE, Backend, missing_framework

if TYPE_CHECKING:
    import numpy as np

LINE_WIDTH = 100  # generated lines longer than this are wrapped as black would


@dataclass(frozen=True)
class LayerCall:
    """A Keras layer constructor call: ``layers.Dense(10, activation="relu", name="dense")``.

    An argument may itself be a LayerCall (the layer a ``Bidirectional`` wraps).
    """

    func: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: A layer applied to the input first (``ZeroPadding2D`` for a convolution's `pad=1`).
    before: LayerCall | None = None

    def argument(self, source: str) -> str:
        """What this call is applied to: ``source``, through ``before`` if there is one."""
        return source if self.before is None else f"{self.before.code()}({source})"

    def code(self) -> Code:
        """The call on one line."""
        return call(self.func, *map(_inline, self.args), **{k: _inline(v) for k, v in self.kwargs.items()})

    def lines(self, prefix: str, suffix: str, indent: int) -> list[str]:
        """``prefix + call + suffix``, wrapped to fit LINE_WIDTH after ``indent`` columns."""
        one_line = f"{prefix}{self.code()}{suffix}"
        if indent + len(one_line) <= LINE_WIDTH:
            return [one_line]
        parts = [("", a) for a in self.args] + [(f"{ident(k)}=", v) for k, v in self.kwargs.items()]
        head, tail = f"{prefix}{dotted(self.func)}(", f"){suffix}"
        joined = "    " + ", ".join(f"{key}{py(_inline(value))}" for key, value in parts)
        if indent + len(joined) <= LINE_WIDTH:
            return [head, joined, tail]
        body: list[str] = []
        for key, value in parts:
            if isinstance(value, LayerCall):
                body += [f"    {line}" for line in value.lines(key, ",", indent + 4)]
            else:
                body.append(f"    {key}{py(value)},")
        return [head, *body, tail]


def _inline(value: Any) -> Any:
    return value.code() if isinstance(value, LayerCall) else value


def keras_layer(func: str, *args: Any, **kwargs: Any) -> LayerCall:
    return LayerCall(func, args, kwargs)


Emitter = Callable[[ir.Layer], LayerCall]


def _options(layer: ir.Layer, defaults: Mapping[str, Any], keras_names: Mapping[str, str]) -> dict[str, Any]:
    """Keras keyword arguments for the DSL arguments that differ from their defaults (a `pad`
    of zeros is a ZeroPadding2D before the layer: see ``_zero_padded``)."""
    return {
        keras_names[dsl]: layer.args[dsl]
        for dsl, default in defaults.items()
        if layer.args[dsl] != default and not (dsl == "pad" and isinstance(layer.args[dsl], tuple))
    }


def _zero_padded(emit: Emitter) -> Emitter:
    """Symmetric zero padding (`pad=1`, `pad=1x2`): Keras pads with a ZeroPadding2D, then convolves `valid`."""

    def padded(layer: ir.Layer) -> LayerCall:
        layer_call = emit(layer)
        pad = layer.args["pad"]
        if not isinstance(pad, tuple) or pad == (0, 0):
            return layer_call
        padding = pad[0] if pad[0] == pad[1] else pad
        before = keras_layer("layers.ZeroPadding2D", padding, name=f"{layer.name}_pad")
        return dataclasses.replace(layer_call, before=before)

    return padded


def _weighted(layer: ir.Layer, maxnorm_axis: int | list[int]) -> dict[str, Any]:
    """Activation, bias, initializer and constraint keywords shared by Dense and Conv2D."""
    args = layer.args
    kwargs: dict[str, Any] = {}
    if args["activation"] != "linear":
        kwargs["activation"] = args["activation"]
    if not args["bias"]:
        kwargs["use_bias"] = False
    if args["init"] != "glorot_uniform":
        kwargs["kernel_initializer"] = args["init"]
    if args["bias"] and args["bias_init"] != "zeros":
        kwargs["bias_initializer"] = args["bias_init"]
    if args["maxnorm"] is not None:
        kwargs["kernel_constraint"] = call("keras.constraints.MaxNorm", float(args["maxnorm"]), axis=maxnorm_axis)
    return kwargs


def _dense(layer: ir.Layer) -> LayerCall:
    # axis 0 of the (in, units) kernel: each unit's incoming weight vector is bounded.
    return keras_layer("layers.Dense", layer.args["units"], **_weighted(layer, 0), name=layer.name)


def _conv2d(layer: ir.Layer) -> LayerCall:
    options = _options(
        layer,
        {"stride": (1, 1), "pad": "valid", "dilation": (1, 1)},
        {"stride": "strides", "pad": "padding", "dilation": "dilation_rate"},
    )
    # Per-filter max-norm: the kernel is (height, width, in, filters), so the norm runs
    # over axes 0-2 and bounds each filter as a whole, as the MaxNorm docstring advises
    # for Conv2D (axis=0 alone would bound each (width, in) slice separately).
    kwargs = {**options, **_weighted(layer, [0, 1, 2])}
    return keras_layer("layers.Conv2D", layer.args["filters"], layer.args["kernel"], **kwargs, name=layer.name)


def _grouped(emit: Emitter) -> Emitter:
    """`groups=G`: Keras's own grouped convolution (the kernel is (..., in / G, filters))."""

    def grouped(layer: ir.Layer) -> LayerCall:
        layer_call = emit(layer)
        if layer.args["groups"] == 1:
            return layer_call
        kwargs = {k: v for k, v in layer_call.kwargs.items() if k != "name"}
        return dataclasses.replace(layer_call, kwargs={**kwargs, "groups": layer.args["groups"], "name": layer.name})

    return grouped


def _pool(keras_class: str) -> Emitter:
    def emit(layer: ir.Layer) -> LayerCall:
        kwargs: dict[str, Any] = {}
        if layer.args["stride"] != layer.args["pool"]:  # Keras's stride defaults to the window too
            kwargs["strides"] = layer.args["stride"]
        if layer.args["pad"] != "valid":
            kwargs["padding"] = layer.args["pad"]
        return keras_layer(keras_class, layer.args["pool"], **kwargs, name=layer.name)

    return emit


def _flatten(layer: ir.Layer) -> LayerCall:
    return keras_layer("layers.Flatten", name=layer.name)


def _dropout(layer: ir.Layer) -> LayerCall:
    return keras_layer("layers.Dropout", float(layer.args["rate"]), name=layer.name)


def _batchnorm(layer: ir.Layer) -> LayerCall:
    options = _options(
        layer,
        {"momentum": 0.99, "eps": 1e-3, "center": True, "scale": True},
        {"momentum": "momentum", "eps": "epsilon", "center": "center", "scale": "scale"},
    )
    return keras_layer("layers.BatchNormalization", **options, name=layer.name)


def _activation(layer: ir.Layer) -> LayerCall:
    # Keras's own functions, as named: leaky_relu has slope 0.2, gelu is the exact (erf) form.
    return keras_layer("layers.Activation", layer.args["function"], name=layer.name)


def _embedding(layer: ir.Layer) -> LayerCall:
    args = layer.args
    options = _options(
        layer, {"mask_zero": False, "init": "uniform"}, {"mask_zero": "mask_zero", "init": "embeddings_initializer"}
    )
    return keras_layer("layers.Embedding", args["vocab"], args["dim"], **options, name=layer.name)


def _masking(layer: ir.Layer) -> LayerCall:
    options = {"mask_value": float(layer.args["value"])} if layer.args["value"] != 0.0 else {}
    return keras_layer("layers.Masking", **options, name=layer.name)


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


def _recurrent(layer: ir.Layer) -> LayerCall:
    return _recurrent_call(layer.kind, layer.args, layer.name)


def _bidirectional(layer: ir.Layer) -> LayerCall:
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
    return keras_layer("layers.Bidirectional", _recurrent_call(kind, args, keras_name), **options, name=layer.name)


def _conv1d(layer: ir.Layer) -> LayerCall:
    options = _options(
        layer,
        {"stride": 1, "pad": "valid", "dilation": 1},
        {"stride": "strides", "pad": "padding", "dilation": "dilation_rate"},
    )
    # The kernel is (length, in, filters): the norm over axes 0-1 bounds each filter whole.
    kwargs = {**options, **_weighted(layer, [0, 1])}
    return keras_layer("layers.Conv1D", layer.args["filters"], layer.args["kernel"], **kwargs, name=layer.name)


def _global_pool(keras_class: str) -> Emitter:
    def emit(layer: ir.Layer) -> LayerCall:
        return keras_layer(keras_class, **({"keepdims": True} if layer.args["keepdims"] else {}), name=layer.name)

    return emit


def _merge(keras_class: str) -> Emitter:
    def emit(layer: ir.Layer) -> LayerCall:
        return keras_layer(keras_class, name=layer.name)

    return emit


def _concat(layer: ir.Layer) -> LayerCall:
    # IR axes leave out the batch; Keras counts it, so axis a >= 0 is a + 1 (negative axes agree).
    axis = layer.args["axis"]
    options = {"axis": axis + 1 if axis >= 0 else axis} if axis != -1 else {}
    return keras_layer("layers.Concatenate", **options, name=layer.name)


def _zeropad2d(layer: ir.Layer) -> LayerCall:
    top, bottom, left, right = (layer.args[side] for side in ("top", "bottom", "left", "right"))
    if top == bottom == left == right:
        padding: Any = top
    elif top == bottom and left == right:
        padding = (top, left)
    else:
        padding = ((top, bottom), (left, right))
    return keras_layer("layers.ZeroPadding2D", padding, name=layer.name)


_WINDOW_KEYWORDS = {"stride": "strides", "pad": "padding", "dilation": "dilation_rate"}
_WINDOW_DEFAULTS = {"stride": (1, 1), "pad": "valid", "dilation": (1, 1)}


def _fused(layer: ir.Layer, kernel_initializers: tuple[str, ...]) -> dict[str, Any]:
    """Multiplier, activation, bias and initializer keywords of the newer convolutions.

    ``init`` sets every kernel named in ``kernel_initializers`` (SeparableConv2D has two).
    """
    args = layer.args
    kwargs: dict[str, Any] = {}
    if args.get("multiplier", 1) != 1:
        kwargs["depth_multiplier"] = args["multiplier"]
    if args["activation"] != "linear":
        kwargs["activation"] = args["activation"]
    if not args["bias"]:
        kwargs["use_bias"] = False
    if args["init"] != "glorot_uniform":
        kwargs.update(dict.fromkeys(kernel_initializers, args["init"]))
    if args["bias"] and args["bias_init"] != "zeros":
        kwargs["bias_initializer"] = args["bias_init"]
    return kwargs


def _depthwiseconv2d(layer: ir.Layer) -> LayerCall:
    kwargs = {**_options(layer, _WINDOW_DEFAULTS, _WINDOW_KEYWORDS), **_fused(layer, ("depthwise_initializer",))}
    return keras_layer("layers.DepthwiseConv2D", layer.args["kernel"], **kwargs, name=layer.name)


def _separableconv2d(layer: ir.Layer) -> LayerCall:
    initializers = ("depthwise_initializer", "pointwise_initializer")
    kwargs = {**_options(layer, _WINDOW_DEFAULTS, _WINDOW_KEYWORDS), **_fused(layer, initializers)}
    return keras_layer("layers.SeparableConv2D", layer.args["filters"], layer.args["kernel"], **kwargs, name=layer.name)


def _conv2dtranspose(layer: ir.Layer) -> LayerCall:
    options = _options(layer, {"stride": (1, 1), "pad": "valid"}, _WINDOW_KEYWORDS)
    kwargs = {**options, **_fused(layer, ("kernel_initializer",))}
    return keras_layer("layers.Conv2DTranspose", layer.args["filters"], layer.args["kernel"], **kwargs, name=layer.name)


def _upsample2d(layer: ir.Layer) -> LayerCall:
    options = _options(layer, {"interpolation": "nearest"}, {"interpolation": "interpolation"})
    return keras_layer("layers.UpSampling2D", layer.args["size"], **options, name=layer.name)


def _layernorm(layer: ir.Layer) -> LayerCall:
    options = _options(
        layer,
        {"eps": 1e-3, "center": True, "scale": True},
        {"eps": "epsilon", "center": "center", "scale": "scale"},
    )
    return keras_layer("layers.LayerNormalization", **options, name=layer.name)


def _reshape(layer: ir.Layer) -> LayerCall:
    return keras_layer("layers.Reshape", tuple(layer.args["target"]), name=layer.name)


def _permute(layer: ir.Layer) -> LayerCall:
    return keras_layer("layers.Permute", tuple(layer.args["dims"]), name=layer.name)


def _rescaling(layer: ir.Layer) -> LayerCall:
    options = {"offset": float(layer.args["offset"])} if layer.args["offset"] != 0.0 else {}
    return keras_layer("layers.Rescaling", float(layer.args["scale"]), **options, name=layer.name)


def _normalization(layer: ir.Layer) -> LayerCall:
    # With constants Keras holds no weights; without, mean, variance and count come with the weights file.
    args = layer.args
    options = {} if args["mean"] is None else {"mean": float(args["mean"]), "variance": float(args["variance"])}
    return keras_layer("layers.Normalization", **options, name=layer.name)


def _layerscale(layer: ir.Layer) -> LayerCall:
    return keras_layer("LayerScale", float(layer.args["init"]), name=layer.name)


def _cropping2d(layer: ir.Layer) -> LayerCall:
    top, bottom, left, right = (layer.args[side] for side in ("top", "bottom", "left", "right"))
    return keras_layer("layers.Cropping2D", ((top, bottom), (left, right)), name=layer.name)


def _cropping1d(layer: ir.Layer) -> LayerCall:
    return keras_layer("layers.Cropping1D", (layer.args["start"], layer.args["end"]), name=layer.name)


def _upsample1d(layer: ir.Layer) -> LayerCall:
    return keras_layer("layers.UpSampling1D", layer.args["size"], name=layer.name)


#: Layers without a core Keras class, written into the generated file (by IR kind). Registered as
#: serializable, so a saved `.keras` file loads under safe_mode once this module is imported.
DEFINITIONS: dict[str, str] = {
    "layerscale": '''\
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
}


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
        taken = {layer.name for layer in model.layers}
        out = SourceWriter()
        out.line(module_docstring(model, "Keras", "Needs only Keras 3."))
        out.line("import keras")
        out.line("from keras import layers")
        out.blank(2)
        for kind in sorted({layer.kind for layer in model.layers} & DEFINITIONS.keys()):
            out.lines.extend(DEFINITIONS[kind].rstrip("\n").split("\n"))
            out.blank(2)
        out.line("def build_model():")
        with out.indent():
            inputs_kwargs: dict[str, Any] = {"shape": model.input.fed_shape}
            if model.input.dtype != "float32":
                inputs_kwargs["dtype"] = model.input.dtype
            inputs_kwargs["name"] = _free_name("input", taken)
            out.line(f"inputs = {call('keras.Input', **inputs_kwargs)}")
            x = "inputs"
            names = None if model.is_sequential else _GraphNames(model, taken)
            if model.input.layout == "channels_first":
                rank = len(model.input.shape)
                order = (*range(2, rank + 1), 1)  # Permute counts axes from 1, without the batch
                out.line(f"# the model is fed {_axes_text(rank)}; Keras layers work channels-last")
                permute = keras_layer("layers.Permute", order, name=_free_name("to_channels_last", taken))
                x = names.variable(ir.INPUT_NAME, "x") if names else "x"
                out.line(f"{x} = {permute.code()}(inputs)")
            if names is None:
                block: tuple[str, ...] = ()
                for layer in model.layers:
                    block = _block_comment(out, layer, block)
                    out.line(layer_comment(layer, layer.output_shape))
                    layer_call = self.emitters[layer.kind](layer)
                    for line in layer_call.lines("x = ", f"({layer_call.argument(x)})", indent=4):
                        out.line(line)
                    x = "x"
            else:
                x = self._emit_graph(out, model, names, x)
            out.line(f"return {call('keras.Model', Code('inputs'), Code(x), name=ident(model.name))}")
        return out.text()

    def _emit_graph(self, out: SourceWriter, model: ir.Model, names: _GraphNames, model_input: str) -> str:
        """Functional-API calls for a DAG; returns the variable holding the model's output.

        A chain keeps reusing ``x``; a tensor read more than once, read by a merge, or read
        after other layers ran gets a variable named after its layer.
        """
        held = {ir.INPUT_NAME: model_input}  # tensor -> the variable holding it now
        block: tuple[str, ...] = ()
        for layer in model.layers:
            sources = [held[tensor] for tensor in layer.inputs]
            target = names.variable(layer.name, "x")
            block = _block_comment(out, layer, block)
            out.line(layer_comment(layer, layer.output_shape))
            for line in _apply(self.emitters[layer.kind](layer), target, sources, REGISTRY[layer.kind].merge):
                out.line(line)
            held[layer.name] = target
        return held[model.output_layer.name]

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


class _GraphNames:
    """Which tensors of a DAG need a variable of their own, and its name."""

    #: names the generated function already uses
    RESERVED = frozenset({"x", "inputs", "keras", "layers", "build_model", "LayerScale"})  # + DEFINITIONS

    def __init__(self, model: ir.Model, taken: set[str]) -> None:
        position = {layer.name: i for i, layer in enumerate(model.layers)}
        position[ir.INPUT_NAME] = -1
        readers: dict[str, list[ir.Layer]] = {}
        for layer in model.layers:
            for tensor in layer.inputs:
                readers.setdefault(tensor, []).append(layer)
        output = model.output_layer.name
        self._named: dict[str, str] = {}
        used = taken | self.RESERVED
        for tensor in position:
            read_by = readers.get(tensor, [])
            if tensor == output:
                lasting = position[tensor] != len(model.layers) - 1
            else:
                # `x` is overwritten by the next layer, so only that layer's single read may use it
                lasting = len(read_by) != 1 or REGISTRY[read_by[0].kind].merge
                lasting = lasting or position[read_by[0].name] != position[tensor] + 1
            if lasting:
                # a layer's own name is free unless the function uses it; other names avoid every layer's
                wanted = "to_channels_last" if tensor == ir.INPUT_NAME else tensor
                own = wanted == tensor and tensor not in self.RESERVED
                self._named[tensor] = tensor if own else _free_name(wanted, used)
                used.add(self._named[tensor])

    def variable(self, tensor: str, chain: str) -> str:
        """The variable that holds ``tensor``: its own, or ``chain`` when it is read once, next."""
        return self._named.get(tensor, chain)


def _apply(layer_call: LayerCall, target: str, sources: list[str], merge: bool) -> list[str]:
    """``target = layers.X(...)(source)`` (a list of sources for merges), wrapped as black would."""
    argument = "[" + ", ".join(sources) + "]" if merge else layer_call.argument(sources[0])
    lines = layer_call.lines(f"{target} = ", f"({argument})", indent=4)
    if all(4 + len(line) <= LINE_WIDTH for line in lines):
        return lines
    head = layer_call.lines(f"{target} = ", "(", indent=4)
    if 8 + len(argument) <= LINE_WIDTH:
        return [*head, f"    {argument}", ")"]
    return [*head, "    [", *(f"        {source}," for source in sources), "    ]", ")"]


def _block_comment(out: SourceWriter, layer: ir.Layer, previous: tuple[str, ...]) -> tuple[str, ...]:
    """``# block stage2 > stage2_bottleneck_1`` where a layer enters another block instance."""
    if layer.block and layer.block != previous:
        out.line(f"# block {' > '.join(layer.block)}")
    return layer.block


def _axes_text(rank: int) -> str:
    if rank == 3:
        return "(N, C, H, W)"
    return "(N, C, " + ", ".join(f"D{i}" for i in range(1, rank)) + ")"


__all__ = ["EMITTERS", "KerasBackend"]
