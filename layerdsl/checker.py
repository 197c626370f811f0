"""Syntax tree -> checked IR: resolve layer names, validate arguments, infer shapes.

Every error points at the text to blame (the layer name, the option, the
value) and, where one exists, suggests the fix.
"""

from __future__ import annotations

import difflib
import keyword
import math
import re
from collections.abc import Iterable
from typing import Any

from .errors import LayerCheckError, Span
from .ir import Args, Input, Layer, Model, Shape, Weight
from .parser import Program, Statement, Value
from .specs import DIRECTIVES, MAX_DIM, REGISTRY, LayerSpec, Param, ShapeError, shape_text

INPUT_DTYPES = ("float32", "int32", "int64")
INPUT_LAYOUTS = ("channels_last", "channels_first")
MAX_ELEMENTS = 2**31 - 1  # per example activation or per weight tensor
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED_NAMES = frozenset({"input", "inputs", "x", "model", "self"})


def check(program: Program, *, filename: str = "<string>", source: str = "", default_name: str = "model") -> Model:
    """Check a parsed program and return its IR; raise LayerCheckError on the first problem."""
    try:
        return _Checker(filename, default_name).run(program, source)
    except LayerCheckError as exc:
        raise exc.located(filename, source) from None


def model_name_from_path(stem: str) -> str:
    """A Python identifier from a file stem (`mnist-convnet` -> `mnist_convnet`)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem).strip("_") or "model"
    if name[0].isdigit():
        name = "model_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def keras_snake_case(name: str) -> str:
    """Keras's default-name rule (``keras.src.utils.naming.to_snake_case``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


