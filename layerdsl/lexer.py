"""Syntax highlighting for `.layers` text: a Pygments lexer and a generated TextMate grammar.

Pygments finds :class:`LayersLexer` through the ``pygments.lexers`` entry point, so
``pygmentize -l layers`` and Sphinx/MkDocs ```` ```layers ```` blocks work once layerdsl is
installed. Only that entry point (or an explicit import) loads this module: ``import layerdsl``
never imports Pygments.

Both highlighters take their words from the layer registry, so a new layer is highlighted with no
edit here. The TextMate grammar for editors is generated, not written by hand::

    python -m layerdsl.lexer --textmate editors/vscode/syntaxes/layers.tmLanguage.json

and a test fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

from pygments.lexer import RegexLexer, bygroups, default, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

from . import specs

#: Directives highlighted even while `specs.DIRECTIVES` lacks them (issue 4 adds them there).
PLANNED_DIRECTIVES = ("block", "tap", "repeat")
#: Options the checker takes beside the specs' params: `name=` on every layer, `input`'s own two.
EXTRA_OPTIONS = ("name", "dtype", "layout")
#: Directives followed by the name they define.
NAMING_DIRECTIVES = ("model", "block", "tap")

# Token types, one per part of the language; tests and docs refer to these.
DIRECTIVE = Keyword.Declaration
LAYER = Name.Builtin
OPTION = Name.Attribute
UNKNOWN_OPTION = Name
VALUE_NAME = Name.Constant
DEFINED_NAME = Name.Class
REFERENCE = Name.Variable
BOOLEAN = Keyword.Constant
DIMS = Number
INTEGER = Number.Integer
FLOAT = Number.Float

IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
# The grammar's tokens (grammars/layers.lark), written so that Python's `re` and Oniguruma
# (TextMate) read them the same way.
# Dims parts are integers or names (`1x1xc`); a name part ends before `x` and a digit or `(`.
DIMS_RE = r"(?<![A-Za-z0-9_.])[0-9]+(?:x(?:[0-9]+|(?!x[0-9(])[A-Za-z_](?:(?!x[0-9(])[A-Za-z0-9_])*))+(?![A-Za-z0-9_])"
#: Arithmetic in arguments (`filters*4`, `c//2`).
ARITHMETIC_RE = r"//|[-+*%/]"
FLOAT_RE = r"(?<![A-Za-z0-9_.])[+-]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)"
INTEGER_RE = r"(?<![A-Za-z0-9_.])[+-]?[0-9]+(?![A-Za-z0-9_.])"
BOOLEAN_RE = r"\b(?:true|false)\b"
REFERENCE_RE = r"@" + IDENTIFIER


def _longest_first(names: set[str]) -> list[str]:
    return sorted(names, key=lambda n: (-len(n), n))


def layer_names() -> list[str]:
    """Every name that starts a layer statement: registry kinds and aliases (`relu`)."""
    return _longest_first(set(specs.REGISTRY))


def directive_names() -> list[str]:
    return _longest_first(set(specs.DIRECTIVES) | set(PLANNED_DIRECTIVES))


def option_names() -> list[str]:
    """Every `key=` the checker accepts somewhere."""
    return _longest_first({p.name for spec in specs.REGISTRY.values() for p in spec.params} | set(EXTRA_OPTIONS))


def _alternation(names: list[str]) -> str:
    return r"\b(?:" + "|".join(names) + r")\b"


class LayersLexer(RegexLexer):
    """Lexer for layerdsl's `.layers` model descriptions."""

    name = "layers"
    aliases: ClassVar[list[str]] = ["layers", "layerdsl"]
    filenames: ClassVar[list[str]] = ["*.layers"]
    mimetypes: ClassVar[list[str]] = ["text/x-layers"]

    tokens: ClassVar[dict[str, list[Any]]] = {
        "root": [
            (r"[ \t\f\r\n]+", Whitespace),
            (r"#[^\r\n]*", Comment.Single),
            # `key=value`: a name after `=` is a value (`activation=relu`), not a layer.
            (
                rf"({_alternation(option_names())})([ \t]*)(=)([ \t]*)(?:({BOOLEAN_RE})|({IDENTIFIER}))?",
                bygroups(OPTION, Whitespace, Operator, Whitespace, BOOLEAN, VALUE_NAME),
            ),
            (
                rf"({IDENTIFIER})([ \t]*)(=)([ \t]*)(?:({BOOLEAN_RE})|({IDENTIFIER}))?",
                bygroups(UNKNOWN_OPTION, Whitespace, Operator, Whitespace, BOOLEAN, VALUE_NAME),
            ),
            (
                rf"({_alternation(list(NAMING_DIRECTIVES))})([ \t]+)({IDENTIFIER})",
                bygroups(DIRECTIVE, Whitespace, DEFINED_NAME),
            ),
            (words(directive_names(), prefix=r"\b", suffix=r"\b"), DIRECTIVE),
            (words(layer_names(), prefix=r"\b", suffix=r"\b"), LAYER),
            (BOOLEAN_RE, BOOLEAN),
            (REFERENCE_RE, REFERENCE),
            (IDENTIFIER, Name),
            (DIMS_RE, DIMS),
            (FLOAT_RE, FLOAT),
            (INTEGER_RE, INTEGER),
            (r'"', String.Double, "string"),
            (r"=", Operator),
            (ARITHMETIC_RE, Operator),
            (r"\|", Punctuation),
            (r"[{}]", Punctuation),
            (r"[()\[\],:;]", Punctuation),
            (r".", Text),
        ],
        "string": [
            (r"\\[^\r\n]", String.Escape),
            (r'[^"\\\r\n]+', String.Double),
            (r'"', String.Double, "#pop"),
            default("#pop"),  # unterminated at the line's end: the checker reports it
        ],
    }


