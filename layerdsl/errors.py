"""Errors a user can cause, rendered as ``file:line:col: error: message``.

Every error carries its position and, when known, the source line, so the
CLI can print the line with a caret under the offending text and a hint.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of source text; lines and columns count from 1."""

    line: int
    column: int
    end_line: int
    end_column: int


class LayerDSLError(Exception):
    """Base class of every error a user can cause (bad syntax, bad shapes, bad weights).

    The checker reports every independent error in a file: the first is raised, the others
    ride along in ``additional`` (``all_errors()`` gives them in order).
    """

    severity = "error"

    def __init__(
        self,
        message: str,
        *,
        filename: str | None = None,
        span: Span | None = None,
        source_line: str | None = None,
        hint: str | None = None,
        notes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.filename = filename
        self.span = span
        self.source_line = source_line
        self.hint = hint
        self.notes = notes
        self.additional: tuple[LayerDSLError, ...] = ()

    def all_errors(self) -> tuple[LayerDSLError, ...]:
        """This error and every other one found in the same file, in source order."""
        return (self, *self.additional)

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None

    def located(self, filename: str, source: str) -> LayerDSLError:
        """Fill in the file name and source line (used as errors leave the parser)."""
        for other in self.additional:
            other.located(filename, source)
        if self.filename is None:
            self.filename = filename
        if self.span is not None and self.source_line is None:
            # Lines end at `\n` only, as the parser counts them (splitlines would also split
            # at `\r`, form feeds, U+2028 ... inside comments and strings).
            lines = source.split("\n")
            if 0 < self.span.line <= len(lines):
                self.source_line = lines[self.span.line - 1].removesuffix("\r")
        return self

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        where = self.filename or "<input>"
        if self.span is not None:
            where = f"{where}:{self.span.line}:{self.span.column}"
        parts = [f"{where}: {self.severity}: {self.message}"]
        if self.span is not None and self.source_line is not None:
            parts.append(_caret_block(self.source_line, self.span))
        parts.extend(f"note: {note}" for note in self.notes)
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class LayerSyntaxError(LayerDSLError):
    """The text does not follow the grammar."""


class LayerCheckError(LayerDSLError):
    """The text parses but describes an invalid model (argument, shape or name error)."""


class LayerCheckWarning(LayerCheckError):
    """Something legal but probably unintended (a block parameter its body never uses).
    Never raised: the checked model lists its warnings in ``Model.warnings``."""

    severity = "warning"


class WeightsError(LayerDSLError):
    """Weights do not fit a model: missing, unexpected or wrongly shaped arrays."""


class BackendError(LayerDSLError):
    """A backend cannot realize the model, or its framework is not installed."""


_MAX_SHOWN = 200


def _caret_block(source_line: str, span: Span) -> str:
    text = source_line.expandtabs(1)
    start = max(span.column - 1, 0)
    if span.end_line == span.line and span.end_column > span.column:
        width = span.end_column - span.column
    else:
        width = 1
    if len(text) > _MAX_SHOWN:
        # Very long lines (thousands of layers on one line): show a window.
        lo = max(start - _MAX_SHOWN // 2, 0)
        text = ("..." if lo else "") + text[lo : lo + _MAX_SHOWN] + "..."
        start = start - lo + (3 if lo else 0)
        width = min(width, _MAX_SHOWN - (start - 3))
    printable = "".join(ch if ch.isprintable() else "?" for ch in text)
    caret = " " * start + "^" + "~" * max(min(width, 80) - 1, 0)
    return f"    {printable}\n    {caret}"
