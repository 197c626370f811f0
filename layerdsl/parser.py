"""Text -> syntax tree: the Lark grammar, loaded once, and a Transformer to plain dataclasses.

The syntax tree knows nothing about layers: a statement is a name with values
and options. The checker (``checker.py``) gives it meaning.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import expressions
from .errors import LayerSyntaxError, Span

Scalar = int | float | str | bool | tuple[int, ...] | expressions.Expr | tuple[int | expressions.Expr, ...]


@dataclass(frozen=True)
class Value:
    """A value as written: ``kind`` is int, float, dims, name, string or ref; or ``expr`` (an
    ``expressions.Expr``) and ``dims_expr`` (dims with names or expressions among their parts),
    which the checker evaluates to int and dims."""

    kind: str
    value: Scalar
    span: Span

    def source(self) -> str:
        """The value in canonical DSL spelling (safe to put in a comment)."""
        if self.kind == "dims":
            assert isinstance(self.value, tuple)
            return "x".join(str(d) for d in self.value)
        if self.kind == "string":
            return '"' + str(self.value).encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
        if self.kind == "float":
            return repr(self.value)
        if self.kind == "ref":
            return f"@{self.value}"
        if self.kind == "expr":
            return expressions.text(self.value)  # type: ignore[arg-type]
        if self.kind == "dims_expr":
            return expressions.dims_text(self.value)  # type: ignore[arg-type]
        return str(self.value)


@dataclass(frozen=True)
class Option:
    key: str
    value: Value
    span: Span  # covers `key=value`
    key_span: Span


@dataclass(frozen=True)
class Reference:
    """``@name`` on a line of its own: continue from the tensor tapped as ``name``."""

    name: str
    span: Span

    def source(self) -> str:
        return f"@{self.name}"


@dataclass(frozen=True)
class Statement:
    name: str
    name_span: Span
    positionals: tuple[Value, ...]
    options: tuple[Option, ...]
    span: Span
    bodies: tuple[tuple[Item, ...], ...] = ()
    #: In a block's body with its parameters bound: the statement as written in the definition.
    written: Statement | None = field(default=None, compare=False, repr=False)

    def source(self) -> str:
        """Canonical one-line spelling of the head (bodies excluded), built from parsed parts only."""
        parts = [self.name, *(v.source() for v in self.positionals)]
        parts.extend(f"{o.key}={o.value.source()}" for o in self.options)
        return " ".join(parts)


Item = Statement | Reference


@dataclass(frozen=True)
class Program:
    statements: tuple[Item, ...]


MAX_SOURCE_CHARS = 5_000_000
MAX_NESTING = 64  # braces deeper than this are refused before parsing (keeps recursion bounded)


def _grammar_path() -> Path:
    # Installed wheels carry the grammar inside the package; a source checkout
    # (or an editable install) reads it from the repository's grammars/ folder.
    here = Path(__file__).resolve().parent
    for candidate in (here / "grammars" / "layers.lark", here.parent / "grammars" / "layers.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("layerdsl grammar file layers.lark is missing from the installation")


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return _grammar_path().read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    """The grammar alone (tree output): used by tools such as hypothesis's from_lark."""
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False)


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    """The parser used by parse_syntax: the transformer runs inside the LALR parse, no tree built."""
    return Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
        transformer=_ToSyntax(),
    )


def _span_of_token(tok: Token) -> Span:
    return Span(tok.line or 1, tok.column or 1, tok.end_line or tok.line or 1, tok.end_column or (tok.column or 1) + 1)


def _join(first: Span, last: Span) -> Span:
    return Span(first.line, first.column, last.end_line, last.end_column)


def _last_span(item: object) -> Span | None:
    if isinstance(item, tuple):  # a body: its last item, if any
        return _last_span(item[-1]) if item else None
    return getattr(item, "span", None)


