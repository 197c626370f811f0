"""Where each box, edge and block frame goes: a layered (Sugiyama-style) layout.

Ranks by longest path, long edges through virtual nodes, barycenter ordering,
then coordinates by weighted isotonic regression so chains run straight. Text is
measured without font files (generous estimates).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from .model import Graph, Node, params_text, subtitle, title, topological

DIRECTIONS = ("TB", "LR")

# --- text metrics (no font files: generous estimates) ----------------------------------

SANS = "Helvetica, Arial, 'DejaVu Sans', sans-serif"
MONO = "Menlo, Consolas, 'DejaVu Sans Mono', 'Liberation Mono', monospace"


MONO_ADVANCE = 0.62  # a monospace glyph's advance, in em (Menlo, Consolas, DejaVu Sans Mono: 0.55-0.61)


def text_width(text: str, size: float, *, mono: bool = False, bold: bool = False) -> float:
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


def wrap(text: str, limit: int) -> list[str]:
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
class Box:
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


def _measure(node: Node, wrap_chars: int = WRAP_CHARS) -> Box:
    detail = wrap(node.args, wrap_chars) if node.kind != "input" else []
    footer = ("→ " + node.shape, params_text(node.params))
    header_w = text_width(node.id, NAME_SIZE, bold=True) + 14 + text_width(node.badge, KIND_SIZE)
    detail_w = max((text_width(line, DETAIL_SIZE, mono=True) for line in detail), default=0.0)
    footer_w = text_width(footer[0], DETAIL_SIZE, mono=True) + 14 + text_width(footer[1], DETAIL_SIZE)
    width = max(MIN_BOX_WIDTH, header_w, detail_w, footer_w) + 2 * BOX_PAD_X
    height = BOX_PAD_Y + 17 + 6 + LINE_GAP * (len(detail) + 1) + BOX_PAD_Y - 2
    return Box(node, detail, footer, round(width), round(height))


@dataclass
class Layout:
    graph: Graph
    direction: str
    boxes: list[Box]
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
    for v in topological(graph):
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
    title_w = text_width(title(graph), 15, bold=True) + 2 * MARGIN
    subtitle_w = text_width(subtitle(graph), 11.5) + 2 * MARGIN
    width = max(right + MARGIN, title_w, subtitle_w)
    return Layout(graph, direction, boxes, edges, rects, round(width), round(bottom + MARGIN))


def _group_pads(graph: Graph) -> list[float]:
    return [GROUP_PAD for _ in graph.groups]
