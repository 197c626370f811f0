"""The Pygments lexer: every registered layer, directive and option is highlighted, and Pygments finds it."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygments")

from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

from layerdsl import lexer, specs
from layerdsl.lexer import LayersLexer

ROOT = Path(__file__).resolve().parent.parent


def tokens(text: str) -> list[tuple[object, str]]:
    """(token type, text) pairs, whitespace left out."""
    return [(t, v) for t, v in LayersLexer().get_tokens(text) if t is not Whitespace and v.strip()]


@pytest.mark.parametrize("name", sorted(specs.REGISTRY))
def test_every_registered_layer_is_highlighted_as_a_layer(name):
    assert tokens(f"{name} 3")[0] == (lexer.LAYER, name)


@pytest.mark.parametrize("name", sorted({*specs.DIRECTIVES, "block", "tap", "repeat"}))
def test_directives_are_highlighted(name):
    assert tokens(f"{name} 3")[0] == (lexer.DIRECTIVE, name)


def test_every_option_of_every_layer_is_highlighted_as_an_option():
    options = {p.name for spec in specs.REGISTRY.values() for p in spec.params} | {"name", "dtype", "layout"}
    for option in sorted(options):
        assert tokens(f"dense 3 {option}=1")[2:] == [(lexer.OPTION, option), (Operator, "="), (Number.Integer, "1")]


def test_a_statement_lexes_to_the_expected_tokens():
    text = 'conv2d 32 3x3 pad=same bias=false eps=1e-3 name="c\\"1" | dropout .5 { @skip }  # note'
    assert tokens(text) == [
        (lexer.LAYER, "conv2d"),
        (Number.Integer, "32"),
        (lexer.DIMS, "3x3"),
        (lexer.OPTION, "pad"),
        (Operator, "="),
        (lexer.VALUE_NAME, "same"),
        (lexer.OPTION, "bias"),
        (Operator, "="),
        (Keyword.Constant, "false"),
        (lexer.OPTION, "eps"),
        (Operator, "="),
        (Number.Float, "1e-3"),
        (lexer.OPTION, "name"),
        (Operator, "="),
        (String.Double, '"'),
        (String.Double, "c"),
        (String.Escape, '\\"'),
        (String.Double, "1"),
        (String.Double, '"'),
        (Punctuation, "|"),
        (lexer.LAYER, "dropout"),
        (Number.Float, ".5"),
        (Punctuation, "{"),
        (lexer.REFERENCE, "@skip"),
        (Punctuation, "}"),
        (Comment.Single, "# note"),
    ]


def test_directives_name_what_they_define_and_values_are_not_layers():
    assert tokens("model relu\ninput 28x28x1 dtype=float32") == [
        (lexer.DIRECTIVE, "model"),
        (lexer.DEFINED_NAME, "relu"),
        (lexer.DIRECTIVE, "input"),
        (lexer.DIMS, "28x28x1"),
        (lexer.OPTION, "dtype"),
        (Operator, "="),
        (lexer.VALUE_NAME, "float32"),
    ]
    assert tokens("block conv_bn filters { tap skip }") == [
        (lexer.DIRECTIVE, "block"),
        (lexer.DEFINED_NAME, "conv_bn"),
        (Name, "filters"),
        (Punctuation, "{"),
        (lexer.DIRECTIVE, "tap"),
        (lexer.DEFINED_NAME, "skip"),
        (Punctuation, "}"),
    ]
    assert tokens("dense 3 activation=relu")[-1] == (lexer.VALUE_NAME, "relu")
    assert tokens("bidirectional lstm -4")[1:] == [(lexer.LAYER, "lstm"), (Number.Integer, "-4")]


def test_unknown_layers_and_options_are_not_highlighted_as_known():
    assert tokens("densse 3 activaton=relu")[0][0] not in (lexer.LAYER, lexer.DIRECTIVE)
    assert tokens("dense 3 activaton=relu")[2][0] is lexer.UNKNOWN_OPTION


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.layers")), ids=lambda p: p.name)
def test_examples_lex_losslessly_without_errors(path):
    text = path.read_text(encoding="utf-8")
    pairs = list(LayersLexer().get_tokens(text))
    assert "".join(v for _, v in pairs) == text
    assert not [v for t, v in pairs if t in Error]


def test_pygments_finds_the_lexer_through_the_entry_point():
    assert isinstance(get_lexer_by_name("layers"), LayersLexer)
    assert isinstance(get_lexer_by_name("layerdsl"), LayersLexer)
    assert isinstance(get_lexer_for_filename("mnist.layers"), LayersLexer)


def test_pygmentize_highlights_a_layers_file():
    result = subprocess.run(
        [sys.executable, "-m", "pygments", "-l", "layers", "-f", "html", str(ROOT / "examples" / "mlp.layers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert '<span class="nb">dense</span>' in result.stdout
    assert '<span class="na">maxnorm</span>' in result.stdout


def test_importing_layerdsl_does_not_import_pygments():
    code = "import sys, layerdsl, layerdsl.checker, layerdsl.cli; assert 'pygments' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
