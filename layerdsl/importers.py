"""Keras and PyTorch models -> `.layers` text plus canonical weights.

``from_keras`` reads a Keras 3 model that is a chain of layers (Sequential, or
functional with one path); ``from_torch`` traces a torch module with
``torch.fx`` and reads the chain of modules and functions it finds. Each
framework layer becomes one statement, with only the options that differ from
the DSL's defaults; the weights come out in canonical (Keras) layout, so
``layerdsl.set_weights`` loads them into a build for any backend.

A layer layerdsl cannot express exactly is refused with a ModelImportError
naming it. Settings that only shape a fresh model's initial weights (an
initializer layerdsl has no name for, torch's embedding ``padding_idx``) are
replaced by the DSL default and listed in ``Imported.notes``.

Torch modules take images as (N, C, H, W); ``input_shape`` is given the same
way, without the batch axis. Torch weight transfer goes through a layerdsl
torch build of the imported text, so the flatten order, gate order and bias
conventions are those of ``backends/torch_backend.py``.
"""

from __future__ import annotations

import keyword
import math
import operator
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from . import ir
from .checker import keras_snake_case
from .errors import LayerDSLError
from .initializers import INITIALIZERS
from .specs import ACTIVATIONS, REGISTRY, tf_same_padding

if TYPE_CHECKING:
    import numpy as np


class ModelImportError(LayerDSLError):
    """A Keras or torch model (or a part of one) that layerdsl cannot express."""


@dataclass(frozen=True)
class Imported:
    """An imported model: `.layers` text, its checked IR, and canonical weights."""

    text: str
    weights: dict[str, np.ndarray] = field(repr=False)
    model: ir.Model = field(repr=False)
    #: What was approximated, e.g. an initializer layerdsl has no name for (never the weights).
    notes: tuple[str, ...] = ()


class _Refused(Exception):
    """Raised inside a converter; the caller adds which layer it is."""


@dataclass
class _Statement:
    """One DSL statement in the making."""

    kind: str  # a REGISTRY name: `dense`, `relu`, `bidirectional`...
    args: dict[str, Any]  # DSL arguments by name; left out = the default
    label: str  # how error messages name the framework layer: "'conv2d_3' (Conv3D)"
    wanted_name: str | None = None  # the framework's layer name, when it is a valid DSL name
    source: Any = None  # the framework object holding this layer's weights
    flatten_order: str = "keras"  # flatten only: the feature order the framework produces


# --- text ----------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED = frozenset({"input", "inputs", "x", "model", "self"})


def _valid_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and bool(_IDENTIFIER.match(name))
        and not keyword.iskeyword(name)
        and not name.startswith("__")
        and name not in _RESERVED
        and len(name) <= 200
    )


def _value_text(value: Any, kind: str) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind == "float":
        return repr(float(value))
    if kind == "int":
        return str(int(value))
    if kind == "size2":
        h, w = value
        return str(h) if h == w else f"{h}x{w}"
    return str(value)


def _arguments_text(kind: str, args: dict[str, Any]) -> list[str]:
    """Positional values then ``key=value`` options, leaving out every default."""
    spec = REGISTRY[kind]
    parts: list[str] = []
    for param in spec.params:
        if param.name not in args or param.name == "in":
            continue
        value = args[param.name]
        default = args.get("pool") if param.name == "stride" and "pool" in args else param.default
        if not param.required and value == default:
            continue
        text = _value_text(value, param.type)
        parts.append(text if param.positional else f"{param.name}={text}")
    return parts


def _statement_text(stmt: _Statement, name: str | None) -> str:
    parts = [stmt.kind]
    if REGISTRY[stmt.kind].wraps:
        inner = stmt.args["layer"]
        parts += [inner, *_arguments_text(inner, stmt.args["inner"])]
        parts += _arguments_text(stmt.kind, {k: v for k, v in stmt.args.items() if k not in ("layer", "inner")})
    else:
        parts += _arguments_text(stmt.kind, stmt.args)
    if name is not None:
        parts.append(f"name={name}")
    return " ".join(parts)


def _default_names(statements: Sequence[_Statement], explicit: dict[int, str]) -> list[str]:
    """The names the checker gives, with ``explicit`` (index -> name) given as ``name=``."""
    used: set[str] = set()
    counts: dict[str, int] = {}
    taken = set(explicit.values())
    names = []
    for index, stmt in enumerate(statements):
        if index in explicit:
            used.add(explicit[index])
            names.append(explicit[index])
            continue
        base = keras_snake_case(REGISTRY[stmt.kind].keras_type)
        while True:
            n = counts.get(base, 0)
            counts[base] = n + 1
            name = base if n == 0 else f"{base}_{n}"
            if name not in used and name not in taken:
                used.add(name)
                names.append(name)
                break
    return names


def _explicit_names(statements: Sequence[_Statement]) -> dict[int, str]:
    """The fewest ``name=`` options that keep every framework layer name (where it is a valid name)."""
    explicit: dict[int, str] = {}
    seen: set[str] = set()
    for index, stmt in enumerate(statements):
        if stmt.wanted_name is not None and stmt.wanted_name not in seen:
            explicit[index] = stmt.wanted_name
            seen.add(stmt.wanted_name)
    target = _default_names(statements, explicit)
    for index in list(explicit):
        trial = {i: n for i, n in explicit.items() if i != index}
        if _default_names(statements, trial) == target:
            explicit = trial
    return explicit


def _model_name(name: Any, fallback: str) -> str:
    if name == "model" or _valid_name(name):
        return str(name)
    if isinstance(name, str):
        cleaned = keras_snake_case(name)
        if _valid_name(cleaned):
            return cleaned
    return fallback


def _finish(model_name: str, shape: tuple[int, ...], dtype: str, statements: list[_Statement]) -> tuple[str, ir.Model]:
    from .api import parse

    if not statements:
        raise ModelImportError("the model has no layers to import")
    explicit = _explicit_names(statements)
    dims = "x".join(str(d) for d in shape)
    lines = [] if model_name == "model" else [f"model {model_name}"]  # `model` is the default (and reserved)
    lines.append(f"input {dims}" + ("" if dtype == "float32" else f" dtype={dtype}"))
    lines += [_statement_text(stmt, explicit.get(i)) for i, stmt in enumerate(statements)]
    text = "\n".join(lines) + "\n"
    try:
        model = parse(text)
    except LayerDSLError as exc:
        raise ModelImportError(
            f"the imported model does not check: {exc.message}",
            notes=(f"imported text:\n{text}",),
        ) from None
    return text, model


# --- Keras ---------------------------------------------------------------------------------

_KERAS_INITIALIZERS = {
    "GlorotUniform": "glorot_uniform",
    "GlorotNormal": "glorot_normal",
    "HeUniform": "he_uniform",
    "HeNormal": "he_normal",
    "LecunUniform": "lecun_uniform",
    "LecunNormal": "lecun_normal",
    "Zeros": "zeros",
    "Ones": "ones",
}

#: Keras activation names layerdsl knows under another name.
_KERAS_ACTIVATION_ALIASES = {"swish": "silu", "hard_silu": "hard_swish"}


def _keras_activation(value: Any) -> str:
    name = value if isinstance(value, str) else None
    if name is None and isinstance(value, dict):
        name = value.get("config") if isinstance(value.get("config"), str) else None
    if name is None:
        raise _Refused(f"activation {value!r} is not a built-in Keras activation")
    name = _KERAS_ACTIVATION_ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        raise _Refused(f"layerdsl has no activation `{name}` (it has {', '.join(ACTIVATIONS)})")
    return name