class _Checker:
    def __init__(self, filename: str, default_name: str) -> None:
        self.filename = filename
        self.model_name = default_name
        self.model_span: Span | None = None
        self.input: Input | None = None
        self.layers: list[Layer] = []
        self.used_names: set[str] = set()
        self.name_counts: dict[str, int] = {}

    def run(self, program: Program, source: str) -> Model:
        explicit_names = self._explicit_names(program.statements)
        pending: list[tuple[Statement, LayerSpec, dict[str, Any]]] = []
        for stmt in program.statements:
            if stmt.name == "model":
                self._model_directive(stmt, seen_layers=bool(pending))
            elif stmt.name == "input":
                self._input_directive(stmt, seen_layers=bool(pending))
            else:
                spec = self._lookup(stmt)
                pending.append((stmt, spec, self._bind_args(stmt, spec)))
        if not pending:
            span = program.statements[-1].span if program.statements else Span(1, 1, 1, 1)
            raise LayerCheckError(
                "the model has no layers",
                span=span,
                hint="write at least one layer, e.g. `dense 10 in=20`",
            )
        self._settle_input(pending)
        assert self.input is not None
        shape = self.input.shape
        prev: Layer | None = None
        self.dtype = self.input.dtype
        self.mask_origin: Layer | None = None
        for index, (stmt, spec, values) in enumerate(pending):
            if index > 0 and values.get("in") is not None:
                raise self._error_at_option(
                    stmt,
                    "in",
                    "`in=` sets the model's input size and is allowed only on the first layer",
                    hint="remove `in=`; this layer's input size comes from the layer before it",
                )
            layer = self._layer(stmt, spec, values, shape, prev, explicit_names)
            self.layers.append(layer)
            shape = layer.output_shape
            prev = layer
            self.dtype = "float32"
            if not layer.output_masked:
                self.mask_origin = None
            elif not layer.input_masked:
                self.mask_origin = layer
        return Model(self.model_name, self.input, tuple(self.layers), self.filename, source)

    # --- directives ------------------------------------------------------------------

    def _model_directive(self, stmt: Statement, seen_layers: bool) -> None:
        if self.model_span is not None:
            raise LayerCheckError(
                "`model` is given twice", span=stmt.name_span, notes=(f"first given on line {self.model_span.line}",)
            )
        if seen_layers:
            raise LayerCheckError("`model` must come before the first layer", span=stmt.name_span)
        if len(stmt.positionals) != 1 or stmt.options or stmt.positionals[0].kind != "name":
            raise LayerCheckError(
                "`model` takes one name", span=stmt.span, hint="write e.g. `model mnist_convnet`"
            )
        self.model_name = self._identifier(stmt.positionals[0], "model name")
        self.model_span = stmt.span

    def _input_directive(self, stmt: Statement, seen_layers: bool) -> None:
        if self.input is not None:
            raise LayerCheckError("`input` is given twice", span=stmt.name_span)
        if seen_layers:
            raise LayerCheckError("`input` must come before the first layer", span=stmt.name_span)
        if len(stmt.positionals) != 1:
            raise LayerCheckError(
                "`input` takes one shape, without the batch axis",
                span=stmt.span,
                hint="write e.g. `input 28x28x1` (height x width x channels) or `input 20`",
            )
        value = stmt.positionals[0]
        if value.kind == "int":
            dims: tuple[int, ...] = (int(value.value),)  # type: ignore[arg-type]
        elif value.kind == "dims":
            dims = value.value  # type: ignore[assignment]
        else:
            raise LayerCheckError(
                f"`input` needs a shape such as 28x28x1, received `{value.source()}`", span=value.span
            )
        for d in dims:
            if d < 1:
                raise LayerCheckError("input dimensions must be at least 1", span=value.span)
            if d > MAX_DIM:
                raise LayerCheckError(f"input dimension {d:,} is larger than {MAX_DIM:,}", span=value.span)
        dtype, layout = "float32", "channels_last"
        for opt in stmt.options:
            if opt.key == "dtype":
                dtype = self._choice(opt.value, INPUT_DTYPES, "dtype")
            elif opt.key == "layout":
                layout = self._choice(opt.value, INPUT_LAYOUTS, "layout")
            else:
                raise LayerCheckError(
                    f"unknown option `{opt.key}` for `input`",
                    span=opt.key_span,
                    hint=did_you_mean(opt.key, ("dtype", "layout")) or "`input` takes dtype= and layout=",
                )
        if layout == "channels_first":
            if len(dims) < 2:
                raise LayerCheckError(
                    "layout=channels_first needs a shape with channels and spatial axes, e.g. 3x32x32",
                    span=value.span,
                )
            dims = (*dims[1:], dims[0])
        self._check_elements(dims, value.span, "the input", " per example")
        self.input = Input(dims, dtype, layout, stmt.span, declared=True)

    def _settle_input(self, pending: list[tuple[Statement, LayerSpec, dict[str, Any]]]) -> None:
        stmt, spec, values = pending[0]
        size = values.get("in")
        if self.input is not None:
            if size is not None and self.input.shape != (size,):
                raise self._error_at_option(
                    stmt,
                    "in",
                    f"`in={size}` conflicts with `input {shape_text(self.input.shape)}` on line "
                    f"{self.input.span.line if self.input.span else '?'}",
                    hint="give the input size once: either `input` or `in=`",
                )
            return
        if size is not None:
            self.input = Input((size,), "float32", "channels_last", None, declared=False)
            return
        hint = "start the model with `input SHAPE`, e.g. `input 28x28x1` (height x width x channels)"
        if spec.takes_input_size:
            hint = f"add `in=N` to the first `{stmt.name}`, or start the model with `input N`"
        raise LayerCheckError(
            f"missing input shape: the first layer `{stmt.name}` cannot know its input size",
            span=stmt.name_span,
            hint=hint,
        )

    # --- layers ----------------------------------------------------------------------

    def _lookup(self, stmt: Statement) -> LayerSpec:
        spec = REGISTRY.get(stmt.name)
        if spec is None:
            hint = did_you_mean(stmt.name, [*REGISTRY, *DIRECTIVES])
            raise LayerCheckError(
                f"unknown layer `{stmt.name}`",
                span=stmt.name_span,
                hint=hint or "see the README's language reference for the layers layerdsl knows",
            )
        return spec

    def _bind_args(self, stmt: Statement, spec: LayerSpec) -> dict[str, Any]:
        if spec.wraps:
            return self._bind_wrapper(stmt, spec)
        positional = [p for p in spec.params if p.positional]
        if len(stmt.positionals) > len(positional):
            extra = stmt.positionals[len(positional)]
            names = ", ".join(p.name.upper() for p in positional) or "no"
            took = f"takes {len(positional)} positional argument{'s' if len(positional) != 1 else ''}"
            raise LayerCheckError(
                f"`{stmt.name}` {took} ({names}), but received {len(stmt.positionals)}",
                span=extra.span,
                hint=_options_hint(spec),
            )
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for param, value in zip(positional, stmt.positionals, strict=False):
            values[param.name] = self._convert(value, param, stmt.name)
            spans[param.name] = value.span
        allowed = {p.name: p for p in spec.params if not p.positional}
        for opt in stmt.options:
            if opt.key == "name":
                if "name" in spans:
                    raise LayerCheckError("option `name` is given twice", span=opt.key_span)
                values["name"] = self._identifier(opt.value, "layer name")
                spans["name"] = opt.span
                continue
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
            values[param.name] = self._convert(opt.value, param, stmt.name)
            spans[param.name] = opt.value.span
        for param in spec.params:
            if param.name not in values:
                if param.required:
                    raise LayerCheckError(
                        f"`{stmt.name}` needs its {param.name.upper()} argument ({param.doc})",
                        span=stmt.name_span,
                        hint=f"write e.g. `{_example(stmt.name, spec)}`",
                    )
                values[param.name] = param.default
        values.update(spec.fixed_args())
        spec.complete(values)
        ordered = {p.name: values[p.name] for p in spec.params}
        ordered.update((k, v) for k, v in values.items() if k not in ordered)
        ordered["__spans__"] = spans
        return ordered

    def _bind_wrapper(self, stmt: Statement, spec: LayerSpec) -> dict[str, Any]:
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
        inner_values = self._bind_args(inner_stmt, inner_spec)
        inner_spans = inner_values.pop("__spans__")
        outer_stmt = Statement(stmt.name, stmt.name_span, (), tuple(o for o in stmt.options if o.key in own), stmt.span)
        values = self._bind_args(outer_stmt, _Unwrapped(spec))
        values["layer"] = inner_name
        values["inner"] = Args(tuple(inner_values.items()))
        values["__spans__"].update(inner_spans)
        return values

    def _layer(
        self,
        stmt: Statement,
        spec: LayerSpec,
        values: dict[str, Any],
        shape: Shape,
        prev: Layer | None,
        explicit_names: set[str],
    ) -> Layer:
        spans: dict[str, Span] = values.pop("__spans__")
        given_name = values.pop("name", None)
        args = Args(tuple((k, v) for k, v in values.items()))
        self._check_dtype(stmt, spec)
        masked = self.mask_origin is not None
        if masked and not spec.supports_mask:
            origin = self.mask_origin
            assert origin is not None
            raise LayerCheckError(
                f"`{stmt.name}` cannot use the mask made by `{origin.source}` on line {origin.span.line}",
                span=stmt.name_span,
                hint="Keras would drop the mask with only a warning, so padding would count as data; consume it "
                "first (lstm, gru, simplernn, bidirectional, globalavgpool1d) or remove the mask",
            )
        try:
            spec.validate(args, shape)
            out_shape = spec.output_shape(args, shape)
            weights = spec.weights(args, shape)
        except ShapeError as exc:
            span = spans.get(exc.option, stmt.name_span) if exc.option else stmt.name_span
            origin = f"`{prev.source.split()[0]}` on line {prev.span.line}" if prev else "the model input"
            notes = (f"the input shape {shape_text(shape)} comes from {origin}",)
            raise LayerCheckError(exc.message, span=span, hint=exc.hint, notes=notes) from None
        for d in out_shape:
            if d < 1:
                raise LayerCheckError(
                    f"`{stmt.name}` would produce an empty output {shape_text(out_shape)}", span=stmt.name_span
                )
        self._check_elements(out_shape, stmt.name_span, f"the output of `{stmt.name}`", " per example")
        for weight in weights:
            self._check_elements(weight.shape, stmt.name_span, f"`{stmt.name}`'s {weight.name}")
        name = given_name if given_name is not None else self._default_name(spec.keras_type, explicit_names)
        if given_name is not None:
            if given_name in self.used_names:
                raise LayerCheckError(f"layer name `{given_name}` is used twice", span=spans["name"])
            self.used_names.add(given_name)
        return Layer(
            kind=spec.kind,
            name=name,
            args=args,
            input_shape=shape,
            output_shape=out_shape,
            weights=weights,
            span=stmt.span,
            source=stmt.source(),
            keras_type=spec.keras_type,
            input_masked=masked,
            output_masked=spec.output_mask(args, masked),
        )

    def _check_dtype(self, stmt: Statement, spec: LayerSpec) -> None:
        is_int = self.dtype.startswith("int")
        if spec.input_dtype == "int" and not is_int:
            raise LayerCheckError(
                f"`{stmt.name}` needs integer token ids, but its input is {self.dtype}",
                span=stmt.name_span,
                hint="an embedding comes first, on an integer input: `input 100 dtype=int32`",
            )
        if spec.input_dtype == "float" and is_int:
            raise LayerCheckError(
                f"`{stmt.name}` needs float input, but the model input is {self.dtype}",
                span=stmt.name_span,
                hint="integer inputs are token ids for an `embedding`; for other data use `dtype=float32`",
            )

    # --- helpers ---------------------------------------------------------------------

    def _explicit_names(self, statements: tuple[Statement, ...]) -> set[str]:
        return {
            str(o.value.value)
            for s in statements
            for o in s.options
            if o.key == "name" and o.value.kind == "name"
        }

    def _default_name(self, keras_type: str, explicit_names: set[str]) -> str:
        base = keras_snake_case(keras_type)
        while True:
            n = self.name_counts.get(base, 0)
            self.name_counts[base] = n + 1
            name = base if n == 0 else f"{base}_{n}"
            if name not in self.used_names and name not in explicit_names:
                self.used_names.add(name)
                return name

    def _identifier(self, value: Value, what: str) -> str:
        if value.kind != "name" or not _IDENTIFIER.match(str(value.value)):
            raise LayerCheckError(f"{what} must be a name (letters, digits, `_`)", span=value.span)
        name = str(value.value)
        if keyword.iskeyword(name) or name.startswith("__") or name in _RESERVED_NAMES:
            raise LayerCheckError(f"`{name}` cannot be a {what}: it is reserved", span=value.span)
        if len(name) > 200:
            raise LayerCheckError(f"{what} is longer than 200 characters", span=value.span)
        return name

    def _choice(self, value: Value, choices: tuple[str, ...], key: str) -> str:
        if value.kind != "name" or value.value not in choices:
            raise LayerCheckError(
                f"invalid value for `{key}`: expected one of {', '.join(choices)}; received {key}={value.source()}",
                span=value.span,
                hint=did_you_mean(str(value.value), choices) if value.kind in ("name", "string") else None,
            )
        return str(value.value)

    def _convert(self, value: Value, param: Param, layer: str) -> Any:
        key = param.name
        received = f"received {key}={value.source()}"
        if param.type == "choice":
            return self._choice(value, param.choices, key)
        if param.type == "bool":
            if value.kind == "name" and value.value in ("true", "false"):
                return value.value == "true"
            raise LayerCheckError(f"invalid value for `{key}`: expected true or false; {received}", span=value.span)
        if param.type == "int":
            if value.kind != "int":
                raise LayerCheckError(f"invalid value for `{key}`: expected an integer; {received}", span=value.span)
            self._check_range(int(value.value), param, value)  # type: ignore[arg-type]
            return int(value.value)  # type: ignore[arg-type]
        if param.type == "float":
            if value.kind not in ("int", "float"):
                raise LayerCheckError(f"invalid value for `{key}`: expected a number; {received}", span=value.span)
            number = float(value.value)  # type: ignore[arg-type]
            if not math.isfinite(number):
                raise LayerCheckError(f"invalid value for `{key}`: expected a finite number; {received}", span=value.span)
            self._check_range(number, param, value)
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
                self._check_range(n, param, value)
            return size
        raise AssertionError(f"unknown parameter type {param.type}")

    def _check_range(self, number: float, param: Param, value: Value) -> None:
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
        raise LayerCheckError(
            f"invalid value for `{param.name}`: expected {expected}; received {param.name}={value.source()}",
            span=value.span,
        )

    def _check_elements(self, shape: Shape, span: Span, what: str, per: str = "") -> None:
        if math.prod(shape) > MAX_ELEMENTS:
            raise LayerCheckError(
                f"{what} has {math.prod(shape):,} elements{per}, more than the {MAX_ELEMENTS:,} "
                "that frameworks index",
                span=span,
                hint="reduce the layer or input size",
            )

    def _error_at_option(self, stmt: Statement, key: str, message: str, hint: str | None = None) -> LayerCheckError:
        span = next((o.span for o in stmt.options if o.key == key), stmt.name_span)
        return LayerCheckError(message, span=span, hint=hint)


class _Unwrapped(LayerSpec):
    """A wrapper's own parameters, bound like an ordinary layer's."""

    def __init__(self, wrapper: LayerSpec) -> None:
        self.params = wrapper.params
        self.kind = wrapper.kind

    def complete(self, values: dict[str, Any]) -> None:
        pass


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


__all__ = ["Weight", "check", "did_you_mean", "keras_snake_case", "model_name_from_path"]
