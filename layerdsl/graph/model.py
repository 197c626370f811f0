"""The graph every diagram draws, built from the IR.

The input and each layer become a node (name, kind, key arguments, output shape,
parameter count), each input a layer reads an edge, and blocks nested groups.
Layers read the previous layer unless they name their ``inputs``; groups are runs
of layers sharing a prefix of their ``block`` call chain. A node's category (its
colour) is its spec's ``category``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..specs import REGISTRY, LayerSpec, shape_text

if TYPE_CHECKING:
    from ..ir import Args, Input, Layer, Model

INPUT_ID = "input"  # a reserved layer name, so it never collides with a layer


@dataclass(frozen=True)
class Node:
    id: str  # the layer name, or "input"
    kind: str  # "input" or the layer kind
    args: str  # key arguments in DSL spelling
    shape: str  # output shape without the batch axis, "(26, 26, 32)"
    params: int | None  # None for the input
    block: tuple[str, ...] = ()
    tooltip: str = ""
    badge: str = ""  # the small label beside the name: the kind, or the input's dtype

    def __post_init__(self) -> None:
        if not self.badge:
            object.__setattr__(self, "badge", self.kind)


@dataclass(frozen=True)
class Group:
    label: str
    depth: int  # 1 for a top-level block call
    members: tuple[int, ...]  # node indices, in model order
    parent: int | None  # index of the enclosing group


@dataclass(frozen=True)
class Graph:
    name: str
    filename: str
    nodes: tuple[Node, ...]
    edges: tuple[tuple[int, int], ...]  # (source node, target node), in input order per target
    groups: tuple[Group, ...]
    total_params: int
    trainable_params: int

    def successors(self, node: int) -> list[int]:
        return [d for s, d in self.edges if s == node]

    def predecessors(self, node: int) -> list[int]:
        return [s for s, d in self.edges if d == node]

    def groups_of(self, node: int) -> frozenset[int]:
        return frozenset(i for i, g in enumerate(self.groups) if node in g.members)


_SPECS: dict[str, LayerSpec] = {spec.kind: spec for name, spec in REGISTRY.items() if name == spec.kind}


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(value_text(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _is_default(spec: LayerSpec, name: str, default: Any, args: Args) -> bool:
    value = args[name]
    if value == default:
        return True
    if default is None:  # a default that `complete` derives (a pool's stride is its window)
        values = dict(args)
        values[name] = None
        try:
            spec.complete(values)
        except Exception:
            return False
        return values[name] == value
    return False


def _spec_args(spec: LayerSpec, args: Args) -> list[str]:
    parts = []
    for param in spec.params:
        if param.name not in args or param.name == "in":
            continue
        if param.positional:
            parts.append(value_text(args[param.name]))
        elif not _is_default(spec, param.name, param.default, args):
            parts.append(f"{param.name}={value_text(args[param.name])}")
    return parts


def key_args(layer: Layer) -> str:
    """The arguments worth showing: positional ones and options that differ from their defaults."""
    spec = _SPECS.get(layer.kind)
    if spec is None:  # a kind without a spec: show what the user wrote
        words = layer.source.split()[1:]
        return " ".join(w for w in words if not w.startswith("name="))
    parts = []
    inner_kind = layer.args.get("layer") if spec.wraps else None
    if inner_kind in _SPECS and isinstance(layer.args.get("inner"), Mapping):
        parts = [inner_kind, *_spec_args(_SPECS[inner_kind], layer.args["inner"])]
    return " ".join(parts + _spec_args(spec, layer.args))


def _input_args(model_input: Input) -> str:
    parts = ["x".join(str(d) for d in model_input.shape)]
    if model_input.dtype != "float32":
        parts.append(f"dtype={model_input.dtype}")
    if model_input.layout != "channels_last":
        parts.append(f"layout={model_input.layout}")
    return " ".join(parts)


def _input_node(model_input: Input, several: bool) -> Node:
    args = _input_args(model_input)
    tooltip = f"input {args}" + (f" name={model_input.name}" if several else "")
    return Node(model_input.name if several else INPUT_ID, "input", args, shape_text(model_input.shape), None,
                tooltip=tooltip, badge=model_input.dtype)


def _local_name(instance: str, parent: str) -> str:
    """A block instance's name inside its parent (the checker prefixes nested instances)."""
    if parent and instance.startswith(parent + "_") and len(instance) > len(parent) + 1:
        return instance[len(parent) + 1 :]
    return instance


