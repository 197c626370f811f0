"""Torch modules -> `.layers` text plus canonical weights.

``from_torch`` traces a module with ``torch.fx`` and reads the graph of modules
and functions it finds: chains, and branches that meet again at ``torch.cat``,
an addition or a multiplication (written as nested bodies or taps by
``_graph``). Torch modules take images as (N, C, H, W); ``input_shape`` is
given the same way, without the batch axis, and the imported text's input is
channels-last, as every layerdsl model's.

Weights are converted by ``backends.torch_weights``, the code the torch
backend's weight transfer uses, so the two read torch's layout alike.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import ir
from ..backends.torch_weights import feature_indexed, from_torch_order, permutation, to_keras
from ..checker import keras_snake_case
from ..specs import REGISTRY
from ._common import (
    Imported,
    ModelImportError,
    Refused,
    Statement,
    model_name,
    pad_kind,
    pair,
    same_or_valid,
    same_padding,
    single,
    valid_name,
    zeropad_args,
)
from ._graph import INPUT, Graph, finish

if TYPE_CHECKING:
    import numpy as np

def _torch_shape(node: Any) -> tuple[int, ...]:
    """A traced node's tensor shape, batch axis included."""
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise Refused("its output is not a tensor")
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
    check: Callable[[Any, int], None] | None = None  # (node, rank with batch) -> raise Refused


def _softmax_dim_check(dim: Any, rank: int) -> None:
    channel = 1 if rank == 4 else rank - 1
    if dim is None or (dim % rank if isinstance(dim, int) else None) != channel:
        axis = "1 (channels)" if rank == 4 else "-1 (features)"
        raise Refused(f"softmax over dim={dim}: layerdsl's softmax acts on dim {axis}")


def _torch_functions() -> tuple[dict[Any, _TorchFunction], dict[str, _TorchFunction]]:
    """(functions, tensor methods) that are activations."""
    import torch
    import torch.nn.functional as F

    def leaky(node: Any, rank: int) -> None:
        slope = _arg(node, 1, "negative_slope", 0.01)
        if slope != 0.2:
            raise Refused(f"negative_slope={slope}: layerdsl's leaky_relu has slope 0.2 (Keras's)")

    def elu(node: Any, rank: int) -> None:
        if _arg(node, 1, "alpha", 1.0) != 1.0:
            raise Refused("layerdsl's elu has alpha 1")

    def gelu(node: Any, rank: int) -> None:
        if _arg(node, 1, "approximate", "none") != "none":  # "tanh" is a layer of its own: `is_tanh_gelu`
            raise Refused("layerdsl's gelu is the exact (erf) form, or tanh's (`gelu approximate=true`) as a layer")

    def softplus(node: Any, rank: int) -> None:
        if _arg(node, 1, "beta", 1.0) != 1.0:
            raise Refused("layerdsl's softplus has beta 1")

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
            raise Refused(f"alpha={module.alpha}: layerdsl's elu has alpha 1")
        return "elu"
    if type(module) is nn.GELU:
        if module.approximate != "none":
            raise Refused(f"approximate={module.approximate!r}: layerdsl's gelu is the exact or the tanh form")
        return "gelu"
    if type(module) is nn.Softplus:
        if module.beta != 1.0:
            raise Refused(f"beta={module.beta}: layerdsl's softplus has beta 1")
        return "softplus"
    if type(module) is nn.LeakyReLU:
        if module.negative_slope != 0.2:
            raise Refused(f"negative_slope={module.negative_slope}: layerdsl's leaky_relu has slope 0.2 (Keras's)")
        return "leaky_relu"
    return None


#: Activations whose outputs are never negative.
_NON_NEGATIVE = frozenset({"relu", "relu6", "sigmoid", "softmax", "softplus"})


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(key: Any) -> bool:
    return key == slice(None)


def _span(key: Any, size: int, what: str) -> tuple[int, int]:
    """(cut at the start, cut at the end) of a step-1 slice along an axis of ``size``."""
    if not isinstance(key, slice) or key.step not in (None, 1):
        raise Refused(f"layerdsl crops {what} with a plain slice a:b")
    start, stop, _ = key.indices(size)
    if stop <= start:
        raise Refused(f"the slice leaves no {what}")
    return start, size - stop