# --- TextMate -------------------------------------------------------------------------------

SCOPE = "source.layers"


def textmate_grammar() -> dict[str, Any]:
    """The TextMate grammar (VS Code, Sublime, GitHub's linguist, Shiki) as a JSON-ready dict."""
    value = rf"(?:({BOOLEAN_RE})|({IDENTIFIER}))?"
    option_captures = {
        "2": {"name": "keyword.operator.assignment.layers"},
        "3": {"name": "constant.language.boolean.layers"},
        "4": {"name": "constant.other.value.layers"},
    }
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "layers",
        "scopeName": SCOPE,
        "fileTypes": ["layers"],
        "comment": "GENERATED by `python -m layerdsl.lexer --textmate` from layerdsl's layer registry; do not edit.",
        "patterns": [
            {"include": "#comment"},
            {"include": "#option"},
            {"include": "#directive"},
            {"include": "#layer"},
            {"include": "#value"},
            {"include": "#punctuation"},
        ],
        "repository": {
            "comment": {"name": "comment.line.number-sign.layers", "match": r"#.*$"},
            "option": {
                "patterns": [
                    {
                        "match": rf"({_alternation(option_names())})\s*(=)\s*{value}",
                        "captures": {"1": {"name": "variable.parameter.option.layers"}, **option_captures},
                    },
                    {
                        "match": rf"({IDENTIFIER})\s*(=)\s*{value}",
                        "captures": {"1": {"name": "variable.other.option.unknown.layers"}, **option_captures},
                    },
                ]
            },
            "directive": {
                "patterns": [
                    {
                        "match": rf"({_alternation(list(NAMING_DIRECTIVES))})\s+({IDENTIFIER})",
                        "captures": {
                            "1": {"name": "keyword.control.directive.layers"},
                            "2": {"name": "entity.name.type.layers"},
                        },
                    },
                    {"name": "keyword.control.directive.layers", "match": _alternation(directive_names())},
                ]
            },
            "layer": {"name": "support.function.layer.layers", "match": _alternation(layer_names())},
            "value": {
                "patterns": [
                    {"name": "constant.language.boolean.layers", "match": BOOLEAN_RE},
                    {"name": "variable.other.reference.layers", "match": REFERENCE_RE},
                    {"name": "constant.numeric.dims.layers", "match": DIMS_RE},
                    {"name": "constant.numeric.float.layers", "match": FLOAT_RE},
                    {"name": "constant.numeric.integer.layers", "match": INTEGER_RE},
                    {
                        "name": "string.quoted.double.layers",
                        "begin": '"',
                        "end": r'"|$',
                        "patterns": [{"name": "constant.character.escape.layers", "match": r"\\."}],
                    },
                ]
            },
            "punctuation": {
                "patterns": [
                    {"name": "punctuation.separator.statement.layers", "match": r"\|"},
                    {"name": "punctuation.section.block.begin.layers", "match": r"\{"},
                    {"name": "punctuation.section.block.end.layers", "match": r"\}"},
                    {"name": "keyword.operator.assignment.layers", "match": "="},
                    {"name": "keyword.operator.arithmetic.layers", "match": ARITHMETIC_RE},
                ]
            },
        },
    }


def textmate_json() -> str:
    return json.dumps(textmate_grammar(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerdsl.lexer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--textmate", metavar="OUT", help="write the TextMate grammar to OUT (`-` for stdout)")
    args = parser.parse_args(argv)
    if args.textmate is None:
        parser.error("nothing to do: pass --textmate OUT")
    if args.textmate == "-":
        sys.stdout.write(textmate_json())
    else:
        Path(args.textmate).write_text(textmate_json(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
