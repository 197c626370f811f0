"""The block planner: one definition per block, for every backend that writes source.

A backend writes the code of each block instance with ``codegen.holes()`` on, so that every
literal in it is a *hole* (see ``codegen.py``). ``unify`` lines the instances of one block up:

- a hole that holds one of the block's parameters in every instance becomes that parameter
  (``filters``, ``stride``; or what the backend infers from the input, ``in_channels``);
- a hole that never changes stays a literal;
- a hole that changes with nothing the block knows (TensorFlow's `same` padding of a strided
  convolution, which depends on the input's height and width) becomes an extra argument that
  each instance passes;
- a string that is the instance's name plus a suffix becomes ``name + "_suffix"``.

Instances whose code differs in more than literals get a definition each (a *variant*). The
result is correct by construction: each instance's arguments, put back into the definition,
give exactly the code the backend wrote for that instance.

``unify_iterations`` does the same along a `repeat`, so N iterations become one loop body:
a hole that grows by a fixed step becomes ``start + i * step`` (DenseNet's growing channels).
"""

from __future__ import annotations

import io
import itertools
import keyword
import re
import tokenize
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import expressions, ir
from ..codegen import literal
from ..errors import LayerDSLError
from ..specs import REGISTRY

_MARK = re.compile("\0(\\d+)\0")
_KEYWORD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=$")
NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Fragment:
    """Code with holes: ``text`` holds markers ``\\0N\\0`` for ``values[N]``."""

    text: str
    values: tuple[Any, ...] = ()
    meanings: tuple[str | None, ...] = ()

    @staticmethod
    def of(text: str, holes: Any) -> Fragment:
        """The fragment for ``text`` written under ``codegen.holes()`` (holes numbered as they appear)."""
        values: list[Any] = []
        meanings: list[str | None] = []

        def renumber(match: re.Match[str]) -> str:
            index = int(match.group(1))
            values.append(holes.values[index])
            meanings.append(holes.meanings[index])
            return f"\0{len(values) - 1}\0"

        return Fragment(_MARK.sub(renumber, text), tuple(values), tuple(meanings))

    @property
    def skeleton(self) -> str:
        """The text with every hole blanked: fragments with equal skeletons differ only in literals."""
        return _MARK.sub("\0\0", self.text)

    def in_arithmetic(self) -> list[bool]:
        """For each hole, whether an arithmetic operator stands right before or after it."""
        out = []
        for match in _MARK.finditer(self.text):
            before = self.text[max(0, match.start() - 3) : match.start()].rstrip()
            after = self.text[match.end() : match.end() + 3].lstrip()
            out.append(before[-1:] in ("*", "/", "%", "+", "-") or after[:1] in ("*", "/", "%", "+", "-"))
        return out

    def keywords(self) -> list[str | None]:
        """For each hole, the keyword argument it is passed as (``stride=``), if any."""
        out: list[str | None] = []
        for match in _MARK.finditer(self.text):
            before = _KEYWORD_BEFORE.search(self.text[max(0, match.start() - 40) : match.start()])
            out.append(before.group(1) if before else None)
        return out

    def render(self, expression: Callable[[int], str] | None = None) -> str:
        """The text with each hole replaced by ``expression(index)``, by default its literal."""
        expression = expression or (lambda index: literal(self.values[index]))
        return _MARK.sub(lambda match: expression(int(match.group(1))), self.text)


# --- block definitions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What the holes of one instance may be named after.

    ``values``: candidate names and their values for this instance, in order of preference
    (the block's parameters, then what the backend infers from the input, such as
    ``in_channels``). ``defaults``: the block parameters that have defaults. ``name``: the
    instance's name, the prefix of the names of its layers.
    """

    values: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any = NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


@dataclass(frozen=True)
class Variant:
    """One definition: its code, its signature, and the instances that use it with their arguments."""

    text: str
    parameters: tuple[Parameter, ...]
    members: tuple[int, ...]  # indexes into the instances given to ``unify``
    arguments: tuple[dict[str, Any], ...]  # one per member: parameter -> value
    uses_name: bool  # the code builds names from the instance's ``name``

    def call_arguments(self, member: int) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments for one member (defaults left out), as values."""
        values = self.arguments[self.members.index(member)]
        positional = [values[p.name] for p in self.parameters if not p.has_default]
        keywords = {
            p.name: values[p.name]
            for p in self.parameters
            if p.has_default and not _same(values[p.name], p.default)
        }
        return positional, keywords


def unify(
    fragments: Sequence[Fragment],
    scopes: Sequence[Scope],
    *,
    reserved: Iterable[str] = (),
) -> list[Variant]:
    """One definition per group of instances whose code differs only in literals (see the module)."""
    groups: dict[str, list[int]] = {}
    for index, fragment in enumerate(fragments):
        groups.setdefault(fragment.skeleton, []).append(index)
    return [_unify_group([fragments[i] for i in members], [scopes[i] for i in members], tuple(members),
                         frozenset(reserved)) for members in groups.values()]


