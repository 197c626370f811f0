"""Integer arithmetic in arguments: `filters*4`, `c//2+1`, `max(8,c//4)`, and dims with names and
expressions in them, `1x1xc`, `1x1x(c*4)`.

An expression is one word (spaces only inside parentheses), so whitespace still separates
positional values: `dense 10 -1` stays two values. The grammar's EXPR and DIMS terminals find
the words; this module parses them (with positions, for errors at the right column), writes them
back in canonical form (``fmt``), and evaluates them as Python's integer arithmetic. Names are the
enclosing block's parameters, ``in_channels`` (the channel count of the tensor the block instance
reads) and ``channels`` (that of the tensor the statement reads); the checker supplies them. Nothing here is ever handed to Python's own evaluator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import LayerCheckError, LayerSyntaxError, Span

#: The channel (or feature: the last axis) count of the tensor a block instance reads; outside
#: blocks, of the tensor the statement reads.
CHANNELS = "in_channels"
#: The channel count of the tensor the statement itself reads.
CURRENT_CHANNELS = "channels"
SHAPE_NAMES = (CHANNELS, CURRENT_CHANNELS)
#: Every value, the final one and those on the way, stays within what frameworks index.
LIMIT = 2**31 - 1
FUNCTIONS = ("min", "max")
#: Operators by binding strength, loosest first; Python's precedence and left-to-right grouping.
_LEVELS = (("+", "-"), ("*", "//", "%"))


@dataclass(frozen=True)
class Num:
    value: int
    span: Span


@dataclass(frozen=True)
class Name:
    name: str
    span: Span


@dataclass(frozen=True)
class Neg:
    operand: Expr
    span: Span


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Expr
    right: Expr
    span: Span  # the operator


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Expr, ...]
    span: Span  # the function's name


@dataclass(frozen=True)
class Bound:
    """A block parameter bound to something other than an integer (`relu`, `3x3`): an error if read."""

    name: str
    written: str  # the bound value as the call wrote it
    span: Span


Expr = Num | Name | Neg | BinOp | Call | Bound


# --- parsing --------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<num>[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>//|[-+*/%(),]))")
MAX_NUMBER_CHARS = 400
MAX_TOKENS = 200


class _Reader:
    def __init__(self, text: str, line: int, column: int) -> None:
        self.text, self.line, self.column = text, line, column
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, offset)
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None:
                offset = len(text) - len(text[pos:].lstrip())
                raise self.error(f"unexpected character `{text[offset]}` in an expression", offset)
            kind = match.lastgroup or "op"
            start = match.start(kind)
            self.tokens.append((kind, match.group(kind), start))
            if len(self.tokens) > MAX_TOKENS:  # keeps the tree shallow enough to walk recursively
                raise self.error(f"an expression has at most {MAX_TOKENS} numbers, names and operators", start,
                                 hint="compute it in fewer steps, or pass the value as a block parameter")
            pos = match.end()
        self.index = 0

    def span(self, offset: int, length: int = 1) -> Span:
        return Span(self.line, self.column + offset, self.line, self.column + offset + length)

    def error(self, message: str, offset: int, length: int = 1, hint: str | None = None) -> LayerSyntaxError:
        return LayerSyntaxError(message, span=self.span(offset, length), hint=hint)

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise self.error("the expression ends too early", len(self.text.rstrip()), hint=_HINT)
        self.index += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token[1] != text:
            hint = _SHAPE_HINT if token[1] == "," else _HINT
            raise self.error(f"expected `{text}` in the expression, found `{token[1]}`", token[2], len(token[1]),
                             hint=hint)


_SHAPE_HINT = "sizes and shapes are written with `x`, without parentheses or commas: `28x28x1`"
_HINT = ("expressions take integers, block parameters, in_channels, channels, + - * // %, min(...), max(...) "
         "and parentheses")


def parse(text: str, line: int = 1, column: int = 1) -> Expr:
    """The expression ``text`` (which starts at ``line``:``column``), or LayerSyntaxError at the column to blame."""
    reader = _Reader(text, line, column)
    expr = _binary(reader, 0)
    extra = reader.peek()
    if extra is not None:
        hint = _HINT
        if extra[1] == ",":
            hint = _SHAPE_HINT
        raise reader.error(f"unexpected `{extra[1]}` in an expression", extra[2], len(extra[1]), hint=hint)
    return expr


def _binary(reader: _Reader, level: int) -> Expr:
    if level == len(_LEVELS):
        return _unary(reader)
    left = _binary(reader, level + 1)
    while (token := reader.peek()) is not None and token[1] in (*_LEVELS[level], "/"):
        if token[1] == "/":
            raise reader.error("`/` divides into fractions; sizes are integers", token[2], hint="write `//` for integer division")
        reader.take()
        right = _binary(reader, level + 1)
        left = BinOp(token[1], left, right, reader.span(token[2], len(token[1])))
    return left


def _unary(reader: _Reader) -> Expr:
    token = reader.peek()
    if token is not None and token[1] in ("-", "+"):
        reader.take()
        operand = _unary(reader)
        return Neg(operand, reader.span(token[2])) if token[1] == "-" else operand
    return _atom(reader)


def _atom(reader: _Reader) -> Expr:
    kind, text, offset = reader.take()
    if kind == "num":
        if len(text) > MAX_NUMBER_CHARS:
            raise reader.error(f"number is {len(text):,} characters long; layerdsl reads at most {MAX_NUMBER_CHARS}",
                               offset, len(text))
        return Num(int(text), reader.span(offset, len(text)))
    if kind == "name":
        following = reader.peek()
        if following is not None and following[1] == "(":
            if text not in FUNCTIONS:
                raise reader.error(f"unknown function `{text}`", offset, len(text), hint="expressions call min(...) and max(...)")
            reader.take()
            args = [_binary(reader, 0)]
            while (token := reader.peek()) is not None and token[1] == ",":
                reader.take()
                args.append(_binary(reader, 0))
            reader.expect(")")
            if len(args) < 2:
                raise reader.error(f"`{text}` takes two or more values", offset, len(text),
                                   hint=f"write e.g. `{text}(8,c//4)`")
            return Call(text, tuple(args), reader.span(offset, len(text)))
        return Name(text, reader.span(offset, len(text)))
    if text == "(":
        inner = _binary(reader, 0)
        reader.expect(")")
        return inner
    raise reader.error(f"unexpected `{text}` in an expression", offset, len(text), hint=_HINT)


# As the grammar's _DIM_NAME: a name part never starts or runs on where `x` and a digit or `(` follow.
_NAME_PART = re.compile(r"(?!x[0-9(])[A-Za-z_](?:(?!x[0-9(])[A-Za-z0-9_])*")


def parse_dims(text: str, line: int, column: int) -> tuple[int | Expr, ...]:
    """A DIMS word such as `1x1xc` or `3x(c*4)`: integers, names and parenthesized expressions joined by `x`."""
    parts: list[int | Expr] = []
    pos = 0
    while True:
        if text[pos].isdigit():
            end = pos
            while end < len(text) and text[end].isdigit():
                end += 1
            if end - pos > MAX_NUMBER_CHARS:
                raise LayerSyntaxError(
                    f"number is {end - pos:,} characters long; layerdsl reads at most {MAX_NUMBER_CHARS}",
                    span=Span(line, column + pos, line, column + end),
                )
            parts.append(int(text[pos:end]))
        elif text[pos] == "(":
            depth, end = 0, pos
            while True:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
                if depth == 0:
                    break
            inner = parse(text[pos + 1 : end - 1], line, column + pos + 1)
            parts.append(inner.value if isinstance(inner, Num) else inner)
        else:
            match = _NAME_PART.match(text, pos)
            if match is None:
                raise _dims_error(text, pos, line, column)
            end = match.end()
            parts.append(Name(match.group(), Span(line, column + pos, line, column + end)))
        if end >= len(text):
            return tuple(parts)
        if text[end] != "x":
            raise _dims_error(text, end, line, column)
        pos = end + 1


def _dims_error(text: str, pos: int, line: int, column: int) -> LayerSyntaxError:
    return LayerSyntaxError(
        f"cannot read the dims `{text}` here",
        span=Span(line, column + pos, line, column + pos + 1),
        hint="dims join integers, names and parenthesized expressions with `x`: `1x1xc`, `(c)x4`, `1x(c*4)`",
    )


# --- writing back ---------------------------------------------------------------------------

_STRENGTH = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}


def text(expr: Expr, strength: int = 0) -> str:
    """Canonical spelling: no spaces, parentheses only where Python's precedence needs them."""
    if isinstance(expr, Num):
        return str(expr.value)
    if isinstance(expr, Name | Bound):
        return expr.name
    if isinstance(expr, Call):
        return f"{expr.function}({','.join(text(a) for a in expr.args)})"
    if isinstance(expr, Neg):
        inner = text(expr.operand, 3)
        # `--c` would read back the same, but `-` before a negative literal reads better grouped
        written = f"-{inner}" if not inner.startswith("-") else f"-({inner})"
        return f"({written})" if strength > 2 else written
    own = _STRENGTH[expr.op]
    written = f"{text(expr.left, own)}{expr.op}{text(expr.right, own + 1)}"
    return f"({written})" if own < strength else written


