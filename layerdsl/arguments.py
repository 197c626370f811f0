"""Arguments: a statement's positional values and `key=value` options, bound to a layer's
parameters, converted and range-checked. No shapes here: ``checker.py`` walks the structure
(blocks, repeats, branches, taps) and infers shapes; it binds each statement's arguments here.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import keyword
import math
import re
from collections.abc import Iterable
from typing import Any

from .errors import LayerCheckError, Span
from .ir import Args
from .parser import Statement, Value
from .specs import MAX_DIM, REGISTRY, LayerSpec, Param

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
RESERVED_NAMES = frozenset({"input", "inputs", "x", "model", "self"})


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """The option closest to ``word``: one that differs only in case first, then by spelling."""
    options = list(options)
    folded = [o for o in options if o.lower() == word.lower()]
    matches = folded or difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def bind_args(stmt: Statement, spec: LayerSpec) -> dict[str, Any]:
    """The statement's values by parameter name, defaults filled, plus ``__spans__``. Raises
    the first problem with every other one among its arguments in ``additional``."""
    if spec.wraps:
        return bind_wrapper(stmt, spec)
    problems: list[LayerCheckError] = []
    positional = [p for p in spec.params if p.positional]
    if len(stmt.positionals) > len(positional):
        extra = stmt.positionals[len(positional)]
        names = ", ".join(p.name.upper() for p in positional) or "no"
        took = f"takes {len(positional)} positional argument{'s' if len(positional) != 1 else ''}"
        problems.append(LayerCheckError(
            f"`{stmt.name}` {took} ({names}), but received {len(stmt.positionals)}",
            span=extra.span,
            hint=_dims_hint(stmt.positionals) or _options_hint(spec),
        ))
    values: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    for param, value in zip(positional, stmt.positionals, strict=False):
        try:
            values[param.name] = convert(value, param, stmt.name)
        except LayerCheckError as exc:
            problems.append(exc)
        spans[param.name] = value.span
    allowed = {p.name: p for p in spec.params if not p.positional}
    for opt in stmt.options:
        try:
            _bind_option(stmt, spec, opt, values, spans, positional, allowed)
        except LayerCheckError as exc:
            problems.append(exc)
    for param in spec.params:
        if param.name not in values:
            if param.name in spans:  # given, but its value was refused
                continue
            if param.required:
                problems.append(LayerCheckError(
                    f"`{stmt.name}` needs its {param.name.upper()} argument ({param.doc})",
                    span=stmt.name_span,
                    hint=f"write e.g. `{_example(stmt.name, spec)}`",
                ))
            values[param.name] = param.default
    if problems:
        problems[0].additional = tuple(problems[1:])
        raise problems[0]
    values.update(spec.fixed_args())
    spec.complete(values)
    ordered = {p.name: values[p.name] for p in spec.params}
    ordered.update((k, v) for k, v in values.items() if k not in ordered)
    ordered["__spans__"] = spans
    return ordered


def _bind_option(
    stmt: Statement,
    spec: LayerSpec,
    opt: Any,
    values: dict[str, Any],
    spans: dict[str, Span],
    positional: list[Param],
    allowed: dict[str, Param],
) -> None:
    if opt.key == "name":
        if "name" in spans:
            raise LayerCheckError("option `name` is given twice", span=opt.key_span)
        spans["name"] = opt.span
        values["name"] = identifier(opt.value, "layer name")
        return
    param = allowed.get(opt.key)
    if param is None:
        if any(p.name == opt.key for p in positional):
            raise LayerCheckError(
                f"`{opt.key}` is positional for `{stmt.name}`: write it without `{opt.key}=`",
                span=opt.key_span,
            )
        raise LayerCheckError(
            f"unknown option `{opt.key}` for `{stmt.name}`",
            span=opt.key_span,
            hint=did_you_mean(opt.key, [*allowed, "name"]) or _options_hint(spec),
        )
    if opt.key in spans:
        raise LayerCheckError(f"option `{opt.key}` is given twice", span=opt.key_span)
    spans[param.name] = opt.value.span
    values[param.name] = convert(opt.value, param, stmt.name)


def bind_wrapper(stmt: Statement, spec: LayerSpec) -> dict[str, Any]:
    """`bidirectional lstm 32 merge=sum`: the wrapper's options, the rest go to the wrapped layer."""
    choices = ", ".join(spec.wraps)
    if not stmt.positionals or stmt.positionals[0].kind != "name":
        raise LayerCheckError(
            f"`{stmt.name}` wraps a layer: one of {choices}",
            span=stmt.name_span,
            hint=f"write e.g. `{stmt.name} lstm 32`",
        )
    head = stmt.positionals[0]
    inner_name = str(head.value)
    if inner_name not in spec.wraps:
        raise LayerCheckError(
            f"`{stmt.name}` cannot wrap `{inner_name}`; it wraps one of {choices}",
            span=head.span,
            hint=did_you_mean(inner_name, spec.wraps),
        )
    own = {p.name for p in spec.params} | {"name"}
    inner_stmt = Statement(
        inner_name,
        head.span,
        stmt.positionals[1:],
        tuple(o for o in stmt.options if o.key not in own),
        stmt.span,
    )
    inner_spec = REGISTRY[inner_name]
    inner_values = bind_args(inner_stmt, inner_spec)
    inner_spans = inner_values.pop("__spans__")
    outer_stmt = Statement(stmt.name, stmt.name_span, (), tuple(o for o in stmt.options if o.key in own), stmt.span)
    values = bind_args(outer_stmt, _Unwrapped(spec))
    values["layer"] = inner_name
    values["inner"] = Args(tuple(inner_values.items()))
    values["__spans__"].update(inner_spans)
    return values