def _unify_group(
    fragments: list[Fragment], scopes: list[Scope], members: tuple[int, ...], reserved: frozenset[str]
) -> Variant:
    first = fragments[0]
    keywords = first.keywords()
    arithmetic = first.in_arithmetic()
    candidates = list(scopes[0].values)
    used: list[str] = []
    lifted: list[str] = []
    arguments: list[dict[str, Any]] = [{} for _ in fragments]
    uses_name = False
    taken = set(candidates) | set(reserved) | {"name"}

    def use(symbol: str) -> None:
        if symbol not in used:
            used.append(symbol)
            for args, scope in zip(arguments, scopes, strict=True):
                args[symbol] = scope.values[symbol]

    def expression(index: int) -> str:
        nonlocal uses_name
        column = [f.values[index] for f in fragments]
        meaning = first.meanings[index]
        resolved = _resolve(column, scopes, meaning, keywords[index], candidates, arithmetic[index])
        if resolved is not None:
            text, symbols = resolved
            for symbol in symbols:
                if symbol == "name":
                    uses_name = True
                else:
                    use(symbol)
            return text
        base = _identifier(keywords[index] or meaning or "value")
        symbol = base
        n = 1
        while symbol in taken:
            n += 1
            symbol = f"{base}{n}"
        taken.add(symbol)
        lifted.append(symbol)
        for args, value in zip(arguments, column, strict=True):
            args[symbol] = value
        return symbol

    text = first.render(expression)
    defaults = scopes[0].defaults
    required = [s for s in candidates if s in used and s not in defaults]
    optional = [s for s in candidates if s in used and s in defaults]
    parameters = (
        *(Parameter(s) for s in required),
        *(Parameter(s) for s in lifted),
        *(Parameter(s, defaults[s]) for s in optional),
    )
    return Variant(text, parameters, members, tuple(arguments), uses_name)


def _resolve(
    column: list[Any],
    scopes: list[Scope],
    meaning: str | None,
    keyword_: str | None,
    candidates: list[str],
    nested: bool = False,
) -> tuple[str, list[str]] | None:
    """How one hole is written in the definition: (expression, symbols it uses), or None to lift it."""
    constant = all(_same(v, column[0]) for v in column)
    if meaning is not None and not meaning.isidentifier():
        written = _written_expression(meaning, column, scopes, candidates)
        if written is not None:
            text, symbols = written
            return (f"({text})" if nested else text), symbols
    preferred = [c for c in (meaning, keyword_) if c is not None and c in candidates]
    for symbol in preferred:
        template = _matches(symbol, column, scopes)
        if template is not None:
            return template, [symbol]
    named = _name_expression(column, scopes)
    if named is not None:
        return named, ["name"]
    if constant:
        return literal(column[0]), []
    for symbol in candidates:
        template = _matches(symbol, column, scopes)
        if template is not None:
            return template, [symbol]
    derived = _derived(column, scopes, candidates)
    if derived is not None:
        text, symbols = derived
        return (f"({text})" if nested else text), symbols
    if all(isinstance(v, tuple) and len(v) == len(column[0]) for v in column):
        parts, symbols = [], []
        for position in range(len(column[0])):
            part = _resolve([v[position] for v in column], scopes, None, None, candidates)
            if part is None:
                return None
            parts.append(part[0])
            symbols.extend(part[1])
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")", symbols
    return None


def _written_expression(
    meaning: str, column: list[Any], scopes: list[Scope], candidates: list[str]
) -> tuple[str, list[str]] | None:
    """A size the statement wrote as an expression (`in_channels//heads`), as Python over the names
    the instances bind, where it gives the hole's value in every instance."""
    try:
        expr = expressions.parse(meaning)
    except LayerDSLError:
        return None
    used = expressions.names(expr)
    if not used or not used <= set(candidates):
        return None
    for value, scope in zip(column, scopes, strict=True):
        bound = {name: scope.values.get(name) for name in used}
        if type(value) is not int or not all(type(v) is int for v in bound.values()):
            return None
        try:
            if expressions.evaluate(expr, lambda name, bound=bound: bound[name.name]) != value:
                return None
        except LayerDSLError:
            return None
    return _python(expr), [c for c in candidates if c in used]