def dims_text(parts: tuple[int | Expr, ...]) -> str:
    """`1x1xc`, `(c)x4`, `1x(c*4)`: a part is bare where the lexer reads it back as the same part."""
    out = []
    for i, part in enumerate(parts):
        if isinstance(part, int):
            out.append(str(part))
        elif isinstance(part, Num):
            out.append(str(part.value))
        elif isinstance(part, Name) and i > 0 and _NAME_PART.fullmatch(part.name) and (
            i == len(parts) - 1 or not isinstance(parts[i + 1], Name)
        ):
            out.append(part.name)
        else:
            out.append(f"({text(part)})")
    return "x".join(out)


def names(expr: Expr) -> set[str]:
    """Every name the expression reads."""
    if isinstance(expr, Name):
        return {expr.name}
    if isinstance(expr, Neg):
        return names(expr.operand)
    if isinstance(expr, BinOp):
        return names(expr.left) | names(expr.right)
    if isinstance(expr, Call):
        return set().union(*(names(a) for a in expr.args))
    return set()


# --- evaluation -----------------------------------------------------------------------------


def evaluate(expr: Expr, lookup: Callable[[Name], int]) -> int:
    """Python's integer arithmetic; ``lookup`` gives a name's value or raises. Every value on the
    way stays within +-LIMIT, and division by zero is an error at its operator."""
    if isinstance(expr, Num):
        value = expr.value
    elif isinstance(expr, Name):
        value = lookup(expr)
    elif isinstance(expr, Bound):
        raise LayerCheckError(
            f"`{expr.name}` is `{expr.written}` here, but an expression needs an integer", span=expr.span
        )
    elif isinstance(expr, Neg):
        value = -evaluate(expr.operand, lookup)
    elif isinstance(expr, Call):
        values = [evaluate(a, lookup) for a in expr.args]
        value = min(values) if expr.function == "min" else max(values)
    else:
        left, right = evaluate(expr.left, lookup), evaluate(expr.right, lookup)
        if expr.op in ("//", "%") and right == 0:
            raise LayerCheckError(f"division by zero: the right side of `{expr.op}` is 0", span=expr.span)
        value = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__, "//": int.__floordiv__,
                 "%": int.__mod__}[expr.op](left, right)
    if abs(value) > LIMIT:
        raise LayerCheckError(f"the expression reaches {value:,}, beyond {LIMIT:,}", span=expr.span,
                              hint="sizes in layerdsl stay below 2**31")
    return value