class _ToSyntax(Transformer):
    """Lark tree -> Statement dataclasses."""

    def int(self, children: list[Token]) -> Value:
        (tok,) = children
        _check_length(tok)
        return Value("int", int(tok), _span_of_token(tok))

    def float(self, children: list[Token]) -> Value:
        (tok,) = children
        _check_length(tok)
        return Value("float", float(tok), _span_of_token(tok))

    def dims(self, children: list[Token]) -> Value:
        (tok,) = children
        span = _span_of_token(tok)
        parts = expressions.parse_dims(str(tok), span.line, span.column)
        if all(isinstance(p, int) for p in parts):
            return Value("dims", parts, span)
        return Value("dims_expr", parts, span)

    def expr(self, children: list[Token]) -> Value:
        (tok,) = children
        span = _span_of_token(tok)
        if _PARENTHESIZED_SIZES.match(tok):  # `(28, 28, 1)`, as Python writes a shape
            raise LayerSyntaxError(
                "unexpected character `(`",
                span=Span(span.line, span.column, span.line, span.column + 1),
                hint=_parenthesized_size_hint(str(tok)),
            )
        tree = expressions.parse(str(tok), span.line, span.column)
        if isinstance(tree, expressions.Num):  # `(3)` is 3, `(relu)` is relu: one spelling per tree
            return Value("int", tree.value, span)
        if isinstance(tree, expressions.Neg) and isinstance(tree.operand, expressions.Num):
            return Value("int", -tree.operand.value, span)
        if isinstance(tree, expressions.Name):
            return Value("name", tree.name, span)
        return Value("expr", tree, span)

    def name(self, children: list[Token]) -> Value:
        (tok,) = children
        return Value("name", str(tok), _span_of_token(tok))

    def string(self, children: list[Token]) -> Value:
        (tok,) = children
        return Value("string", _unquote(str(tok), _span_of_token(tok)), _span_of_token(tok))

    def ref(self, children: list[Token]) -> Value:
        (tok,) = children
        return Value("ref", str(tok)[1:], _span_of_token(tok))

    def reference(self, children: list[Token]) -> Reference:
        (tok,) = children
        return Reference(str(tok)[1:], _span_of_token(tok))

    def body(self, children: list[Item]) -> tuple[Item, ...]:
        return tuple(children)

    # Spans come from the children, not lark's meta: the transformer runs inside the
    # LALR parse (no tree is built), where meta is not available.
    def option(self, children: list) -> Option:  # type: ignore[type-arg]
        key, value = children
        key_span = _span_of_token(key)
        return Option(str(key), value, _join(key_span, value.span), key_span)

    def statement(self, children: list) -> Statement:  # type: ignore[type-arg]
        head, *items = children
        positionals = tuple(i for i in items if isinstance(i, Value))
        options = tuple(i for i in items if isinstance(i, Option))
        bodies = tuple(i for i in items if isinstance(i, tuple))
        head_span = _span_of_token(head)
        span = head_span
        for item in items:
            last = _last_span(item)
            if last is not None:
                span = _join(span, last)
        return Statement(str(head), head_span, positionals, options, span, bodies)

    def start(self, children: list[Item]) -> Program:
        return Program(tuple(children))


MAX_NUMBER_CHARS = 400  # far above any real size; Python refuses int() of over 4,300 digits


def _check_length(tok: Token) -> None:
    if len(tok) > MAX_NUMBER_CHARS:
        raise LayerSyntaxError(
            f"number is {len(tok):,} characters long; layerdsl reads at most {MAX_NUMBER_CHARS}",
            span=_span_of_token(tok),
        )


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "0": "\0"}


def _unquote(token: str, span: Span) -> str:
    body = token[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise LayerSyntaxError(
                    f"unknown escape `\\{nxt}` in string",
                    span=Span(span.line, span.column + i + 1, span.line, span.column + i + 3),
                    hint='strings support \\n \\t \\r \\\\ \\" and \\0',
                )
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


_TOKEN_WORDS = {
    "EQUAL": "`=`",
    "_SEP": "a line break or `|`",
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "DIMS": "dimensions such as 3x3",
    "EXPR": "an expression such as c*4",
    "STRING": "a string",
    "REF": "a reference such as @skip",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "$END": "the end of the input",
}


def parse_syntax(text: str, filename: str = "<string>") -> Program:
    """Parse text into a syntax tree, raising LayerSyntaxError with a position."""
    if len(text) > MAX_SOURCE_CHARS:
        raise LayerSyntaxError(
            f"input is {len(text):,} characters; layerdsl reads at most {MAX_SOURCE_CHARS:,}",
            filename=filename,
        )
    _check_nesting(text, filename)
    try:
        program = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text).located(filename, text) from None
    except LayerSyntaxError as exc:
        raise exc.located(filename, text) from None
    except Exception as exc:  # lark wraps errors raised inside the transformer
        inner = getattr(exc, "orig_exc", None)
        if isinstance(inner, LayerSyntaxError):
            raise inner.located(filename, text) from None
        raise
    assert isinstance(program, Program)
    return program


