"""Model diagrams: SVG (pure Python), Graphviz DOT, Mermaid, terminal text, and Jupyter HTML.

Every format reads one small graph built from the IR (``model``); the SVG places
it with a layered layout (``placement``). One module per renderer: ``svg``,
``text`` (DOT, Mermaid, terminal) and ``jupyter``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .jupyter import model_html
from .model import INPUT_ID, Graph, Group, Node, build_graph, category, key_args
from .placement import DIRECTIONS, Layout, layout
from .svg import to_svg, xml_escape
from .text import dot_escape, mermaid_escape, to_dot, to_mermaid, to_text

if TYPE_CHECKING:
    from ..ir import Model

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
    "INPUT_ID",
    "SUFFIXES",
    "Graph",
    "Group",
    "Layout",
    "Node",
    "build_graph",
    "category",
    "dot_escape",
    "key_args",
    "layout",
    "mermaid_escape",
    "model_html",
    "render",
    "to_dot",
    "to_mermaid",
    "to_svg",
    "to_text",
    "xml_escape",
]
