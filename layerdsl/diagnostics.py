"""Every mistake in `.layers` text as plain data: what editors (``layerdsl lsp``) and the playground show.

``diagnose`` is the one entry point for tools that underline text: every independent error
the checker finds (see ``checker.check``), or the model's warnings when it has no error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import LayerDSLError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    """One error or warning at a region of the text; lines and columns count from 1, as in ``errors.Span``.

    The region ends before ``end_column``. An error the parser cannot place (the input is
    too long) marks the first character.
    """

    severity: Severity
    message: str
    hint: str | None
    notes: tuple[str, ...]
    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def from_error(cls, error: LayerDSLError, severity: Severity = "error") -> Diagnostic:
        span = error.span
        if span is None:
            return cls(severity, error.message, error.hint, tuple(error.notes), 1, 1, 1, 2)
        end_line, end_column = span.end_line, span.end_column
        if (end_line, end_column) <= (span.line, span.column):  # an empty region still marks a character
            end_line, end_column = span.line, span.column + 1
        return cls(severity, error.message, error.hint, tuple(error.notes), span.line, span.column, end_line, end_column)


def diagnose(text: str, filename: str | None = None) -> list[Diagnostic]:
    """Parse and check ``text``; return its errors and warnings (an empty list when the model is fine)."""
    from .api import parse

    try:
        model = parse(text, filename=filename)
    except LayerDSLError as error:
        return [Diagnostic.from_error(e) for e in error.all_errors()]
    return [Diagnostic.from_error(w, "warning") for w in model.warnings]


__all__ = ["Diagnostic", "Severity", "diagnose"]
