"""Keras 3 models -> `.layers` text plus canonical weights.

``from_keras`` reads a Sequential model, or a functional one whose layers form
a graph: chains, and branches that meet at a merge (``Add``, ``Concatenate``,
``Subtract``...), written as nested bodies or taps by ``_graph``, with one
``input`` per model input and ``output @a @b`` for several outputs. It reads
every layer the language has a Keras class for (``IMPORTABLE``), so a model the
Keras backend builds imports back. Each Keras layer becomes one statement, with
only the options that differ from the DSL's defaults. Keras's layout is
canonical, so the weights are copied as they are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from .. import ir
from ..initializers import INITIALIZERS
from ..specs import ACTIVATIONS
from ._common import Imported, ModelImportError, Refused, Statement, model_name, pair, single, valid_name, zeropad_args
from ._graph import Graph, finish

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
#: Registered functions that are gelu's tanh form: the generated file's, and keras-nlp's (keras-hub's).
_GELU_APPROXIMATE = frozenset({"layerdsl>gelu_approximate", "keras_nlp>gelu_approximate", "keras_hub>gelu_approximate"})


def _activation_name(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("config") if isinstance(value.get("config"), str) else None
    return value if isinstance(value, str) else None


def _keras_activation(value: Any) -> str:
    name = _activation_name(value)
    if name in _GELU_APPROXIMATE:
        raise Refused("its activation is gelu's tanh form, which layerdsl writes as a layer: `gelu approximate=true`")
    if name is None:
        raise Refused(f"activation {value!r} is not a built-in Keras activation")
    name = _KERAS_ACTIVATION_ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        raise Refused(f"layerdsl has no activation `{name}` (it has {', '.join(ACTIVATIONS)})")
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
            raise Refused(f"{key}={value!r}: {why}")

    def none(self, *keys: str) -> None:
        """Refuse regularizers, constraints and the like that layerdsl cannot express."""
        for key in keys:
            if self.config.get(key) is not None:
                what = key.split("_")[-1] + "s"
                raise Refused(f"{key} is set, and layerdsl has no {what}")

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
        raise Refused(f"kernel_constraint must be MaxNorm(axis={axes if len(axes) > 1 else axes[0]}) to import")
    return float(config["max_value"])


def _keras_weighted(k: _KerasLayer, maxnorm_axes: list[int]) -> dict[str, Any]:
    """Arguments shared by Dense and the convolutions."""
    k.none("kernel_regularizer", "bias_regularizer", "activity_regularizer", "bias_constraint")
    if k.get("lora_rank"):
        raise Refused("LoRA layers are not supported")
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


def _keras_dense(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    return "dense", {"units": int(k.get("units")), **_keras_weighted(k, [0])}


def _keras_conv(kind: str) -> Callable[[_KerasLayer], tuple[str, dict[str, Any]]]:
    two_d = kind == "conv2d"
    size = pair if two_d else single
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
    size = single if kind.endswith("1d") else pair

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
    return "zeropad2d", zeropad_args(((int(top), int(bottom)), (int(left), int(right))))


def _keras_dropout(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    if k.get("noise_shape") is not None:
        raise Refused("layerdsl's dropout has no noise_shape")
    return "dropout", {"rate": float(k.get("rate"))}


def _keras_batchnorm(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    axis = k.get("axis", -1)
    rank = len(k.layer.input.shape)
    if (axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis) not in (-1, rank - 1):
        raise Refused(f"axis={axis!r}: layerdsl normalizes the last (channel) axis")
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
    if _activation_name(k.get("activation")) in _GELU_APPROXIMATE:
        return "gelu", {"approximate": True}
    return _keras_activation(k.get("activation")), {}


def _keras_relu(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    if k.get("max_value") is not None or k.get("negative_slope", 0.0) != 0.0 or k.get("threshold", 0.0) != 0.0:
        raise Refused("layerdsl's relu has no max_value, negative_slope or threshold")
    return "relu", {}


def _keras_softmax(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    axis = k.get("axis", -1)
    if axis not in (-1, [-1], (-1,)):
        raise Refused(f"axis={axis!r}: layerdsl's softmax acts on the last axis")
    return "softmax", {}


def _keras_leaky_relu(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    slope = k.get("negative_slope")
    if slope is None or not math.isclose(float(slope), 0.2, rel_tol=0, abs_tol=1e-12):
        raise Refused(f"negative_slope={slope}: layerdsl's leaky_relu has slope 0.2 (Keras's function default)")
    return "leaky_relu", {}


def _keras_elu(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    if float(k.get("alpha", 1.0)) != 1.0:
        raise Refused(f"alpha={k.get('alpha')}: layerdsl's elu has alpha 1")
    return "elu", {}


def _keras_embedding(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    k.none("embeddings_regularizer", "activity_regularizer", "embeddings_constraint")
    if k.get("lora_rank"):
        raise Refused("LoRA layers are not supported")
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
        raise Refused(f"it wraps {inner_class}; layerdsl's bidirectional wraps LSTM, GRU or SimpleRNN")
    kind = _KERAS_RECURRENT[inner_class]
    forward_k = _KerasLayer(forward, k.notes)
    backward_k = _KerasLayer(backward, k.notes)
    if type(backward).__name__ != inner_class:
        raise Refused("its backward layer is not the same kind as its forward layer")
    same = {key: v for key, v in forward_k.config.items() if key not in ("name", "go_backwards")}
    mirror = {key: v for key, v in backward_k.config.items() if key not in ("name", "go_backwards")}
    if same != mirror or forward_k.get("go_backwards") == backward_k.get("go_backwards"):
        raise Refused("its backward layer is not its forward layer read backwards")
    merge = k.get("merge_mode")
    if merge not in ("concat", "sum", "mul", "ave"):
        raise Refused(f"merge_mode={merge!r}: layerdsl merges with concat, sum, mul or ave")
    return "bidirectional", {"layer": kind, "inner": _recurrent_args(kind, forward_k, wrapped=True), "merge": merge}


def _keras_merge(kind: str) -> Callable[[_KerasLayer], tuple[str, dict[str, Any]]]:
    def convert(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
        return kind, {}

    return convert


def _keras_concatenate(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    axis = int(k.get("axis", -1))
    rank = len(k.layer.output.shape)
    if axis % rank == 0:
        raise Refused("it concatenates along the batch axis")
    return "concat", {"axis": -1 if axis % rank == rank - 1 else axis % rank}


#: Keras class name -> converter(config reader) -> (DSL name, arguments).
def _keras_attention(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    k.none("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint")
    if k.get("output_shape") is not None:
        raise Refused("output_shape is set; layerdsl's attention projects back to the query's features")
    if k.get("attention_axes") not in (None, [1], (1,), 1, [-2], (-2,), -2):
        raise Refused(f"attention_axes={k.get('attention_axes')!r}: layerdsl attends over the time axis")
    if k.get("use_gate") or k.get("sliding_window") is not None:
        raise Refused("gated or sliding-window attention is not in layerdsl")
    call = k.layer._inbound_nodes[0].arguments
    for keyword in ("attention_mask", "query_mask", "value_mask", "key_mask", "return_attention_scores"):
        if call.kwargs.get(keyword) not in (None, False):
            raise Refused(f"it is called with {keyword}=; layerdsl takes masks from the inputs (mask_zero, masking)")
    heads, key_dim = int(k.get("num_heads")), int(k.get("key_dim"))
    args: dict[str, Any] = {
        "heads": heads,
        "key_dim": key_dim,
        "dropout": float(k.get("dropout", 0.0)),
        "bias": bool(k.get("use_bias", True)),
        "causal": bool(call.kwargs.get("use_causal_mask", False)),
        "init": k.initializer("kernel_initializer", "glorot_uniform"),
    }
    value_dim = k.get("value_dim")
    if value_dim is not None and int(value_dim) != key_dim:
        args["value_dim"] = int(value_dim)
    if args["bias"]:
        args["bias_init"] = k.initializer("bias_initializer", "zeros")
    return "attention", args


# --- normalization, reshaping, the newer convolutions: each the inverse of keras_backend's emitter ---


def _last_axis(k: _KerasLayer, what: str) -> None:
    """Refuse an ``axis`` other than the last (Keras writes it -1, [-1], (-1,) or as rank - 1)."""
    axis = k.get("axis", -1)
    axes = list(axis) if isinstance(axis, list | tuple) else [axis]
    rank = len(k.layer.input.shape)
    if len(axes) != 1 or axes[0] not in (-1, rank - 1):
        raise Refused(f"axis={axis!r}: layerdsl's {what} acts on the last axis only")


def _keras_layernorm(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    _last_axis(k, "layernorm")
    k.require("rms_scaling", (False,), "layerdsl's layernorm subtracts the mean (it has no RMS scaling)")
    k.none("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")
    for key, default in (("gamma_initializer", "ones"), ("beta_initializer", "zeros")):
        if _keras_initializer(k.get(key)) != default:
            k.notes.append(f"{k.label}: {key} is not {default}; the imported weights are exact")
    return "layernorm", {"eps": float(k.get("epsilon")), "center": bool(k.get("center")), "scale": bool(k.get("scale"))}


def _keras_reshape(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    # the output shape, not target_shape: Keras resolves a -1 there, layerdsl writes every size
    return "reshape", {"target": tuple(int(d) for d in k.layer.output.shape[1:])}


def _keras_permute(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    return "permute", {"dims": tuple(int(d) for d in k.get("dims"))}


def _scalar(k: _KerasLayer, key: str, why: str) -> float:
    value = k.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(f"{key}={value!r}: {why}")
    return float(value)


def _keras_rescaling(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    why = "layerdsl's rescaling takes one number for every channel"
    return "rescaling", {"scale": _scalar(k, "scale", why), "offset": _scalar(k, "offset", why)}


def _keras_normalization(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    _last_axis(k, "normalization")
    k.require("invert", (False,), "layerdsl's normalization does not denormalize")
    mean, variance = k.get("mean"), k.get("variance")
    if mean is None:  # adapted or set: mean, variance and count are weights, as layerdsl's
        return "normalization", {}
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (mean, variance)):
        return "normalization", {"mean": float(mean), "variance": float(variance)}
    k.notes.append(f"{k.label}: its per-channel constant mean and variance are imported as the weights mean and variance")
    return "normalization", {}


def _keras_cropping2d(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    k.channels_last()
    (top, bottom), (left, right) = k.get("cropping")
    return "cropping2d", zeropad_args(((int(top), int(bottom)), (int(left), int(right))), symmetric="crop")


def _keras_cropping1d(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    start, end = (int(n) for n in k.get("cropping"))
    return "cropping1d", {"crop": start} if start == end else {"start": start, "end": end}


def _keras_upsample2d(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    k.channels_last()
    k.require("interpolation", ("nearest", "bilinear"), "layerdsl's upsample2d fills nearest or bilinear")
    return "upsample2d", {"size": pair(k.get("size")), "interpolation": k.get("interpolation")}


def _keras_upsample1d(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    return "upsample1d", {"size": int(k.get("size"))}


def _keras_fused(k: _KerasLayer, kernels: tuple[str, ...]) -> dict[str, Any]:
    """Window, bias, initializer and activation arguments of DepthwiseConv2D, SeparableConv2D, Conv2DTranspose."""
    k.channels_last()
    k.require("padding", ("valid", "same"), "layerdsl pads valid or same")
    k.none(
        *(key.replace("initializer", "regularizer") for key in kernels),
        *(key.replace("initializer", "constraint") for key in kernels),
        "bias_regularizer",
        "activity_regularizer",
        "bias_constraint",
    )
    inits = [k.initializer(key, "glorot_uniform") for key in kernels]
    if len(set(inits)) > 1:
        k.notes.append(f"{k.label}: {' and '.join(kernels)} differ; the text uses {inits[0]} for both")
    args: dict[str, Any] = {
        "kernel": pair(k.get("kernel_size")),
        "stride": pair(k.get("strides")),
        "pad": k.get("padding"),
        "bias": bool(k.get("use_bias", True)),
        "init": inits[0],
        "activation": _keras_activation(k.get("activation", "linear")),
    }
    if args["bias"]:
        args["bias_init"] = k.initializer("bias_initializer", "zeros")
    return args


def _keras_depthwise(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    args = _keras_fused(k, ("depthwise_initializer",))
    return "depthwiseconv2d", {**args, "multiplier": int(k.get("depth_multiplier")), "dilation": pair(k.get("dilation_rate"))}


def _keras_separable(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    args = _keras_fused(k, ("depthwise_initializer", "pointwise_initializer"))
    return "separableconv2d", {
        "filters": int(k.get("filters")),
        **args,
        "multiplier": int(k.get("depth_multiplier")),
        "dilation": pair(k.get("dilation_rate")),
    }


def _keras_transpose(k: _KerasLayer) -> tuple[str, dict[str, Any]]:
    if k.get("output_padding") is not None:
        raise Refused(f"output_padding={k.get('output_padding')!r}: layerdsl's conv2dtranspose has no output padding")
    if pair(k.get("dilation_rate")) != (1, 1):
        raise Refused(f"dilation_rate={k.get('dilation_rate')!r}: layerdsl's conv2dtranspose has no dilation")
    return "conv2dtranspose", {"filters": int(k.get("filters")), **_keras_fused(k, ("kernel_initializer",))}


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
    "Add": _keras_merge("add"),
    "Multiply": _keras_merge("multiply"),
    "Average": _keras_merge("average"),
    "Concatenate": _keras_concatenate,
    "MultiHeadAttention": _keras_attention,
    "Subtract": _keras_merge("subtract"),
    "Maximum": _keras_merge("maximum"),
    "Minimum": _keras_merge("minimum"),
    "LayerNormalization": _keras_layernorm,
    "Reshape": _keras_reshape,
    "Permute": _keras_permute,
    "Rescaling": _keras_rescaling,
    "Normalization": _keras_normalization,
    "Cropping2D": _keras_cropping2d,
    "Cropping1D": _keras_cropping1d,
    "UpSampling2D": _keras_upsample2d,
    "UpSampling1D": _keras_upsample1d,
    "DepthwiseConv2D": _keras_depthwise,
    "SeparableConv2D": _keras_separable,
    "Conv2DTranspose": _keras_transpose,
}


#: The layers a layerdsl-generated Keras file defines, by the name they are registered under
#: (``layerdsl>NAME``): read only as that, never as another library's class of the same name.
_LAYERDSL_CONVERTERS: dict[str, Callable[[_KerasLayer], tuple[str, dict[str, Any]]]] = {
    "LayerScale": lambda k: ("layerscale", {"init": float(k.get("init_value"))}),
    "PositionEmbedding": lambda k: ("posembed", {"init": k.initializer("embeddings_initializer", "uniform")}),
    "ClassToken": lambda k: ("classtoken", {"init": k.initializer("token_initializer", "zeros")}),
    "Select": lambda k: ("select", {"index": int(k.get("index"))}),
}


def _converter(layer: Any) -> Callable[[_KerasLayer], tuple[str, dict[str, Any]]] | None:
    import keras

    package, _, registered = keras.saving.get_registered_name(type(layer)).rpartition(">")
    if package == "layerdsl":
        return _LAYERDSL_CONVERTERS.get(registered)
    return _KERAS_CONVERTERS.get(type(layer).__name__)


def _attention_inputs(layer: Any) -> list[Any]:
    """MultiHeadAttention's query, and its value when that is another tensor (key = value)."""
    call = layer._inbound_nodes[0].arguments
    named = ("query", "value", "key")
    given = {**dict(zip(named, call.args, strict=False)), **{k: v for k, v in call.kwargs.items() if k in named}}
    query, value, key = given.get("query"), given.get("value"), given.get("key")
    if key is not None and key is not value:
        raise _keras_error(layer, "its keys come from another tensor than its values; layerdsl reads both from one")
    return [query] if value is query else [query, value]


