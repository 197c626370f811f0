"""The standalone SVG diagram (pure Python, no Graphviz)."""

from __future__ import annotations

import hashlib
import html
import json
import re
from typing import TYPE_CHECKING

from .model import COLOURS, Graph, build_graph, category, subtitle, title
from .placement import (
    BOX_PAD_X,
    BOX_PAD_Y,
    DETAIL_SIZE,
    KIND_SIZE,
    LINE_GAP,
    MARGIN,
    MONO,
    NAME_SIZE,
    SANS,
    Box,
    layout,
)

if TYPE_CHECKING:
    from ..ir import Model

XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_escape(text: str) -> str:
    """Text safe in XML/HTML content and attributes (characters XML forbids become U+FFFD)."""
    return html.escape(XML_INVALID.sub("\ufffd", str(text)), quote=True)


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
        f'<title id="{uid}-title">{e(graph.name)}: {e(subtitle(graph))}</title>',
        "<defs>",
        f'<marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,1 L9,5 L0,9 z" fill="#64748b"/></marker>',
        "</defs>",
        f'<rect width="{lay.width}" height="{lay.height}" fill="#ffffff"/>',
        f'<text x="{MARGIN}" y="{MARGIN + 14}" font-size="15" font-weight="bold" fill="#0f172a">{e(title(graph))}</text>',
        f'<text x="{MARGIN}" y="{MARGIN + 31}" font-size="11.5" fill="#64748b">{e(subtitle(graph))}</text>',
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


def _svg_box(box: Box) -> str:
    e = xml_escape
    node = box.node
    stroke, fill = COLOURS[category(node.kind)]
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
