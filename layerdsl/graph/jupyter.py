"""The HTML a Jupyter notebook shows for a model: its summary table and its diagram."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .model import build_graph, subtitle
from .svg import to_svg, xml_escape

if TYPE_CHECKING:
    from ..ir import Model


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
        f"<p><b>{e(model.name)}</b>: {e(subtitle(graph))}</p>"
        '<table class="layerdsl-summary" style="border-collapse:collapse;font-size:12px">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"
        f'<tfoot><tr><td {left} colspan="4">Total params (trainable, non-trainable)</td>'
        f"<td {right}>{model.total_params:,} ({model.trainable_params:,}, {model.non_trainable_params:,})</td>"
        "</tr></tfoot></table>"
        f'<div class="layerdsl-graph" style="margin-top:8px">{to_svg(graph)}</div>'
        "</div>"
    )