_MERGES = frozenset({"Add", "Multiply", "Average", "Subtract", "Maximum", "Minimum", "Concatenate"})


def _keras_error(layer: Any, reason: str) -> ModelImportError:
    return ModelImportError(f"cannot import layer '{layer.name}' ({type(layer).__name__}): {reason}")


def _keras_graph(model: Any) -> tuple[list[Any], list[tuple[Any, ...]], list[Any], list[Any]]:
    """The layers in order (without the InputLayers), the operations each reads, the outputs' operations,
    and the inputs' (InputLayers); a Sequential model's first layer reads None, its input."""
    import keras

    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    for layer in layers:
        if isinstance(layer, keras.Model):
            raise _keras_error(layer, "nested models are not supported; put their layers in the outer model")
    if isinstance(model, keras.Sequential):
        return layers, [(previous,) for previous in [None, *layers[:-1]]], [layers[-1] if layers else None], [None]
    sources = [tensor._keras_history.operation for tensor in model.inputs]
    seen = {id(source) for source in sources}
    reads = []
    for layer in layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise _keras_error(layer, f"it is called {len(nodes)} times; layerdsl layers are called once")
        if type(layer).__name__ == "MultiHeadAttention":
            tensors = _attention_inputs(layer)
        else:
            tensors = [t for t in keras.tree.flatten(nodes[0].arguments.args) if hasattr(t, "_keras_history")]
        producers = tuple(t._keras_history.operation for t in tensors)
        if len(producers) != 1 and type(layer).__name__ not in (*_MERGES, "MultiHeadAttention"):
            raise _keras_error(layer, f"it takes {len(producers)} inputs; only merges (Add, Concatenate, ...) take several")
        for producer in producers:
            if id(producer) not in seen:
                raise _keras_error(layer, f"its input comes from '{producer.name}', which is not a layer before it")
        reads.append(producers)
        seen.add(id(layer))
    outputs = [tensor._keras_history.operation for tensor in model.outputs]
    for output in outputs:
        if any(output is source for source in sources):
            raise ModelImportError(f"the model returns its input '{output.name}'; layerdsl outputs are layers' results")
    return layers, reads, outputs, sources