def _check_nesting(text: str, filename: str) -> None:
    """Refuse braces nested deeper than MAX_NESTING, skipping strings and comments."""
    _open_braces(text, filename)


def _open_braces(text: str, filename: str = "<string>") -> list[Span]:
    """Where the braces still open at the end of ``text`` were opened (strings and comments
    skipped); refuses braces nested deeper than MAX_NESTING."""
    if "{" not in text:
        return []
    opened: list[Span] = []
    depth, line, column, i = 0, 1, 0, 0
    in_string = in_comment = False
    while i < len(text):
        ch = text[i]
        column += 1
        if ch == "\n":
            line, column, in_comment, in_string = line + 1, 0, False, False
        elif ch == "\r":  # ends a comment or string too, as the grammar's terminals do
            in_comment = in_string = False
        elif in_comment:
            pass
        elif in_string:
            if ch == "\\":
                i += 1
                column += 1
            elif ch == '"':
                in_string = False
        elif ch == "#":
            in_comment = True
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
            opened.append(Span(line, column, line, column + 1))
            if depth > MAX_NESTING:
                raise LayerSyntaxError(
                    f"braces nest more than {MAX_NESTING} deep",
                    span=Span(line, column, line, column + 1),
                    hint="flatten the structure with blocks and `repeat`",
                ).located(filename, text)
        elif ch == "}":
            depth -= 1
            if opened:
                opened.pop()
        i += 1
    return opened if depth > 0 else []


_PARENTHESIZED_SIZES = re.compile(r"\(\s*(\d+)((?:\s*,\s*\d+)*)\s*,?\s*\)")


def _parenthesized_size_hint(rest: str) -> str:
    """`(28, 28, 1)` as Python writes a shape: the language writes `28x28x1`."""
    match = _PARENTHESIZED_SIZES.match(rest)
    if match is None:
        return (
            "parentheses group an expression such as `(c*4)`, nested at most five deep and closed on the same "
            "line; sizes and shapes are written with `x`: `3x3`, `28x28x1`"
        )
    numbers = re.findall(r"\d+", match.group(0))
    written = "x".join(numbers) if len(numbers) > 1 else numbers[0]
    return f"write `{written}`: sizes and shapes are written with `x`, without parentheses or commas"


def _syntax_error(exc: UnexpectedInput, text: str) -> LayerSyntaxError:
    line = getattr(exc, "line", 1) or 1
    column = getattr(exc, "column", 1) or 1
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        span = Span(line, column, line, column + 1)
        hint = None
        if ch == "'":
            hint = 'strings use double quotes: "..."'
        elif ch == "-":
            hint = "names use letters, digits and `_` (not `-`)"
        elif ch == '"':
            hint = "a string must close on the same line"
        elif ch == "(":
            hint = _parenthesized_size_hint(text[exc.pos_in_stream :])
        shown = repr(ch)[1:-1] if ch else "end of input"
        return LayerSyntaxError(f"unexpected character `{shown}`", span=span, hint=hint)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            unclosed = _open_braces(text)
            if unclosed:
                where = unclosed[-1]
                return LayerSyntaxError(
                    f"`{{` on line {where.line}, column {where.column} is never closed",
                    span=where,
                    hint="close the body with `}`",
                )
            lines = text.splitlines() or [""]
            end = len(lines[-1].rstrip("\r")) + 1
            span = Span(len(lines), end, len(lines), end + 1)
            return LayerSyntaxError("unexpected end of input", span=span, hint="an option needs a value: key=value")
        span = _span_of_token(tok)
        shown = _TOKEN_WORDS.get(tok.type, tok.type) if tok.type in ("_SEP", "$END") else f"`{tok}`"
        hint = None
        if tok.type == "EQUAL":
            hint = "an option is written key=value, with a name before `=` and a value after it"
        elif tok.type == "_SEP" or "EQUAL" in getattr(exc, "expected", ()):
            hint = "an option needs a value: key=value"
        elif tok.type in ("INT", "FLOAT", "DIMS", "STRING"):
            hint = "a statement starts with a layer name, e.g. `dense 10`"
        return LayerSyntaxError(f"unexpected {shown}", span=span, hint=hint)
    if isinstance(exc, UnexpectedEOF):
        return LayerSyntaxError("unexpected end of input", span=Span(line, column, line, column + 1))
    return LayerSyntaxError(str(exc), span=Span(line, column, line, column + 1))
