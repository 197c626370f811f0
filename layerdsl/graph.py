"""Model diagrams: SVG (pure Python), Graphviz DOT, Mermaid, terminal text, and Jupyter HTML.

Every format reads one small graph built from the IR: the input and each layer
as a node (name, kind, key arguments, output shape, parameter count), an edge
per input a layer reads, and blocks as nested groups. Layers read the previous
layer unless they name their ``inputs``; groups are runs of layers sharing a
prefix of their ``block`` call chain. The SVG layout is layered (Sugiyama
style): ranks by longest path, long edges through virtual nodes, barycenter
ordering, then coordinates by weighted isotonic regression so chains run straight.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from .ir import Args, Layer, Model
from .specs import REGISTRY, LayerSpec, shape_text

DIRECTIONS = ("TB", "LR")
INPUT_ID = "input"  # a reserved layer name, so it never collides with a layer

# --- the graph ---------------------------------------------------------------------------


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


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(_value_text(v) for v in value)
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
            parts.append(_value_text(args[param.name]))
        elif not _is_default(spec, param.name, param.default, args):
            parts.append(f"{param.name}={_value_text(args[param.name])}")
    return parts


def key_args(layer: Layer) -> str:
    """The arguments worth showing: positional ones and options that differ from their defaults."""
    spec = _SPECS.get(layer.kind)
    if spec is None:  # a kind without a spec: show what the user wrote
        words = layer.source.split()[1:]
        return " ".join(w for w in words if not w.startswith("name="))
    parts = []
    inner_kind = layer.args.get("layer") if spec.wraps else None
    if inner_kind in _SPECS and isinstance(layer.args.get("inner"), Args):
        parts = [inner_kind, *_spec_args(_SPECS[inner_kind], layer.args["inner"])]
    return " ".join(parts + _spec_args(spec, layer.args))


def _input_args(model: Model) -> str:
    parts = ["x".join(str(d) for d in model.input.shape)]
    if model.input.dtype != "float32":
        parts.append(f"dtype={model.input.dtype}")
    if model.input.layout != "channels_last":
        parts.append(f"layout={model.input.layout}")
    return " ".join(parts)


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
    nodes = [
        Node(
            INPUT_ID,
            "input",
            _input_args(model),
            shape_text(model.input.shape),
            None,
            tooltip=f"input {_input_args(model)}",
            badge=model.input.dtype,
        )
    ]
    index = {INPUT_ID: 0}
    edges: list[tuple[int, int]] = []
    for i, layer in enumerate(model.layers, start=1):
        block = tuple(getattr(layer, "block", ()) or ())
        nodes.append(
            Node(
                layer.name,
                layer.kind,
                key_args(layer),
                shape_text(layer.output_shape),
                layer.params,
                block,
                tooltip=f"line {layer.span.line}: {layer.source}",
            )
        )
        inputs = tuple(getattr(layer, "inputs", ()) or ())
        sources = [index.get(name, 0) for name in inputs] if inputs else [i - 1]
        edges.extend((s, i) for s in sources)
        index[layer.name] = i
    return Graph(
        model.name,
        model.filename,
        tuple(nodes),
        tuple(edges),
        _groups([n.block for n in nodes[1:]], offset=1),
        model.total_params,
        model.trainable_params,
    )


def _topological(graph: Graph) -> list[int]:
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


# --- categories and colours -------------------------------------------------------------

_CATEGORY_OF = {
    "input": "input",
    "conv2d": "conv",
    "conv1d": "conv",
    "dense": "dense",
    "activation": "activation",
    "batchnorm": "norm",
    "dropout": "norm",
    "masking": "norm",
    "flatten": "reshape",
    "embedding": "embedding",
    "lstm": "recurrent",
    "gru": "recurrent",
    "simplernn": "recurrent",
    "bidirectional": "recurrent",
}
# category -> (stroke/accent, fill)
_COLOURS = {
    "input": ("#4b5563", "#f3f4f6"),
    "conv": ("#2563eb", "#eff6ff"),
    "pool": ("#0d9488", "#f0fdfa"),
    "dense": ("#7c3aed", "#f5f3ff"),
    "activation": ("#c2410c", "#fff7ed"),
    "norm": ("#4d7c0f", "#f7fee7"),
    "reshape": ("#475569", "#f8fafc"),
    "embedding": ("#a16207", "#fefce8"),
    "recurrent": ("#be123c", "#fff1f2"),
    "merge": ("#0e7490", "#ecfeff"),
    "other": ("#475569", "#f8fafc"),
}


def category(kind: str) -> str:
    if kind in _CATEGORY_OF:
        return _CATEGORY_OF[kind]
    if "pool" in kind:
        return "pool"
    if kind in ("add", "concat", "concatenate", "multiply", "average", "subtract", "maximum", "minimum"):
        return "merge"
    return "other"


def _params_text(params: int | None) -> str:
    if params is None:
        return ""
    return f"{params:,} param" + ("" if params == 1 else "s")


# --- escaping ----------------------------------------------------------------------------

_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_escape(text: str) -> str:
    """Text safe in XML/HTML content and attributes (characters XML forbids become U+FFFD)."""
    return html.escape(_XML_INVALID.sub("\ufffd", str(text)), quote=True)


def dot_escape(text: str) -> str:
    """Text safe inside a double-quoted DOT string."""
    text = _XML_INVALID.sub("\ufffd", str(text))
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")


_MERMAID_SAFE = re.compile(r"[A-Za-z0-9 _.,:()=+\-×/\[\]]")


def mermaid_escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label: anything unusual becomes an entity code (#35;)."""
    text = _XML_INVALID.sub("\ufffd", str(text))
    return "".join(ch if _MERMAID_SAFE.fullmatch(ch) else f"#{ord(ch)};" for ch in text)


