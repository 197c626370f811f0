"""One imported statement as `.layers` text, and the fewest `name=` options that keep the framework's names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..checker import keras_snake_case
from ..specs import REGISTRY
from ._common import Statement


def _value_text(value: Any, kind: str) -> str:
    if kind == "bool":
        return "true" if value else "false"
    if kind == "float":
        return repr(float(value))
    if kind == "int":
        return str(int(value))
    if kind == "size2":
        h, w = value
        return str(h) if h == w else f"{h}x{w}"
    if kind == "shape":
        return "x".join(str(int(d)) for d in value)
    return str(value)


def _arguments_text(kind: str, args: dict[str, Any]) -> list[str]:
    """Positional values then ``key=value`` options, leaving out every default."""
    spec = REGISTRY[kind]
    parts: list[str] = []
    for param in spec.params:
        if param.name not in args or param.name == "in":
            continue
        value = args[param.name]
        default = args.get("pool") if param.name == "stride" and "pool" in args else param.default
        if not param.required and value == default:
            continue
        text = _value_text(value, param.type)
        parts.append(text if param.positional else f"{param.name}={text}")
    return parts


def statement_text(stmt: Statement, name: str | None, refs: Sequence[str] = ()) -> str:
    """The statement's line: kind, ``@tap`` references (merges), positionals, options, ``name=``."""
    parts = [stmt.kind, *(f"@{ref}" for ref in refs)]
    if REGISTRY[stmt.kind].wraps:
        inner = stmt.args["layer"]
        parts += [inner, *_arguments_text(inner, stmt.args["inner"])]
        parts += _arguments_text(stmt.kind, {k: v for k, v in stmt.args.items() if k not in ("layer", "inner")})
    elif REGISTRY[stmt.kind].reads_memory:  # `attention 8 64 @memory`: the tensor it reads after its sizes
        arguments = _arguments_text(stmt.kind, stmt.args)
        positional = [part for part in arguments if "=" not in part]
        parts = [stmt.kind, *positional, *(f"@{ref}" for ref in refs), *arguments[len(positional) :]]
    else:
        parts += _arguments_text(stmt.kind, stmt.args)
    if name is not None:
        parts.append(f"name={name}")
    return " ".join(parts)


def default_names(statements: Sequence[Statement], explicit: dict[int, str]) -> list[str]:
    """The names the checker gives, with ``explicit`` (index -> name) given as ``name=``."""
    used: set[str] = set()
    counts: dict[str, int] = {}
    taken = set(explicit.values())
    names = []
    for index, stmt in enumerate(statements):
        if index in explicit:
            used.add(explicit[index])
            names.append(explicit[index])
            continue
        base = keras_snake_case(REGISTRY[stmt.kind].keras_type)
        while True:
            n = counts.get(base, 0)
            counts[base] = n + 1
            name = base if n == 0 else f"{base}_{n}"
            if name not in used and name not in taken:
                used.add(name)
                names.append(name)
                break
    return names


def explicit_names(statements: Sequence[Statement]) -> dict[int, str]:
    """The fewest ``name=`` options that keep every framework layer name (where it is a valid name)."""
    explicit: dict[int, str] = {}
    seen: set[str] = set()
    for index, stmt in enumerate(statements):
        if stmt.wanted_name is not None and stmt.wanted_name not in seen:
            explicit[index] = stmt.wanted_name
            seen.add(stmt.wanted_name)
    target = default_names(statements, explicit)
    for index in list(explicit):
        trial = {i: n for i, n in explicit.items() if i != index}
        if default_names(statements, trial) == target:
            explicit = trial
    return explicit
