"""Canonical layout for `.layers` text: ``layerdsl fmt`` and ``layerdsl.format_text``.

The layout, in full:

- Statements keep the user's line grouping: each source line that holds statements gives
  one output line, its statements joined by `` | `` (no line is split, none are joined).
- A statement is its name, its positional values, then its ``key=value`` options, one
  space apart. Values are spelled canonically: integers and dims in plain decimal, floats
  as Python's shortest round-trip spelling (``0.001``, ``1e-7``), strings double-quoted
  with ``\\\\ \\" \\n \\r \\t \\0`` escaped, references as ``@name``.
- A body written on one line stays on one line: ``repeat 2 { basic 64 | relu }`` (an empty
  one is ``{}``). Any other body opens with ``{`` at the end of its statement's line, holds
  its lines indented two spaces per level, and closes with ``}`` on a line of its own, where
  the next body opens (``} {``) and the line's remaining statements continue (``} | relu``).
  Blank lines just inside braces are dropped.
- Comments are kept, with trailing whitespace removed. A comment on a line of its own stays
  there (indented with the lines around it); a comment after code stays after it, two spaces
  after the longest code line of its run of consecutive commented lines (gofmt-style
  alignment; lines over 100 characters are left out of the alignment). A comment that a lone
  carriage return put before or inside code moves to its own line above that code.
- At most one blank line in a row, none at the start or end; lines end in ``\\n`` (CRLF and
  lone CR are normalized); non-empty text ends with exactly one newline.

The formatter walks the syntax tree (``parser.Program``): each node type has a formatter in
``NODE_FORMATTERS``, keyed by type. A node type without one (syntax the formatter does not
know yet) is copied from the source verbatim. Before returning, the output is parsed again
and compared with the input's syntax tree (positions aside) and its comments; a difference
raises :class:`FormatterBug` instead of changing anyone's model.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import Span
from .parser import Reference, Statement, Value, parse_syntax

INDENT = "  "
ALIGN_MAX_WIDTH = 100  # code lines longer than this get two spaces before their comment

# `"`, `#`, `{` and `}` only ever appear in strings, comments and braces, so this finds
# every comment and brace of text that parses (skipping strings and comments whole).
_LEXEME = re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n])*"|#[^\r\n]*|[{}]')

Position = tuple[int, int]  # (line, column), as lark counts them: from 1, lines end at `\n`


class FormatterBug(RuntimeError):
    """The formatted text would not mean what the input meant (a layerdsl bug, never the user's)."""


@dataclass(frozen=True)
class _Comment:
    at: Position
    text: str


@dataclass
class Row:
    """One output line before indentation: code, a comment, or both.

    ``first``/``last`` are the source lines it came from (for blank lines); a ``tight`` row
    never has a blank line before it (the first line inside braces, and the closing brace).
    """

    depth: int
    first: int
    last: int
    code: str = ""
    comment: str = ""
    tight: bool = False


def _start(span: Span) -> Position:
    return (span.line, span.column)


def _end(span: Span) -> Position:
    return (span.end_line, span.end_column)


class Layout:
    """The input text, its comments and braces, and the rows being laid out from it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.line_starts = [0, *(m.end() for m in re.finditer("\n", text))]
        self.comments: list[_Comment] = []
        self.braces: list[tuple[Position, str]] = []
        for match in _LEXEME.finditer(text):
            lexeme = match.group()
            if lexeme.startswith("#"):
                self.comments.append(_Comment(self.position(match.start()), lexeme.rstrip(" \t\f")))
            elif lexeme in "{}":
                self.braces.append((self.position(match.start()), lexeme))
        self.comment_positions = [c.at for c in self.comments]
        self.placed: set[int] = set()  # indexes of comments already given a row
        self._braces_of: dict[int, list[tuple[Position, Position]]] = {}  # by id() of a Statement

    def position(self, offset: int) -> Position:
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def slice(self, span: Span) -> str:
        def offset(line: int, column: int) -> int:
            return self.line_starts[line - 1] + column - 1

        return self.text[offset(span.line, span.column) : offset(span.end_line, span.end_column)]

    def comments_between(self, after: Position, before: Position) -> list[int]:
        """Indexes of the comments strictly between two positions that have no row yet."""
        lo = bisect.bisect_right(self.comment_positions, after)
        hi = bisect.bisect_left(self.comment_positions, before)
        return [i for i in range(lo, hi) if i not in self.placed]

    # --- lines of items ------------------------------------------------------------------

    def end(self, node: Any) -> Position:
        """Where a node ends in the source, closing braces included."""
        if isinstance(node, Statement) and node.bodies:
            line, column = self.body_braces(node)[-1][1]
            return max(_end(node.span), (line, column + 1))
        return _end(node.span)

    def item_rows(self, node: Any, depth: int) -> list[Row]:
        formatter = NODE_FORMATTERS.get(type(node), format_verbatim)
        return formatter(self, node, depth)

    def lines(self, items: Sequence[Any], depth: int, scope: tuple[Position, Position]) -> list[Row]:
        """Rows for a sequence of items (the program, or one body) and the comments in ``scope``."""
        groups: list[list[Any]] = []  # items sharing a source line
        ends: list[int] = []  # the last source line of each group
        for item in items:
            if groups and item.span.line <= ends[-1]:
                groups[-1].append(item)
                ends[-1] = max(ends[-1], self.end(item)[0])
            else:
                groups.append([item])
                ends.append(self.end(item)[0])
        rendered = [self._join([self.item_rows(item, depth) for item in group]) for group in groups]

        starts = [group[0].span.line for group in groups]
        own_line: list[tuple[Position, Row]] = []
        before: dict[int, list[_Comment]] = {}
        after: dict[int, list[_Comment]] = {}
        for index in self.comments_between(*scope):
            comment = self.comments[index]
            self.placed.add(index)
            g = bisect.bisect_right(starts, comment.at[0]) - 1
            if g < 0 or comment.at[0] > ends[g]:
                own_line.append((comment.at, Row(depth, comment.at[0], comment.at[0], comment=comment.text)))
            elif comment.at >= self.end(groups[g][-1]):
                after.setdefault(g, []).append(comment)
            else:
                before.setdefault(g, []).append(comment)

        events: list[tuple[Position, list[Row]]] = [(at, [row]) for at, row in own_line]
        for g, rows in enumerate(rendered):
            head = rows[0]
            above = [Row(depth, head.first, head.first, comment=c.text) for c in before.get(g, [])]
            trailing = after.get(g, [])
            if trailing and not rows[-1].comment:
                rows[-1].comment = trailing.pop(0).text
            below = [Row(depth, rows[-1].last, rows[-1].last, comment=c.text) for c in trailing]
            events.append((_start(groups[g][0].span), [*above, *rows, *below]))
        events.sort(key=lambda event: event[0])
        return [row for _, rows in events for row in rows]

    @staticmethod
    def _join(parts: list[list[Row]]) -> list[Row]:
        """Items on one source line: each item's first row continues the previous item's last."""
        rows = [parts[0][0]]
        codes = [rows[0].code]  # pieces of the row being continued, joined once (linear time)
        for k, item_rows in enumerate(parts):
            if k:
                first, current = item_rows[0], rows[-1]
                codes.append(first.code)
                current.last = max(current.last, first.last)
                current.comment = first.comment or current.comment
            if len(item_rows) > 1:
                rows[-1].code = " | ".join(codes)
                rows.extend(item_rows[1:])
                codes = [rows[-1].code]
        rows[-1].code = " | ".join(codes)
        return rows

    # --- bodies --------------------------------------------------------------------------

    def body_braces(self, stmt: Statement) -> list[tuple[Position, Position]]:
        """The (open, close) positions of each of the statement's bodies, from the source.

        Found by scanning from the statement's start: its span stops at the last item inside
        its last body, short of the closing brace.
        """
        if id(stmt) in self._braces_of:
            return self._braces_of[id(stmt)]
        pairs: list[tuple[Position, Position]] = []
        self._braces_of[id(stmt)] = pairs
        if not stmt.bodies:
            return pairs
        depth, opened = 0, (0, 0)
        for at, brace in self.braces[bisect.bisect_left(self.braces, (_start(stmt.span), "")) :]:
            if len(pairs) == len(stmt.bodies):
                break
            if brace == "{":
                if depth == 0:
                    opened = at
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    pairs.append((opened, at))
        if len(pairs) != len(stmt.bodies):
            raise FormatterBug(f"line {stmt.span.line}: cannot find the braces of `{stmt.name}`")
        return pairs


# --- node formatters -------------------------------------------------------------------------

_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def _string_text(text: str) -> str:
    return '"' + "".join(_STRING_ESCAPES.get(ch, ch) for ch in text) + '"'


def _float_text(number: float) -> str:
    spelled = repr(number)
    if "e" in spelled:  # `1e-07` -> `1e-7`, `1.5e+20` -> `1.5e20`
        mantissa, exponent = spelled.split("e")
        spelled = f"{mantissa}e{int(exponent)}"
    return spelled


def value_text(value: Value, layout: Layout) -> str:
    """A value in canonical spelling; kinds without one (and `1e400`) keep their source text."""
    try:
        if value.kind in ("int", "name"):
            return str(value.value)
        if value.kind == "dims":
            return "x".join(str(d) for d in value.value)  # type: ignore[union-attr]
        if value.kind == "float" and math.isfinite(value.value):  # type: ignore[arg-type]
            return _float_text(value.value)  # type: ignore[arg-type]
        if value.kind == "string":
            return _string_text(str(value.value))
        if value.kind == "ref":
            return f"@{value.value}"
        if value.kind in ("expr", "dims_expr"):
            return value.source()
    except ValueError:  # an integer too long for str() keeps its digits as written
        pass
    return layout.slice(value.span)


def statement_head(stmt: Statement, layout: Layout) -> str:
    parts = [stmt.name, *(value_text(v, layout) for v in stmt.positionals)]
    parts.extend(f"{o.key}={value_text(o.value, layout)}" for o in stmt.options)
    return " ".join(parts)


def _inline(rows: list[Row]) -> str:
    if len(rows) != 1 or rows[0].comment:
        raise FormatterBug(f"line {rows[0].first}: a one-line body holds a multi-line item")
    return rows[0].code


def format_statement(layout: Layout, stmt: Statement, depth: int) -> list[Row]:
    line = stmt.span.line
    rows = [Row(depth, line, line, statement_head(stmt, layout))]
    for body, (opened, closed) in zip(stmt.bodies, layout.body_braces(stmt), strict=True):
        current = rows[-1]
        if opened[0] == closed[0]:  # written on one line: keep it there
            inner = [_inline(layout.item_rows(item, depth + 1)) for item in body]
            current.code += " { " + " | ".join(inner) + " }" if inner else " {}"
            current.last = closed[0]
            continue
        current.code += " {"
        # A comment right after `{`, with nothing else on that line, stays there.
        if not any(item.span.line == opened[0] for item in body):
            for index in layout.comments_between(opened, (opened[0] + 1, 0)):
                if not current.comment:
                    current.comment = layout.comments[index].text
                    layout.placed.add(index)
        inner_rows = layout.lines(body, depth + 1, (opened, closed))
        if inner_rows:
            inner_rows[0].tight = True
        rows.extend(inner_rows)
        rows.append(Row(depth, closed[0], closed[0], "}", tight=True))
    return rows


def format_reference(layout: Layout, ref: Reference, depth: int) -> list[Row]:
    return [Row(depth, ref.span.line, ref.span.end_line, f"@{ref.name}")]


def format_verbatim(layout: Layout, node: Any, depth: int) -> list[Row]:
    layout.placed.update(layout.comments_between(_start(node.span), _end(node.span)))  # copied with it
    return [Row(depth, node.span.line, node.span.end_line, layout.slice(node.span))]


NODE_FORMATTERS: dict[type, Callable[[Layout, Any, int], list[Row]]] = {
    Statement: format_statement,
    Reference: format_reference,
}


# --- rendering -------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    lines: list[str] = []
    run: list[tuple[int, str, str]] = []  # (index in lines, indented code, comment) to align

    def close_run() -> None:
        column = max((len(code) for _, code, _ in run), default=0) + 2
        for index, code, comment in run:
            lines[index] = code.ljust(column) + comment
        run.clear()

    previous: Row | None = None
    for row in rows:
        if previous is not None and row.first > previous.last + 1 and not row.tight:
            close_run()
            lines.append("")
        indent = INDENT * row.depth
        code = indent + row.code if row.code else ""
        comment_only = indent + row.comment
        if code and row.comment and len(code) <= ALIGN_MAX_WIDTH and "\n" not in code:
            run.append((len(lines), code, row.comment))
            lines.append("")
        else:
            close_run()
            lines.append(f"{code}  {row.comment}" if code and row.comment else code or comment_only)
        previous = row
    close_run()
    return "".join(line + "\n" for line in lines)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _shape(node: Any) -> Any:
    """A node with its positions left out, for comparing syntax trees."""
    if isinstance(node, tuple | list):
        return tuple(map(_shape, node))
    cls = type(node)
    if not dataclasses.is_dataclass(cls):
        return node
    if cls not in _FIELDS:
        _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    values = ((name, getattr(node, name)) for name in _FIELDS[cls])
    return (cls.__name__, tuple((name, _shape(value)) for name, value in values if not isinstance(value, Span)))


def format_text(text: str, filename: str | None = None) -> str:
    """Return ``text`` in canonical layout (see this module's docstring).

    Raises LayerSyntaxError if ``text`` does not parse. The result parses to the same syntax
    tree, keeps every comment, and is its own formatting: ``format_text(format_text(t)) ==
    format_text(t)``. Only syntax is needed: a model with a shape error is still formatted.
    """
    shown = filename or "<string>"
    program = parse_syntax(text, shown)
    layout = Layout(text)
    everything = ((0, 0), (len(layout.line_starts) + 1, 0))
    formatted = render(layout.lines(program.statements, 0, everything))

    if _shape(parse_syntax(formatted, shown)) != _shape(program):
        raise FormatterBug(f"{shown}: formatting would change the model's syntax tree")
    if Counter(c.text for c in Layout(formatted).comments) != Counter(c.text for c in layout.comments):
        raise FormatterBug(f"{shown}: formatting would lose a comment")
    return formatted
