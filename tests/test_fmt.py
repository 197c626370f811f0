"""`layerdsl fmt` / `format_text`: canonical, idempotent, keeps comments, never changes a model."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from test_fuzz import EXAMPLES, EXPLICIT, mutated_example, plausible_program

import layerdsl
from layerdsl import cli, formatter
from layerdsl.parser import Statement, _lark, parse_syntax


def meaning(text: str):  # type: ignore[no-untyped-def]
    """What a program means: its checked layers, or the error it gets."""
    try:
        model = layerdsl.parse(text, "fmt.layers")
    except layerdsl.LayerDSLError as exc:
        # Formatting moves lines (blank lines go), so line numbers in messages may change.
        return ("error", type(exc).__name__, re.sub(r"\bline [0-9]+", "line N", exc.message))
    layers = [(layer.kind, layer.name, tuple(layer.args.items()), layer.output_shape) for layer in model.layers]
    return ("ok", model.name, dataclasses.replace(model.input, span=None), layers)


def assert_formats_faithfully(text: str) -> str:
    """The formatted text means what ``text`` means and is its own formatting.

    Text that does not parse gets the parser's error, at the same place.
    """
    try:
        parse_syntax(text)
    except layerdsl.LayerSyntaxError as exc:
        with pytest.raises(layerdsl.LayerSyntaxError) as info:
            layerdsl.format_text(text)
        assert (info.value.message, info.value.line, info.value.column) == (exc.message, exc.line, exc.column)
        return ""
    formatted = layerdsl.format_text(text)
    assert meaning(formatted) == meaning(text)
    assert layerdsl.format_text(formatted) == formatted
    return formatted


# --- properties over generated programs ----------------------------------------------------

comments = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)


@st.composite
def messy(draw, programs):  # type: ignore[no-untyped-def]
    """A program with random spacing, comments, blank lines and line endings added."""
    lines = draw(programs).split("\n")
    out = []
    for line in lines:
        if draw(st.integers(0, 4)) == 0:
            out.append(draw(st.sampled_from(["", "  ", "\t"])) + "#" + draw(comments))
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(["", " ", "\t", " | "])))
        spaced = line.replace(" ", draw(st.sampled_from([" ", "  ", "\t", " \f "])))
        if draw(st.integers(0, 3)) == 0:
            spaced += draw(st.sampled_from([" ", "", "\t"])) + "#" + draw(comments)
        out.append(draw(st.sampled_from(["", " ", "\t"])) + spaced)
    return draw(st.sampled_from(["\n", "\r\n"])).join(out) + draw(st.sampled_from(["", "\n", "\n\n"]))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(messy(plausible_program()))
def test_formatting_plausible_programs_keeps_their_meaning_and_is_idempotent(text):
    assert_formats_faithfully(text)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(messy(from_lark(_lark(), start="start", explicit=EXPLICIT)))
def test_formatting_grammar_generated_programs_keeps_their_meaning_and_is_idempotent(text):
    assert_formats_faithfully(text)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated_example())
def test_formatting_mutated_examples_keeps_their_meaning_or_reports_the_syntax_error(data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    assert_formats_faithfully(text)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_formatting_every_example_keeps_its_meaning_and_comments(example):
    text = example.read_text()
    formatted = assert_formats_faithfully(text)

    def comments(t: str) -> list[str]:
        return [line[line.index("#") :] for line in t.splitlines() if "#" in line]

    assert comments(formatted) == comments(text)


# --- the layout rules -----------------------------------------------------------------------


def test_comments_survive_own_line_and_trailing():
    text = "# A model.\nmodel  m   # its name\n\n# the input:\ninput 8\t# features\ndense 4\n# done\n"
    assert layerdsl.format_text(text) == (
        "# A model.\nmodel m  # its name\n\n# the input:\ninput 8  # features\ndense 4\n# done\n"
    )


def test_trailing_comments_of_consecutive_lines_align():
    text = "input 8 # a\ndense 16 activation=relu # b\ndropout 0.5   # c\nrelu\ndense 2 # d\n"
    assert layerdsl.format_text(text) == (
        "input 8                   # a\n"
        "dense 16 activation=relu  # b\n"
        "dropout 0.5               # c\n"
        "relu\n"
        "dense 2  # d\n"
    )


def test_spacing_blank_lines_and_line_endings_are_normalized():
    text = "\r\n\r\n  dense   4  in=3 |relu|  |dropout .5\r\n\r\n\r\n\r\nsoftmax\r\n\r\n"
    assert layerdsl.format_text(text) == "dense 4 in=3 | relu | dropout 0.5\n\nsoftmax\n"


def test_values_are_spelled_canonically_and_round_trip():
    text = 'dense +4 in=03 kernel=3x03 rate=1e-07 big=1.5E+20 huge=1e400 s="a\\"b\\\\c\\n\\t\\0\u2028"'
    assert layerdsl.format_text(text) == (
        'dense 4 in=3 kernel=3x3 rate=1e-7 big=1.5e20 huge=1e400 s="a\\"b\\\\c\\n\\t\\0\u2028"\n'
    )


def test_positional_values_come_before_options():
    assert layerdsl.format_text("conv2d activation=relu 8 3 pad=same") == "conv2d 8 3 activation=relu pad=same\n"


def test_a_lone_carriage_return_is_whitespace_and_a_comment_before_code_moves_above_it():
    # The grammar ends a comment at `\r` but only `\n` ends a statement.
    text = "input 3 # note\rdense 4\n"
    formatted = assert_formats_faithfully(text)
    assert formatted == "# note\ninput 3 dense 4\n"


def test_bodies_are_indented_two_spaces_and_blank_lines_inside_braces_dropped():
    text = "block b f {\n\n   conv2d f 3   # c1\n\n\n  relu\n\n}\nb 4 in=3"
    assert layerdsl.format_text(text) == "block b f {\n  conv2d f 3  # c1\n\n  relu\n}\nb 4 in=3\n"


def test_one_line_bodies_stay_on_one_line_and_later_bodies_open_where_the_last_closed():
    assert layerdsl.format_text("a {b{ c|d }}  |  repeat 2 {   }") == "a { b { c | d } } | repeat 2 {}\n"
    text = "concat {  # left\n dense 4\n}{ dense 5 } | relu  # after\n"
    assert layerdsl.format_text(text) == "concat {  # left\n  dense 4\n} { dense 5 } | relu  # after\n"
    assert layerdsl.format_text("residual {\n  dense 4 } | relu") == "residual {\n  dense 4\n} | relu\n"


def test_statements_after_a_closing_brace_stay_on_its_line():
    # A statement's span stops short of its closing brace; the formatter finds the braces itself.
    assert layerdsl.format_text("a {\n  relu\n} | relu  # c\nb") == "a {\n  relu\n} | relu  # c\nb\n"
    text = "\tmodel m\nblock b f { dense f name=e | relu }\ninput 3\nb 4 | b 2\n"
    assert layerdsl.format_text(text) == text[1:]


def test_comments_inside_nested_bodies_keep_their_place_and_indentation():
    text = "a {\n b {\n  c { d | e }\n# own\n }\n}\n@x | relu # ref\n"
    assert layerdsl.format_text(text) == "a {\n  b {\n    c { d | e }\n    # own\n  }\n}\n@x | relu  # ref\n"


def test_empty_and_comment_only_text():
    assert layerdsl.format_text("") == ""
    assert layerdsl.format_text("\n \n|\n") == ""
    assert layerdsl.format_text("\n# only\n\n\n# comments  \n\n") == "# only\n\n# comments\n"


def test_a_model_with_a_check_error_is_still_formatted():
    text = "input 8x8x3\nconv2d  4 3\ndense 10"
    assert layerdsl.format_text(text) == "input 8x8x3\nconv2d 4 3\ndense 10\n"


def test_a_syntax_error_raises_with_its_position():
    with pytest.raises(layerdsl.LayerSyntaxError) as info:
        layerdsl.format_text("dense 4\ndense = 3\n", filename="bad.layers")
    assert (info.value.filename, info.value.line, info.value.column) == ("bad.layers", 2, 7)


def test_node_types_without_a_formatter_are_copied_verbatim(monkeypatch):
    # How new syntax (blocks) behaves until it gets its own entry in NODE_FORMATTERS.
    monkeypatch.setattr(formatter, "NODE_FORMATTERS", {})
    assert layerdsl.format_text("dense  +4   in=3 # x\n\n\n|  relu") == "dense  +4   in=3  # x\n\nrelu\n"


def forgets_options(layout, stmt, depth):  # type: ignore[no-untyped-def]
    """A broken statement formatter, standing in for a formatter bug."""
    return [formatter.Row(depth, stmt.span.line, stmt.span.line, stmt.name)]


def test_a_formatter_that_would_change_the_model_raises_instead(monkeypatch):
    monkeypatch.setitem(formatter.NODE_FORMATTERS, Statement, forgets_options)
    with pytest.raises(formatter.FormatterBug):
        layerdsl.format_text("dense 4 in=3")


# --- the command ----------------------------------------------------------------------------


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerdsl", *args], input=stdin, capture_output=True, timeout=120)


@pytest.fixture
def messy_file(tmp_path: Path) -> Path:
    path = tmp_path / "messy.layers"
    path.write_bytes(b"\xef\xbb\xbfinput  8 # x\r\ndense 4\r\n")
    return path


@pytest.fixture
def tidy_file(tmp_path: Path) -> Path:
    path = tmp_path / "tidy.layers"
    path.write_text("input 8  # x\ndense 4\n")
    return path


def test_fmt_check_lists_files_that_would_change_and_exits_1(messy_file, tidy_file):
    before = messy_file.read_bytes()
    result = run("fmt", "--check", str(messy_file), str(tidy_file))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [f"would reformat {messy_file}"]
    assert messy_file.read_bytes() == before


def test_fmt_check_of_formatted_files_exits_0(tidy_file):
    result = run("fmt", "--check", str(tidy_file))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_fmt_rewrites_changed_files_only(messy_file, tidy_file):
    tidy_before = tidy_file.stat().st_mtime_ns
    result = run("fmt", str(messy_file), str(tidy_file))
    assert result.returncode == 0, result.stderr.decode()
    assert messy_file.read_bytes() == b"input 8  # x\ndense 4\n"  # no BOM, no CR
    assert tidy_file.stat().st_mtime_ns == tidy_before
    assert result.stderr.decode().splitlines() == [f"reformatted {messy_file}"]
    assert run("fmt", "--check", str(messy_file)).returncode == 0


def test_fmt_reads_stdin_and_writes_stdout():
    result = run("fmt", "-", stdin=b"dense   4 in=3|relu")
    assert (result.returncode, result.stdout) == (0, b"dense 4 in=3 | relu\n")
    assert run("fmt", "--check", "-", stdin=b"dense 4 in=3 | relu\n").returncode == 0
    assert run("fmt", "--check", "-", stdin=b"dense 4  in=3\n").returncode == 1


def test_fmt_leaves_a_file_with_a_syntax_error_untouched(tmp_path):
    path = tmp_path / "bad.layers"
    path.write_text("dense   4\ndense = 3\n")
    before = path.stat().st_mtime_ns
    result = run("fmt", str(path))
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"{path}:2:7: error:")
    assert "Traceback" not in result.stderr.decode()
    assert path.read_text() == "dense   4\ndense = 3\n"
    assert path.stat().st_mtime_ns == before
    assert [p.name for p in tmp_path.iterdir()] == ["bad.layers"]


def test_fmt_interrupted_write_leaves_the_original(tmp_path, monkeypatch):
    path = tmp_path / "m.layers"
    path.write_text("dense   4 in=3\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    assert cli.main(["fmt", str(path)]) == 130
    assert path.read_text() == "dense   4 in=3\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.layers"]


def test_fmt_formatter_bug_leaves_the_file_and_exits_2(tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.layers"
    path.write_text("dense   4 in=3\n")
    monkeypatch.setitem(formatter.NODE_FORMATTERS, Statement, forgets_options)
    assert cli.main(["fmt", str(path)]) == 2
    assert "formatting would change" in capsys.readouterr().err
    assert path.read_text() == "dense   4 in=3\n"


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_fmt_through_a_symlink_rewrites_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.layers"
    target.write_text("dense   4 in=3\n")
    os.chmod(target, 0o600)
    link = tmp_path / "link.layers"
    link.symlink_to(target)
    assert cli.main(["fmt", str(link)]) == 0
    assert link.is_symlink()
    assert target.read_text() == "dense 4 in=3\n"
    assert target.stat().st_mode & 0o777 == 0o600
