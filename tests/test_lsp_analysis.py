"""What the language server reads from `.layers` text, without the protocol (no pygls needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from layerdsl import Diagnostic, diagnose
from layerdsl.lsp import analyze, complete, hover_markdown

ROOT = Path(__file__).resolve().parents[1]

NESTED = """\
block down filters {
  tap entry
  conv2d filters 3 pad=same | tap mid
  add @entry @mid
}
input 8x8x4
tap entry
down 4 | add @entry
dense 3  # a mistake after the blocks: shapes are unknown, definitions still work
"""


def test_diagnose_wraps_the_first_error_with_its_span_hint_and_notes():
    assert diagnose("dense 10 in=3 | relu\n") == []
    (d,) = diagnose("input 6x6x1\nconv2d 4 3\ndense 10\n", "bad.layers")
    assert d == Diagnostic(
        severity="error",
        message="`dense` needs a 1-D input (features) or a 2-D sequence (timesteps x features), but receives shape (4, 4, 4)",
        hint=d.hint,
        notes=("the input shape (4, 4, 4) comes from `conv2d` on line 2",),
        line=3, column=1, end_line=3, end_column=6,
    )
    assert "flatten" in d.hint
    (d,) = diagnose("x" * 5_000_001)  # refused before parsing, with no position: marks the first character
    assert (d.line, d.column, d.end_line, d.end_column) == (1, 1, 1, 2)


def test_taps_resolve_in_their_own_block_first_then_at_the_top_level():
    analysis = analyze(NESTED)
    assert analysis.program is not None and analysis.model is None  # the text parses but does not check
    inner_ref = analysis.occurrence_at((4, 8))  # `@entry` inside the block
    assert analysis.definition_of(inner_ref).span.line == 2
    outer_ref = analysis.occurrence_at((8, 14))  # `@entry` at the top level
    assert analysis.definition_of(outer_ref).span.line == 7
    top_definition = analysis.occurrence_at((7, 6))
    assert [o.span.line for o in analysis.references_of(top_definition)] == [7, 8]


def test_hover_without_a_checked_model_still_documents_the_layer():
    analysis = analyze(NESTED)
    text, span = hover_markdown(analysis, (3, 4))
    assert "2-D convolution" in text and "`pad=valid`" in text and "shapes are shown once" in text
    assert (span.line, span.column) == (3, 3)
    text, _ = hover_markdown(analysis, (8, 2))
    assert text.startswith("```layers\nblock down filters\n```")


def test_completion_knows_wrappers_blocks_and_skips_comments():
    text = "block unit width drop=0.1 { dense width | dropout drop }\nbidirectional \n"
    assert {"lstm", "gru", "simplernn"} <= {c.label for c in complete(text, (2, 15))}
    text = "block unit width drop=0.1 { dense width | dropout drop }\nbidirectional lstm 8 \n"
    assert {"return_sequences=", "merge=", "name="} <= {c.label for c in complete(text, (2, 22))}
    text = "block unit width drop=0.1 { dense width | dropout drop }\nunit 4 \n"
    labels = {c.label: c for c in complete(text, (2, 8))}
    assert set(labels) == {"width=", "drop=", "name="}
    assert labels["drop="].detail == "default: 0.1" and labels["width="].detail == "required"
    assert complete("dense 10 # relu ", (1, 17)) == []
    assert complete('dense 10 name="a # b" ', (1, 23)) != []  # `#` in a string starts no comment


def test_import_layerdsl_imports_no_pygls():
    code = "import sys, layerdsl; layerdsl.diagnose('dense 1 in=1'); import layerdsl.lsp; print('pygls' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "False"


def test_lsp_command_without_pygls_says_how_to_install_it():
    code = "import sys; sys.modules['pygls'] = sys.modules['lsprotocol'] = None\nfrom layerdsl.cli import main\nsys.exit(main(['lsp']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert out.returncode == 2
    assert out.stderr.strip() == "layerdsl: error: the language server needs pygls: pip install 'layerdsl[lsp]'"


def test_diagnose_gives_every_independent_error_and_the_warnings():
    errors = diagnose("input 8x8x3\nconv2d 4 0\ndens 3\n")
    assert [(d.severity, d.line, d.column) for d in errors] == [("error", 2, 10), ("error", 3, 1)]
    (warning,) = diagnose("input 8x8x3\nblock b f unused=2 { conv2d f 1 }\nb 4\nflatten | dense 2\n")
    assert (warning.severity, warning.line, warning.column, warning.end_column) == ("warning", 2, 11, 17)
    assert "never used" in warning.message


def test_hover_on_a_block_call_and_a_tap_shows_the_shapes_they_make():
    text = "input 8x8x4\nblock down filters { conv2d filters 3 stride=2 pad=same }\ntap entry\ndown 6 | down 5\nflatten | dense 2\n"
    analysis = analyze(text)
    hovered, _ = hover_markdown(analysis, (4, 2))
    assert "`down`: output shape `(4, 4, 6)`" in hovered
    hovered, _ = hover_markdown(analysis, (4, 10))
    assert "`down_1`: output shape `(2, 2, 5)`" in hovered
    hovered, _ = hover_markdown(analysis, (3, 6))
    assert hovered == "tap `@entry`, defined on line 3; shape `(8, 8, 4)`"