# --- text metrics (no font files: generous estimates) ----------------------------------

SANS = "Helvetica, Arial, 'DejaVu Sans', sans-serif"
MONO = "Menlo, Consolas, 'DejaVu Sans Mono', 'Liberation Mono', monospace"


MONO_ADVANCE = 0.62  # a monospace glyph's advance, in em (Menlo, Consolas, DejaVu Sans Mono: 0.55-0.61)


def _text_width(text: str, size: float, *, mono: bool = False, bold: bool = False) -> float:
    if mono:
        return len(text) * MONO_ADVANCE * size
    width = 0.0
    for ch in text:
        if ch in "il.,:;'|!":
            width += 0.3
        elif ch in "fjtrI()[] ":
            width += 0.4
        elif ch in "mwMW":
            width += 0.95
        elif ch.isupper():
            width += 0.75
        else:
            width += 0.63
    return width * size * (1.15 if bold else 1.0)


def _wrap(text: str, limit: int) -> list[str]:
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= limit:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return [line for line in lines if line] or []


# --- layout --------------------------------------------------------------------------------

NAME_SIZE, KIND_SIZE, DETAIL_SIZE = 13.0, 11.0, 11.0
LINE_GAP = 15.0  # baseline to baseline for detail lines
BOX_PAD_X, BOX_PAD_Y = 12.0, 9.0
MIN_BOX_WIDTH = 150.0
WRAP_CHARS = 34
NODE_GAP = 28.0  # between boxes of one rank
RANK_GAP = 34.0  # between ranks (more when groups open or close there)
GROUP_PAD = 10.0
GROUP_LABEL = 16.0
MARGIN = 16.0
TITLE_HEIGHT = 44.0


@dataclass
class _Box:
    node: Node
    detail: list[str]  # argument lines
    footer: tuple[str, str]  # (shape, params)
    w: float
    h: float
    x: float = 0.0  # centre
    y: float = 0.0

    @property
    def left(self) -> float:
        return self.x - self.w / 2

    @property
    def top(self) -> float:
        return self.y - self.h / 2


def _measure(node: Node, wrap_chars: int = WRAP_CHARS) -> _Box:
    detail = _wrap(node.args, wrap_chars) if node.kind != "input" else []
    footer = ("→ " + node.shape, _params_text(node.params))
    header_w = _text_width(node.id, NAME_SIZE, bold=True) + 14 + _text_width(node.badge, KIND_SIZE)
    detail_w = max((_text_width(line, DETAIL_SIZE, mono=True) for line in detail), default=0.0)
    footer_w = _text_width(footer[0], DETAIL_SIZE, mono=True) + 14 + _text_width(footer[1], DETAIL_SIZE)
    width = max(MIN_BOX_WIDTH, header_w, detail_w, footer_w) + 2 * BOX_PAD_X
    height = BOX_PAD_Y + 17 + 6 + LINE_GAP * (len(detail) + 1) + BOX_PAD_Y - 2
    return _Box(node, detail, footer, round(width), round(height))


@dataclass
class Layout:
    graph: Graph
    direction: str
    boxes: list[_Box]
    edges: list[tuple[int, int, list[tuple[float, float]]]]  # source, target, route points
    group_rects: list[tuple[float, float, float, float]]  # x, y, w, h per graph.groups entry
    width: float
    height: float


