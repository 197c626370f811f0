"""Helpers for writing generated Python source safely and readably.

Generated source only ever contains validated identifiers (``ident``) and
literals rendered by ``py`` (``repr`` of numbers, strings, tuples); nothing a
user wrote is copied in raw. ``exec_generated`` re-parses the source with
``ast`` before running it, so a bug here fails loudly instead of running code.
"""

from __future__ import annotations

import ast
import keyword
import linecache
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from . import ir

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class Code(str):
    """An already-rendered Python expression (as opposed to a literal value to repr)."""


class Hint:
    """A literal together with what it means, for the block planner: ``py(Hint(64, "in_channels"))``
    renders ``64`` in flat code, and lets a block's class take it as its ``in_channels`` argument."""

    __slots__ = ("meaning", "value")

    def __init__(self, value: Any, meaning: str) -> None:
        self.value = value
        self.meaning = meaning


class _Holes:
    """Literals rendered while capturing: each becomes a marker ``\0N\0`` in the text."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.meanings: list[str | None] = []

    def add(self, value: Any, meaning: str | None) -> str:
        self.values.append(value)
        self.meanings.append(meaning)
        return f"\0{len(self.values) - 1}\0"


_capturing: list[_Holes] = []


@contextmanager
def holes() -> Iterator[_Holes]:
    """Within this block, ``py`` renders literals as markers that the block planner
    (``backends.structure``) turns into a block's parameters or back into literals."""
    captured = _Holes()
    _capturing.append(captured)
    try:
        yield captured
    finally:
        _capturing.pop()


def hole_count() -> int:
    """How many holes the innermost ``holes()`` has captured (0 when none is on)."""
    return len(_capturing[-1].values) if _capturing else 0


def name_hole(start: int, value: int, meaning: str) -> None:
    """Give ``meaning`` to the one hole captured since ``start`` that holds ``value`` and means nothing
    yet (none when two such holes make it ambiguous): a size the statement wrote as a name."""
    if not _capturing:
        return
    captured = _capturing[-1]
    found = [
        i
        for i in range(start, len(captured.values))
        if captured.meanings[i] is None and type(captured.values[i]) is int and captured.values[i] == value
    ]
    if len(found) == 1:
        captured.meanings[found[0]] = meaning


def _is_literal(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return not isinstance(value, Code)
    return isinstance(value, tuple) and all(_is_literal(v) for v in value)


def ident(name: str) -> str:
    """Return ``name`` if it is a safe Python identifier, else raise ValueError."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise ValueError(f"not a safe identifier: {name!r}")
    return name


def dotted(path: str) -> str:
    if not _DOTTED.match(path) or any(keyword.iskeyword(p) for p in path.split(".")):
        raise ValueError(f"not a safe dotted name: {path!r}")
    return path


def py(value: Any) -> str:
    """Render a literal as Python source; only plain data is accepted."""
    if isinstance(value, Code):
        return str(value)
    meaning = None
    if isinstance(value, Hint):
        value, meaning = value.value, value.meaning
    if _capturing and _is_literal(value):
        return _capturing[-1].add(value, meaning)
    return literal(value)


def literal(value: Any) -> str:
    """``py`` without capturing: the literal itself."""
    if isinstance(value, Code):
        return str(value)
    if isinstance(value, Hint):
        value = value.value
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return f"float({str(value)!r})"
        return repr(float(value))
    if isinstance(value, str):
        text = repr(value)
        if text.startswith("'") and '"' not in value:
            text = '"' + text[1:-1] + '"'
        return text
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(py(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{py(k)}: {py(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot render {type(value).__name__} as a literal")


def call(func: str, *args: Any, **kwargs: Any) -> Code:
    """``call("nn.Conv2d", 1, 32, kernel_size=(3, 3))`` -> ``nn.Conv2d(1, 32, kernel_size=(3, 3))``."""
    parts = [py(a) for a in args]
    parts.extend(f"{ident(k)}={py(v)}" for k, v in kwargs.items())
    return Code(f"{dotted(func)}({', '.join(parts)})")


def camel_case(name: str) -> str:
    """Class name for a model: ``mnist_convnet`` -> ``MnistConvnet``."""
    words = [w for w in name.split("_") if w]
    out = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
    if out[0].isdigit():
        out = "Model" + out
    return ident(out)


def shape_comment(shape: tuple[int, ...], batch: str = "N") -> str:
    return "(" + ", ".join([batch, *(str(d) for d in shape)]) + ")"


def layer_comment(layer: ir.Layer, shape: tuple[int, ...]) -> str:
    """``# line 3: conv2d 32 3 -> (N, 26, 26, 32)``; built from parsed parts only."""
    return f"# line {layer.span.line}: {layer.source} -> {shape_comment(shape)}"


class SourceWriter:
    """Accumulates lines with indentation."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._indent = 0

    def line(self, text: str = "") -> None:
        self.lines.append(("    " * self._indent + text) if text else "")

    def blank(self, count: int = 1) -> None:
        for _ in range(count):
            self.line()

    @contextmanager
    def indent(self) -> Iterator[None]:
        self._indent += 1
        try:
            yield
        finally:
            self._indent -= 1

    def text(self) -> str:
        while self.lines and not self.lines[-1]:
            self.lines.pop()
        return "\n".join(self.lines) + "\n"


def docstring_text(text: str) -> str:
    """``text`` made safe inside a triple-quoted docstring: quotes and backslashes escaped,
    unprintable characters (newlines, U+2028, ...) written as escapes. ``repr`` alone is not
    enough: a single-quoted repr keeps three double quotes as they are, closing the docstring."""
    return "".join(
        "\\" + ch if ch in '\\"' else ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def source_name(filename: str) -> str:
    """How generated files name their source: as given when relative, the file's name alone when
    absolute (no path of the machine that generated it), `text` for a string."""
    if filename == "<string>":
        return "text"
    if PurePosixPath(filename).is_absolute() or PureWindowsPath(filename).is_absolute():
        return PureWindowsPath(filename).name if "\\" in filename else PurePosixPath(filename).name
    return filename


def module_docstring(model: ir.Model, target: str, framework_note: str) -> str:
    from ._version import __version__

    origin = source_name(model.filename)
    summary = f"{model.name}: {len(model.layers)} layers, {model.total_params:,} parameters"
    return (
        f'"""{summary}.\n\n'
        f"Generated by layerdsl {__version__} from {docstring_text(origin)} for {target}. {framework_note}\n"
        f'Regenerate with `layerdsl compile` instead of editing by hand.\n"""'
    )


def exec_generated(source: str, filename: str) -> dict[str, Any]:
    """Run generated source in a fresh namespace and return it.

    The source is parsed first; tracebacks show the generated lines.
    """
    tree = ast.parse(source, filename=filename)
    code = compile(tree, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": f"layerdsl_generated_{abs(hash(filename)):x}"}
    exec(code, namespace)
    return namespace