class _KerasLayer:
    """One Keras layer's config, read with checks."""

    def __init__(self, layer: Any, notes: list[str]) -> None:
        self.layer = layer
        self.config: dict[str, Any] = layer.get_config()
        self.notes = notes
        self.label = f"'{layer.name}' ({type(layer).__name__})"

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def require(self, key: str, allowed: tuple[Any, ...], why: str) -> None:
        value = self.config.get(key, allowed[0])
        if value not in allowed:
            raise _Refused(f"{key}={value!r}: {why}")

    def none(self, *keys: str) -> None:
        """Refuse regularizers, constraints and the like that layerdsl cannot express."""
        for key in keys:
            if self.config.get(key) is not None:
                what = key.split("_")[-1] + "s"
                raise _Refused(f"{key} is set, and layerdsl has no {what}")

    def initializer(self, key: str, default: str) -> str:
        value = self.config.get(key)
        name = _keras_initializer(value)
        if name is None:
            shown = value.get("class_name") if isinstance(value, dict) else value
            self.notes.append(
                f"{self.label}: {key} {shown} has no layerdsl name; the text uses {default} "
                "(it only affects fresh weights; the imported weights are exact)"
            )
            return default
        return name

    def channels_last(self) -> None:
        self.require("data_format", ("channels_last", None), "layerdsl layers are channels-last")


def _keras_initializer(value: Any) -> str | None:
    if isinstance(value, str):
        return value if value in INITIALIZERS else None
    if not isinstance(value, dict):
        return None
    class_name, config = value.get("class_name"), value.get("config") or {}
    if class_name in _KERAS_INITIALIZERS:
        return _KERAS_INITIALIZERS[class_name]
    if class_name == "RandomNormal" and (config.get("mean"), config.get("stddev")) == (0.0, 0.05):
        return "normal"
    if class_name == "RandomUniform" and (config.get("minval"), config.get("maxval")) == (-0.05, 0.05):
        return "uniform"
    if class_name == "Orthogonal" and config.get("gain", 1.0) == 1.0:
        return "orthogonal"
    return None


def _keras_maxnorm(k: _KerasLayer, axes: list[int]) -> float | None:
    value = k.get("kernel_constraint")
    if value is None:
        return None
    config = value.get("config", {}) if isinstance(value, dict) else {}
    axis = config.get("axis")
    axis = [axis] if isinstance(axis, int) else list(axis or [])
    if not isinstance(value, dict) or value.get("class_name") != "MaxNorm" or axis != axes:
        raise _Refused(f"kernel_constraint must be MaxNorm(axis={axes if len(axes) > 1 else axes[0]}) to import")
    return float(config["max_value"])


def _keras_weighted(k: _KerasLayer, maxnorm_axes: list[int]) -> dict[str, Any]:
    """Arguments shared by Dense and the convolutions."""
    k.none("kernel_regularizer", "bias_regularizer", "activity_regularizer", "bias_constraint")
    if k.get("lora_rank"):
        raise _Refused("LoRA layers are not supported")
    args: dict[str, Any] = {
        "bias": bool(k.get("use_bias", True)),
        "init": k.initializer("kernel_initializer", "glorot_uniform"),
        "activation": _keras_activation(k.get("activation", "linear")),
    }
    if args["bias"]:
        args["bias_init"] = k.initializer("bias_initializer", "zeros")
    maxnorm = _keras_maxnorm(k, maxnorm_axes)
    if maxnorm is not None:
        args["maxnorm"] = maxnorm
    return args


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


def _single(value: Any) -> int:
    if isinstance(value, int):
        return value
    (n,) = value
    return int(n)


