"""Every mistake in `.layers` text as plain data: what editors (``layerdsl lsp``) and the playground show.

``diagnose`` is the one entry point for tools that underline text. Today the checker stops
at the first error, so the list holds at most one error; when it reports every independent
error and warning, ``diagnose`` returns them all and its callers need no change.
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
        parse(text, filename=filename)
    except LayerDSLError as error:
        return [Diagnostic.from_error(error)]
    return []


__all__ = ["Diagnostic", "Severity", "diagnose"]