def identifier(value: Value, what: str, emitted: bool = True) -> str:
    """A validated name; ``emitted`` names become Python identifiers in generated code."""
    if value.kind != "name" or not _IDENTIFIER.match(str(value.value)):
        raise LayerCheckError(f"{what} must be a name (letters, digits, `_`)", span=value.span)
    name = str(value.value)
    if emitted and (keyword.iskeyword(name) or name.startswith("__") or name in RESERVED_NAMES):
        article = "an" if what[0] in "aeiou" else "a"
        raise LayerCheckError(f"`{name}` cannot be {article} {what}: it is reserved", span=value.span)
    if len(name) > 200:
        raise LayerCheckError(f"{what} is longer than 200 characters", span=value.span)
    return name

def choice(value: Value, choices: tuple[str, ...], key: str) -> str:
    if value.kind != "name" or value.value not in choices:
        raise LayerCheckError(
            f"invalid value for `{key}`: expected one of {', '.join(choices)}; received {key}={value.source()}",
            span=value.span,
            hint=did_you_mean(str(value.value), choices) if value.kind in ("name", "string") else None,
        )
    return str(value.value)

def convert(value: Value, param: Param, layer: str) -> Any:
    key = param.name
    received = f"received {key}={value.source()}"
    if param.type == "choice":
        return choice(value, param.choices, key)
    if param.type == "bool":
        if value.kind == "name" and value.value in ("true", "false"):
            return value.value == "true"
        raise LayerCheckError(f"invalid value for `{key}`: expected true or false; {received}", span=value.span)
    if param.type == "int":
        if value.kind != "int":
            raise LayerCheckError(f"invalid value for `{key}`: expected an integer; {received}", span=value.span)
        check_range(int(value.value), param, value)  # type: ignore[arg-type]
        return int(value.value)  # type: ignore[arg-type]
    if param.type == "float":
        if value.kind not in ("int", "float"):
            raise LayerCheckError(f"invalid value for `{key}`: expected a number; {received}", span=value.span)
        try:
            number = float(value.value)  # type: ignore[arg-type]
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise LayerCheckError(f"invalid value for `{key}`: expected a finite number; {received}", span=value.span)
        check_range(number, param, value)
        return number
    if param.type == "size2":
        if value.kind == "int":
            size = (int(value.value), int(value.value))  # type: ignore[arg-type]
        elif value.kind == "dims" and len(value.value) == 2:  # type: ignore[arg-type]
            size = tuple(value.value)  # type: ignore[arg-type,assignment]
        else:
            raise LayerCheckError(
                f"invalid value for `{key}`: expected N or HxW; {received}",
                span=value.span,
                hint=f"`{layer}` works on 2-D images: give one size, or height x width",
            )
        for n in size:
            check_range(n, param, value)
        return size
    if param.type == "padding":
        if value.kind == "name":
            return choice(value, param.choices, key)
        if value.kind not in ("int", "dims"):
            raise LayerCheckError(
                f"invalid value for `{key}`: expected {', '.join(param.choices)}, P or HxW; {received}",
                span=value.span,
            )
        return convert(value, dataclasses.replace(param, type="size2"), layer)
    if param.type == "shape":
        if value.kind == "int":
            dims: tuple[int, ...] = (int(value.value),)  # type: ignore[arg-type]
        elif value.kind == "dims":
            dims = tuple(value.value)  # type: ignore[arg-type]
        else:
            raise LayerCheckError(f"invalid value for `{key}`: expected N or AxBxC; {received}", span=value.span)
        for n in dims:
            check_range(n, param, value)
        return dims
    raise AssertionError(f"unknown parameter type {param.type}")