def substitute(expr: Expr, bound: Mapping[str, int | str]) -> Expr:
    """``expr`` with each name in ``bound`` replaced: by its integer, or by a Bound leaf for any
    other value (given as its source text). Spans stay where the names were written."""
    if isinstance(expr, Name) and expr.name in bound:
        value = bound[expr.name]
        return Num(value, expr.span) if isinstance(value, int) else Bound(expr.name, value, expr.span)
    if isinstance(expr, Neg):
        return Neg(substitute(expr.operand, bound), expr.span)
    if isinstance(expr, BinOp):
        return BinOp(expr.op, substitute(expr.left, bound), substitute(expr.right, bound), expr.span)
    if isinstance(expr, Call):
        return Call(expr.function, tuple(substitute(a, bound) for a in expr.args), expr.span)
    return expr


def environment(values: Mapping[str, int]) -> Callable[[Name], int]:
    """A lookup over known integers that refuses every other name, pointing at it."""

    def lookup(name: Name) -> int:
        if name.name in values:
            return values[name.name]
        raise LayerCheckError(f"unknown name `{name.name}` in an expression", span=name.span)

    return lookup


__all__ = ["CHANNELS", "CURRENT_CHANNELS", "SHAPE_NAMES", "BinOp", "Bound", "Call", "Expr", "Name", "Neg", "Num", "dims_text", "evaluate", "names", "parse",
           "parse_dims", "substitute", "text"]