def _keras_input(model: Any, index: int = 0) -> tuple[tuple[int, ...], str]:
    try:
        tensor = model.inputs[index]
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
    from keras import ops

    if type(layer).__name__ == "Bidirectional":
        directions = (("forward", layer.forward_layer), ("backward", layer.backward_layer))
        return {f"{d}_{v.name}": v for d, sub in directions for v in sub.weights}
    if type(layer).__name__ == "MultiHeadAttention":
        projections = {"query": layer.query_dense, "key": layer.key_dense, "value": layer.value_dense}
        projections["output"] = layer.output_dense
        return {f"{p}_{v.name}": v for p, sub in projections.items() for v in sub.weights}
    if type(layer).__name__ == "Normalization" and not layer.weights:  # per-channel constants (a note says so)
        channels = layer.mean.shape[-1]
        return {"mean": ops.reshape(layer.mean, (channels,)), "variance": ops.reshape(layer.variance, (channels,)),
                "count": ops.zeros(())}  # fmt: skip
    return {v.name: v for v in layer.weights}


def from_keras(model: Any, *, name: str | None = None) -> Imported:
    """Import a Keras 3 model: Sequential, or functional with one input, one output and merges.

    Returns the `.layers` text (layer names kept where they are valid DSL names),
    its checked IR, and the weights in canonical layout. Raises ModelImportError
    naming the first layer that layerdsl cannot express.
    """
    import keras
    import numpy as np

    notes: list[str] = []
    layers, reads, outputs, sources = _keras_graph(model)
    graph = Graph()
    tensors: dict[int, int] = {}
    taken = {layer.name for layer in layers} | {"input", "inputs", "x", "model", "self", "output"}
    first_reader = {}
    for index, inputs in enumerate(reads):
        for producer in inputs:
            first_reader.setdefault(id(producer), index)
    # each input enters the text where its chain starts, before the first layer that reads it, when that
    # keeps Keras's order of the inputs (the order the model is called with); else all come first
    pending = list(range(len(sources)))
    if sorted(pending, key=lambda k: first_reader.get(id(sources[k]), len(layers))) != pending:
        first_reader = {}
    names: list[str] = []
    for k in range(len(sources)):
        wanted = getattr(sources[k], "name", None) if len(sources) > 1 else None
        input_name = wanted if valid_name(wanted) and wanted not in taken and wanted not in names else f"input_{k}"
        names.append(input_name if len(sources) > 1 else ir.INPUT_NAME)

    def add_inputs(before: int) -> None:
        while pending and (not graph.inputs or first_reader.get(id(sources[pending[0]]), 0) <= before):
            k = pending.pop(0)
            shape, dtype = _keras_input(model, k)
            tensors[id(sources[k])] = graph.add_input(names[k], shape, dtype)

    add_inputs(0)
    for index, (layer, inputs) in enumerate(zip(layers, reads, strict=True)):
        add_inputs(index)
        converter = _converter(layer)
        if converter is None:
            raise _keras_error(layer, f"layerdsl has no {type(layer).__name__.lower()}")
        reader = _KerasLayer(layer, notes)
        try:
            kind, args = converter(reader)
        except Refused as exc:
            raise _keras_error(layer, str(exc)) from None
        wanted = layer.name if valid_name(layer.name) else None
        stmt = Statement(kind, args, reader.label, wanted, layer)
        tensors[id(layer)] = graph.add(stmt, tuple(tensors[id(p)] for p in inputs))
    add_inputs(len(layers))
    _, _, shape, dtype = graph.inputs[0]
    output = tuple(tensors[id(o)] for o in outputs)
    text, spec, statements = finish(
        graph, output if len(output) > 1 else output[0], model_name(name or model.name, "imported"), shape, dtype
    )
    weights: dict[str, np.ndarray] = {}
    for stmt, layer in zip(statements, spec.layers, strict=True):
        variables = _keras_variables(stmt.source)
        for weight in layer.weights:
            array = np.array(keras.ops.convert_to_numpy(variables[weight.name]), dtype=np.float32)
            if array.shape != weight.shape:
                raise ModelImportError(
                    f"cannot import layer {stmt.label}: weight {weight.name} has shape {array.shape}, "
                    f"expected {weight.shape}"
                )
            weights[f"{layer.name}.{weight.name}"] = array
    return Imported(text, weights, spec, tuple(notes))