def _python(expr: expressions.Expr, strength: int = 0) -> str:
    """An expression as Python, spaced as a formatter writes it: `max(8, (in_channels // 4 + 4) // 8 * 8)`."""
    if isinstance(expr, expressions.Num):
        return str(expr.value)
    if isinstance(expr, expressions.Name):
        return expr.name
    if isinstance(expr, expressions.Call):
        return f"{expr.function}({', '.join(_python(a) for a in expr.args)})"
    if isinstance(expr, expressions.Neg):
        written = f"-{_python(expr.operand, 3)}"
        return f"({written})" if strength > 2 else written
    assert isinstance(expr, expressions.BinOp)
    own = expressions._STRENGTH[expr.op]
    written = f"{_python(expr.left, own)} {expr.op} {_python(expr.right, own + 1)}"
    return f"({written})" if own < strength else written


def written_sizes(layer: ir.Layer) -> dict[int, str]:
    """Integer argument value -> how the statement wrote it in its block (a parameter's name or an
    expression: `attention heads in_channels//heads` gives {12: "heads", 64: "in_channels//heads"}),
    from the written and bound spellings side by side; values written two ways are left out."""
    written, bound = layer.written.split(), layer.source.split()
    if len(written) != len(bound):
        return {}
    sizes: dict[int, str] = {}
    ambiguous: set[int] = set()
    for w, b in zip(written[1:], bound[1:], strict=True):
        w, b = w.partition("=")[2] or w, b.partition("=")[2] or b
        if w == b or not re.fullmatch(r"-?[0-9]+", b) or not re.fullmatch(r"[A-Za-z_(][A-Za-z0-9_+*/%(),-]*", w):
            continue
        value = int(b)
        if sizes.get(value, w) != w:
            ambiguous.add(value)
        sizes[value] = w
    return {v: w for v, w in sizes.items() if v not in ambiguous}


_FACTORS = (2, 3, 4, 5, 6, 8, 16, 32)


def _derived(column: list[Any], scopes: list[Scope], candidates: list[str]) -> tuple[str, list[str]] | None:
    """A size that changes with one parameter by a fixed factor in every instance: ``filters * 4``
    (a bottleneck's expansion), ``in_channels * 6``, ``in_channels // 4``."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in column):
        return None
    for symbol in candidates:
        values = [scope.values.get(symbol) for scope in scopes]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            continue
        for factor in _FACTORS:
            if all(c == v * factor for c, v in zip(column, values, strict=True)):
                return f"{symbol} * {factor}", [symbol]
            if all(c == v // factor and c > 0 for c, v in zip(column, values, strict=True)):
                return f"{symbol} // {factor}", [symbol]
    return None


def _matches(symbol: str, column: list[Any], scopes: list[Scope]) -> str | None:
    """``symbol`` (or ``(symbol, symbol)`` for a square size) if it holds the value in every instance."""
    templates = set()
    for value, scope in zip(column, scopes, strict=True):
        if symbol not in scope.values:
            return None
        candidate = scope.values[symbol]
        if _same(candidate, value):
            templates.add(symbol)
        elif (
            isinstance(value, tuple)
            and value
            and isinstance(candidate, int)
            and not isinstance(candidate, bool)
            and all(_same(candidate, v) for v in value)
        ):
            templates.add("(" + ", ".join([symbol] * len(value)) + ("," if len(value) == 1 else "") + ")")
        else:
            return None
    return templates.pop() if len(templates) == 1 else None


def _name_expression(column: list[Any], scopes: list[Scope]) -> str | None:
    """``name + "_conv"`` for strings that are each instance's name plus one suffix."""
    suffixes = set()
    for value, scope in zip(column, scopes, strict=True):
        if scope.name is None or not isinstance(value, str):
            return None
        if value == scope.name:
            suffixes.add("")
        elif value.startswith(scope.name + "_"):
            suffixes.add(value[len(scope.name) :])
        else:
            return None
    if len(suffixes) != 1:
        return None
    suffix = suffixes.pop()
    return "name" if not suffix else f"name + {literal(suffix)}"