def _groups(blocks: Sequence[tuple[str, ...]], offset: int) -> tuple[Group, ...]:
    """Runs of consecutive nodes sharing a block-chain prefix, nested by prefix length."""
    groups: list[Group] = []
    open_at: list[int] = []  # index into `groups` per depth, for the run still open
    members: dict[int, list[int]] = {}
    previous: tuple[str, ...] = ()
    for i, block in enumerate(blocks):
        keep = 0
        while keep < min(len(block), len(previous)) and block[keep] == previous[keep] and keep < len(open_at):
            keep += 1
        del open_at[keep:]
        for depth in range(keep, len(block)):
            parent = open_at[-1] if open_at else None
            groups.append(Group(_local_name(block[depth], block[depth - 1] if depth else ""), depth + 1, (), parent))
            members[len(groups) - 1] = []
            open_at.append(len(groups) - 1)
        for g in open_at:
            members[g].append(i + offset)
        previous = block
    return tuple(Group(g.label, g.depth, tuple(members[i]), g.parent) for i, g in enumerate(groups))


def build_graph(model: Model) -> Graph:
    """The model as nodes, edges and block groups (what every format draws)."""
    model_inputs = tuple(getattr(model, "inputs", ()) or (model.input,))
    outputs = tuple(getattr(model, "outputs", ()) or ())
    several = len(model_inputs) > 1 or len(outputs) > 1
    nodes = [_input_node(model_inputs[0], several)]
    index = {model_inputs[0].name: 0}
    edges: list[tuple[int, int]] = []
    later = list(model_inputs[1:])  # each drawn where its chain starts, as written
    for layer in model.layers:
        while later and later[0].span is not None and later[0].span.line <= layer.span.line:
            index[later[0].name] = len(nodes)
            nodes.append(_input_node(later.pop(0), several))
        i = len(nodes)
        block = tuple(getattr(layer, "block", ()) or ())
        badge = layer.kind
        if len(outputs) > 1 and layer.name in outputs:
            badge += f" → output {outputs.index(layer.name) + 1}"
        nodes.append(
            Node(
                layer.name,
                layer.kind,
                key_args(layer),
                shape_text(layer.output_shape),
                layer.params,
                block,
                tooltip=f"line {layer.span.line}: {layer.source}",
                badge=badge,
            )
        )
        inputs = tuple(getattr(layer, "inputs", ()) or ())
        sources = [index.get(name, 0) for name in inputs] if inputs else [i - 1]
        edges.extend((s, i) for s in sources)
        index[layer.name] = i
    for model_input in later:
        index[model_input.name] = len(nodes)
        nodes.append(_input_node(model_input, several))
    return Graph(
        model.name,
        model.filename,
        tuple(nodes),
        tuple(edges),
        _groups([n.block for n in nodes[1:]], offset=1),
        model.total_params,
        model.trainable_params,
    )


def topological(graph: Graph) -> list[int]:
    """Nodes in dependency order, ties broken by model order (model order already is one)."""
    pending = {i: len(set(graph.predecessors(i))) for i in range(len(graph.nodes))}
    order: list[int] = []
    ready = [i for i, n in pending.items() if n == 0]
    while ready:
        node = min(ready)
        ready.remove(node)
        order.append(node)
        for succ in dict.fromkeys(graph.successors(node)):
            pending[succ] -= 1
            if pending[succ] == 0:
                ready.append(succ)
    order.extend(i for i in range(len(graph.nodes)) if i not in order)  # a cycle: keep model order
    return order


# --- categories, colours and labels ----------------------------------------------------------

#: category -> (stroke/accent, fill): every spec category, and the input.
COLOURS = {
    "input": ("#4b5563", "#f3f4f6"),
    "conv": ("#2563eb", "#eff6ff"),
    "pool": ("#0d9488", "#f0fdfa"),
    "dense": ("#7c3aed", "#f5f3ff"),
    "activation": ("#c2410c", "#fff7ed"),
    "norm": ("#4d7c0f", "#f7fee7"),
    "reshape": ("#475569", "#f8fafc"),
    "embedding": ("#a16207", "#fefce8"),
    "recurrent": ("#be123c", "#fff1f2"),
    "attention": ("#db2777", "#fdf2f8"),
    "merge": ("#0e7490", "#ecfeff"),
    "other": ("#475569", "#f8fafc"),
}


def category(kind: str) -> str:
    """A node's category: its layer spec's ``category``; "input" for the input."""
    if kind == INPUT_ID:
        return "input"
    spec = _SPECS.get(kind)
    return spec.category if spec is not None else "other"


def params_text(params: int | None) -> str:
    if params is None:
        return ""
    return f"{params:,} param" + ("" if params == 1 else "s")


def title(graph: Graph) -> str:
    return graph.name


def subtitle(graph: Graph) -> str:
    parts = []
    if graph.filename and graph.filename != "<string>":
        parts.append(graph.filename)
    layers = sum(node.kind != "input" for node in graph.nodes)
    parts.append(f"{layers} layer" + ("" if layers == 1 else "s"))
    parts.append(f"{graph.total_params:,} params ({graph.trainable_params:,} trainable)")
    return "  ·  ".join(parts)