def load_keras(path: str | os.PathLike[str]) -> Any:
    """Load a Keras 3 ``.keras`` file in safe mode: Keras refuses to deserialize Python code (lambdas)."""
    from .. import backends

    keras = backends.get("keras").import_framework()
    return keras.saving.load_model(path, safe_mode=True)


#: DSL kind -> the Keras classes ``from_keras`` reads as that kind.
IMPORTABLE = {
    "dense": "Dense",
    "conv2d": "Conv2D",
    "conv1d": "Conv1D",
    "maxpool": "MaxPooling2D",
    "avgpool": "AveragePooling2D",
    "maxpool1d": "MaxPooling1D",
    "avgpool1d": "AveragePooling1D",
    "globalmaxpool1d": "GlobalMaxPooling1D",
    "globalavgpool1d": "GlobalAveragePooling1D",
    "globalmaxpool": "GlobalMaxPooling2D",
    "globalavgpool": "GlobalAveragePooling2D",
    "flatten": "Flatten",
    "zeropad2d": "ZeroPadding2D",
    "dropout": "Dropout",
    "batchnorm": "BatchNormalization",
    "activation": "Activation, ReLU, Softmax, LeakyReLU, ELU; Activation(gelu_approximate) as gelu approximate=true",
    "embedding": "Embedding",
    "masking": "Masking",
    "lstm": "LSTM",
    "gru": "GRU",
    "simplernn": "SimpleRNN",
    "bidirectional": "Bidirectional",
    "add": "Add",
    "multiply": "Multiply",
    "average": "Average",
    "concat": "Concatenate",
    "layerscale": "the LayerScale a layerdsl Keras file defines (registered as layerdsl>LayerScale)",
    "posembed": "the PositionEmbedding a layerdsl Keras file defines (registered as layerdsl>PositionEmbedding)",
    "classtoken": "the ClassToken a layerdsl Keras file defines (registered as layerdsl>ClassToken)",
    "select": "the Select a layerdsl Keras file defines (registered as layerdsl>Select)",
    "attention": "MultiHeadAttention (self-attention `mha(x, x)`, cross-attention `mha(x, memory)`)",
    "subtract": "Subtract",
    "maximum": "Maximum",
    "minimum": "Minimum",
    "layernorm": "LayerNormalization over the last axis (without rms_scaling)",
    "reshape": "Reshape",
    "permute": "Permute",
    "rescaling": "Rescaling with one scale and offset",
    "normalization": "Normalization over the last axis: constants, or the weights mean, variance and count",
    "cropping2d": "Cropping2D",
    "cropping1d": "Cropping1D",
    "upsample2d": "UpSampling2D (nearest or bilinear)",
    "upsample1d": "UpSampling1D",
    "depthwiseconv2d": "DepthwiseConv2D",
    "separableconv2d": "SeparableConv2D",
    "conv2dtranspose": "Conv2DTranspose (without output_padding or dilation)",
}
#: DSL kind -> why ``from_keras`` does not read it (every kind has a Keras class it reads).
NOT_IMPORTABLE: dict[str, str] = {}