def _slicing(key: Any, shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    """`x[:, i]` (select), `x[:, a:b]` (cropping1d) on (N, T, F); `x[:, :, a:b, c:d]` (cropping2d) on images."""
    key = key if isinstance(key, tuple) else (key,)
    rank = len(shape)
    if rank == 3 and len(key) >= 2 and _whole(key[0]) and all(_whole(k) for k in key[2:]):
        if isinstance(key[1], int):
            return "select", {"index": key[1]}
        start, end = _span(key[1], shape[1], "timesteps")
        return "cropping1d", {"crop": start} if start == end else {"start": start, "end": end}
    if rank == 4 and len(key) == 4 and _whole(key[0]) and _whole(key[1]):
        (top, bottom), (left, right) = _span(key[2], shape[2], "rows"), _span(key[3], shape[3], "columns")
        return "cropping2d", zeropad_args(((top, bottom), (left, right)), symmetric="crop")
    raise Refused(
        "layerdsl reads indexing as x[:, i] (select), x[:, a:b] (cropping1d) on sequences and "
        "x[:, :, a:b, c:d] (cropping2d) on images"
    )


def _layernorm_args(module: Any, features: int) -> dict[str, Any]:
    """nn.LayerNorm over the last axis: elementwise_affine=False is neither gamma nor beta, bias=False no beta."""
    if tuple(module.normalized_shape) != (features,):
        raise Refused(
            f"normalized_shape={tuple(module.normalized_shape)}: layerdsl's layernorm normalizes the last axis "
            f"alone ({features} features)"
        )
    affine = bool(module.elementwise_affine)
    return {"eps": float(module.eps), "scale": affine, "center": affine and module.bias is not None}


def _ceil_mode_pad(sizes: tuple[int, ...], pool: tuple[int, int], stride: tuple[int, int]) -> str:
    """`valid` or `same` where a ceil_mode pool (without padding) gives the same windows, or refuse.

    Ceil mode adds a last window that runs past the end (where one starts inside the input);
    TensorFlow's `same` does too when it pads only after, and both leave the outside out.
    """
    def ceil_size(n: int, k: int, s: int) -> int:
        out = -(-(n - k) // s) + 1
        return out - 1 if (out - 1) * s >= n else out  # torch drops a last window that starts outside

    floor = tuple((n - k) // s + 1 for n, k, s in zip(sizes, pool, stride, strict=True))
    ceil = tuple(ceil_size(n, k, s) for n, k, s in zip(sizes, pool, stride, strict=True))
    if ceil == floor:
        return "valid"
    same = tuple(-(-n // s) for n, s in zip(sizes, stride, strict=True))
    if same == ceil and all(before == 0 for before, _ in same_padding(sizes, pool, stride, (1, 1))):
        return "same"
    raise Refused(
        f"ceil_mode=True: on a {'x'.join(map(str, sizes))} input its output {'x'.join(map(str, ceil))} is neither "
        f"`valid`'s {'x'.join(map(str, floor))} nor TensorFlow `same`'s windows"
    )


#: The parameters of ``forward`` in the torch backend's own attention module (``_ATTENTION_HELPER``).
_GENERATED_ATTENTION_CALL = ("x", "memory", "mask", "causal")


def _is_generated_attention(module: Any) -> bool:
    """The ``MultiHeadAttention`` module the torch backend writes where nn.MultiheadAttention cannot hold
    the layer, known by its structure: query, key, value and output Linears, the attention dropout,
    ``heads``, and ``forward(x, memory, mask=None, causal=False)``. The tracer keeps it one leaf."""
    import inspect

    from torch import nn

    if type(module).__name__ != "MultiHeadAttention" or not isinstance(getattr(module, "heads", None), int):
        return False
    children = {name: type(child) for name, child in module.named_children()}
    expected = {"query": nn.Linear, "key": nn.Linear, "value": nn.Linear, "output": nn.Linear, "dropout": nn.Dropout}
    if children != expected:
        return False
    try:
        parameters = tuple(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return False
    return parameters == _GENERATED_ATTENTION_CALL


@functools.cache
def _reference_attention() -> type:
    """The torch backend's attention module, from the source it writes into every file that needs it."""
    from ..backends.torch_backend import _ATTENTION_HELPER
    from ..codegen import exec_generated

    source = f"import torch\nfrom torch import nn\n\n\n{_ATTENTION_HELPER}"
    return exec_generated(source, "<layerdsl torch attention>")["MultiHeadAttention"]


def _torch_label(node: Any, module: Any | None) -> str:
    if module is not None:
        return f"'{node.target}' ({type(module).__name__})"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"'{node.name}' ({target})"


class _TorchImporter:
    """Walks the traced graph in order, turning nodes (or short runs of them) into statements."""

    def __init__(self, graph_module: Any, notes: list[str]) -> None:
        self.gm = graph_module
        self.modules = dict(graph_module.named_modules())
        self.notes = notes
        self.functions, self.methods = _torch_functions()
        self.graph = Graph()
        self.current = INPUT  # the tensor the next statement reads
        self.go_backwards = False

    # graph helpers

    def module(self, node: Any) -> Any | None:
        return self.modules.get(node.target) if node.op == "call_module" else None

    def is_size_query(self, node: Any) -> bool:
        """`x.size(0)`, `x.shape`, `x.shape[0]`: used by view/reshape, never a layer's value."""
        if node.op == "call_method" and node.target == "size":
            return True
        if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            return True
        return node.op == "call_function" and node.target is operator.getitem and self.is_size_query(node.args[0])

    def run(self) -> tuple[Graph, int]:
        """The graph of statements, and the tensor the module returns."""
        graph = self.gm.graph
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]  # one: _trace checks
        skipped = ("placeholder", "output", "get_attr")  # get_attr: a buffer an arithmetic step reads
        # a parameter made ready for a step (an expanded class token, a per-channel view) is read with that step
        self.nodes = [
            n for n in graph.nodes if n.op not in skipped and not self.is_size_query(n) and not self.held(n)
        ]
        tensors = {placeholders[0]: INPUT}  # fx node -> the graph tensor holding its value
        index = 0
        while index < len(self.nodes):
            node = self.nodes[index]
            module = self.module(node)
            label = _torch_label(node, module)
            inputs = [
                n
                for n in node.all_input_nodes
                if not self.is_size_query(n) and n.op != "get_attr" and not self.held(n)
            ]
            missing = [n for n in inputs if n not in tensors]
            if missing:
                raise ModelImportError(
                    f"cannot import layer {label}: it reads '{missing[0].name}', a value inside a step "
                    "layerdsl imports as one layer"
                )
            try:
                merge = self.parameter_step(node) or self.merge(node)
                if merge is not None:
                    kind, args, merged, *held = merge
                    stmt = Statement(kind, args, label, *held)
                    tensors[node] = self.graph.add(stmt, tuple(tensors[n] for n in merged))
                    index += 1
                    continue
                if self.attends(module) and len(inputs) > 1:  # cross-attention, or a mask tensor
                    used = self.cross_attention(index, module, tensors)
                else:
                    if len(inputs) != 1:
                        raise Refused(f"it reads {len(inputs)} tensors; only merges (torch.cat, +, *) read several")
                    self.current = tensors[inputs[0]]
                    used = self.step(index, module)
            except Refused as exc:
                raise ModelImportError(f"cannot import layer {label}: {exc}") from None
            tensors[self.nodes[index + used - 1]] = self.current
            index += used
        (output,) = [n for n in graph.nodes if n.op == "output"]
        if output.args[0] not in tensors:
            raise ModelImportError(
                "the module returns several values or a value layerdsl cannot import; layerdsl models have one output"
            )
        if self.go_backwards:
            raise ModelImportError(
                "the module flips its output along time (x.flip(1)) with no recurrent layer after it"
            )
        return self.graph, tensors[output.args[0]]

    def parameter(self, node: Any) -> Any | None:
        """The nn.Parameter a `get_attr` node reads (None for a buffer or another node)."""
        if getattr(node, "op", None) != "get_attr":
            return None
        try:
            return self.gm.get_parameter(node.target)
        except AttributeError:
            return None

    def held(self, node: Any) -> bool:
        """A parameter made ready for the step that reads it (an expanded class token, a per-channel view)."""
        return self.token(node) is not None or self.channel_vector(node) is not None

    def channel_vector(self, node: Any) -> Any | None:
        """The get_attr node of `self.gamma[:, None, None]`, a (C,) parameter lined up with image channels."""
        if node.op != "call_function" or node.target is not operator.getitem or node.args[1] != (slice(None), None, None):
            return None
        parameter = self.parameter(node.args[0])
        return node.args[0] if parameter is not None and parameter.dim() == 1 else None

    def token(self, node: Any) -> Any | None:
        """The get_attr node of `self.token.expand(n, -1, -1)`, a (1, 1, F) parameter over the batch; else None."""
        if node.op != "call_method" or node.target != "expand" or not node.args:
            return None
        parameter = self.parameter(node.args[0])
        return node.args[0] if parameter is not None and parameter.dim() == 3 and parameter.shape[:2] == (1, 1) else None

    def parameter_step(self, node: Any) -> tuple[str, dict[str, Any], list[Any], str | None, Any] | None:
        """`x + self.pos` with a (1, T, F) parameter (posembed), `torch.cat([self.token.expand(n, -1, -1), x],
        dim=1)` (classtoken): (kind, arguments, the node it reads, the parameter's name, its holder); else None."""
        import torch
        from torch import nn

        if node.op == "call_function" and node.target in (torch.cat, torch.concat):
            parts = list(node.args[0])
            first = self.token(parts[0]) if len(parts) == 2 and hasattr(parts[0], "op") else None
            if first is None:
                return None
            if _arg(node, 1, "dim", 0) % 3 != 1 or len(_torch_shape(node)) != 3:
                raise Refused("a class token is prepended along time: torch.cat([token.expand(n, -1, -1), x], dim=1)")
            kind, held, read = "classtoken", first, parts[1]
        elif node.op == "call_function" and node.target in (operator.mul, torch.mul) and len(node.args) == 2:
            views = [self.channel_vector(p) if hasattr(p, "op") else None for p in node.args]
            vectors = [v if v is not None else p for v, p in zip(views, node.args, strict=True)]
            params = [self.parameter(v) if hasattr(v, "op") else None for v in vectors]
            if sum(p is not None for p in params) != 1:
                return None
            held, read = (vectors[0], node.args[1]) if params[0] is not None else (vectors[1], node.args[0])
            shape = _torch_shape(read)
            channels = shape[1] if len(shape) == 4 else shape[-1]
            image = len(shape) == 4
            if tuple(self.parameter(held).shape) != (channels,) or image != any(v is not None for v in views):
                raise Refused(
                    "layerdsl reads a layer scale as x * gamma with a (C,) parameter (gamma[:, None, None] on images)"
                )
            kind = "layerscale"
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2:
            params = [self.parameter(p) for p in node.args]
            if sum(p is not None for p in params) != 1 or node.kwargs:
                return None
            held, read = (node.args[0], node.args[1]) if params[0] is not None else (node.args[1], node.args[0])
            shape = _torch_shape(read)
            if len(shape) != 3 or tuple(self.parameter(held).shape) != (1, *shape[1:]):
                raise Refused(
                    f"it adds a parameter of shape {tuple(self.parameter(held).shape)} to {shape[1:]}; layerdsl reads "
                    "a learned position embedding: a (1, T, F) parameter added to an (N, T, F) sequence"
                )
            kind = "posembed"
        else:
            return None
        wanted = held.target.replace(".", "_")
        holder = nn.ParameterDict({"weight": self.parameter(held)})  # state_dict() as a module's
        if kind == "layerscale":
            self.notes.append(
                f"{_torch_label(node, None)}: a layer scale's starting value is not in the module; the text uses "
                "layerscale's default (the imported weights are exact)"
            )
        return kind, {}, [read], wanted if valid_name(wanted) else None, holder

    def merge(self, node: Any) -> tuple[str, dict[str, Any], list[Any]] | None:
        """(DSL merge, arguments, the nodes it reads) for `torch.cat`, `+` or `*` of tensors; None otherwise."""
        import torch

        if node.op == "call_function" and node.target in (torch.cat, torch.concat):
            parts = list(node.args[0])
            rank = len(_torch_shape(node))
            dim = _arg(node, 1, "dim", 0) % rank
            if dim == 0:
                raise Refused("it concatenates along the batch axis")
            # the DSL's axes are channels-last, as Keras's: (N, C, H, W) dim 1 is axis -1
            axis = {1: -1, 2: 1, 3: 2}[dim] if rank == 4 else (-1 if dim == rank - 1 else dim)
            return "concat", {"axis": axis}, parts
        functions = {
            operator.add: "add", operator.iadd: "add", torch.add: "add",
            operator.mul: "multiply", operator.imul: "multiply", torch.mul: "multiply",
            operator.sub: "subtract", operator.isub: "subtract", torch.sub: "subtract",
            torch.maximum: "maximum", torch.minimum: "minimum",
        }  # fmt: skip
        methods = {"add": "add", "mul": "multiply", "sub": "subtract", "maximum": "maximum", "minimum": "minimum"}
        if node.op == "call_function" and node.target in functions:
            kind = functions[node.target]
        elif node.op == "call_method" and node.target.rstrip("_") in methods:
            kind = methods[node.target.rstrip("_")]
        else:
            return None
        parts = list(node.args[:2])
        if kind == "multiply" and len(parts) == 2 and _number(parts[1]) and hasattr(parts[0], "op"):
            return None  # `x * scale`: a rescaling, read as a step
        if not all(hasattr(p, "op") for p in parts):
            raise Refused(f"layerdsl's {kind} merges two tensors; it has no arithmetic with constants")
        if node.kwargs.get("alpha", 1) != 1:
            raise Refused(f"alpha={node.kwargs['alpha']}: layerdsl's {kind} has no scale")
        shapes = [_torch_shape(p) for p in parts]
        if len(set(shapes)) != 1:
            raise Refused(f"it broadcasts {' and '.join(str(s[1:]) for s in shapes)}; layerdsl's {kind} takes equal shapes")
        return kind, {}, parts

    def following(self, index: int) -> Any | None:
        """The node after ``index`` when it consumes only ``index``'s output."""
        if index + 1 >= len(self.nodes):
            return None
        node, after = self.nodes[index], self.nodes[index + 1]
        return after if node in after.all_input_nodes and len(node.users) == 1 else None

    def add(
        self, index: int, kind: str, args: dict[str, Any], source: Any = None, reads: tuple[int, ...] = (), **extra: Any
    ) -> None:
        """A statement for the node at ``index``, reading the current tensor (then ``reads``) and becoming it."""
        node = self.nodes[index]
        module = self.module(node)
        wanted = node.target.replace(".", "_") if module is not None else None
        stmt = Statement(kind, args, _torch_label(node, module), wanted if valid_name(wanted) else None, source, **extra)
        self.current = self.graph.add(stmt, (self.current, *reads))

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

    def is_tanh_gelu(self, node: Any, module: Any | None) -> bool:
        """`nn.GELU(approximate="tanh")` or `F.gelu(x, approximate="tanh")`: `gelu approximate=true`."""
        import torch.nn.functional as F
        from torch import nn

        if module is not None:
            return type(module) is nn.GELU and module.approximate == "tanh"
        return node.op == "call_function" and node.target is F.gelu and _arg(node, 1, "approximate", "none") == "tanh"

    def fused_activation(self, index: int, args: dict[str, Any]) -> int:
        """Fold an activation *function* right after a dense or conv into its `activation=`."""
        after = self.following(index)
        if after is None:
            return 1
        try:
            function = self.activation_of(after, len(_torch_shape(self.nodes[index])))
        except Refused:
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

    # one step: a node, or a short run of nodes that is one layer; returns how many nodes it used

    def step(self, index: int, module: Any | None) -> int:
        import torch

        node = self.nodes[index]
        rank = len(self.in_shape(index))
        if self.go_backwards and not self.is_recurrent(module):
            raise Refused("x.flip(1) must come right before a recurrent layer (it means go_backwards)")
        if module is not None:
            return self.module_step(index, module, rank)
        if self.is_tanh_gelu(node, module):
            self.add(index, "gelu", {"approximate": True})
            return 1
        activation = self.activation_of(node, rank)
        if activation is not None:
            self.add(index, activation, {})
            return 1
        if self.is_flatten(node):
            self.add(index, "flatten", {}, flatten_order=self.flatten_order(index))
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
            if after is not None and after.op == "call_method" and after.target in ("reshape", "view"):
                target = _torch_shape(after)[1:]
                if len(target) != 3:  # channels-last, then reshaped as Keras reshapes (not to an image)
                    self.add(index, "reshape", {"target": target})
                    return 2
        if node.op == "call_method" and node.target in ("reshape", "view") and rank == 4:
            (_, channels, height, width), after = self.in_shape(index), self.following(index)
            swapped = (
                after is not None
                and after.op == "call_method"
                and after.target in ("permute", "transpose")
                and _dims(after.args[1:]) in ((0, 2, 1), (1, 2), (2, 1))
            )
            if _torch_shape(node)[1:] == (channels, height * width) and swapped:
                # torchvision's ViT: x.reshape(n, C, H * W).permute(0, 2, 1), the pixels row by row
                self.add(index, "reshape", {"target": (height * width, channels)})
                return 2
        if node.op == "call_method" and node.target in ("reshape", "view") and rank != 4:
            target = _torch_shape(node)[1:]
            if len(target) != 3:  # a sequence or vector, in one order in both frameworks
                self.add(index, "reshape", {"target": target})
                return 1
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
        if node.op == "call_function" and node.target in (operator.mul, torch.mul) and _number(node.args[-1]):
            args, used = {"scale": float(node.args[-1])}, 1
            after = self.following(index)
            if after is not None and after.op == "call_function" and after.target in (operator.add, torch.add):
                if after.args[0] is node and _number(after.args[1]) and not after.kwargs:
                    args["offset"], used = float(after.args[1]), 2
            self.add(index, "rescaling", args)
            return used
        if self.is_movedim(node, (1, -1)) and rank == 4:
            return self.channels_last_layernorm(index)
        if node.op == "call_function" and node.target is operator.getitem:
            kind, args = _slicing(node.args[1], self.in_shape(index))
            self.add(index, kind, args)
            return 1
        if node.target in ("repeat_interleave", torch.repeat_interleave) and rank == 3:
            repeats, dim = _arg(node, 1, "repeats"), _arg(node, 2, "dim")
            if not isinstance(repeats, int) or dim is None or dim % 3 != 1:
                raise Refused("layerdsl's upsample1d is x.repeat_interleave(N, dim=1): a whole factor along time")
            self.add(index, "upsample1d", {"size": repeats})
            return 1
        pooled = self.global_pool(node, rank)
        if pooled is not None:
            self.add(index, pooled, {})
            return 1
        if node.op == "call_function" and node.target in (operator.ne, torch.ne) and node.args[1:] == (0,):
            raise Refused(
                "`x != 0` is a padding mask (the torch build of `embedding mask_zero=true`); from_torch reads no masks"
            )
        raise Refused("layerdsl has no equivalent of this step")

    @staticmethod
    def swaps_time(node: Any) -> bool:
        return node.op == "call_method" and node.target == "transpose" and {d % 3 for d in node.args[1:3]} == {1, 2}

    def channels_first_1d(self, index: int) -> int:
        """`transpose(1, 2)`, a run of Conv1d and 1-D pools on (N, C, T) (each perhaps after a pad, a Conv1d
        perhaps followed by an activation), `transpose(1, 2)`: one layer each on (N, T, C)."""
        layers: list[tuple[int, str, dict[str, Any], Any]] = []
        position = index + 1
        while True:
            node = self.following(position - 1)
            if node is None:
                raise Refused("only transpose(1, 2), Conv1d or 1-D pools, transpose(1, 2) can be imported")
            if self.swaps_time(node):
                break
            used, layer = self.channels_first_layer(position)
            layers.append(layer)
            position += used
        if not layers:
            raise Refused("only transpose(1, 2), Conv1d or 1-D pools, transpose(1, 2) can be imported")
        used = position - index + 1
        last = layers[-1]
        if last[1] == "conv1d" and "activation" not in last[2]:  # an activation after the transpose back
            used += self.fused_activation(position, last[2]) - 1
        for layer_index, kind, args, module in layers:
            self.add(layer_index, kind, args, module)
        return used

    def channels_first_layer(self, position: int) -> tuple[int, tuple[int, str, dict[str, Any], Any]]:
        """One Conv1d or 1-D pool on (N, C, T) at ``position`` (after its pad, if any): nodes used, and the layer."""
        from torch import nn

        module = self.module(self.nodes[position])
        length = _torch_shape(self.nodes[position].all_input_nodes[0])[2]
        padding = (0, 0)
        pad = None
        if type(module) in (nn.ZeroPad1d, nn.ConstantPad1d):
            pad = module
            after = self.following(position)
            module = self.module(after) if after is not None else None
            if type(module) not in (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d):
                raise Refused("only a padding module may come before the Conv1d or pool")
            position += 1
        if type(module) not in (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d):
            name = "this step" if module is None else type(module).__name__.lower()
            raise Refused(f"layerdsl has no {name} on sequences")
        used = 2 if pad is not None else 1
        if pad is not None:
            value = getattr(pad, "value", 0.0)
            if value != (float("-inf") if type(module) is nn.MaxPool1d else 0.0):
                raise Refused(f"it pads with {value}: layerdsl pads convolutions with 0 and max pools with -inf")
            if type(module) is nn.AvgPool1d:
                if not self.divides_by_coverage(position, pad, module):
                    raise Refused("an average over zero padding counts the padding; TensorFlow's `same` leaves it out")
                used += 1  # the division by each window's share of real steps
            padding = tuple(pad.padding)
        if type(module) is nn.Conv1d:
            if module.groups != 1 or module.padding_mode != "zeros":
                raise Refused("layerdsl has no grouped convolutions or non-zero padding modes")
            kernel, stride, dilation = module.kernel_size[0], module.stride[0], module.dilation[0]
            if module.padding == "same":
                pad_kind = "same"
            else:
                own = 0 if module.padding == "valid" else module.padding[0]
                if own and padding != (0, 0):
                    raise Refused("it pads twice (a padding module and its own padding)")
                padding = (own, own) if own else padding
                causal = padding == ((kernel - 1) * dilation, 0) and padding != (0, 0)
                pad_kind = (
                    "causal" if causal else same_or_valid((padding,), (length,), (kernel,), (stride,), (dilation,))
                )
            args = {
                "filters": module.out_channels,
                "kernel": kernel,
                "stride": stride,
                "pad": pad_kind,
                "dilation": dilation,
                "bias": module.bias is not None,
            }
            fused = dict(args)
            if self.fused_activation(position, fused) == 2 and not self.swaps_time(self.nodes[position + 1]):
                args, used = fused, used + 1
            return used, (position, "conv1d", args, module)
        is_max = type(module) is nn.MaxPool1d
        if module.ceil_mode or (is_max and (module.dilation != 1 or module.return_indices)):
            raise Refused("layerdsl pools round down, without dilation or return_indices")
        pool = single(module.kernel_size)
        stride = single(module.stride) if module.stride is not None else pool
        own = single(module.padding)
        if own and padding != (0, 0):
            raise Refused("it pads twice (a padding module and its own padding)")
        if own and not is_max and module.count_include_pad:
            raise Refused("count_include_pad=True averages the padding in; TensorFlow's `same` leaves it out")
        padding = (own, own) if own else padding
        pad_kind = same_or_valid((padding,), (length,), (pool,), (stride,), (1,))
        kind = "maxpool1d" if is_max else "avgpool1d"
        return used, (position, kind, {"pool": pool, "stride": stride, "pad": pad_kind}, None)

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
        if self.is_tanh_gelu(self.nodes[index], module):
            self.add(index, "gelu", {"approximate": True})
            return 1
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
        if self.attends(module):
            return self.attention(index, module)
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
                raise Refused("layerdsl's flatten keeps the batch axis: nn.Flatten(start_dim=1, end_dim=-1)")
            self.add(index, "flatten", {}, flatten_order=self.flatten_order(index))
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
            return self.adaptive_pool(index, "avg" if kind is nn.AdaptiveAvgPool2d else "max")
        if kind is nn.LayerNorm:
            if rank == 4:
                raise Refused(
                    "on (N, C, H, W) it normalizes the last axis, the width; layerdsl's layernorm normalizes "
                    "each pixel's channels: x.movedim(1, -1), then the LayerNorm, then .movedim(-1, 1)"
                )
            self.add(index, "layernorm", _layernorm_args(module, self.in_shape(index)[-1]), module)
            return 1
        if kind is nn.Upsample:
            return self.upsample(index, module)
        if kind is nn.ConvTranspose2d:
            return self.conv_transpose(index, module)
        if kind is nn.Conv1d:
            raise Refused("torch's Conv1d reads (N, C, T) where layerdsl's conv1d reads (N, T, C) sequences")
        raise Refused(f"layerdsl has no {kind.__name__.lower()}")

    @staticmethod
    def is_movedim(node: Any, dims: tuple[int, int]) -> bool:
        if node.op != "call_method" or node.target != "movedim" or len(node.args) < 3:
            return False
        return tuple(d % 4 for d in node.args[1:3]) == tuple(d % 4 for d in dims)

    def channels_last_layernorm(self, index: int) -> int:
        """`x.movedim(1, -1)`, nn.LayerNorm, `.movedim(-1, 1)`: each pixel normalized over its channels."""
        from torch import nn

        norm = self.following(index)
        module = self.module(norm) if norm is not None else None
        back = self.following(index + 1) if type(module) is nn.LayerNorm else None
        if back is None or not self.is_movedim(back, (-1, 1)):
            raise Refused("only x.movedim(1, -1), nn.LayerNorm, .movedim(-1, 1) can be imported (a channels-last norm)")
        self.add(index + 1, "layernorm", _layernorm_args(module, self.in_shape(index)[1]), module)
        return 3

    def conv_transpose(self, index: int, module: Any) -> int:
        """nn.ConvTranspose2d whose padding and output_padding (and a last row or column sliced off) give
        TensorFlow's `valid` or `same` output, as the torch backend writes `conv2dtranspose`."""
        from ..backends.torch_backend import _transpose_padding

        if module.groups != 1 or tuple(module.dilation) != (1, 1) or module.padding_mode != "zeros":
            raise Refused("layerdsl's conv2dtranspose has no groups, dilation or non-zero padding modes")
        sizes = self.in_shape(index)[2:]
        kernel, stride = tuple(module.kernel_size), tuple(module.stride)
        crop, used = (False, False), 1
        after = self.following(index)
        if after is not None and after.op == "call_function" and after.target is operator.getitem:
            key = after.args[1]
            ends = (slice(None), slice(None, -1))
            if isinstance(key, tuple) and len(key) == 4 and all(_whole(k) for k in key[:2]) and all(
                k in ends for k in key[2:]
            ):
                crop, used = (key[2] != slice(None), key[3] != slice(None)), 2
        given = tuple(zip(module.padding, module.output_padding, crop, strict=True))
        for pad in ("valid", "same"):
            out = [n * s if pad == "same" else n * s + max(k - s, 0) for n, k, s in zip(sizes, kernel, stride, strict=True)]
            if given == tuple(map(_transpose_padding, sizes, out, kernel, stride)):
                break
        else:
            raise Refused(
                f"padding={tuple(module.padding)}, output_padding={tuple(module.output_padding)} on a "
                f"{sizes[0]}x{sizes[1]} input give neither TensorFlow's `valid` nor `same` output"
            )
        args = {"filters": module.out_channels, "kernel": kernel, "stride": stride, "pad": pad,
                "bias": module.bias is not None}  # fmt: skip
        used += self.fused_activation(index + used - 1, args) - 1
        self.add(index, "conv2dtranspose", args, module)
        return used

    def upsample(self, index: int, module: Any) -> int:
        """nn.Upsample on (N, C, H, W) by whole factors: nearest, or bilinear without align_corners (TensorFlow's)."""
        shape, out = self.in_shape(index), _torch_shape(self.nodes[index])
        if len(shape) != 4:
            raise Refused("layerdsl's upsample2d reads images (N, C, H, W)")
        if module.mode not in ("nearest", "bilinear") or (module.mode == "bilinear" and module.align_corners):
            raise Refused(
                f"mode={module.mode!r}, align_corners={module.align_corners}: layerdsl's upsample2d is nearest, "
                "or bilinear with align_corners=False"
            )
        size = tuple(o // i for o, i in zip(out[2:], shape[2:], strict=True))
        if tuple(i * f for i, f in zip(shape[2:], size, strict=True)) != out[2:]:
            raise Refused(f"its output {out[2]}x{out[3]} is not a whole multiple of its {shape[2]}x{shape[3]} input")
        self.add(index, "upsample2d", {"size": size, "interpolation": module.mode})
        return 1

    def conv2d(self, index: int, module: Any, padding: tuple[tuple[int, int], tuple[int, int]]) -> int:
        if module.padding_mode != "zeros":
            raise Refused(f"padding_mode={module.padding_mode!r}: layerdsl pads with zeros")
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
                raise Refused("it pads twice (a padding module and its own padding)")
            if own != (0, 0):
                padding = ((own[0], own[0]), (own[1], own[1]))
            pad = pad_kind(padding, shape[2:], kernel, stride, dilation)
            if pad is None:  # not TensorFlow's `same`: pad explicitly, then convolve without padding
                self.zeropad(index, padding, named=False)
                pad = "valid"
        if pad == "same" and max(stride) > 1 and max(dilation) > 1:
            raise Refused("layerdsl cannot combine stride > 1 with dilation > 1")
        args = {
            "filters": module.out_channels,
            "kernel": kernel,
            "stride": stride,
            "pad": pad,
            "dilation": dilation,
            "bias": module.bias is not None,
            "groups": module.groups,  # a depthwise nn.Conv2d is conv2d with groups=channels
        }
        used = self.fused_activation(index, args)
        self.add(index, "conv2d", args, module)
        return used

    def zeropad(self, index: int, padding: tuple[tuple[int, int], tuple[int, int]], named: bool) -> None:
        """An explicit `zeropad2d` for the layer at ``index`` (named after it when it is the padding module)."""
        if "zeropad2d" not in REGISTRY:
            raise Refused(f"its padding {[list(p) for p in padding]} is not TensorFlow's `same`")
        label = _torch_label(self.nodes[index], self.module(self.nodes[index]))
        wanted = self.nodes[index].target.replace(".", "_") if named else None
        stmt = Statement("zeropad2d", zeropad_args(padding), label, wanted if valid_name(wanted) else None)
        self.current = self.graph.add(stmt, (self.current,))

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
        raise Refused(
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
        if is_max and (module.dilation not in (1, (1, 1)) or module.return_indices):
            raise Refused("layerdsl's max pool has no dilation or return_indices")
        if not is_max and module.divisor_override is not None:
            raise Refused("layerdsl's average pool has no divisor_override")
        pool = pair(module.kernel_size)
        stride = pair(module.stride) if module.stride is not None else pool
        own = pair(module.padding)
        node_in = self.nodes[index - 1] if padding is not None else self.nodes[index]
        shape = _torch_shape(node_in.all_input_nodes[0])
        if padding is None:
            padding = ((own[0], own[0]), (own[1], own[1]))
        elif own != (0, 0):
            raise Refused("it pads twice (a padding module and its own padding)")
        if module.ceil_mode:
            if padding != ((0, 0), (0, 0)):
                raise Refused("ceil_mode=True with padding: layerdsl pools round down, as Keras does")
            pad = _ceil_mode_pad(shape[2:], pool, stride)
        elif own != (0, 0) and not is_max and module.count_include_pad:
            # the zeros count in each average: explicit zero padding, then a plain average pool
            self.zeropad(index, padding, named=False)
            pad = "valid"
        elif is_max and pad_kind(padding, shape[2:], pool, stride, (1, 1)) is None and self.non_negative():
            # after a relu (or another non-negative step) zeros pad a max pool as -inf does: none is ever the max
            self.zeropad(index, padding, named=False)
            pad = "valid"
        else:
            pad = same_or_valid(padding, shape[2:], pool, stride, (1, 1))
        self.add(index, "maxpool" if is_max else "avgpool", {"pool": pool, "stride": stride, "pad": pad})
        return 1

    def non_negative(self) -> bool:
        """Whether the current tensor is never negative: the output of a relu, sigmoid, softmax, softplus, relu6."""
        stmt = self.graph.statement(self.current)
        if stmt is None:
            return False
        function = stmt.args.get("activation") if stmt.kind in ("dense", "conv2d") else stmt.kind
        return function in _NON_NEGATIVE

    def flatten_order(self, index: int) -> str:
        """Torch orders an image's features (C, H, W); one pixel's features are in Keras's order too."""
        shape = self.in_shape(index)
        return "torch" if len(shape) == 4 and shape[2] * shape[3] > 1 else "keras"

    def adaptive_pool(self, index: int, reduction: str) -> int:
        """An adaptive pool where it is exact: the identity, a global pool, or equal tiles."""
        (_, channels, height, width), (out_h, out_w) = self.in_shape(index), _torch_shape(self.nodes[index])[2:]
        if (out_h, out_w) == (height, width):
            return 1  # the identity (AlexNet's and VGG's at their 224x224 input)
        if (out_h, out_w) == (1, 1):
            after = self.following(index)
            self.add(index, f"global{reduction}pool", {})
            if after is not None and self.is_flatten(after):
                return 2
            self.add(index, "reshape", {"target": (1, 1, channels)})  # torch keeps the pooled axes
            return 1
        if height % out_h == 0 and width % out_w == 0:
            window = (height // out_h, width // out_w)  # torch's windows tile the input exactly
            self.add(index, f"{reduction}pool", {"pool": window, "stride": window, "pad": "valid"})
            return 1
        raise Refused(
            f"output size {out_h}x{out_w} from a {height}x{width} input: its windows differ in size; "
            "layerdsl imports an adaptive pool whose output is 1x1, the input size, or divides the input size"
        )

    def batchnorm(self, index: int, module: Any, rank: int) -> int:
        from torch import nn

        expected = 4 if type(module) is nn.BatchNorm2d else 2
        if rank != expected:
            why = "it normalizes dim 1, the timesteps of an (N, T, F) sequence" if rank == 3 else "unexpected input"
            raise Refused(f"{why}; layerdsl's batchnorm normalizes the feature (channel) axis")
        if not module.track_running_stats or module.running_mean is None:
            raise Refused("track_running_stats=False: layerdsl's batchnorm keeps moving statistics")
        if module.momentum is None:
            raise Refused("momentum=None (a cumulative average): layerdsl's batchnorm has an exponential average")
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
            raise Refused("max_norm renormalizes looked-up vectors; layerdsl's embedding has no max_norm")
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

    @staticmethod
    def attends(module: Any) -> bool:
        """nn.MultiheadAttention, or the attention module the torch backend writes."""
        return type(module).__name__ == "MultiheadAttention" or (module is not None and _is_generated_attention(module))

    def cross_attention(self, index: int, module: Any, tensors: dict[Any, int]) -> int:
        """An attention call that reads more than one tensor: queries from one, keys and values from
        another (cross-attention); a mask tensor is refused by ``attention``."""
        node = self.nodes[index]
        if _is_generated_attention(module):
            query, value = _arg(node, 0, "x"), _arg(node, 1, "memory")
        else:
            query, key, value = (_arg(node, i, k) for i, k in enumerate(("query", "key", "value")))
            if key is not value:
                raise Refused("its keys and values come from different tensors; layerdsl reads both from one")
        self.current = tensors[query]
        return self.attention(index, module, memory=None if value is query else tensors[value])

    def attention(self, index: int, module: Any, memory: int | None = None) -> int:
        """`self.attn(x, x, x, need_weights=False)[0]` (self-attention) or `self.attn(x, m, m, ...)[0]`
        (cross-attention on ``memory``), as Keras's MultiHeadAttention; or the torch backend's own
        attention module, `self.attn(x, x)` or `self.attn(x, m)`, with `causal=True` perhaps."""
        if _is_generated_attention(module):
            return self.generated_attention(index, module, memory)
        node = self.nodes[index]
        if not module.batch_first:
            raise Refused("batch_first=False reads (T, N, F); layerdsl sequences are (N, T, F): use batch_first=True")
        if module.bias_k is not None or module.add_zero_attn:
            raise Refused("add_bias_kv and add_zero_attn have no Keras equivalent")
        query, key, value = (_arg(node, i, k) for i, k in enumerate(("query", "key", "value")))
        if key is not value or (memory is None and query is not key):
            raise Refused("layerdsl reads keys and values from one tensor: `attn(x, x, x)` or `attn(x, m, m)`")
        for keyword, position in (("key_padding_mask", 3), ("attn_mask", 5)):
            if _arg(node, position, keyword) is not None:
                raise Refused(f"{keyword} is a tensor layerdsl does not read; its masks come from mask_zero / masking")
        if _arg(node, 6, "average_attn_weights", True) is not True or _arg(node, 7, "is_causal", False):
            raise Refused("only the attention output is imported, without is_causal")
        output = self.following(index)
        if output is None or output.target is not operator.getitem or output.args[1] != 0:
            raise Refused("only its output (`attn(x, x, x)[0]`) can be imported, not the attention weights")
        args = {
            "heads": module.num_heads,
            "key_dim": module.head_dim,
            "dropout": float(module.dropout),
            "bias": module.in_proj_bias is not None,
        }
        self.add(index, "attention", args, module, reads=() if memory is None else (memory,))
        return 2

    def generated_attention(self, index: int, module: Any, memory: int | None) -> int:
        """The torch backend's ``MultiHeadAttention``: heads, key and value widths from its Linears, checked
        to compute what layerdsl's own module computes with those weights."""
        node = self.nodes[index]
        if _arg(node, 2, "mask") is not None:
            raise Refused("its mask is a tensor layerdsl does not read; its masks come from mask_zero / masking")
        causal = _arg(node, 3, "causal", False)
        if not isinstance(causal, bool):
            raise Refused("causal must be True or False when the module is called, not a tensor")
        projections = (module.query, module.key, module.value, module.output)
        heads = module.heads
        if heads < 1 or module.query.out_features % heads or module.value.out_features % heads:
            raise Refused(f"its projections do not split into heads={heads} equal heads")
        bias = module.query.bias is not None
        if any((p.bias is not None) != bias for p in projections):
            raise Refused("layerdsl's attention has biases on all four projections or on none")
        key_dim, value_dim = module.query.out_features // heads, module.value.out_features // heads
        args: dict[str, Any] = {"heads": heads, "key_dim": key_dim, "dropout": float(module.dropout.p), "bias": bias}
        if value_dim != key_dim:
            args["value_dim"] = value_dim
        args["causal"] = causal
        self.check_generated_attention(node, module, args)
        self.add(index, "attention", args, module, reads=() if memory is None else (memory,))
        return 1

    def check_generated_attention(self, node: Any, module: Any, args: dict[str, Any]) -> None:
        """Refuse a module shaped like the torch backend's attention that computes something else."""
        import torch

        query, memory = _torch_shape(_arg(node, 0, "x")), _torch_shape(_arg(node, 1, "memory"))
        reference = _reference_attention()(
            query[-1],
            args["heads"],
            args["key_dim"],
            args.get("value_dim", args["key_dim"]),
            memory_features=memory[-1],
            bias=args["bias"],
        )
        mode = module.training
        try:
            reference.load_state_dict(module.state_dict())
            generator = torch.Generator().manual_seed(0)
            x, m = (torch.randn((2, *shape[1:]), generator=generator) for shape in (query, memory))
            module.eval()
            with torch.no_grad():
                same = torch.allclose(
                    module(x, m, causal=args["causal"]), reference(x, m, causal=args["causal"]), atol=1e-5, rtol=1e-4
                )
        except (RuntimeError, TypeError, ValueError) as exc:
            raise Refused(f"it is shaped like layerdsl's attention module but does not run as one: {exc}") from None
        finally:
            module.train(mode)
        if not same:
            raise Refused(
                "it is shaped like layerdsl's attention module but computes something else with the same weights"
            )

    def recurrent(self, index: int, module: Any, rank: int) -> int:
        from torch import nn

        if not module.batch_first:
            raise Refused("batch_first=False reads (T, N, F); layerdsl sequences are (N, T, F): use batch_first=True")
        if module.num_layers != 1:
            raise Refused(f"num_layers={module.num_layers}: import a stack as single-layer modules in sequence")
        if getattr(module, "proj_size", 0):
            raise Refused("layerdsl's lstm has no proj_size")
        kind = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "simplernn"}[type(module)]
        args: dict[str, Any] = {"units": module.hidden_size, "bias": bool(module.bias)}
        if kind == "simplernn":
            args["activation"] = module.nonlinearity  # tanh or relu
        output = self.following(index)
        if output is None or output.target is not operator.getitem or output.args[1] != 0:
            raise Refused("only its output sequence (`out, _ = rnn(x)`) can be imported, not the final states")
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
                raise Refused(
                    "out[:, -1] of a bidirectional module holds the backward direction after one step, "
                    "where Keras's Bidirectional returns each direction's final output"
                )
            if args["go_backwards"]:
                raise Refused("a bidirectional module reading a flipped sequence has no Keras equivalent")
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

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: Any, qualified_name: str) -> bool:  # layerdsl's attention: one layer
            return _is_generated_attention(m) or super().is_leaf_module(m, qualified_name)

    try:
        tracer = Tracer()
        graph = tracer.trace(module)
        graph_module = fx.GraphModule(tracer.root, graph, type(module).__name__)
    except Exception as exc:  # fx raises many kinds for untraceable Python
        raise ModelImportError(
            f"torch.fx cannot trace {type(module).__name__}: {exc}",
            hint="layerdsl imports modules whose forward is a graph of modules and tensor functions without Python control flow",
        ) from None
    inputs = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ModelImportError(f"the module's forward takes {len(inputs)} inputs; layerdsl models have one input")
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


def _flatten_permutations(statements: list[Statement], spec: ir.Model) -> dict[str, np.ndarray]:
    """Layer name -> the feature permutation its weights need: torch flattens (C, H, W), Keras (H, W, C).

    A torch-order flatten must reach denses only (through per-feature layers), whose kernel
    rows and those layers' vectors are reordered; otherwise the model's outputs would differ.
    """
    consumers: dict[str, list[ir.Layer]] = {}
    previous = ir.INPUT_NAME
    for layer in spec.layers:
        for read in dict.fromkeys(layer.inputs or (previous,)):
            consumers.setdefault(read, []).append(layer)
        previous = layer.name
    out: dict[str, np.ndarray] = {}
    for stmt, layer in zip(statements, spec.layers, strict=True):
        if layer.kind != "flatten" or len(layer.input_shape) != 3 or stmt.flatten_order != "torch":
            continue
        order = permutation(layer.input_shape)
        reached, pending = [], [layer]
        while pending:
            node = pending.pop()
            if node.name == spec.output_layer.name:
                end = "the output"
            elif not consumers.get(node.name):
                end = repr(node.name)
            else:
                end = None
            for later in consumers.get(node.name, []):
                if later.kind == "dense":
                    reached.append(later)
                elif REGISTRY[later.kind].per_feature:
                    reached.append(later)
                    pending.append(later)
                else:
                    end = repr(later.name)
            if end is not None:
                raise ModelImportError(
                    f"cannot import layer {stmt.label}: its (C, H, W) feature order reaches {end} "
                    "without a dense layer to absorb it, and layerdsl's flatten produces Keras's (H, W, C) order",
                    hint="permute to channels-last first: x.permute(0, 2, 3, 1).flatten(1)",
                )
        out.update((later.name, order) for later in reached)
    return out


def _torch_arrays(layer: ir.Layer, weight: ir.Weight, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The torch tensors that hold ``weight``, in the order ``torch_weights.to_keras`` takes them."""
    name = weight.name
    kind = layer.kind
    suffix = "_l0"
    if kind == "bidirectional":
        direction, name = name.split("_", 1)
        kind, suffix = layer.args["layer"], "_l0" if direction == "forward" else "_l0_reverse"
    if kind in ("lstm", "gru", "simplernn"):
        if name == "bias":
            b_ih, b_hh = state[f"bias_ih{suffix}"], state[f"bias_hh{suffix}"]
            # Keras's GRU (reset_after) keeps both biases as rows; LSTM and SimpleRNN have one, their sum
            return [b_ih, b_hh] if kind == "gru" else [b_ih + b_hh]
        return [state[f"weight_{'ih' if name == 'kernel' else 'hh'}{suffix}"]]
    if kind == "attention":  # nn.MultiheadAttention: q, k, v thirds of in_proj_weight, then out_proj
        part = name.split("_")[0]
        if f"{part}.weight" in state:  # the torch backend's own module: one Linear per projection
            return [state[f"{part}.{'weight' if name.endswith('kernel') else 'bias'}"]]
        if part == "output":
            return [state[f"out_proj.{'weight' if name.endswith('kernel') else 'bias'}"]]
        third = ("query", "key", "value").index(part)
        if name.endswith("bias"):
            return [state["in_proj_bias"].reshape(3, -1)[third]]
        if "in_proj_weight" in state:
            return [state["in_proj_weight"].reshape(3, -1, state["in_proj_weight"].shape[-1])[third]]
        return [state[f"{part[0]}_proj_weight"]]
    names = {
        "kernel": "weight",
        "bias": "bias",
        "gamma": "weight",
        "beta": "bias",
        "moving_mean": "running_mean",
        "moving_variance": "running_var",
        "embeddings": "weight",
        "token": "weight",
    }
    return [state[names[name]]]


def _torch_weights(statements: list[Statement], spec: ir.Model) -> dict[str, np.ndarray]:
    import numpy as np

    permutations = _flatten_permutations(statements, spec)
    weights: dict[str, np.ndarray] = {}
    for stmt, layer in zip(statements, spec.layers, strict=True):
        if not layer.weights:
            continue
        state = {
            key: value.detach().cpu().float().numpy()
            for key, value in stmt.source.state_dict().items()
            if value.is_floating_point()
        }
        order = permutations.get(layer.name)
        for weight in layer.weights:
            array = to_keras(layer, weight, _torch_arrays(layer, weight, state))
            if order is not None and feature_indexed(layer, weight):
                array = from_torch_order(array, order)
            if array.shape != weight.shape:
                raise ModelImportError(
                    f"cannot import layer {stmt.label}: weight {weight.name} has shape {array.shape}, "
                    f"expected {weight.shape}"
                )
            weights[f"{layer.name}.{weight.name}"] = np.array(array, dtype=np.float32)
    return weights


def from_torch(module: Any, input_shape: Sequence[int], *, name: str | None = None) -> Imported:
    """Import a torch module that torch.fx traces to layers layerdsl has: a chain, or branches that merge.

    ``input_shape`` is the shape the module takes, without the batch axis:
    images (C, H, W), sequences (T, F), token ids (T,). The returned text's
    input is channels-last, as every layerdsl model's; its torch build takes
    the same tensors as ``module``. Raises ModelImportError naming the first
    module or function layerdsl cannot express.
    """
    from .. import backends

    backends.get("torch").import_framework()
    shape = tuple(int(d) for d in input_shape)
    graph_module, ids = _trace(module, shape)
    notes: list[str] = []
    graph, output = _TorchImporter(graph_module, notes).run()
    text, spec, statements = finish(
        graph,
        output,
        model_name(name or keras_snake_case(type(module).__name__), "imported"),
        _ir_shape((0, *shape)),
        "int64" if ids else "float32",
    )
    return Imported(text, _torch_weights(statements, spec), spec, tuple(notes))


#: DSL kind -> the torch modules and functions ``from_torch`` reads as that kind.
IMPORTABLE = {
    "dense": "nn.Linear",
    "conv2d": "nn.Conv2d, grouped too (after a padding module for TensorFlow's asymmetric `same`)",
    "conv1d": "nn.Conv1d between x.transpose(1, 2) and back",
    "maxpool": "nn.MaxPool2d",
    "avgpool": "nn.AvgPool2d",
    "maxpool1d": "nn.MaxPool1d between x.transpose(1, 2) and back",
    "avgpool1d": "nn.AvgPool1d between x.transpose(1, 2) and back",
    "globalmaxpool1d": "x.amax(1)",
    "globalavgpool1d": "x.mean(1)",
    "globalmaxpool": "x.amax((2, 3)), nn.AdaptiveMaxPool2d(1) + flatten",
    "globalavgpool": "x.mean((2, 3)), nn.AdaptiveAvgPool2d(1) + flatten",
    "flatten": "nn.Flatten, torch.flatten, x.flatten(1), x.view(n, -1)",
    "zeropad2d": "nn.ZeroPad2d, nn.ConstantPad2d(value=0)",
    "dropout": "nn.Dropout",
    "batchnorm": "nn.BatchNorm1d, nn.BatchNorm2d",
    "activation": "nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.ELU, nn.SELU, nn.GELU (approximate='tanh' too), "
    "nn.Softplus, nn.Softsign, nn.LeakyReLU, nn.SiLU, and their functions",
    "embedding": "nn.Embedding",
    "lstm": "nn.LSTM",
    "gru": "nn.GRU",
    "simplernn": "nn.RNN",
    "bidirectional": "nn.LSTM, nn.GRU, nn.RNN with bidirectional=True",
    "add": "x + y (a residual), torch.add",
    "multiply": "x * y, torch.mul",
    "concat": "torch.cat along channels",
    "attention": "nn.MultiheadAttention(batch_first=True): `attn(x, x, x)[0]`, or `attn(x, m, m)[0]` across; "
    "the MultiHeadAttention module the torch backend writes: `attn(x, x)`, `attn(x, m)`, causal=True",
    "layernorm": "nn.LayerNorm over the last axis; on images between x.movedim(1, -1) and .movedim(-1, 1)",
    "upsample2d": "nn.Upsample by whole factors: nearest, or bilinear with align_corners=False",
    "subtract": "x - y, torch.sub",
    "maximum": "torch.maximum",
    "minimum": "torch.minimum",
    "upsample1d": "x.repeat_interleave(N, dim=1) on (N, T, F)",
    "cropping1d": "x[:, a:b] on (N, T, F)",
    "cropping2d": "x[:, :, a:b, c:d] on images",
    "select": "x[:, i] on (N, T, F)",
    "reshape": "x.reshape / x.view of a sequence or vector, or after x.permute(0, 2, 3, 1) (not to an image); "
    "x.reshape(n, C, -1).permute(0, 2, 1) of an image",
    "posembed": "x + self.pos, a (1, T, F) nn.Parameter (torchvision's ViT pos_embedding)",
    "classtoken": "torch.cat([self.token.expand(n, -1, -1), x], dim=1), a (1, 1, F) nn.Parameter",
    "conv2dtranspose": "nn.ConvTranspose2d where its padding gives TensorFlow's `valid` or `same` output",
    "rescaling": "x * scale, x * scale + offset (numbers)",
    "layerscale": "x * self.gamma, a (C,) nn.Parameter (gamma[:, None, None] on images)",
}
#: DSL kind -> why ``from_torch`` does not read it.
NOT_IMPORTABLE = {
    "masking": "torch has no masks; a padded sequence imports without one",
    "average": "torch has no averaging merge; (x + y) / 2 is arithmetic with a constant",
    "depthwiseconv2d": "a depthwise nn.Conv2d imports as conv2d with groups=channels",
    "separableconv2d": "a depthwise then a pointwise nn.Conv2d import as two conv2d",
    "permute": "permute imports only as permute(0, 2, 3, 1) before a flatten",
    "normalization": "torch has no Normalization module; buffers and arithmetic are not read yet",
}