def check_range(number: float, param: Param, value: Value) -> None:
    low_ok = param.low is None or (number > param.low if param.low_exclusive else number >= param.low)
    high_ok = param.high is None or number < param.high
    too_big = isinstance(number, int) and number > MAX_DIM
    if low_ok and high_ok and not too_big:
        return
    if too_big:
        expected = f"at most {MAX_DIM:,}"
    elif param.low is not None and param.high is not None:
        expected = f"{param.low:g} {'<' if param.low_exclusive else '<='} {param.name} < {param.high:g}"
    elif param.low is not None:
        expected = f"{param.name} {'>' if param.low_exclusive else '>='} {param.low:g}"
    else:
        expected = f"{param.name} < {param.high:g}"
    hint = None
    if param.high == 1 and 1 <= number <= 100 and not too_big:
        hint = f"a {param.name} is a fraction, not a percentage: `{number / 100:g}` for {number:g}%"
    raise LayerCheckError(
        f"invalid value for `{param.name}`: expected {expected}; received {param.name}={value.source()}",
        span=value.span,
        hint=hint,
    )


# Keras and PyTorch class names (compared without case and `_`) -> the DSL's layer name.
_FRAMEWORK_NAMES = {
    "linear": "dense", "batchnorm1d": "batchnorm", "batchnorm2d": "batchnorm", "batchnormalization": "batchnorm",
    "layernormalization": "layernorm", "conv2d": "conv2d", "conv1d": "conv1d", "convtranspose2d": "conv2dtranspose",
    "maxpool2d": "maxpool", "avgpool2d": "avgpool", "maxpool1d": "maxpool1d", "avgpool1d": "avgpool1d",
    "adaptiveavgpool2d": "globalavgpool", "adaptivemaxpool2d": "globalmaxpool", "zeropad2d": "zeropad2d",
    "upsample": "upsample2d", "rnn": "simplernn", "relu": "relu", "relu6": "relu6", "leakyrelu": "leaky_relu",
    "gelu": "gelu", "silu": "silu", "swish": "silu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
    "elu": "elu", "selu": "selu", "softplus": "softplus", "softsign": "softsign", "identity": "linear",
}


def framework_name_hint(name: str) -> str | None:
    """`MaxPooling2D`, `maxpooling2d`, `BatchNorm2d`, `Linear`: the DSL's name for that framework class."""
    folded = name.replace("_", "").lower()
    for kind, spec in REGISTRY.items():
        if spec.keras_type.lower() == folded and spec.keras_type != "Activation":
            if kind == name.lower():
                return f"did you mean `{kind}`? (layer names are lowercase)"
            return f"did you mean `{kind}`? (`{name}` is Keras's `{spec.keras_type}`)"
    kind = _FRAMEWORK_NAMES.get(folded)
    if kind is not None and kind in REGISTRY and kind != name:
        return f"did you mean `{kind}`? (layerdsl's name for `{name}`)"
    if name.lower() in REGISTRY:
        return f"did you mean `{name.lower()}`? (layer names are lowercase)"
    return None


class _Unwrapped(LayerSpec):
    """A wrapper's own parameters, bound like an ordinary layer's."""

    def __init__(self, wrapper: LayerSpec) -> None:
        self.params = wrapper.params
        self.kind = wrapper.kind

    def complete(self, values: dict[str, Any]) -> None:
        pass


def _dims_hint(values: tuple[Value, ...]) -> str | None:
    """`reshape 1x1xc` reads as `1` and the name `x1xc`: dims hold numbers only."""
    for before, value in itertools.pairwise(values):
        touching = before.span.end_line == value.span.line and before.span.end_column == value.span.column
        if touching and value.kind == "name" and str(value.value).startswith("x") and before.kind in ("int", "dims"):
            written = f"{before.source()}{value.value}"
            return (
                f"`{written}` reads as `{before.source()}` and the name `{value.value}`: sizes in dims are numbers; "
                f"pass the whole shape as a block parameter instead (`block b shape {{ reshape shape }}`, `b 1x1x64`)"
            )
    return None


def _options_hint(spec: LayerSpec) -> str:
    options = [p.name for p in spec.params if not p.positional]
    if not options:
        return "this layer takes no options besides name="
    return "options are written key=value: " + ", ".join(f"{o}=" for o in options)


_EXAMPLE_VALUES = {"units": "64", "filters": "32", "kernel": "3", "pool": "2", "rate": "0.5", "function": "relu",
                   "vocab": "10000", "dim": "64", "value": "0.0"}


def _example(name: str, spec: LayerSpec) -> str:
    values = [_EXAMPLE_VALUES.get(p.name, p.name.upper()) for p in spec.params if p.positional]
    return " ".join([name, *values])


__all__ = ["RESERVED_NAMES", "bind_args", "choice", "convert", "did_you_mean", "identifier"]