def _same(a: Any, b: Any) -> bool:
    """Equal and of one type (True is not 1, 1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _identifier(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "value"
    if text[0].isdigit() or keyword.iskeyword(text):
        text = "v_" + text
    return text


# --- repeat: N iterations as one loop body --------------------------------------------------


def unify_iterations(fragments: Sequence[Fragment], index: str = "i") -> Fragment | None:
    """One loop body for the iterations of a `repeat`, in terms of ``index`` (0, 1, ...), whose
    holes are the loop's own: a constant stays one hole, a value that grows by a fixed step
    becomes ``start + index * step`` (two holes), a name that Keras-style numbering extends
    (``b``, ``b_1``, ``b_2``) becomes ``b + ("" if i == 0 else f"_{i}")``, and any other sequence
    a tuple indexed by ``index``. None when the iterations differ in more than literals."""
    if not fragments or len({f.skeleton for f in fragments}) != 1:
        return None
    first = fragments[0]
    values: list[Any] = []
    meanings: list[str | None] = []

    def hole(value: Any, meaning: str | None = None) -> str:
        values.append(value)
        meanings.append(meaning)
        return f"\0{len(values) - 1}\0"

    def expression(position: int) -> str:
        column = [f.values[position] for f in fragments]
        meaning = first.meanings[position]
        if all(_same(v, column[0]) for v in column):
            return hole(column[0], meaning)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in column):
            step = column[1] - column[0]
            if all(b - a == step for a, b in itertools.pairwise(column)):
                return f"{hole(column[0], meaning)} + {index} * {hole(step)}" if step != 1 else (
                    f"{hole(column[0], meaning)} + {index}")
        numbered = _numbered_names(column)
        if numbered is not None:
            base, offset = numbered
            if offset == 0:
                return f'{hole(base, meaning)} + ("" if {index} == 0 else f"_{{{index}}}")'
            return f'{hole(base, meaning)} + f"_{{{index} + {offset}}}"'
        return f"{hole(tuple(column))}[{index}]"

    text = first.render(expression)
    return Fragment(text, tuple(values), tuple(meanings))


def _numbered_names(column: list[Any]) -> tuple[str, int] | None:
    """(base, k) when the strings are base (k = 0) or base_k, base_{k+1}, ... in order."""
    if not all(isinstance(v, str) for v in column):
        return None
    base = column[0]
    offset = 0
    match = re.fullmatch(r"(.*)_(\d+)", column[0])
    if match and column[1:] and column[1] == f"{match.group(1)}_{int(match.group(2)) + 1}":
        base, offset = match.group(1), int(match.group(2))
    for i, value in enumerate(column):
        n = offset + i
        expected = base if n == 0 else f"{base}_{n}"
        if value != expected:
            return None
    return base, offset


# --- what a block instance reads --------------------------------------------------------------


def produced(nodes: Iterable[ir.Node]) -> set[str]:
    """Names of the tensors the nodes make (every layer in them)."""
    return {layer.name for layer in ir.layers_of(tuple(nodes))}


def reads(nodes: Iterable[ir.Node]) -> set[str]:
    """Names of every tensor a layer in the nodes reads."""
    return {name for layer in ir.layers_of(tuple(nodes)) for name in layer.inputs}


def self_contained(node: ir.BlockCall | ir.Repeat) -> bool:
    """True when the node reads only its input: a function of one tensor, fit for a class of its own."""
    body: tuple[ir.Node, ...] = node.body if isinstance(node, ir.BlockCall) else tuple(
        n for iteration in node.iterations for n in iteration
    )
    inside = produced(body)
    return reads(body) <= inside | {node.input} and node.output in inside | {node.input}


# --- masks: which layer's mask each layer reads ------------------------------------------------


def _makes_mask(layer: ir.Layer) -> bool:
    return (layer.kind == "embedding" and bool(layer.args["mask_zero"])) or layer.kind == "masking"


def mask_variables(model: ir.Model) -> dict[str, str]:
    """Layer name -> the variable holding the mask it makes or reads, where masks made by several
    layers are alive in one forward pass (one per input chain, say): ``mask_<the layer that made it>``.
    Empty when at most one layer makes masks: the generated code then calls it ``mask``."""
    origin: dict[str, str] = {}  # tensor -> the layer whose mask travels with it
    uses: dict[str, str] = {}
    for layer in model.layers:
        carried = [origin[name] for name in layer.inputs if name in origin]
        if _makes_mask(layer):
            origin[layer.name] = uses[layer.name] = layer.name
            continue
        if REGISTRY[layer.kind].reads_memory and layer.inputs:  # keys masked by the memory's, the query's passed on
            query, memory = layer.inputs[0], layer.inputs[-1]
            if layer.input_masked and memory in origin:
                uses[layer.name] = origin[memory]
            if layer.output_masked and query in origin:
                origin[layer.name] = origin[query]
            continue
        if layer.input_masked and carried:
            uses[layer.name] = carried[-1]
        if layer.output_masked and carried:
            origin[layer.name] = carried[0]
    if len(set(uses.values())) <= 1:
        return {}
    return {name: f"mask_{made_by}" for name, made_by in uses.items()}


def rename_variable(lines: list[str], old: str, new: str) -> list[str]:
    """Lines of Python with the variable ``old`` called ``new`` (attributes and keywords ``old=`` kept)."""
    if old == new:
        return lines
    out = []
    for line in lines:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
        edits, depth, previous = [], 0, None
        for k, token in enumerate(tokens):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
            elif token.type == tokenize.NAME and token.string == old and previous != ".":
                following = tokens[k + 1].string if k + 1 < len(tokens) else ""
                if not (following == "=" and depth > 0):  # `f(mask=...)` names a parameter
                    edits.append(token.start[1])
            previous = token.string
        for column in reversed(edits):
            line = line[:column] + new + line[column + len(old) :]
        out.append(line)
    return out