def _keras_dense(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    return "dense", {"units": int(k.get("units")), **_keras_weighted(k, [0])}


def _keras_conv(kind: str) -> Callable[[_KerasLayer], tuple[str, dict[str, Any]]]:
    two_d = kind == "conv2d"
    size = _pair if two_d else _single
    pads = ("valid", "same") if two_d else ("valid", "same", "causal")

    def convert(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
        k.channels_last()
        k.require("padding", pads, f"layerdsl's {kind} pads {' or '.join(pads)}")
        args = {
            "filters": int(k.get("filters")),
            "kernel": size(k.get("kernel_size")),
            "stride": size(k.get("strides")),
            "pad": k.get("padding"),
            "dilation": size(k.get("dilation_rate")),
            "groups": int(k.config.get("groups", 1)),
        }
        return kind, {**args, **_keras_weighted(k, [0, 1, 2] if two_d else [0, 1])}

    return convert


def _keras_pool(kind: str) -> Callable[[_KerasLayer], tuple[str, dict[str, Any]]]:
    size = _single if kind.endswith("1d") else _pair

    def convert(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
        k.channels_last()
        k.require("padding", ("valid", "same"), "layerdsl pools pad valid or same")
        pool = size(k.get("pool_size"))
        stride = size(k.get("strides")) if k.get("strides") is not None else pool
        return kind, {"pool": pool, "stride": stride, "pad": k.get("padding")}

    return convert


def _keras_global_pool(kind: str) -> Callable[[_KerasLayer], tuple[str, dict[str, Any]]]:
    def convert(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
        k.channels_last()
        return kind, ({"keepdims": True} if k.config.get("keepdims") else {})

    return convert


def _keras_flatten(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    k.channels_last()
    return "flatten", {}


def _keras_zeropad(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    k.channels_last()
    (top, bottom), (left, right) = k.get("padding")  # Keras stores ((top, bottom), (left, right))
    return "zeropad2d", _zeropad_args(((int(top), int(bottom)), (int(left), int(right))))


def _keras_dropout(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    if k.get("noise_shape") is not None:
        raise _Refused("layerdsl's dropout has no noise_shape")
    return "dropout", {"rate": float(k.get("rate"))}


def _keras_batchnorm(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    axis = k.get("axis", -1)
    rank = len(k.layer.input.shape)
    if (axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis) not in (-1, rank - 1):
        raise _Refused(f"axis={axis!r}: layerdsl normalizes the last (channel) axis")
    k.require("renorm", (False,), "layerdsl has no batch renormalization")
    k.none("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")
    for key, default in (
        ("gamma_initializer", "ones"),
        ("beta_initializer", "zeros"),
        ("moving_mean_initializer", "zeros"),
        ("moving_variance_initializer", "ones"),
    ):
        if _keras_initializer(k.get(key)) != default:
            k.notes.append(f"{k.label}: {key} is not {default}; the imported weights are exact")
    return "batchnorm", {
        "eps": float(k.get("epsilon")),
        "momentum": float(k.get("momentum")),
        "center": bool(k.get("center")),
        "scale": bool(k.get("scale")),
    }


def _keras_activation_layer(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    return _keras_activation(k.get("activation")), {}


def _keras_relu(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    if k.get("max_value") is not None or k.get("negative_slope", 0.0) != 0.0 or k.get("threshold", 0.0) != 0.0:
        raise _Refused("layerdsl's relu has no max_value, negative_slope or threshold")
    return "relu", {}


def _keras_softmax(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    axis = k.get("axis", -1)
    if axis not in (-1, [-1], (-1,)):
        raise _Refused(f"axis={axis!r}: layerdsl's softmax acts on the last axis")
    return "softmax", {}


def _keras_leaky_relu(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    slope = k.get("negative_slope")
    if slope is None or not math.isclose(float(slope), 0.2, rel_tol=0, abs_tol=1e-12):
        raise _Refused(f"negative_slope={slope}: layerdsl's leaky_relu has slope 0.2 (Keras's function default)")
    return "leaky_relu", {}


def _keras_elu(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    if float(k.get("alpha", 1.0)) != 1.0:
        raise _Refused(f"alpha={k.get('alpha')}: layerdsl's elu has alpha 1")
    return "elu", {}


def _keras_embedding(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    k.none("embeddings_regularizer", "activity_regularizer", "embeddings_constraint")
    if k.get("lora_rank"):
        raise _Refused("LoRA layers are not supported")
    return "embedding", {
        "vocab": int(k.get("input_dim")),
        "dim": int(k.get("output_dim")),
        "mask_zero": bool(k.get("mask_zero")),
        "init": k.initializer("embeddings_initializer", "uniform"),
    }


def _keras_masking(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    return "masking", {"value": float(k.get("mask_value", 0.0))}


_KERAS_RECURRENT = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simplernn"}


def _recurrent_args(kind: str, k: _KerasLayer, wrapped: bool) -> dict[str, Any]:
    k.require("return_state", (False,), "layerdsl layers return one output")
    k.require("stateful", (False,), "layerdsl has no stateful layers")
    k.require("dropout", (0.0, 0), "layerdsl recurrent layers have no dropout")
    k.require("recurrent_dropout", (0.0, 0), "layerdsl recurrent layers have no dropout")
    if not wrapped:  # Bidirectional sets it; a plain layer repeats the last output at masked steps
        k.require("zero_output_for_mask", (False,), "layerdsl repeats the last output at masked steps, as Keras does")
    k.none(
        "kernel_regularizer",
        "recurrent_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "recurrent_constraint",
        "bias_constraint",
    )
    args: dict[str, Any] = {
        "units": int(k.get("units")),
        "return_sequences": bool(k.get("return_sequences")),
        "go_backwards": bool(k.get("go_backwards")),
        "activation": _keras_activation(k.get("activation", "tanh")),
        "bias": bool(k.get("use_bias", True)),
        "init": k.initializer("kernel_initializer", "glorot_uniform"),
        "recurrent_init": k.initializer("recurrent_initializer", "orthogonal"),
    }
    if kind != "simplernn":
        args["recurrent_activation"] = _keras_activation(k.get("recurrent_activation", "sigmoid"))
    if args["bias"]:
        args["bias_init"] = k.initializer("bias_initializer", "zeros")
        if kind == "lstm":
            args["unit_forget_bias"] = bool(k.get("unit_forget_bias", True))
    if kind == "gru":
        args["reset_after"] = bool(k.get("reset_after", True))
    return args


def _keras_recurrent(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    kind = _KERAS_RECURRENT[type(k.layer).__name__]
    return kind, _recurrent_args(kind, k, wrapped=False)


def _keras_bidirectional(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    forward, backward = k.layer.forward_layer, k.layer.backward_layer
    inner_class = type(forward).__name__
    if inner_class not in _KERAS_RECURRENT:
        raise _Refused(f"it wraps {inner_class}; layerdsl's bidirectional wraps LSTM, GRU or SimpleRNN")
    kind = _KERAS_RECURRENT[inner_class]
    forward_k = _KerasLayer(forward, k.notes)
    backward_k = _KerasLayer(backward, k.notes)
    if type(backward).__name__ != inner_class:
        raise _Refused("its backward layer is not the same kind as its forward layer")
    same = {key: v for key, v in forward_k.config.items() if key not in ("name", "go_backwards")}
    mirror = {key: v for key, v in backward_k.config.items() if key not in ("name", "go_backwards")}
    if same != mirror or forward_k.get("go_backwards") == backward_k.get("go_backwards"):
        raise _Refused("its backward layer is not its forward layer read backwards")
    merge = k.get("merge_mode")
    if merge not in ("concat", "sum", "mul", "ave"):
        raise _Refused(f"merge_mode={merge!r}: layerdsl merges with concat, sum, mul or ave")
    return "bidirectional", {"layer": kind, "inner": _recurrent_args(kind, forward_k, wrapped=True), "merge": merge}


#: Keras class name -> converter(config reader) -> (DSL name, arguments).
_KERAS_CONVERTERS: dict[str, Callable[[_KerasLayer], tuple[str, dict[str, Any]]]] = {
    "Dense": _keras_dense,
    "Conv2D": _keras_conv("conv2d"),
    "Conv1D": _keras_conv("conv1d"),
    "MaxPooling2D": _keras_pool("maxpool"),
    "AveragePooling2D": _keras_pool("avgpool"),
    "MaxPooling1D": _keras_pool("maxpool1d"),
    "AveragePooling1D": _keras_pool("avgpool1d"),
    "GlobalMaxPooling1D": _keras_global_pool("globalmaxpool1d"),
    "GlobalAveragePooling1D": _keras_global_pool("globalavgpool1d"),
    "GlobalMaxPooling2D": _keras_global_pool("globalmaxpool"),
    "GlobalAveragePooling2D": _keras_global_pool("globalavgpool"),
    "Flatten": _keras_flatten,
    "ZeroPadding2D": _keras_zeropad,
    "Dropout": _keras_dropout,
    "BatchNormalization": _keras_batchnorm,
    "Activation": _keras_activation_layer,
    "ReLU": _keras_relu,
    "Softmax": _keras_softmax,
    "LeakyReLU": _keras_leaky_relu,
    "ELU": _keras_elu,
    "Embedding": _keras_embedding,
    "Masking": _keras_masking,
    "LSTM": _keras_recurrent,
    "GRU": _keras_recurrent,
    "SimpleRNN": _keras_recurrent,
    "Bidirectional": _keras_bidirectional,
}


def _keras_error(layer: Any, reason: str) -> ModelImportError:
    return ModelImportError(f"cannot import layer '{layer.name}' ({type(layer).__name__}): {reason}")


def _keras_chain(model: Any) -> list[Any]:
    """The model's layers in order (without the InputLayer), checked to form one chain."""
    import keras

    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    for layer in layers:
        if isinstance(layer, keras.Model):
            raise _keras_error(layer, "nested models are not supported; put their layers in the outer model")
    if isinstance(model, keras.Sequential):
        return layers
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelImportError(
            f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "layerdsl imports a chain of layers (one input, one output)"
        )
    previous = model.inputs[0]._keras_history.operation
    for layer in layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise _keras_error(layer, f"it is called {len(nodes)} times; layerdsl imports a chain of layers")
        tensors = [t for t in keras.tree.flatten(nodes[0].arguments.args) if hasattr(t, "_keras_history")]
        if len(tensors) != 1:
            raise _keras_error(layer, f"it takes {len(tensors)} inputs; layerdsl imports a chain of layers")
        source = tensors[0]._keras_history.operation
        if source is not previous:
            raise _keras_error(
                layer, f"its input comes from '{source.name}', not from the layer before it; layerdsl imports a chain"
            )
        previous = layer
    if model.outputs[0]._keras_history.operation is not previous:
        raise ModelImportError("the model's output is not its last layer's output; layerdsl imports a chain")
    return layers


def _keras_input(model: Any) -> tuple[tuple[int, ...], str]:
    try:
        tensor = model.inputs[0]
    except (AttributeError, ValueError, IndexError, TypeError):
        raise ModelImportError(
            "the Keras model has no input shape yet",
            hint="build it with an input: keras.Sequential([keras.Input(shape=...), ...])",
        ) from None
    shape = tuple(tensor.shape[1:])
    if any(d is None for d in shape):
        raise ModelImportError(
            f"the model's input shape {tuple(tensor.shape)} has unknown dimensions",
            hint="layerdsl models have a fixed input shape: give keras.Input(shape=...) every dimension",
        )
    dtype = str(tensor.dtype)
    if dtype.startswith("float"):
        return shape, "float32"
    if dtype in ("int32", "int64"):
        return shape, dtype
    raise ModelImportError(f"the model's input dtype is {dtype}; layerdsl inputs are float32, int32 or int64")


def _keras_variables(layer: Any) -> dict[str, Any]:
    if type(layer).__name__ == "Bidirectional":
        directions = (("forward", layer.forward_layer), ("backward", layer.backward_layer))
        return {f"{d}_{v.name}": v for d, sub in directions for v in sub.weights}
    return {v.name: v for v in layer.weights}


def from_keras(model: Any, *, name: str | None = None) -> Imported:
    """Import a Keras 3 model that is a chain of layers (Sequential, or functional with one path).

    Returns the `.layers` text (layer names kept where they are valid DSL names),
    its checked IR, and the weights in canonical layout. Raises ModelImportError
    naming the first layer that layerdsl cannot express.
    """
    import numpy as np

    notes: list[str] = []
    statements = []
    for layer in _keras_chain(model):
        converter = _KERAS_CONVERTERS.get(type(layer).__name__)
        if converter is None:
            raise _keras_error(layer, f"layerdsl has no {type(layer).__name__.lower()}")
        reader = _KerasLayer(layer, notes)
        try:
            kind, args = converter(reader)
        except _Refused as exc:
            raise _keras_error(layer, str(exc)) from None
        wanted = layer.name if _valid_name(layer.name) else None
        statements.append(_Statement(kind, args, reader.label, wanted, layer))
    shape, dtype = _keras_input(model)
    text, spec = _finish(_model_name(name or model.name, "imported"), shape, dtype, statements)
    weights: dict[str, np.ndarray] = {}
    for stmt, layer in zip(statements, spec.layers, strict=True):
        variables = _keras_variables(stmt.source)
        for weight in layer.weights:
            array = np.array(variables[weight.name].numpy(), dtype=np.float32)
            if array.shape != weight.shape:
                raise ModelImportError(
                    f"cannot import layer {stmt.label}: weight {weight.name} has shape {array.shape}, "
                    f"expected {weight.shape}"
                )
            weights[f"{layer.name}.{weight.name}"] = array
    return Imported(text, weights, spec, tuple(notes))


def load_keras(path: str | os.PathLike[str]) -> Any:
    """Load a Keras 3 ``.keras`` file in safe mode: Keras refuses to deserialize Python code (lambdas)."""
    from . import backends

    keras = backends.get("keras").import_framework()
    return keras.saving.load_model(path, safe_mode=True)


# --- torch ---------------------------------------------------------------------------------


def _torch_shape(node: Any) -> tuple[int, ...]:
    """A traced node's tensor shape, batch axis included."""
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise _Refused("its output is not a tensor")
    return tuple(int(d) for d in meta.shape)


def _ir_shape(torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    """(N, C, H, W) -> (H, W, C); other shapes keep their order; the batch axis goes."""
    if len(torch_shape) == 4:
        return (torch_shape[2], torch_shape[3], torch_shape[1])
    return torch_shape[1:]


def _arg(node: Any, position: int, key: str, default: Any = None) -> Any:
    """An argument of a traced call, by position (after the tensor) or keyword."""
    if key in node.kwargs:
        return node.kwargs[key]
    return node.args[position] if len(node.args) > position else default


def _dims(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


@dataclass
class _TorchFunction:
    """A torch function or tensor method that is one DSL activation."""

    kind: str
    check: Callable[[Any, int], None] | None = None  # (node, rank with batch) -> raise _Refused


def _softmax_dim_check(dim: Any, rank: int) -> None:
    channel = 1 if rank == 4 else rank - 1
    if dim is None or (dim % rank if isinstance(dim, int) else None) != channel:
        axis = "1 (channels)" if rank == 4 else "-1 (features)"
        raise _Refused(f"softmax over dim={dim}: layerdsl's softmax acts on dim {axis}")


def _torch_functions() -> tuple[dict[Any, _TorchFunction], dict[str, _TorchFunction]]:
    """(functions, tensor methods) that are activations."""
    import torch
    import torch.nn.functional as F

    def leaky(node: Any, rank: int) -> None:
        slope = _arg(node, 1, "negative_slope", 0.01)
        if slope != 0.2:
            raise _Refused(f"negative_slope={slope}: layerdsl's leaky_relu has slope 0.2 (Keras's)")

    def elu(node: Any, rank: int) -> None:
        if _arg(node, 1, "alpha", 1.0) != 1.0:
            raise _Refused("layerdsl's elu has alpha 1")

    def gelu(node: Any, rank: int) -> None:
        if _arg(node, 1, "approximate", "none") != "none":
            raise _Refused("layerdsl's gelu is the exact (erf) form: approximate='none'")

    def softplus(node: Any, rank: int) -> None:
        if _arg(node, 1, "beta", 1.0) != 1.0:
            raise _Refused("layerdsl's softplus has beta 1")

    def softmax(node: Any, rank: int) -> None:
        _softmax_dim_check(_arg(node, 1, "dim"), rank)

    functions = {
        torch.relu: _TorchFunction("relu"),
        F.relu: _TorchFunction("relu"),
        torch.sigmoid: _TorchFunction("sigmoid"),
        F.sigmoid: _TorchFunction("sigmoid"),
        torch.tanh: _TorchFunction("tanh"),
        F.tanh: _TorchFunction("tanh"),
        torch.softmax: _TorchFunction("softmax", softmax),
        F.softmax: _TorchFunction("softmax", softmax),
        F.elu: _TorchFunction("elu", elu),
        torch.selu: _TorchFunction("selu"),
        F.selu: _TorchFunction("selu"),
        F.gelu: _TorchFunction("gelu", gelu),
        F.softplus: _TorchFunction("softplus", softplus),
        F.softsign: _TorchFunction("softsign"),
        F.leaky_relu: _TorchFunction("leaky_relu", leaky),
        F.silu: _TorchFunction("silu"),
    }
    methods = {
        "relu": _TorchFunction("relu"),
        "sigmoid": _TorchFunction("sigmoid"),
        "tanh": _TorchFunction("tanh"),
        "softmax": _TorchFunction("softmax", softmax),
    }
    return functions, methods


def _torch_activation_module(module: Any, rank: int) -> str | None:
    """The DSL activation an activation module computes (None: not an activation module)."""
    from torch import nn

    plain = {
        nn.ReLU: "relu",
        nn.Sigmoid: "sigmoid",
        nn.Tanh: "tanh",
        nn.SELU: "selu",
        nn.Softsign: "softsign",
        nn.SiLU: "silu",
    }
    for cls, kind in plain.items():
        if type(module) is cls:
            return kind
    if type(module) is nn.Softmax:
        _softmax_dim_check(module.dim, rank)
        return "softmax"
    if type(module) is nn.ELU:
        if module.alpha != 1.0:
            raise _Refused(f"alpha={module.alpha}: layerdsl's elu has alpha 1")
        return "elu"
    if type(module) is nn.GELU:
        if module.approximate != "none":
            raise _Refused("layerdsl's gelu is the exact (erf) form: approximate='none'")
        return "gelu"
    if type(module) is nn.Softplus:
        if module.beta != 1.0:
            raise _Refused(f"beta={module.beta}: layerdsl's softplus has beta 1")
        return "softplus"
    if type(module) is nn.LeakyReLU:
        if module.negative_slope != 0.2:
            raise _Refused(f"negative_slope={module.negative_slope}: layerdsl's leaky_relu has slope 0.2 (Keras's)")
        return "leaky_relu"
    return None


def _same_or_valid(
    padding: tuple[tuple[int, int], ...],
    sizes: tuple[int, ...],
    window: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> str:
    """`valid` or `same` for this (before, after) padding per axis, or refuse."""
    kind = _pad_kind(padding, sizes, window, stride, dilation)
    if kind is None:
        same = tuple(tf_same_padding(n, k, s, d) for n, k, s, d in zip(sizes, window, stride, dilation, strict=True))
        raise _Refused(
            f"its padding {[list(p) for p in padding]} is neither none nor TensorFlow's `same` "
            f"{[list(p) for p in same]} for this input size"
        )
    return kind


def _pad_kind(
    padding: tuple[tuple[int, int], ...],
    sizes: tuple[int, ...],
    window: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> str | None:
    """`valid` or `same` for this (before, after) padding per axis; None when it is neither."""
    if all(p == (0, 0) for p in padding):
        return "valid"
    same = tuple(tf_same_padding(n, k, s, d) for n, k, s, d in zip(sizes, window, stride, dilation, strict=True))
    return "same" if tuple(padding) == same else None


def _zeropad_args(padding: tuple[tuple[int, int], tuple[int, int]]) -> dict[str, Any]:
    (top, bottom), (left, right) = padding
    if (top, left) == (bottom, right):
        return {"pad": (top, left)}
    sides = {"top": top, "bottom": bottom, "left": left, "right": right}
    return {side: n for side, n in sides.items() if n}  # sides left out are zero


def _torch_label(node: Any, module: Any | None) -> str:
    if module is not None:
        return f"'{node.target}' ({type(module).__name__})"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"'{node.name}' ({target})"


class _TorchImporter:
    """Walks the traced graph as a chain, turning nodes into statements."""

    def __init__(self, graph_module: Any, notes: list[str]) -> None:
        self.gm = graph_module
        self.modules = dict(graph_module.named_modules())
        self.notes = notes
        self.functions, self.methods = _torch_functions()
        self.statements: list[_Statement] = []
        self.go_backwards = False

    # graph helpers

    def module(self, node: Any) -> Any | None:
        return self.modules.get(node.target) if node.op == "call_module" else None

    def is_size_query(self, node: Any) -> bool:
        """`x.size(0)`, `x.shape`, `x.shape[0]`: used by view/reshape, never a value on the chain."""
        if node.op == "call_method" and node.target == "size":
            return True
        if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            return True
        return node.op == "call_function" and node.target is operator.getitem and self.is_size_query(node.args[0])

    def run(self) -> list[_Statement]:
        graph = self.gm.graph
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ModelImportError(f"the module's forward takes {len(placeholders)} inputs; layerdsl imports one")
        skipped = ("placeholder", "output", "get_attr")  # get_attr: a buffer an arithmetic step reads
        self.nodes = [n for n in graph.nodes if n.op not in skipped and not self.is_size_query(n)]
        current = placeholders[0]
        index = 0
        while index < len(self.nodes):
            node = self.nodes[index]
            module = self.module(node)
            label = _torch_label(node, module)
            inputs = [n for n in node.all_input_nodes if not self.is_size_query(n) and n.op != "get_attr"]
            if inputs != [current]:
                raise ModelImportError(
                    f"cannot import layer {label}: its input is not the output of the step before it; "
                    "layerdsl imports a chain"
                )
            try:
                used = self.step(index, module)
            except _Refused as exc:
                raise ModelImportError(f"cannot import layer {label}: {exc}") from None
            current = self.nodes[index + used - 1]
            index += used
        (output,) = [n for n in graph.nodes if n.op == "output"]
        if output.args[0] is not current:
            raise ModelImportError("the module's output is not the end of its chain of layers")
        if self.go_backwards:
            raise ModelImportError(
                "the module flips its output along time (x.flip(1)) with no recurrent layer after it"
            )
        return self.statements

    def following(self, index: int) -> Any | None:
        """The node after ``index`` when it consumes only ``index``'s output."""
        if index + 1 >= len(self.nodes):
            return None
        node, after = self.nodes[index], self.nodes[index + 1]
        return after if node in after.all_input_nodes and len(node.users) == 1 else None

    def add(self, index: int, kind: str, args: dict[str, Any], source: Any = None, **extra: Any) -> None:
        node = self.nodes[index]
        module = self.module(node)
        wanted = node.target.replace(".", "_") if module is not None else None
        self.statements.append(
            _Statement(kind, args, _torch_label(node, module), wanted if _valid_name(wanted) else None, source, **extra)
        )

    def in_shape(self, index: int) -> tuple[int, ...]:
        return _torch_shape(self.nodes[index].all_input_nodes[0])

    def activation_of(self, node: Any, rank: int) -> str | None:
        """The activation a function or method node computes, or None."""
        entry = None
        if node.op == "call_function":
            entry = self.functions.get(node.target)
        elif node.op == "call_method":
            entry = self.methods.get(node.target)
        if entry is None:
            return None
        if entry.check is not None:
            entry.check(node, rank)
        return entry.kind

    def fused_activation(self, index: int, args: dict[str, Any]) -> int:
        """Fold an activation *function* right after a dense or conv into its `activation=`."""
        after = self.following(index)
        if after is None:
            return 1
        try:
            function = self.activation_of(after, len(_torch_shape(self.nodes[index])))
        except _Refused:
            return 1  # refused with its own label when it is read as a layer
        if function is None:
            return 1
        args["activation"] = function
        return 2

    def is_flatten(self, node: Any) -> bool:
        import torch
        from torch import nn

        module = self.module(node)
        if module is not None:
            return type(module) is nn.Flatten and (module.start_dim, module.end_dim) == (1, -1)
        function = node.op == "call_function" and node.target is torch.flatten
        if function or (node.op == "call_method" and node.target == "flatten"):
            return _arg(node, 1, "start_dim", 0) == 1 and _arg(node, 2, "end_dim", -1) == -1
        if node.op == "call_method" and node.target in ("view", "reshape"):
            before, after = _torch_shape(node.all_input_nodes[0]), _torch_shape(node)
            return len(after) == 2 and after[0] == before[0] and len(before) > 2
        return False

    # one step of the chain: returns how many nodes it used

    def step(self, index: int, module: Any | None) -> int:
        node = self.nodes[index]
        rank = len(self.in_shape(index))
        if self.go_backwards and not self.is_recurrent(module):
            raise _Refused("x.flip(1) must come right before a recurrent layer (it means go_backwards)")
        if module is not None:
            return self.module_step(index, module, rank)
        activation = self.activation_of(node, rank)
        if activation is not None:
            self.add(index, activation, {})
            return 1
        if self.is_flatten(node):
            self.add(index, "flatten", {}, flatten_order="torch" if rank == 4 else "keras")
            return 1
        if (
            node.op == "call_method"
            and node.target == "permute"
            and len(node.args) >= 2
            and _dims(node.args[1:] if len(node.args) > 2 else node.args[1]) == (0, 2, 3, 1)
        ):
            after = self.following(index)
            if after is not None and self.is_flatten(after):
                # channels-last then flatten: Keras's feature order (layerdsl's own torch output)
                self.add(index, "flatten", {}, flatten_order="keras")
                return 2
        if node.op == "call_method" and node.target == "transpose" and rank == 3 and self.swaps_time(node):
            return self.channels_first_1d(index)
        if (
            node.op == "call_method"
            and node.target == "flip"
            and rank == 3
            and _dims(_arg(node, 1, "dims", ())) in ((1,), (-2,))
        ):
            self.go_backwards = True
            return 1
        pooled = self.global_pool(node, rank)
        if pooled is not None:
            self.add(index, pooled, {})
            return 1
        raise _Refused("layerdsl has no equivalent of this step")

    @staticmethod
    def swaps_time(node: Any) -> bool:
        return node.op == "call_method" and node.target == "transpose" and {d % 3 for d in node.args[1:3]} == {1, 2}

    def channels_first_1d(self, index: int) -> int:
        """`transpose(1, 2)`, [a pad], a Conv1d or 1-D pool, `transpose(1, 2)`: one layer on (N, T, C)."""
        from torch import nn

        chain = [self.nodes[index]]
        while len(chain) < 5 and (after := self.following(index + len(chain) - 1)) is not None:
            chain.append(after)
            if self.swaps_time(after):
                break
        divided = len(chain) == 5 and chain[3].target is operator.truediv
        if divided:  # an average pool over zero padding, divided by each window's share of real steps
            pad, pool = self.module(chain[1]), self.module(chain[2])
            if pad is None or pool is None or not self.divides_by_coverage(index + 2, pad, pool):
                raise _Refused("it divides the pool by something other than each window's share of real steps")
        modules = [self.module(n) for n in chain[1 : 3 if divided else -1]]
        if len(chain) < 3 or not self.swaps_time(chain[-1]) or any(m is None for m in modules):
            raise _Refused("only transpose(1, 2), a Conv1d or 1-D pool, transpose(1, 2) can be imported")
        padding = (0, 0)
        if len(modules) == 2:
            pad, modules = modules[0], modules[1:]
            if type(pad) not in (nn.ZeroPad1d, nn.ConstantPad1d):
                raise _Refused("only a padding module may come before the Conv1d or pool")
            value = getattr(pad, "value", 0.0)
            if value != (float("-inf") if type(modules[0]) is nn.MaxPool1d else 0.0):
                raise _Refused(f"it pads with {value}: layerdsl pads convolutions with 0 and max pools with -inf")
            if type(modules[0]) is nn.AvgPool1d and not divided:
                raise _Refused("an average over zero padding counts the padding; TensorFlow's `same` leaves it out")
            padding = tuple(pad.padding)
        (module,) = modules
        layer_index = index + (2 if divided else len(chain) - 2)
        length = _torch_shape(chain[0])[2]
        if type(module) is nn.Conv1d:
            if module.groups != 1 or module.padding_mode != "zeros":
                raise _Refused("layerdsl has no grouped convolutions or non-zero padding modes")
            kernel, stride, dilation = module.kernel_size[0], module.stride[0], module.dilation[0]
            if module.padding == "same":
                pad_kind = "same"
            else:
                own = 0 if module.padding == "valid" else module.padding[0]
                if own and padding != (0, 0):
                    raise _Refused("it pads twice (a padding module and its own padding)")
                padding = (own, own) if own else padding
                causal = padding == ((kernel - 1) * dilation, 0) and padding != (0, 0)
                pad_kind = (
                    "causal" if causal else _same_or_valid((padding,), (length,), (kernel,), (stride,), (dilation,))
                )
            args = {
                "filters": module.out_channels,
                "kernel": kernel,
                "stride": stride,
                "pad": pad_kind,
                "dilation": dilation,
                "bias": module.bias is not None,
            }
            used = len(chain) - 1 + self.fused_activation(index + len(chain) - 1, args)
            self.add(layer_index, "conv1d", args, module)
            return used
        if type(module) in (nn.MaxPool1d, nn.AvgPool1d):
            is_max = type(module) is nn.MaxPool1d
            if module.ceil_mode or (is_max and (module.dilation != 1 or module.return_indices)):
                raise _Refused("layerdsl pools round down, without dilation or return_indices")
            pool = _single(module.kernel_size)
            stride = _single(module.stride) if module.stride is not None else pool
            own = _single(module.padding)
            if own and padding != (0, 0):
                raise _Refused("it pads twice (a padding module and its own padding)")
            if own and not is_max and module.count_include_pad:
                raise _Refused("count_include_pad=True averages the padding in; TensorFlow's `same` leaves it out")
            padding = (own, own) if own else padding
            pad_kind = _same_or_valid((padding,), (length,), (pool,), (stride,), (1,))
            self.add(
                layer_index, "maxpool1d" if is_max else "avgpool1d", {"pool": pool, "stride": stride, "pad": pad_kind}
            )
            return len(chain)
        raise _Refused(f"layerdsl has no {type(module).__name__.lower()} on sequences")

    def global_pool(self, node: Any, rank: int) -> str | None:
        import torch

        if node.op == "call_method":
            name = node.target
        elif node.op == "call_function" and node.target in (torch.mean, torch.amax):
            name = node.target.__name__
        else:
            return None
        if name not in ("mean", "amax") or _arg(node, 2, "keepdim", False):
            return None
        dims = _arg(node, 1, "dim")
        if dims is None:
            return None
        axes = {d % rank for d in _dims(dims)}
        reduction = "avg" if name == "mean" else "max"
        if rank == 4 and axes == {2, 3}:
            return f"global{reduction}pool"
        if rank == 3 and axes == {1}:
            return f"global{reduction}pool1d"
        return None

    @staticmethod
    def is_recurrent(module: Any) -> bool:
        from torch import nn

        return type(module) in (nn.LSTM, nn.GRU, nn.RNN)

    def module_step(self, index: int, module: Any, rank: int) -> int:
        from torch import nn

        kind = type(module)
        activation = _torch_activation_module(module, rank)
        if activation is not None:
            if kind is nn.Softplus and module.threshold < 20:
                self.notes.append(
                    f"{_torch_label(self.nodes[index], module)}: torch's softplus is linear above "
                    f"threshold={module.threshold}; Keras's softplus has no threshold"
                )
            self.add(index, activation, {})
            return 1
        if kind is nn.Identity:
            return 1
        if kind is nn.Linear:
            args = {"units": module.out_features, "bias": module.bias is not None}
            used = self.fused_activation(index, args)
            self.add(index, "dense", args, module)
            return used
        if kind is nn.Conv2d:
            return self.conv2d(index, module, ((0, 0), (0, 0)))
        if kind in (nn.ZeroPad2d, nn.ConstantPad2d):
            return self.padded(index, module)
        if kind in (nn.MaxPool2d, nn.AvgPool2d):
            return self.pool2d(index, module, None)
        if kind is nn.Flatten:
            if not self.is_flatten(self.nodes[index]):
                raise _Refused("layerdsl's flatten keeps the batch axis: nn.Flatten(start_dim=1, end_dim=-1)")
            self.add(index, "flatten", {}, flatten_order="torch" if rank == 4 else "keras")
            return 1
        if kind is nn.Dropout:
            self.add(index, "dropout", {"rate": float(module.p)})
            return 1
        if kind in (nn.BatchNorm1d, nn.BatchNorm2d):
            return self.batchnorm(index, module, rank)
        if kind is nn.Embedding:
            return self.embedding(index, module)
        if self.is_recurrent(module):
            return self.recurrent(index, module, rank)
        if kind in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
            size = module.output_size
            after = self.following(index)
            if size in (1, (1, 1)) and after is not None and self.is_flatten(after):
                self.add(index, "globalavgpool" if kind is nn.AdaptiveAvgPool2d else "globalmaxpool", {})
                return 2
            raise _Refused("only output_size=1 followed by a flatten (a global pool) can be imported")
        if kind is nn.Conv1d:
            raise _Refused("torch's Conv1d reads (N, C, T) where layerdsl's conv1d reads (N, T, C) sequences")
        raise _Refused(f"layerdsl has no {kind.__name__.lower()}")

    def conv2d(self, index: int, module: Any, padding: tuple[tuple[int, int], tuple[int, int]]) -> int:
        if module.groups != 1:
            raise _Refused("layerdsl has no grouped convolutions")
        if module.padding_mode != "zeros":
            raise _Refused(f"padding_mode={module.padding_mode!r}: layerdsl pads with zeros")
        shape = (
            self.in_shape(index)
            if padding == ((0, 0), (0, 0))
            else _torch_shape(self.nodes[index - 1].all_input_nodes[0])
        )
        kernel, stride, dilation = tuple(module.kernel_size), tuple(module.stride), tuple(module.dilation)
        if module.padding == "same":
            pad = "same"  # stride 1: torch's `same` puts the odd padding after, as TensorFlow does
        else:
            own = (0, 0) if module.padding == "valid" else tuple(module.padding)
            if own != (0, 0) and padding != ((0, 0), (0, 0)):
                raise _Refused("it pads twice (a padding module and its own padding)")
            if own != (0, 0):
                padding = ((own[0], own[0]), (own[1], own[1]))
            pad = _pad_kind(padding, shape[2:], kernel, stride, dilation)
            if pad is None:  # not TensorFlow's `same`: pad explicitly, then convolve without padding
                self.zeropad(index, padding, named=False)
                pad = "valid"
        if pad == "same" and max(stride) > 1 and max(dilation) > 1:
            raise _Refused("layerdsl cannot combine stride > 1 with dilation > 1")
        args = {
            "filters": module.out_channels,
            "kernel": kernel,
            "stride": stride,
            "pad": pad,
            "dilation": dilation,
            "bias": module.bias is not None,
        }
        used = self.fused_activation(index, args)
        self.add(index, "conv2d", args, module)
        return used

    def zeropad(self, index: int, padding: tuple[tuple[int, int], tuple[int, int]], named: bool) -> None:
        """An explicit `zeropad2d` for the layer at ``index`` (named after it when it is the padding module)."""
        if "zeropad2d" not in REGISTRY:
            raise _Refused(f"its padding {[list(p) for p in padding]} is not TensorFlow's `same`")
        label = _torch_label(self.nodes[index], self.module(self.nodes[index]))
        wanted = self.nodes[index].target.replace(".", "_") if named else None
        self.statements.append(
            _Statement("zeropad2d", _zeropad_args(padding), label, wanted if _valid_name(wanted) else None)
        )

    def padded(self, index: int, module: Any) -> int:
        """A padding module right before a conv or max pool: TensorFlow's asymmetric `same`."""
        from torch import nn

        after = self.following(index)
        target = self.module(after) if after is not None else None
        left, right, top, bottom = module.padding
        padding = ((top, bottom), (left, right))
        value = getattr(module, "value", 0.0)
        if type(target) is nn.Conv2d and value == 0.0:
            return 1 + self.conv2d(index + 1, target, padding)
        if type(target) is nn.MaxPool2d and value == float("-inf"):
            return 1 + self.pool2d(index + 1, target, padding)
        if type(target) is nn.AvgPool2d and value == 0.0 and self.divides_by_coverage(index + 1, module, target):
            return 2 + self.pool2d(index + 1, target, padding)
        if value == 0.0 and "zeropad2d" in REGISTRY:
            self.zeropad(index, padding, named=True)
            return 1
        raise _Refused(
            "layerdsl has no explicit padding; only a pad that is TensorFlow's `same` for the conv2d "
            "(zeros), max pool (-inf), or average pool (divided by each window's share of real inputs) "
            "right after it can be imported"
        )

    def divides_by_coverage(self, index: int, pad: Any, pool: Any) -> bool:
        """Whether the pool at ``index`` is divided by each window's share of real inputs (a buffer).

        That leaves zero padding out of each average, as TensorFlow's `same` does.
        """
        import torch

        after = self.following(index)
        if after is None or after.target is not operator.truediv or after.args[0] is not self.nodes[index]:
            return False
        divisor = after.args[1]
        if getattr(divisor, "op", None) != "get_attr":
            return False
        try:
            coverage = self.gm.get_buffer(divisor.target)
        except AttributeError:
            return False
        spatial = _torch_shape(self.nodes[index - 1].all_input_nodes[0])[2:]
        with torch.no_grad():
            expected = pool(pad(torch.ones(1, 1, *spatial)))
        return coverage.shape == expected.shape and bool(torch.allclose(coverage, expected))

    def pool2d(self, index: int, module: Any, padding: tuple[tuple[int, int], tuple[int, int]] | None) -> int:
        from torch import nn

        is_max = type(module) is nn.MaxPool2d
        if module.ceil_mode:
            raise _Refused("ceil_mode=True: layerdsl pools round down, as Keras does")
        if is_max and (module.dilation not in (1, (1, 1)) or module.return_indices):
            raise _Refused("layerdsl's max pool has no dilation or return_indices")
        if not is_max and module.divisor_override is not None:
            raise _Refused("layerdsl's average pool has no divisor_override")
        pool = _pair(module.kernel_size)
        stride = _pair(module.stride) if module.stride is not None else pool
        own = _pair(module.padding)
        node_in = self.nodes[index - 1] if padding is not None else self.nodes[index]
        shape = _torch_shape(node_in.all_input_nodes[0])
        if padding is None:
            padding = ((own[0], own[0]), (own[1], own[1]))
        elif own != (0, 0):
            raise _Refused("it pads twice (a padding module and its own padding)")
        if own != (0, 0) and not is_max and module.count_include_pad:
            # the zeros count in each average: explicit zero padding, then a plain average pool
            self.zeropad(index, padding, named=False)
            padding = ((0, 0), (0, 0))
        pad = _same_or_valid(padding, shape[2:], pool, stride, (1, 1))
        self.add(index, "maxpool" if is_max else "avgpool", {"pool": pool, "stride": stride, "pad": pad})
        return 1

    def batchnorm(self, index: int, module: Any, rank: int) -> int:
        from torch import nn

        expected = 4 if type(module) is nn.BatchNorm2d else 2
        if rank != expected:
            why = "it normalizes dim 1, the timesteps of an (N, T, F) sequence" if rank == 3 else "unexpected input"
            raise _Refused(f"{why}; layerdsl's batchnorm normalizes the feature (channel) axis")
        if not module.track_running_stats or module.running_mean is None:
            raise _Refused("track_running_stats=False: layerdsl's batchnorm keeps moving statistics")
        if module.momentum is None:
            raise _Refused("momentum=None (a cumulative average): layerdsl's batchnorm has an exponential average")
        args = {
            "eps": float(module.eps),
            # Keras's momentum weights the old average, torch's the new batch (0.1 -> 0.9)
            "momentum": float(1 - Decimal(repr(float(module.momentum)))),
            "center": bool(module.affine),
            "scale": bool(module.affine),
        }
        self.add(index, "batchnorm", args, module)
        return 1

    def embedding(self, index: int, module: Any) -> int:
        if module.max_norm is not None:
            raise _Refused("max_norm renormalizes looked-up vectors; layerdsl's embedding has no max_norm")
        label = _torch_label(self.nodes[index], module)
        if module.padding_idx is not None:
            self.notes.append(
                f"{label}: padding_idx={module.padding_idx} only freezes that row's gradient in torch; "
                "the imported embedding trains it (use `mask_zero=true` to mask id 0 instead)"
            )
        if module.scale_grad_by_freq or module.sparse:
            self.notes.append(f"{label}: scale_grad_by_freq / sparse gradients are not imported")
        self.add(index, "embedding", {"vocab": module.num_embeddings, "dim": module.embedding_dim}, module)
        return 1

    def recurrent(self, index: int, module: Any, rank: int) -> int:
        from torch import nn

        if not module.batch_first:
            raise _Refused("batch_first=False reads (T, N, F); layerdsl sequences are (N, T, F): use batch_first=True")
        if module.num_layers != 1:
            raise _Refused(f"num_layers={module.num_layers}: import a stack as single-layer modules in sequence")
        if getattr(module, "proj_size", 0):
            raise _Refused("layerdsl's lstm has no proj_size")
        kind = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "simplernn"}[type(module)]
        args: dict[str, Any] = {"units": module.hidden_size, "bias": bool(module.bias)}
        if kind == "simplernn":
            args["activation"] = module.nonlinearity  # tanh or relu
        output = self.following(index)
        if output is None or output.target is not operator.getitem or output.args[1] != 0:
            raise _Refused("only its output sequence (`out, _ = rnn(x)`) can be imported, not the final states")
        used = 2
        args["return_sequences"] = True
        last = self.following(index + 1)
        if last is not None and last.op == "call_function" and last.target is operator.getitem:
            key = last.args[1]
            key = key if isinstance(key, tuple) else (key,)
            if key[:2] == (slice(None), -1) and all(k == slice(None) for k in key[2:]):
                args["return_sequences"] = False
                used = 3
        args["go_backwards"] = self.go_backwards
        self.go_backwards = False
        if module.bidirectional:
            if not args["return_sequences"]:
                raise _Refused(
                    "out[:, -1] of a bidirectional module holds the backward direction after one step, "
                    "where Keras's Bidirectional returns each direction's final output"
                )
            if args["go_backwards"]:
                raise _Refused("a bidirectional module reading a flipped sequence has no Keras equivalent")
            self.add(index, "bidirectional", {"layer": kind, "inner": args, "merge": "concat"}, module)
        else:
            self.add(index, kind, args, module)
        return used


def _trace(module: Any, input_shape: tuple[int, ...]) -> Any:
    """The module traced by torch.fx, with each node's output shape (eval mode, no gradients)."""
    import torch
    from torch import fx, nn
    from torch.fx.passes.shape_prop import ShapeProp

    if type(module).__module__.startswith("torch.nn.modules") and not isinstance(module, nn.Sequential):
        module = nn.Sequential(module)  # fx traces a root module's own code; as a child it is one layer
    try:
        graph_module = fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many kinds for untraceable Python
        raise ModelImportError(
            f"torch.fx cannot trace {type(module).__name__}: {exc}",
            hint="layerdsl imports modules whose forward is a straight chain of modules and tensor functions",
        ) from None
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    first = next((n for n in graph_module.graph.nodes if n.op == "call_module"), None)
    ids = first is not None and isinstance(graph_module.get_submodule(first.target), nn.Embedding)
    example = torch.zeros((2, *input_shape), dtype=torch.long if ids else torch.float32)
    modes = {m: m.training for m in graph_module.modules()}
    try:
        graph_module.eval()
        with torch.no_grad():
            ShapeProp(graph_module).propagate(example)
    except Exception as exc:
        raise ModelImportError(
            f"the module does not run on an input of shape {tuple(input_shape)} (without the batch axis): {exc}",
            hint="give input_shape as the module takes it: images (C, H, W), sequences (T, F), token ids (T,)",
        ) from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    return graph_module, ids


#: Layers that act on each feature alike, so a flatten's feature order passes through them to a dense.
_PER_FEATURE = frozenset({"dropout", "activation", "batchnorm"})


def _flatten_permutations(statements: list[_Statement], spec: ir.Model) -> dict[str, np.ndarray]:
    """Layer name -> the feature permutation its weights need: torch flattens (C, H, W), Keras (H, W, C).

    A torch-order flatten must reach a dense (through per-feature layers), whose kernel rows
    and those layers' vectors are reordered; otherwise the model's output order would differ.
    """
    import numpy as np

    out: dict[str, np.ndarray] = {}
    for index, (stmt, layer) in enumerate(zip(statements, spec.layers, strict=True)):
        if layer.kind != "flatten" or len(layer.input_shape) != 3 or stmt.flatten_order != "torch":
            continue
        # torch's feature j is Keras's feature order[j]
        order = np.arange(math.prod(layer.input_shape)).reshape(layer.input_shape).transpose(2, 0, 1).ravel()
        between = []
        for later in spec.layers[index + 1 :]:
            between.append(later.name)
            if later.kind == "dense":
                out.update(dict.fromkeys(between, order))
                break
            if later.kind not in _PER_FEATURE:
                later = None
                break
        else:
            later = None
        if later is None:
            raise ModelImportError(
                f"cannot import layer {stmt.label}: its (C, H, W) feature order reaches "
                f"{'the output' if not between or spec.layers[-1].name == between[-1] else repr(between[-1])} "
                "without a dense layer to absorb it, and layerdsl's flatten produces Keras's (H, W, C) order",
                hint="permute to channels-last first: x.permute(0, 2, 3, 1).flatten(1)",
            )
    return out


def _swap_gru_gates(array: np.ndarray) -> np.ndarray:
    """torch's GRU gates (r, z, n) -> Keras's (z, r, h), along the last axis."""
    import numpy as np

    r, z, n = np.split(array, 3, axis=-1)
    return np.concatenate([z, r, n], axis=-1)


def _recurrent_weights(kind: str, state: dict[str, np.ndarray], suffix: str) -> dict[str, np.ndarray]:
    """One direction of nn.LSTM / nn.GRU / nn.RNN in Keras layout."""
    import numpy as np

    swap = _swap_gru_gates if kind == "gru" else (lambda a: a)
    out = {
        "kernel": swap(state[f"weight_ih{suffix}"].T),
        "recurrent_kernel": swap(state[f"weight_hh{suffix}"].T),
    }
    if f"bias_ih{suffix}" in state:
        b_ih, b_hh = state[f"bias_ih{suffix}"], state[f"bias_hh{suffix}"]
        # Keras's GRU (reset_after) keeps both biases as rows; LSTM and SimpleRNN have one, their sum
        out["bias"] = np.stack([swap(b_ih), swap(b_hh)]) if kind == "gru" else b_ih + b_hh
    return out


def _torch_layer_weights(layer: ir.Layer, module: Any) -> dict[str, np.ndarray]:
    """A torch module's tensors as the canonical weights of ``layer`` (Keras layout, by weight name)."""

    state = {k: v.detach().cpu().double().numpy() for k, v in module.state_dict().items() if v.is_floating_point()}
    if layer.kind in ("dense", "conv2d", "conv1d"):
        kernel = state["weight"]
        out = {"kernel": kernel.transpose(*range(2, kernel.ndim), 1, 0) if kernel.ndim > 2 else kernel.T}
        if "bias" in state:
            out["bias"] = state["bias"]
        return out
    if layer.kind == "batchnorm":
        out = {"moving_mean": state["running_mean"], "moving_variance": state["running_var"]}
        if "weight" in state:
            out.update(gamma=state["weight"], beta=state["bias"])
        return out
    if layer.kind == "embedding":
        return {"embeddings": state["weight"]}
    if layer.kind == "bidirectional":
        kind = layer.args["layer"]
        return {
            f"{direction}_{name}": array
            for direction, suffix in (("forward", "_l0"), ("backward", "_l0_reverse"))
            for name, array in _recurrent_weights(kind, state, suffix).items()
        }
    if layer.kind in ("lstm", "gru", "simplernn"):
        return _recurrent_weights(layer.kind, state, "_l0")
    return {}


def _torch_weights(statements: list[_Statement], spec: ir.Model) -> dict[str, np.ndarray]:
    import numpy as np

    permutations = _flatten_permutations(statements, spec)
    weights: dict[str, np.ndarray] = {}
    for stmt, layer in zip(statements, spec.layers, strict=True):
        if not layer.weights:
            continue
        arrays = _torch_layer_weights(layer, stmt.source)
        order = permutations.get(layer.name)
        for weight in layer.weights:
            array = arrays[weight.name]
            if order is not None and (layer.kind == "batchnorm" or weight.name == "kernel"):
                keras = np.empty_like(array)
                keras[order] = array  # row j in torch's order is row order[j] in Keras's
                array = keras
            if array.shape != weight.shape:
                raise ModelImportError(
                    f"cannot import layer {stmt.label}: weight {weight.name} has shape {array.shape}, "
                    f"expected {weight.shape}"
                )
            weights[f"{layer.name}.{weight.name}"] = array.astype(np.float32)
    return weights


def from_torch(module: Any, input_shape: Sequence[int], *, name: str | None = None) -> Imported:
    """Import a torch module whose forward is a chain (an ``nn.Sequential``, or any module torch.fx traces to one).

    ``input_shape`` is the shape the module takes, without the batch axis:
    images (C, H, W), sequences (T, F), token ids (T,). The returned text's
    input is channels-last, as every layerdsl model's; its torch build takes
    the same tensors as ``module``. Raises ModelImportError naming the first
    module or function layerdsl cannot express.
    """
    from . import backends

    backends.get("torch").import_framework()
    shape = tuple(int(d) for d in input_shape)
    graph_module, ids = _trace(module, shape)
    notes: list[str] = []
    statements = _TorchImporter(graph_module, notes).run()
    ir_shape = _ir_shape((0, *shape))
    model_name = _model_name(name or keras_snake_case(type(module).__name__), "imported")
    text, spec = _finish(model_name, ir_shape, "int64" if ids else "float32", statements)
    return Imported(text, _torch_weights(statements, spec), spec, tuple(notes))


__all__ = ["Imported", "ModelImportError", "from_keras", "from_torch", "load_keras"]