def _isotonic(targets: list[float], weights: list[float], gaps: list[float]) -> list[float]:
    """Positions closest to `targets` (weighted least squares) keeping order and minimum `gaps`."""
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    ys = [t - o for t, o in zip(targets, offsets, strict=True)]
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for y, w in zip(ys, weights, strict=True):
        blocks.append([y, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    zs = [m for m, _, count in blocks for _ in range(int(count))]
    return [z + o for z, o in zip(zs, offsets, strict=True)]


def _crossings(ranks: list[list[int]], succ: dict[int, list[int]]) -> int:
    total = 0
    for upper, lower in pairwise(ranks):
        pos = {v: i for i, v in enumerate(lower)}
        pairs = [(i, pos[s]) for i, v in enumerate(upper) for s in succ[v] if s in pos]
        total += sum(1 for a, b in pairs for c, d in pairs if a < c and b > d)
    return total


def layout(graph: Graph, direction: str = "TB") -> Layout:
    """Place every box, route every edge and frame every group."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; received {direction!r}")
    vertical = direction == "TB"
    # One width for every box reads as a tidy column; arguments wrap to fill it.
    width = max(_measure(n).w for n in graph.nodes)
    wrap_chars = max(WRAP_CHARS, int((width - 2 * BOX_PAD_X) / (MONO_ADVANCE * DETAIL_SIZE)))
    boxes = [_measure(n, wrap_chars) for n in graph.nodes]
    for b in boxes:
        b.w = width
    n_real = len(boxes)

    # Ranks by longest path from the input.
    rank = [0] * n_real
    for v in _topological(graph):
        preds = graph.predecessors(v)
        rank[v] = max((rank[p] + 1 for p in preds), default=0)

    # Long edges become chains of virtual vertices, one per rank they cross.
    succ: dict[int, list[int]] = {v: [] for v in range(n_real)}
    pred: dict[int, list[int]] = {v: [] for v in range(n_real)}
    vrank = list(rank)
    chains: list[tuple[int, int, list[int]]] = []
    group_sets = [graph.groups_of(v) for v in range(n_real)]
    for s, d in graph.edges:
        chain = [s]
        for r in range(rank[s] + 1, rank[d]):
            v = len(vrank)
            vrank.append(r)
            succ[v], pred[v] = [], []
            group_sets.append(group_sets[s] & group_sets[d])
            chain.append(v)
        chain.append(d)
        for a, b in pairwise(chain):
            succ[a].append(b)
            pred[b].append(a)
        chains.append((s, d, chain[1:-1]))
    n_vertices = len(vrank)
    is_real = [v < n_real for v in range(n_vertices)]

    def cross_size(v: int) -> float:
        if not is_real[v]:
            return 0.0
        return boxes[v].w if vertical else boxes[v].h

    def main_size(v: int) -> float:
        if not is_real[v]:
            return 0.0
        return boxes[v].h if vertical else boxes[v].w

    # Order within ranks: model order, then barycenter sweeps; keep the fewest crossings.
    n_ranks = max(vrank) + 1
    ranks: list[list[int]] = [[] for _ in range(n_ranks)]
    model_pos = {v: float(v) for v in range(n_real)}
    for s, _, chain in chains:
        for k, v in enumerate(chain):
            model_pos[v] = s + 0.5 + k * 1e-3
    for v in sorted(range(n_vertices), key=lambda v: model_pos[v]):
        ranks[vrank[v]].append(v)
    best, best_crossings = [list(r) for r in ranks], _crossings(ranks, succ)
    for sweep in range(8):
        down = sweep % 2 == 0
        order = range(1, n_ranks) if down else range(n_ranks - 2, -1, -1)
        for r in order:
            ref = ranks[r - 1] if down else ranks[r + 1]
            pos = {v: i for i, v in enumerate(ref)}
            current = {v: i for i, v in enumerate(ranks[r])}

            def barycenter(
                v: int, pos: dict[int, int] = pos, current: dict[int, int] = current, down: bool = down
            ) -> float:
                near = [pos[u] for u in (pred[v] if down else succ[v]) if u in pos]
                return sum(near) / len(near) if near else current[v]

            ranks[r].sort(key=barycenter)
        crossings = _crossings(ranks, succ)
        if crossings < best_crossings:
            best, best_crossings = [list(r) for r in ranks], crossings
    ranks = best

    # Cross-axis coordinates: each vertex moves towards its neighbours (weighted), keeping
    # order and spacing; heavy weights on virtual chains keep long edges straight.
    group_pad = _group_pads(graph)
    label_cross = 0.0 if vertical else GROUP_LABEL

    def separation(a: int, b: int) -> float:
        gap = NODE_GAP if is_real[a] and is_real[b] else NODE_GAP / 2
        extra = sum(group_pad[g] for g in group_sets[a] ^ group_sets[b])
        extra += label_cross * len(group_sets[b] - group_sets[a])
        return (cross_size(a) + cross_size(b)) / 2 + gap + extra

    cross = [0.0] * n_vertices
    for members in ranks:
        at = 0.0
        for i, v in enumerate(members):
            if i:
                at += separation(members[i - 1], v)
            cross[v] = at
        for v in members:
            cross[v] -= at / 2

    def edge_weight(a: int, b: int) -> float:
        if is_real[a] and is_real[b]:
            return 1.0
        return 8.0 if not is_real[a] and not is_real[b] else 0.1

    for sweep in range(12):
        down = sweep % 2 == 0
        order = range(1, n_ranks) if down else range(n_ranks - 2, -1, -1)
        for r in order:
            members = ranks[r]
            targets, weights = [], []
            for v in members:
                near = pred[v] if down else succ[v]
                if near:
                    total = sum(edge_weight(u, v) for u in near)
                    targets.append(sum(cross[u] * edge_weight(u, v) for u in near) / total)
                else:
                    targets.append(cross[v])
                weights.append(1.0 if is_real[v] else 0.05)
            gaps = [separation(a, b) for a, b in pairwise(members)]
            for v, c in zip(members, _isotonic(targets, weights, gaps), strict=True):
                cross[v] = c

    # Main-axis coordinates: rank bands, with room where groups open and close.
    first_rank = [min(rank[m] for m in g.members) for g in graph.groups]
    last_rank = [max(rank[m] for m in g.members) for g in graph.groups]
    label_main = GROUP_LABEL if vertical else 0.0
    band = [max((main_size(v) for v in ranks[r]), default=0.0) for r in range(n_ranks)]
    band_start = [0.0] * n_ranks
    at = 0.0
    for r in range(n_ranks):
        if r:
            closing = sum(group_pad[g] for g in range(len(graph.groups)) if last_rank[g] == r - 1)
            opening = sum(group_pad[g] + label_main for g in range(len(graph.groups)) if first_rank[g] == r)
            at += RANK_GAP + closing + opening
        else:
            at += sum(group_pad[g] + label_main for g in range(len(graph.groups)) if first_rank[g] == 0)
        band_start[r] = at
        at += band[r]
    main = [band_start[vrank[v]] + band[vrank[v]] / 2 for v in range(n_vertices)]

    def point(c: float, m: float) -> tuple[float, float]:
        return (c, m) if vertical else (m, c)

    for v in range(n_real):
        boxes[v].x, boxes[v].y = point(cross[v], main[v])

    # Edge routes: spread ports along a box's side, in the order of the far ends.
    out_ports: dict[tuple[int, int], float] = {}
    in_ports: dict[tuple[int, int], float] = {}
    for v in range(n_real):
        for ports, near in ((out_ports, succ[v]), (in_ports, pred[v])):
            ends = sorted(range(len(near)), key=lambda k, near=near: cross[near[k]])
            spacing = min(18.0, cross_size(v) / (len(near) + 1))
            for slot, k in enumerate(ends):
                ports[(v, k)] = cross[v] + (slot - (len(near) - 1) / 2) * spacing
    edges = []
    for s, d, chain in chains:
        first = chain[0] if chain else d
        last = chain[-1] if chain else s
        start = out_ports[(s, succ[s].index(first))]
        end = in_ports[(d, pred[d].index(last))]
        points = [point(start, main[s] + main_size(s) / 2)]
        for v in chain:
            r = vrank[v]
            points.append(point(cross[v], band_start[r]))
            points.append(point(cross[v], band_start[r] + band[r]))
        points.append(point(end, main[d] - main_size(d) / 2))
        edges.append((s, d, points))
        succ[s][succ[s].index(first)] = -1  # parallel edges take the next port
        pred[d][pred[d].index(last)] = -1

    # Group frames: members' boxes and inner frames, padded, with room for the label on top.
    rects: list[tuple[float, float, float, float]] = [(0, 0, 0, 0)] * len(graph.groups)
    for g in sorted(range(len(graph.groups)), key=lambda g: -graph.groups[g].depth):
        group = graph.groups[g]
        xs0 = [boxes[m].left for m in group.members]
        ys0 = [boxes[m].top for m in group.members]
        xs1 = [boxes[m].left + boxes[m].w for m in group.members]
        ys1 = [boxes[m].top + boxes[m].h for m in group.members]
        for child, other in enumerate(graph.groups):
            if other.parent == g:
                cx, cy, cw, ch = rects[child]
                xs0.append(cx)
                ys0.append(cy)
                xs1.append(cx + cw)
                ys1.append(cy + ch)
        pad = GROUP_PAD
        x0, y0 = min(xs0) - pad, min(ys0) - pad - GROUP_LABEL
        rects[g] = (x0, y0, max(xs1) + pad - x0, max(ys1) + pad - y0)

    # Shift everything to the margin, below the title.
    xs = [b.left for b in boxes] + [r[0] for r in rects] + [p[0] for _, _, pts in edges for p in pts]
    ys = [b.top for b in boxes] + [r[1] for r in rects]
    dx, dy = MARGIN - min(xs), MARGIN + TITLE_HEIGHT - min(ys)
    for b in boxes:
        b.x += dx
        b.y += dy
    rects = [(x + dx, y + dy, w, h) for x, y, w, h in rects]
    edges = [(s, d, [(x + dx, y + dy) for x, y in pts]) for s, d, pts in edges]
    right = max(
        [b.left + b.w for b in boxes] + [x + w for x, _, w, _ in rects] + [p[0] for *_, pts in edges for p in pts]
    )
    bottom = max([b.top + b.h for b in boxes] + [y + h for _, y, _, h in rects])
    title_w = _text_width(_title(graph), 15, bold=True) + 2 * MARGIN
    subtitle_w = _text_width(_subtitle(graph), 11.5) + 2 * MARGIN
    width = max(right + MARGIN, title_w, subtitle_w)
    return Layout(graph, direction, boxes, edges, rects, round(width), round(bottom + MARGIN))


def _group_pads(graph: Graph) -> list[float]:
    return [GROUP_PAD for _ in graph.groups]


def _title(graph: Graph) -> str:
    return graph.name


def _subtitle(graph: Graph) -> str:
    parts = []
    if graph.filename and graph.filename != "<string>":
        parts.append(graph.filename)
    layers = len(graph.nodes) - 1
    parts.append(f"{layers} layer" + ("" if layers == 1 else "s"))
    parts.append(f"{graph.total_params:,} params ({graph.trainable_params:,} trainable)")
    return "  ·  ".join(parts)


# --- SVG -----------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _path(points: list[tuple[float, float]], vertical: bool) -> str:
    """Smooth curves between points, leaving and entering each along the rank axis."""
    (x, y), rest = points[0], points[1:]
    d = [f"M{_fmt(x)},{_fmt(y)}"]
    for nx, ny in rest:
        if (vertical and nx == x) or (not vertical and ny == y):
            d.append(f"L{_fmt(nx)},{_fmt(ny)}")
        elif vertical:
            my = (y + ny) / 2
            d.append(f"C{_fmt(x)},{_fmt(my)} {_fmt(nx)},{_fmt(my)} {_fmt(nx)},{_fmt(ny)}")
        else:
            mx = (x + nx) / 2
            d.append(f"C{_fmt(mx)},{_fmt(y)} {_fmt(mx)},{_fmt(ny)} {_fmt(nx)},{_fmt(ny)}")
        x, y = nx, ny
    return " ".join(d)


def _svg_id(graph: Graph, direction: str) -> str:
    """A stable id prefix, distinct per diagram, so several SVGs can share one HTML page."""
    key = json.dumps([graph.name, graph.filename, [n.tooltip for n in graph.nodes], direction])
    return "ld" + hashlib.sha1(key.encode("utf-8", "replace")).hexdigest()[:8]


def to_svg(model: Model | Graph, direction: str = "TB") -> str:
    """A standalone SVG diagram (no Graphviz needed)."""
    graph = model if isinstance(model, Graph) else build_graph(model)
    lay = layout(graph, direction)
    vertical = direction == "TB"
    uid = _svg_id(graph, direction)
    e = xml_escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
        f'viewBox="0 0 {lay.width} {lay.height}" role="img" aria-labelledby="{uid}-title" '
        f'font-family="{e(SANS)}">',
        f'<title id="{uid}-title">{e(graph.name)}: {e(_subtitle(graph))}</title>',
        "<defs>",
        f'<marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,1 L9,5 L0,9 z" fill="#64748b"/></marker>',
        "</defs>",
        f'<rect width="{lay.width}" height="{lay.height}" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 14}" font-size="15" font-weight="bold" fill="#0f172a">{e(_title(graph))}</text>',
        f'<text x="{MARGIN}" y="{MARGIN + 31}" font-size="11.5" fill="#64748b">{e(_subtitle(graph))}</text>',
    ]
    out.append('<g class="blocks">')
    for group, (x, y, w, h) in zip(graph.groups, lay.group_rects, strict=True):
        out.append(
            f'<g class="block" data-label="{e(group.label)}">'
            f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(w)}" height="{_fmt(h)}" rx="10" '
            f'fill="#94a3b8" fill-opacity="0.08" stroke="#94a3b8" stroke-dasharray="5 3"/>'
            f'<text x="{_fmt(x + 10)}" y="{_fmt(y + 13)}" font-size="11" font-weight="bold" '
            f'fill="#475569">{e(group.label)}</text></g>'
        )
    out.append("</g>")
    out.append('<g class="edges" fill="none" stroke="#64748b" stroke-width="1.4">')
    for s, d, points in lay.edges:
        out.append(
            f'<path class="edge" data-from="{e(graph.nodes[s].id)}" data-to="{e(graph.nodes[d].id)}" '
            f'd="{_path(points, vertical)}" marker-end="url(#{uid}-arrow)"/>'
        )
    out.append("</g>")
    for box in lay.boxes:
        out.append(_svg_box(box))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _svg_box(box: _Box) -> str:
    e = xml_escape
    node = box.node
    stroke, fill = _COLOURS[category(node.kind)]
    x0, y0, x1 = box.left, box.top, box.left + box.w
    tx = x0 + BOX_PAD_X
    baseline = y0 + BOX_PAD_Y + 12
    rule = baseline + 7
    parts = [
        f'<g class="{"input" if node.kind == "input" else "layer"}" data-name="{e(node.id)}" data-kind="{e(node.kind)}">',
        f"<title>{e(node.tooltip)}</title>",
        f'<rect x="{_fmt(x0)}" y="{_fmt(y0)}" width="{_fmt(box.w)}" height="{_fmt(box.h)}" rx="7" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="1.3"/>',
        f'<text x="{_fmt(tx)}" y="{_fmt(baseline)}" font-size="{NAME_SIZE:g}" font-weight="bold" '
        f'fill="#0f172a">{e(node.id)}</text>',
        f'<text x="{_fmt(x1 - BOX_PAD_X)}" y="{_fmt(baseline)}" font-size="{KIND_SIZE:g}" text-anchor="end" '
        f'fill="{stroke}">{e(node.badge)}</text>',
        f'<line x1="{_fmt(x0)}" y1="{_fmt(rule)}" x2="{_fmt(x1)}" y2="{_fmt(rule)}" stroke="{stroke}" '
        'stroke-opacity="0.3"/>',
    ]
    line_y = rule + LINE_GAP
    for line in box.detail:
        parts.append(
            f'<text x="{_fmt(tx)}" y="{_fmt(line_y)}" font-family="{e(MONO)}" font-size="{DETAIL_SIZE:g}" '
            f'fill="#1e293b" xml:space="preserve">{e(line)}</text>'
        )
        line_y += LINE_GAP
    shape, params = box.footer
    parts.append(
        f'<text x="{_fmt(tx)}" y="{_fmt(line_y)}" font-family="{e(MONO)}" font-size="{DETAIL_SIZE:g}" '
        f'fill="#334155">{e(shape)}</text>'
    )
    if params:
        colour = "#334155" if node.params else "#94a3b8"
        parts.append(
            f'<text x="{_fmt(x1 - BOX_PAD_X)}" y="{_fmt(line_y)}" font-size="{DETAIL_SIZE:g}" text-anchor="end" '
            f'fill="{colour}">{e(params)}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


# --- Graphviz DOT --------------------------------------------------------------------------


def to_dot(model: Model | Graph, direction: str = "TB") -> str:
    """Graphviz source (render with ``dot -Tsvg``); blocks become clusters."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; received {direction!r}")
    graph = model if isinstance(model, Graph) else build_graph(model)
    h = xml_escape  # HTML-like labels take XML escaping
    lines = [
        f'digraph "{dot_escape(graph.name)}" {{',
        f'  graph [rankdir={direction}, fontname="Helvetica", labelloc=t, labeljust=l, '
        f'label="{dot_escape(graph.name + "  ·  " + _subtitle(graph))}"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, margin="0.15,0.06"];',
        '  edge [color="#64748b", arrowsize=0.7];',
    ]

    def node_line(i: int, indent: str) -> str:
        node = graph.nodes[i]
        stroke, fill = _COLOURS[category(node.kind)]
        rows = [f'<B>{h(node.id)}</B>  <FONT COLOR="{stroke}">{h(node.badge)}</FONT>']
        if node.kind != "input" and node.args:
            rows.extend(f'<FONT FACE="Courier">{h(line)}</FONT>' for line in _wrap(node.args, WRAP_CHARS))
        footer = node.shape + (f"  {_params_text(node.params)}" if node.params is not None else "")
        rows.append(f'<FONT FACE="Courier">{h(footer)}</FONT>')
        label = '<BR ALIGN="LEFT"/>'.join(rows) + '<BR ALIGN="LEFT"/>'
        return (
            f'{indent}n{i} [label=<{label}>, tooltip="{dot_escape(node.tooltip)}", '
            f'color="{stroke}", fillcolor="{fill}"];'
        )

    def emit(group: int | None, indent: str) -> None:
        inside = set(graph.groups[group].members) if group is not None else set(range(len(graph.nodes)))
        children = [g for g, grp in enumerate(graph.groups) if grp.parent == group]
        nested = {m for g in children for m in graph.groups[g].members}
        for i in sorted(inside - nested):
            lines.append(node_line(i, indent))
        for g in children:
            lines.append(f"{indent}subgraph cluster_{g} {{")
            lines.append(
                f'{indent}  label="{dot_escape(graph.groups[g].label)}"; style="rounded,dashed"; '
                'color="#94a3b8"; fontsize=11;'
            )
            emit(g, indent + "  ")
            lines.append(f"{indent}}}")

    emit(None, "  ")
    lines.extend(f"  n{s} -> n{d};" for s, d in graph.edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- Mermaid -------------------------------------------------------------------------------


def to_mermaid(model: Model | Graph, direction: str = "TB") -> str:
    """A Mermaid flowchart (GitHub renders it in a ```mermaid block); blocks become subgraphs."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; received {direction!r}")
    graph = model if isinstance(model, Graph) else build_graph(model)
    m = mermaid_escape
    lines = [f"flowchart {direction}"]

    def node_line(i: int, indent: str) -> str:
        node = graph.nodes[i]
        rows = [f"<b>{m(node.id)}</b> {m(node.badge)}"]
        if node.kind != "input" and node.args:
            rows.append(m(node.args))
        rows.append(m(node.shape) + (f" · {m(_params_text(node.params))}" if node.params is not None else ""))
        return f'{indent}n{i}["{"<br/>".join(rows)}"]'

    def emit(group: int | None, indent: str) -> None:
        inside = set(graph.groups[group].members) if group is not None else set(range(len(graph.nodes)))
        children = [g for g, grp in enumerate(graph.groups) if grp.parent == group]
        nested = {i for g in children for i in graph.groups[g].members}
        for i in sorted(inside - nested):
            lines.append(node_line(i, indent))
        for g in children:
            lines.append(f'{indent}subgraph g{g}["{m(graph.groups[g].label)}"]')
            emit(g, indent + "  ")
            lines.append(f"{indent}end")

    emit(None, "  ")
    lines.extend(f"  n{s} --> n{d}" for s, d in graph.edges)
    used: dict[str, list[int]] = {}
    for i, node in enumerate(graph.nodes):
        used.setdefault(category(node.kind), []).append(i)
    for cat, members in used.items():
        stroke, fill = _COLOURS[cat]
        lines.append(f"  classDef {cat} fill:{fill},stroke:{stroke},color:#0f172a")
        lines.append(f"  class {','.join(f'n{i}' for i in members)} {cat}")
    return "\n".join(lines) + "\n"


# --- terminal text -------------------------------------------------------------------------


def to_text(model: Model | Graph) -> str:
    """The graph for a terminal: one layer per line, rails (like ``git log --graph``) for branches."""
    graph = model if isinstance(model, Graph) else build_graph(model)
    lanes: list[tuple[int, int] | None] = []  # the edge each rail column carries
    rows: list[tuple[str, int | None, str]] = []  # (rails, node or None, block header)
    group_starts: dict[int, list[int]] = {}
    for g, group in enumerate(graph.groups):
        group_starts.setdefault(group.members[0], []).append(g)

    def rails(marks: dict[int, str]) -> str:
        return " ".join(marks.get(i, "│" if lane else " ") for i, lane in enumerate(lanes))

    def joint(col: int, others: list[int], middle: str, end: str) -> str:
        last = max(others)
        cells = []
        for i, lane in enumerate(lanes):
            if i == col:
                cell = "├"
            elif i in others:
                cell = end if i == last else middle
            elif col < i < last:
                cell = "┼" if lane else "─"
            else:
                cell = "│" if lane else " "
            cells.append(cell)
        return "".join(c + ("─" if col <= i < last else " ") for i, c in enumerate(cells)).rstrip()

    for v in _topological(graph):
        incoming = [i for i, lane in enumerate(lanes) if lane and lane[1] == v]
        if incoming:
            col = incoming[0]
        else:
            col = lanes.index(None) if None in lanes else len(lanes)
            if col == len(lanes):
                lanes.append(None)
        for g in group_starts.get(v, []):
            group = graph.groups[g]
            rows.append((rails({}), None, "  " * (group.depth - 1) + "▾ " + group.label))
        if len(incoming) > 1:
            rows.append((joint(col, incoming[1:], "┴", "╯"), None, ""))
        for i in incoming:
            lanes[i] = None
        lanes[col] = (v, v)
        rows.append((rails({col: "○" if v == 0 else "●"}), v, ""))
        succs = graph.successors(v)
        lanes[col] = (v, succs[0]) if succs else None
        extra = []
        for s in succs[1:]:
            free = next((i for i in range(col + 1, len(lanes)) if lanes[i] is None), None)
            if free is None:
                lanes.append(None)
                free = len(lanes) - 1
            lanes[free] = (v, s)
            extra.append(free)
        if extra:
            rows.append((joint(col, extra, "┬", "╮"), None, ""))
        while lanes and lanes[-1] is None:
            lanes.pop()

    depth = {i: len(n.block) for i, n in enumerate(graph.nodes)}
    table = []
    for _, v, _ in rows:
        if v is not None:
            node = graph.nodes[v]
            table.append(("  " * depth[v] + node.id, node.kind, node.args, node.shape, _params_text(node.params)))
    widths = [max([len(r[k]) for r in table] + [0]) for k in range(5)]
    rail_w = max(len(r[0]) for r in rows)
    lines = [f"{graph.name}  ({_subtitle(graph)})"]
    it = iter(table)
    for rail, v, header in rows:
        if v is None:
            lines.append((rail.ljust(rail_w) + "  " + header).rstrip())
            continue
        name, kind, args, shape, params = next(it)
        lines.append(
            (
                f"{rail.ljust(rail_w)}  {name.ljust(widths[0])}  {kind.ljust(widths[1])}  "
                f"{args.ljust(widths[2])}  {shape.ljust(widths[3])}  {params.rjust(widths[4])}"
            ).rstrip()
        )
    return "\n".join(lines) + "\n"


# --- Jupyter ---------------------------------------------------------------------------------


def model_html(model: Model) -> str:
    """HTML for Jupyter (``Model._repr_html_``): the summary table and the inline SVG diagram."""
    e = xml_escape
    graph = build_graph(model)
    cell = 'style="padding:2px 10px;text-align:{align};border-bottom:1px solid #e2e8f0"'
    left, right = cell.format(align="left"), cell.format(align="right")
    rows = [
        f"<tr><td {left}><code>{e(n.id)}</code></td><td {left}>{e(n.kind)}</td>"
        f"<td {left}><code>{e(n.args)}</code></td><td {left}><code>{e(n.shape)}</code></td>"
        f"<td {right}>{'' if n.params is None else f'{n.params:,}'}</td></tr>"
        for n in graph.nodes
    ]
    head = "".join(
        f"<th {right if h == 'Param #' else left}>{h}</th>"
        for h in ("Layer", "Kind", "Arguments", "Output shape", "Param #")
    )
    return (
        '<div class="layerdsl-model">'
        f"<p><b>{e(model.name)}</b>: {e(_subtitle(graph))}</p>"
        '<table class="layerdsl-summary" style="border-collapse:collapse;font-size:12px">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        f'<tfoot><tr><td {left} colspan="4">Total params (trainable, non-trainable)</td>'
        f"<td {right}>{model.total_params:,} ({model.trainable_params:,}, {model.non_trainable_params:,})</td>"
        "</tr></tfoot></table>"
        f'<div class="layerdsl-graph" style="margin-top:8px">{to_svg(graph)}</div>'
        "</div>"
    )


# --- the format table --------------------------------------------------------------------------

FORMATS: dict[str, Callable[[Model, str], str]] = {
    "svg": to_svg,
    "dot": to_dot,
    "mermaid": to_mermaid,
    "text": lambda model, direction: to_text(model),
}
#: Output file suffix -> format, for ``layerdsl graph -o model.dot``.
SUFFIXES = {".svg": "svg", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid", ".txt": "text"}


def render(model: Model, format: str = "svg", direction: str = "TB") -> str:
    """The diagram of ``model`` in ``format`` (svg, dot, mermaid or text)."""
    try:
        emit = FORMATS[format]
    except KeyError:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; received {format!r}") from None
    return emit(model, direction)


__all__ = [
    "DIRECTIONS",
    "FORMATS",
    "Graph",
    "build_graph",
    "key_args",
    "layout",
    "model_html",
    "render",
    "to_dot",
    "to_mermaid",
    "to_svg",
    "to_text",
]
