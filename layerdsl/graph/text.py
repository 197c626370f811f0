"""The text formats: Graphviz DOT, Mermaid, and one line per layer for terminals."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .model import COLOURS, Graph, build_graph, category, params_text, subtitle, topological
from .placement import DIRECTIONS, WRAP_CHARS, wrap
from .svg import XML_INVALID, xml_escape

if TYPE_CHECKING:
    from ..ir import Model


def dot_escape(text: str) -> str:
    """Text safe inside a double-quoted DOT string."""
    text = XML_INVALID.sub("\ufffd", str(text))
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "")


_MERMAID_SAFE = re.compile(r"[A-Za-z0-9 _.,:()=+\-×/\[\]]")


def mermaid_escape(text: str) -> str:
    """Text safe inside a quoted Mermaid label: anything unusual becomes an entity code (#35;)."""
    text = XML_INVALID.sub("\ufffd", str(text))
    return "".join(ch if _MERMAID_SAFE.fullmatch(ch) else f"#{ord(ch)};" for ch in text)


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
        f'label="{dot_escape(graph.name + "  ·  " + subtitle(graph))}"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, margin="0.15,0.06"];',
        '  edge [color="#64748b", arrowsize=0.7];',
    ]

    def node_line(i: int, indent: str) -> str:
        node = graph.nodes[i]
        stroke, fill = COLOURS[category(node.kind)]
        rows = [f'<B>{h(node.id)}</B>  <FONT COLOR="{stroke}">{h(node.badge)}</FONT>']
        if node.kind != "input" and node.args:
            rows.extend(f'<FONT FACE="Courier">{h(line)}</FONT>' for line in wrap(node.args, WRAP_CHARS))
        footer = node.shape + (f"  {params_text(node.params)}" if node.params is not None else "")
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
        rows.append(m(node.shape) + (f" · {m(params_text(node.params))}" if node.params is not None else ""))
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
        stroke, fill = COLOURS[cat]
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

    for v in topological(graph):
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
        rows.append((rails({col: "○" if graph.nodes[v].kind == "input" else "●"}), v, ""))
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
            kind = node.kind if node.kind == "input" else node.badge  # a model output says so in its badge
            table.append(("  " * depth[v] + node.id, kind, node.args, node.shape, params_text(node.params)))
    widths = [max([len(r[k]) for r in table] + [0]) for k in range(5)]
    rail_w = max(len(r[0]) for r in rows)
    lines = [f"{graph.name}  ({subtitle(graph)})"]
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
