"""Syntax tree -> checked IR: resolve layer names, validate arguments, infer shapes.

Every error points at the text to blame (the layer name, the option, the
value) and, where one exists, suggests the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import expressions
from .arguments import bind_args, choice, convert, did_you_mean, framework_name_hint, identifier
from .errors import LayerCheckError, LayerCheckWarning, Span
from .ir import (
    INPUT_NAME,
    Args,
    BlockCall,
    BlockDef,
    Input,
    Layer,
    LayerNode,
    Model,
    Node,
    Repeat,
    Shape,
    Tap,
    Weight,
    layers_of,
)
from .parser import Item, Option, Program, Reference, Statement, Value
from .specs import DIRECTIVES, MAX_DIM, REGISTRY, LayerSpec, Param, ShapeError, shape_text

INPUT_DTYPES = ("float32", "int32", "int64")
INPUT_LAYOUTS = ("channels_last", "channels_first")
MAX_ELEMENTS = 2**31 - 1  # per example activation or per weight tensor
MAX_REPEAT = 10_000
MAX_LAYERS = 100_000
MAX_INPUT_RANK = 8  # numpy arrays hold at most 64 axes; no layer here needs more than 3
MAX_BLOCK_DEPTH = 64
MAX_NESTING_TOTAL = 160  # bodies within block calls within bodies...: bounds the checker's recursion


MAX_ERRORS = 20  # reported per file; more are usually one mistake seen many times


def check(program: Program, *, filename: str = "<string>", source: str = "", default_name: str = "model") -> Model:
    """Check a parsed program and return its IR.

    Raises LayerCheckError for the first problem in the source, with every other independent
    one in its ``additional``: after an error, checking goes on with what does not depend on
    the failed statement's output (later statements' arguments and names, other branches, other
    block instances); a shape error ends only the chain it is in.
    """
    checker = _Checker(filename, default_name)
    try:
        model = checker.run(program, source)
    except LayerCheckError as exc:
        raise exc.located(filename, source) from None
    for warning in model.warnings:
        warning.located(filename, source)
    return model


class _Enough(Exception):
    """MAX_ERRORS errors are reported: stop checking."""


def model_name_from_path(stem: str) -> str:
    """A Python identifier from a file stem (`mnist-convnet` -> `mnist_convnet`)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem).strip("_") or "model"
    if name[0].isdigit():
        name = "model_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name


@functools.lru_cache(maxsize=256)
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
        #: Every model input by name, in declared order (the first is ``self.input``).
        self.inputs: dict[str, Input] = {}
        self.outputs: tuple[str, ...] = ()
        self.output_span: Span | None = None
        self.top = _Scope.top()
        self.layers: list[Layer] = []
        self.used_names: set[str] = set()
        self.instances: set[str] = set()
        self.depth = 0
        #: The structure being recorded: one list per open block instance or repeat iteration.
        self.nodes: list[list[Node]] = [[]]
        self.errors: list[LayerCheckError] = []
        self.warnings: list[LayerCheckWarning] = []
        self.reported: set[tuple[Span | None, str]] = set()
        self.written: dict[int, str] = {}
        #: "in block ... called on line ..." for each open block call, outermost first.
        self.calls: list[str] = []

    def record(self, exc: LayerCheckError) -> None:
        """Keep an error (once: block bodies are checked once per call) and carry on."""
        for error in exc.all_errors():
            key = (error.span, error.message)
            if key in self.reported:
                continue
            self.reported.add(key)
            error.additional = ()
            error.notes = (*error.notes, *reversed(self.calls))
            self.errors.append(error)
        if len(self.errors) >= MAX_ERRORS:
            raise _Enough

    def run(self, program: Program, source: str) -> Model:
        items = list(program.statements)
        self.explicit_names = _explicit_names(items)
        self.blocks: dict[str, _BlockDef] = {}
        body: list[Item] = []
        seen_layers = False
        try:
            for item in items:
                try:
                    if isinstance(item, Statement) and item.name == "model":
                        self._model_directive(item, seen_layers)
                    elif isinstance(item, Statement) and item.name == "input" and self.input is None and not seen_layers:
                        self._input_directive(item, seen_layers)
                    elif isinstance(item, Statement) and item.name == "block":
                        self._define_block(item)
                    else:
                        seen_layers = True
                        body.append(item)
                except LayerCheckError as exc:
                    self.record(exc)
            if not body:
                span = items[-1].span if items else Span(1, 1, 1, 1)
                self.record(LayerCheckError(
                    "the model has no layers",
                    span=span,
                    hint="write at least one layer, e.g. `dense 10 in=20`",
                ))
                return self._finish(None, source)
            self._check_expansion(body)
            try:
                self._settle_input(body[0])
            except LayerCheckError as exc:
                self.record(exc)
            model_input = _Tensor.unknown()
            if self.input is not None:
                model_input = self._add_input(self.input)
            output = self._run_items(body, self.top, model_input)
        except _Enough:
            return self._finish(None, source)
        return self._finish(output, source)

    def _finish(self, output: _Tensor | None, source: str) -> Model:
        if not self.errors and output is not None:
            try:
                self._check_all_used(output)
            except LayerCheckError as exc:
                self.errors.append(exc)
        if self.errors:
            self.errors[0].additional = tuple(self.errors[1:])
            raise self.errors[0]
        assert output is not None and self.input is not None
        structure = tuple(self.nodes[0])
        blocks = tuple(definition.ir() for definition in self.blocks.values())
        outputs = self.outputs or (output.name,)
        return Model(self.model_name, self.input, layers_of(structure), self.filename, source, output=outputs[0],
                     blocks=blocks, body=structure, warnings=tuple(self.warnings), inputs=tuple(self.inputs.values()),
                     outputs=outputs)

    def _check_expansion(self, body: list[Item]) -> None:
        """Refuse, before expanding anything, models whose repeats and blocks multiply past MAX_LAYERS."""
        sizes: dict[str, int] = {}

        def size(items: Iterable[Item], active: frozenset[str]) -> int:
            total = 0
            for item in items:
                if isinstance(item, Reference):
                    continue
                count_value = _constant(item.positionals[0]) if item.name == "repeat" and item.positionals else None
                if count_value is not None:
                    count = max(count_value, 0)
                    total += count * sum(size(b, active) for b in item.bodies)
                elif item.name in self.blocks and item.name not in active:  # recursion is reported later
                    if item.name not in sizes:
                        sizes[item.name] = size(self.blocks[item.name].body, active | {item.name})
                    total += sizes[item.name]
                else:
                    total += 1 + sum(size(b, active) for b in item.bodies)
                if total > MAX_LAYERS:
                    return total
            return total

        running = 0
        for item in body:
            running += size([item], frozenset())
            if running > MAX_LAYERS:
                span = item.name_span if isinstance(item, Statement) else item.span
                raise LayerCheckError(
                    f"the model expands to more than {MAX_LAYERS:,} layers",
                    span=span,
                    hint="repeats and blocks multiply: check the counts",
                )

    # --- evaluation: statements act on the current tensor ------------------------------

    def _run_items(self, items: Iterable[Item], scope: _Scope, current: _Tensor) -> _Tensor:
        self.depth += 1
        try:
            return self._run_items_at_depth(items, scope, current)
        finally:
            self.depth -= 1

    def _run_items_at_depth(self, items: Iterable[Item], scope: _Scope, current: _Tensor) -> _Tensor:
        if self.depth > MAX_NESTING_TOTAL:
            item = next(iter(items), None)
            span = item.span if item is not None else Span(1, 1, 1, 1)
            raise LayerCheckError(
                f"bodies and block calls nest more than {MAX_NESTING_TOTAL} deep",
                span=span,
                hint="flatten the structure: fewer nested blocks, or `repeat`",
            )
        for item in items:
            try:
                current = self._run_item(item, scope, current)
            except LayerCheckError as exc:
                self.record(exc)
                current = _Tensor.unknown()
            except _NeedsShape:  # in_channels after a failed statement: the error is reported already
                current = _Tensor.unknown()
        return current

    def _run_item(self, item: Item, scope: _Scope, current: _Tensor) -> _Tensor:
        if isinstance(item, Reference):
            return scope.tap(item.name, item.span)
        stmt = item
        top_level = scope is self.top and len(self.nodes) == 1 and self.depth == 1  # not in a body
        if stmt.name in ("input", "output") and top_level:
            return self._later_input(stmt) if stmt.name == "input" else self._output_directive(stmt, scope, current)
        if stmt.name in ("model", "input", "output", "block"):
            where = "before the first layer" if stmt.name == "model" else "at the top level"
            raise LayerCheckError(f"`{stmt.name}` is only allowed {where}", span=stmt.name_span)
        if stmt.name != "tap":
            stmt = _resolve(stmt, current, scope.entry or current)
        if stmt.name == "tap":
            self._tap(stmt, scope, current)
        elif stmt.name == "repeat":
            current = self._repeat(stmt, scope, current)
        elif stmt.name == "residual":
            current = self._residual(stmt, scope, current)
        elif stmt.name in self.blocks:
            current = self._call_block(stmt, scope, current)
        else:
            spec = self._lookup(stmt)
            if spec.merge:
                current = self._merge(stmt, spec, scope, current)
            elif spec.reads_memory:
                current = self._with_memory(stmt, spec, scope, current)
            else:
                self._no_bodies(stmt)
                self._no_refs(stmt)
                values = bind_args(stmt, spec)
                current = self._add_layer(stmt, spec, values, [current], scope)
        return current

    def _tap(self, stmt: Statement, scope: _Scope, current: _Tensor) -> None:
        self._no_bodies(stmt)
        if len(stmt.positionals) != 1 or stmt.options or stmt.positionals[0].kind != "name":
            raise LayerCheckError("`tap` takes one name", span=stmt.span, hint="write e.g. `tap skip1`, then use `@skip1`")
        name = identifier(stmt.positionals[0], "tap name", emitted=False)
        if name in self.inputs:
            raise LayerCheckError(
                f"`{name}` is the name of a model input; a tap needs a name of its own",
                span=stmt.positionals[0].span,
                hint=f"`@{name}` already reads that input",
            )
        scope.taps[name] = current
        self.nodes[-1].append(Tap(name, current.name, stmt.span))

    def _repeat(self, stmt: Statement, scope: _Scope, current: _Tensor) -> _Tensor:
        if len(stmt.positionals) != 1 or stmt.positionals[0].kind != "int" or stmt.options or len(stmt.bodies) != 1:
            raise LayerCheckError(
                "`repeat` takes a count and one body", span=stmt.span, hint="write e.g. `repeat 3 { conv_bn 64 }`"
            )
        count = int(stmt.positionals[0].value)  # type: ignore[arg-type]
        if not 1 <= count <= MAX_REPEAT:
            raise LayerCheckError(
                f"invalid value for the repeat count: expected 1 <= count <= {MAX_REPEAT:,}; received {count}",
                span=stmt.positionals[0].span,
            )
        start = current
        iterations = []
        for _ in range(count):
            if len(self.layers) > MAX_LAYERS:  # counts computed from block parameters escape _check_expansion
                raise LayerCheckError(f"the model expands to more than {MAX_LAYERS:,} layers", span=stmt.name_span,
                                      hint="repeats and blocks multiply: check the counts")
            self.nodes.append([])
            current = self._run_items(stmt.bodies[0], scope, current)
            iterations.append(tuple(self.nodes.pop()))
        self.nodes[-1].append(Repeat(count, stmt.span, start.name, current.name, tuple(iterations)))
        return current

    def _residual(self, stmt: Statement, scope: _Scope, current: _Tensor) -> _Tensor:
        """`residual { f }` is x + f(x); a second body `{ g }` makes it g(x) + f(x)."""
        if stmt.positionals or not 1 <= len(stmt.bodies) <= 2:
            raise LayerCheckError(
                "`residual` takes a body, and optionally a shortcut body",
                span=stmt.span,
                hint="write e.g. `residual { conv_bn 64 | conv_bn 64 }` or `residual { ... } { conv2d 64 1 }`",
            )
        project = False
        for opt in stmt.options:
            if opt.key != "project":
                raise LayerCheckError(
                    f"unknown option `{opt.key}` for `residual`",
                    span=opt.key_span,
                    hint=did_you_mean(opt.key, ["project"]) or "`residual` takes project=true|false",
                )
            project = convert(opt.value, Param("project", "bool"), "residual")
        main = self._run_items(stmt.bodies[0], scope, current)
        if len(stmt.bodies) == 2:
            shortcut = self._run_items(stmt.bodies[1], scope, current)
        elif project and main.known and current.known and main.shape != current.shape:
            shortcut = self._projection(stmt, scope, current, main)
        else:
            shortcut = current
        return self._add_layer(stmt, REGISTRY["add"], {"__spans__": {}}, [shortcut, main], scope)

    def _projection(self, stmt: Statement, scope: _Scope, x: _Tensor, target: _Tensor) -> _Tensor:
        """ResNet's projection shortcut: a strided 1x1 conv and batchnorm to the main path's shape."""
        if len(x.shape) != 3 or len(target.shape) != 3:
            raise LayerCheckError("`project=true` needs image tensors on both paths", span=stmt.name_span)
        strides = []
        for axis in range(2):
            stride = -(-x.shape[axis] // target.shape[axis])
            if -(-x.shape[axis] // stride) != target.shape[axis]:
                raise LayerCheckError(
                    f"`project=true` cannot map {shape_text(x.shape)} to {shape_text(target.shape)} with a strided conv",
                    span=stmt.name_span,
                    hint="write the shortcut yourself as a second body: `residual { ... } { ... }`",
                )
            strides.append(stride)
        span = stmt.name_span
        conv = Statement(
            "conv2d",
            span,
            (Value("int", target.shape[2], span), Value("int", 1, span)),
            (Option("stride", Value("dims", tuple(strides), span), span, span),
             Option("pad", Value("name", "same", span), span, span)),
            stmt.span,
        )
        out = self._add_layer(conv, REGISTRY["conv2d"], bind_args(conv, REGISTRY["conv2d"]), [x], scope)
        norm = Statement("batchnorm", span, (), (), stmt.span)
        return self._add_layer(norm, REGISTRY["batchnorm"], bind_args(norm, REGISTRY["batchnorm"]), [out], scope)

    def _merge(self, stmt: Statement, spec: LayerSpec, scope: _Scope, current: _Tensor) -> _Tensor:
        refs = [scope.tap(str(v.value), v.span) for v in stmt.positionals if v.kind == "ref"]
        branches = [self._run_items(body, scope, current) for body in stmt.bodies]
        inputs = [*branches, *refs] if branches else [current, *refs]
        if len(inputs) < 2:
            raise LayerCheckError(
                f"`{stmt.name}` merges two or more tensors",
                span=stmt.name_span,
                hint=f"write branches in braces, `{stmt.name} {{ }} {{ conv2d 64 3 }}`, or refer to taps: `{stmt.name} @skip`",
            )
        return self._add_layer(stmt, spec, bind_args(_without_refs(stmt), spec), inputs, scope)

    def _with_memory(self, stmt: Statement, spec: LayerSpec, scope: _Scope, current: _Tensor) -> _Tensor:
        """`attention 8 64 @memory`: the current tensor, and at most one tapped tensor it reads besides."""
        self._no_bodies(stmt)
        refs = [v for v in stmt.positionals if v.kind == "ref"]
        if len(refs) > 1:
            raise LayerCheckError(
                f"`{stmt.name}` reads at most one other tensor, received {len(refs)}",
                span=refs[1].span,
                hint=f"keys and values come from one tensor: `{stmt.name} ... @{refs[0].value}`",
            )
        inputs = [current, *(scope.tap(str(v.value), v.span) for v in refs)]
        return self._add_layer(stmt, spec, bind_args(_without_refs(stmt), spec), inputs, scope)

    # --- blocks ------------------------------------------------------------------------

    def _define_block(self, stmt: Statement) -> None:
        if not stmt.positionals or stmt.positionals[0].kind != "name" or len(stmt.bodies) != 1:
            raise LayerCheckError(
                "`block` takes a name, its parameters, and one body",
                span=stmt.span,
                hint="write e.g. `block conv_bn filters k=3 stride=1 { conv2d filters k stride=stride | batchnorm | relu }`",
            )
        head = stmt.positionals[0]
        name = identifier(head, "block name")
        if name in REGISTRY or name in DIRECTIVES:
            raise LayerCheckError(f"`{name}` is a layer name; a block needs a name of its own", span=head.span)
        if name in self.blocks:
            first = self.blocks[name].span.line
            raise LayerCheckError(f"block `{name}` is defined twice", span=head.span, notes=(f"first defined on line {first}",))
        params: list[str] = []
        for value in stmt.positionals[1:]:
            params.append(identifier(value, "block parameter", emitted=False))
            if params[-1] == "name":
                raise LayerCheckError("`name` is reserved: a block call's `name=` names the instance", span=value.span)
        defaults: dict[str, Value] = {}
        for opt in stmt.options:
            if opt.key == "name":
                raise LayerCheckError("`name` is reserved: a block call's `name=` names the instance", span=opt.key_span)
            if opt.value.kind in ("expr", "dims_expr"):
                raise LayerCheckError(
                    f"the default of `{opt.key}` must be a value, not an expression",
                    span=opt.value.span,
                    hint="compute it in the body instead, e.g. `conv2d filters*4 1`",
                )
            defaults[opt.key] = opt.value
        names = [*params, *defaults]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise LayerCheckError(f"block parameter `{duplicate}` is given twice", span=stmt.span)
        self.blocks[name] = _BlockDef(name, tuple(params), defaults, stmt.bodies[0], head.span)
        used = _names_used(stmt.bodies[0])
        spans = {str(v.value): v.span for v in stmt.positionals[1:]} | {o.key: o.key_span for o in stmt.options}
        for param in names:
            if param not in used:
                self.warnings.append(LayerCheckWarning(
                    f"block parameter `{param}` is never used in the body of `{name}`",
                    span=spans[param],
                    hint=f"remove it, or use it in the body, e.g. as a value: `conv2d {param} 3`",
                ))

    def _call_block(self, stmt: Statement, scope: _Scope, current: _Tensor) -> _Tensor:
        block = self.blocks[stmt.name]
        chain = scope.block_names()
        if block.name in chain:
            cycle = " -> ".join([*chain[chain.index(block.name):], block.name])
            raise LayerCheckError(f"block `{block.name}` uses itself: {cycle}", span=stmt.name_span,
                                  hint="blocks cannot be recursive; write the repetition with `repeat N { ... }`")
        self._no_bodies(stmt)
        bound: dict[str, Value] = {}
        order = list(block.signature)  # defaults may be given positionally too, as in Python
        if len(stmt.positionals) > len(order):
            extra = stmt.positionals[len(order)]
            raise LayerCheckError(
                f"block `{block.name}` takes at most {len(order)} positional argument"
                f"{'s' if len(order) != 1 else ''} ({', '.join(p.upper() for p in order) or 'none'})",
                span=extra.span,
            )
        bound.update(zip(order, stmt.positionals, strict=False))
        instance = None
        for opt in stmt.options:
            if opt.key == "name":
                instance = identifier(opt.value, "block instance name")
            elif opt.key in block.params or opt.key in block.defaults:
                if opt.key in bound:
                    raise LayerCheckError(f"`{opt.key}` is given twice", span=opt.key_span)
                bound[opt.key] = opt.value
            else:
                raise LayerCheckError(
                    f"unknown option `{opt.key}` for block `{block.name}`",
                    span=opt.key_span,
                    hint=did_you_mean(opt.key, [*block.params, *block.defaults, "name"])
                    or f"block `{block.name}` takes: {', '.join([*block.params, *block.defaults]) or 'no arguments'}",
                )
        for param in block.params:
            if param not in bound:
                raise LayerCheckError(
                    f"block `{block.name}` needs its {param.upper()} argument",
                    span=stmt.name_span,
                    hint=f"write e.g. `{block.name} {' '.join(p.upper() for p in block.params)}`",
                )
        for key, value in block.defaults.items():
            bound.setdefault(key, value)
        if instance is None:
            instance = scope.fresh_local(block.name, self._instance_unavailable)
        elif scope.prefixed(instance) in self.instances | self.used_names:
            raise LayerCheckError(f"name `{scope.prefixed(instance)}` is used twice", span=stmt.span)
        self.instances.add(scope.prefixed(instance))
        inner = scope.child(instance, block.name, stmt)
        inner.entry = current
        body = tuple(_substitute(item, bound) for item in block.body)
        self.nodes.append([])
        self.calls.append(f"in block `{block.name}` ({inner.prefix}) called on line {stmt.span.line}")
        try:
            output = self._run_items(body, inner, current)
        finally:
            self.calls.pop()
        args = Args(tuple((key, _python_value(bound[key])) for key in block.signature))
        call = BlockCall(block.name, inner.prefix, args, stmt.span, current.name, output.name, tuple(self.nodes.pop()))
        self.nodes[-1].append(call)
        return output

    # --- layers ------------------------------------------------------------------------

    def _no_bodies(self, stmt: Statement) -> None:
        if stmt.bodies:
            raise LayerCheckError(
                f"`{stmt.name}` takes no body in braces",
                span=stmt.name_span,
                hint="bodies go with residual, repeat, block, and the merges add, concat, multiply, average",
            )

    def _no_refs(self, stmt: Statement) -> None:
        for value in stmt.positionals:
            if value.kind == "ref":
                raise LayerCheckError(
                    f"`{stmt.name}` reads one tensor; `@{value.value}` can only feed a merge",
                    span=value.span,
                    hint=f"switch to the tapped tensor with `@{value.value}` on its own, or merge: `concat @{value.value}`",
                )

    def _instance_unavailable(self, name: str) -> bool:
        return name in self.instances or name in self.used_names or name in self.explicit_names

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
        self.model_name = identifier(stmt.positionals[0], "model name")
        self.model_span = stmt.span

    def _input_directive(self, stmt: Statement, seen_layers: bool) -> None:
        self.input = self._parse_input(stmt, INPUT_NAME)

    def _later_input(self, stmt: Statement) -> _Tensor:
        """An `input` after the first: a new model input, and a new chain that starts from it."""
        if not any(opt.key == "name" for opt in stmt.options):
            first = self.input.span if self.input is not None else None
            raise LayerCheckError(
                "`input` is given twice: each input after the first needs a name, which `@name` reads",
                span=stmt.name_span,
                hint=f"write e.g. `{stmt.source()} name=segments`",
                notes=(f"the first input is on line {first.line}",) if first else (),
            )
        return self._add_input(self._parse_input(stmt, INPUT_NAME))

    def _add_input(self, model_input: Input) -> _Tensor:
        """Register a model input under its name: a tensor `@name` reads."""
        name = model_input.name
        span = model_input.span or Span(1, 1, 1, 1)
        if name in self.inputs:
            first = self.inputs[name].span
            raise LayerCheckError(f"input name `{name}` is used twice", span=span,
                                  notes=(f"first used on line {first.line}",) if first else ())
        if name in self.used_names or name in self.instances:
            raise LayerCheckError(f"input name `{name}` is already a layer's name", span=span)
        self.inputs[name] = model_input
        self.used_names.add(name)
        tensor = _Tensor(name, model_input.shape, model_input.dtype, None, None)
        self.top.taps[name] = tensor
        return tensor

    def _output_directive(self, stmt: Statement, scope: _Scope, current: _Tensor) -> _Tensor:
        """`output @a @b`: the model's outputs, in order."""
        if self.output_span is not None:
            raise LayerCheckError("`output` is given twice", span=stmt.name_span,
                                  notes=(f"first given on line {self.output_span.line}",))
        self._no_bodies(stmt)
        if not stmt.positionals or stmt.options or any(v.kind != "ref" for v in stmt.positionals):
            raise LayerCheckError("`output` takes the tensors the model returns, as `@name`s", span=stmt.span,
                                  hint="write e.g. `output @logits @score` after `tap logits` ... `tap score`")
        self.output_span = stmt.span
        names: list[str] = []
        for value in stmt.positionals:
            tensor = scope.tap(str(value.value), value.span)
            if not tensor.known:
                continue
            if tensor.layer is None:
                raise LayerCheckError(f"`@{value.value}` is a model input; an output must be a layer's result",
                                      span=value.span)
            if tensor.name in names:
                raise LayerCheckError(f"`@{value.value}` is an output twice", span=value.span)
            names.append(tensor.name)
        self.outputs = tuple(names)
        return current

    def _parse_input(self, stmt: Statement, name: str) -> Input:
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
        if len(dims) > MAX_INPUT_RANK:
            raise LayerCheckError(
                f"`input` has {len(dims):,} axes; layerdsl takes at most {MAX_INPUT_RANK}", span=value.span
            )
        for d in dims:
            if d < 1:
                raise LayerCheckError("input dimensions must be at least 1", span=value.span)
            if d > MAX_DIM:
                raise LayerCheckError(f"input dimension {d:,} is larger than {MAX_DIM:,}", span=value.span)
        dtype, layout = "float32", "channels_last"
        for opt in stmt.options:
            if opt.key == "dtype":
                dtype = choice(opt.value, INPUT_DTYPES, "dtype")
            elif opt.key == "layout":
                layout = choice(opt.value, INPUT_LAYOUTS, "layout")
            elif opt.key == "name":
                name = identifier(opt.value, "input name")
            else:
                raise LayerCheckError(
                    f"unknown option `{opt.key}` for `input`",
                    span=opt.key_span,
                    hint=did_you_mean(opt.key, ("dtype", "layout", "name")) or "`input` takes dtype=, layout= and name=",
                )
        if layout == "channels_first":
            if len(dims) < 2:
                raise LayerCheckError(
                    "layout=channels_first needs a shape with channels and spatial axes, e.g. 3x32x32",
                    span=value.span,
                )
            dims = (*dims[1:], dims[0])
        self._check_elements(dims, value.span, "the input", " per example")
        return Input(dims, dtype, layout, stmt.span, declared=True, name=name)

    def _settle_input(self, first: Item) -> None:
        """The model input: from `input`, or from the first layer's `in=N`."""
        stmt = first if isinstance(first, Statement) else None
        if stmt is not None and stmt.name not in (*DIRECTIVES, *self.blocks):
            self._lookup(stmt)  # an unknown name is the problem, not the input it cannot know
        spec = REGISTRY.get(stmt.name) if stmt is not None else None
        size = None
        if stmt is not None and spec is not None and spec.takes_input_size and not stmt.bodies:
            size = bind_args(stmt, spec).get("in")
        if self.input is not None:
            if size is not None and self.input.shape != (size,):
                assert stmt is not None
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
        name = first.name if isinstance(first, Statement) else first.source()
        if spec is not None and spec.takes_input_size:
            hint = f"add `in=N` to the first `{name}`, or start the model with `input N`"
        span = first.name_span if isinstance(first, Statement) else first.span
        raise LayerCheckError(
            f"missing input shape: the first layer `{name}` cannot know its input size",
            span=span,
            hint=hint,
        )

    # --- layers ----------------------------------------------------------------------

    def _lookup(self, stmt: Statement) -> LayerSpec:
        spec = REGISTRY.get(stmt.name)
        if spec is None:
            known = [*REGISTRY, *DIRECTIVES, *self.blocks]
            hint = framework_name_hint(stmt.name) or did_you_mean(stmt.name, known)
            raise LayerCheckError(
                f"unknown layer `{stmt.name}`",
                span=stmt.name_span,
                hint=hint or "see docs/language.md for the layers layerdsl knows",
            )
        return spec

    def _add_layer(
        self, stmt: Statement, spec: LayerSpec, values: dict[str, Any], inputs: list[_Tensor], scope: _Scope
    ) -> _Tensor:
        spans: dict[str, Span] = values.pop("__spans__")
        given_name = values.pop("name", None)
        later = next((i for i in self.inputs.values() if i is not self.input and inputs and inputs[0].name == i.name
                      and inputs[0].layer is None), None)
        if values.get("in") is not None and later is not None:
            raise self._error_at_option(
                stmt,
                "in",
                f"`in=` conflicts with `input` on line {later.span.line if later.span else '?'}, which starts "
                "this chain",
                hint="remove `in=`; the chain's input size comes from its `input`",
            )
        if values.get("in") is not None and self.layers:
            raise self._error_at_option(
                stmt,
                "in",
                "`in=` sets the model's input size and is allowed only on the first layer",
                hint="remove `in=`; this layer's input size comes from the layer before it",
            )
        args = Args(tuple((k, v) for k, v in values.items()))
        if not all(tensor.known for tensor in inputs):
            return _Tensor.unknown()
        for tensor in inputs:
            self._check_dtype(stmt, spec, tensor)
        origins = [t.mask_origin for t in inputs if t.mask_origin is not None]
        masked = bool(origins)
        # Attention masks its keys by the memory's mask (its input's, for self-attention) and passes
        # the query's on, as Keras's MultiHeadAttention does: either may be missing, or two masks.
        query_origin = inputs[0].mask_origin
        if spec.reads_memory:
            masked = inputs[-1].mask_origin is not None
        if masked and spec.merge:
            self._check_merged_masks(stmt, inputs, origins)
        if masked and (not spec.supports_mask or (len(inputs) > 1 and not spec.reads_memory and not spec.merge)):
            origin = origins[0]
            raise LayerCheckError(
                f"`{stmt.name}` cannot use the mask made by `{origin.source}` on line {origin.span.line}",
                span=stmt.name_span,
                hint="Keras would drop the mask with only a warning, so padding would count as data; consume it "
                "first (lstm, gru, simplernn, bidirectional, globalavgpool1d) or remove the mask",
            )
        masked_inputs = [t for t in inputs if t.mask_origin is not None]
        taken = next((t.mask_taken_by for t in masked_inputs if t.mask_taken_by), None)
        if spec.merge and any(t.mask_taken_by is None for t in masked_inputs):
            taken = None  # Keras merges the masks its inputs still carry: the same mask
        if taken is not None:
            raise LayerCheckError(
                f"`{stmt.name}` reads a masked tensor that `{taken.source.split()[0]}` on line {taken.span.line} "
                "already read: Keras's MultiHeadAttention deletes the mask of the tensors it reads, so this layer "
                "would see the padding as data",
                span=stmt.name_span,
                hint="read the masked tensor with one attention layer only, or consume the mask before a second reader",
            )
        shape = inputs[0].shape
        try:
            if spec.merge:
                out_shape = spec.merge_shape(args, tuple(t.shape for t in inputs))
                weights: tuple[Weight, ...] = ()
            elif spec.reads_memory:
                memory = inputs[1].shape if len(inputs) > 1 else None
                spec.validate(args, shape, memory=memory)  # type: ignore[call-arg]
                out_shape = spec.output_shape(args, shape)
                weights = spec.weights(args, shape, memory=memory)  # type: ignore[call-arg]
            else:
                spec.validate(args, shape)
                out_shape = spec.output_shape(args, shape)
                weights = spec.weights(args, shape)
        except ShapeError as exc:
            span = spans.get(exc.option, stmt.name_span) if exc.option else stmt.name_span
            if len(inputs) == 1:
                notes: tuple[str, ...] = (f"the input shape {shape_text(shape)} comes from {inputs[0].origin()}",)
            else:
                notes = tuple(
                    f"branch {i + 1} {shape_text(t.shape)} comes from {t.origin()}" for i, t in enumerate(inputs)
                )
            hint = _sequence_hint(inputs[0]) if len(inputs) == 1 and len(shape) == 1 else None
            raise LayerCheckError(exc.message, span=span, hint=hint or exc.hint, notes=notes) from None
        for d in out_shape:
            if d < 1:
                raise LayerCheckError(
                    f"`{stmt.name}` would produce an empty output {shape_text(out_shape)}", span=stmt.name_span
                )
        self._check_elements(out_shape, stmt.name_span, f"the output of `{stmt.name}`", " per example")
        for weight in weights:
            self._check_elements(weight.shape, stmt.name_span, f"`{stmt.name}`'s {weight.name}")
        if given_name is not None:
            name = scope.prefixed(given_name)
            if name in self.inputs:
                raise LayerCheckError(f"layer name `{name}` is already the name of a model input", span=spans["name"])
            if name in self.used_names:
                raise LayerCheckError(f"layer name `{name}` is used twice", span=spans["name"])
        else:
            name = scope.fresh_name(keras_snake_case(spec.keras_type), self._name_unavailable)
        self.used_names.add(name)
        layer = Layer(
            kind=spec.kind,
            name=name,
            args=args,
            input_shape=shape,
            output_shape=out_shape,
            weights=weights,
            span=stmt.span,
            source=stmt.source(),
            written=self._written(stmt),
            keras_type=spec.keras_type,
            input_masked=masked,
            output_masked=query_origin is not None if spec.reads_memory else spec.output_mask(args, masked),
            inputs=tuple(t.name for t in inputs),
            block=scope.chain,
            block_defs=scope.names,
            input_shapes=tuple(t.shape for t in inputs) if spec.merge or len(inputs) > 1 else (),
        )
        self.layers.append(layer)
        self.nodes[-1].append(LayerNode(layer))
        if spec.reads_memory:
            for tensor in inputs:
                tensor.mask_taken_by = layer if tensor.mask_origin is not None else None
        mask_origin = None
        if layer.output_masked:
            mask_origin = (query_origin if spec.reads_memory else origins[0]) if origins else layer
        return _Tensor(name, out_shape, "float32", mask_origin, layer)

    @staticmethod
    def _check_merged_masks(stmt: Statement, inputs: list[_Tensor], origins: list[Layer]) -> None:
        """A merge carries a mask on only where every input has it: Keras's elementwise merges drop
        the mask when an input has none, and its Concatenate ORs the masks, counting an unmasked input
        as every step present. Every backend holds one mask per chain, so the inputs must share it."""
        first = origins[0]
        other = next((o for o in origins if o is not first), None)
        if other is not None:
            raise LayerCheckError(
                f"`{stmt.name}` merges tensors masked by different layers: `{first.source}` on line "
                f"{first.span.line} and `{other.source}` on line {other.span.line}",
                span=stmt.name_span,
                hint="layerdsl carries one mask through a merge; make both masks in one layer, or consume one "
                "first (globalavgpool1d, a recurrent layer)",
            )
        if len(origins) != len(inputs):
            keras = "Concatenate would count every step as present" if stmt.name == "concat" else (
                "merge layers drop the mask when one of their inputs has none"
            )
            raise LayerCheckError(
                f"`{stmt.name}` joins a tensor masked by `{first.source}` on line {first.span.line} with an unmasked "
                f"one: Keras's {keras}, and the padding would count as data downstream",
                span=stmt.name_span,
                hint="mask every input alike, or consume the mask before the merge (globalavgpool1d, a recurrent "
                "layer)",
            )
        if stmt.name == "concat":
            # Keras ORs a concatenation's masks with ops that take the layer's default name
            # (`concatenate`), and then refuses to build the model; layerdsl keeps to the merges it can build.
            raise LayerCheckError(
                f"`concat` joins sequences masked by `{first.source}` on line {first.span.line}; layerdsl carries a "
                "mask through add, multiply, average, subtract, maximum and minimum, not a concatenation",
                span=stmt.name_span,
                hint="consume the mask before the concat (globalavgpool1d, a recurrent layer), or add the branches",
            )

    def _written(self, stmt: Statement) -> str:
        """The statement as written in its block (one per definition, however many instances)."""
        if stmt.written is None:
            return stmt.source()
        key = id(stmt.written)
        if key not in self.written:
            self.written[key] = stmt.written.source()
        return self.written[key]

    def _name_unavailable(self, name: str) -> bool:
        return name in self.used_names or name in self.explicit_names or name in self.blocks

    def _check_all_used(self, output: _Tensor) -> None:
        if not self.outputs and output.known and output.layer is None and self.layers:
            model_input = self.inputs[output.name]
            raise LayerCheckError(
                f"the model ends on the input `{output.name}`; an output must be a layer's result",
                span=model_input.span or Span(1, 1, 1, 1),
                hint="end the model on a layer, or declare its outputs: `output @...`",
            )
        used = {*(self.outputs or (output.name,))} | {name for layer in self.layers for name in layer.inputs}
        for name, model_input in self.inputs.items():
            if name not in used:  # Keras builds such a model too: a warning, not an error
                self.warnings.append(LayerCheckWarning(
                    f"input `{name}` is never used",
                    span=model_input.span or Span(1, 1, 1, 1),
                    hint=f"read it with `@{name}` (a merge such as `add @{name}`, or `@{name}` on its own line), "
                    "or remove it",
                ))
        for layer in self.layers:
            if layer.name not in used:
                raise LayerCheckError(
                    f"the output of `{layer.source.split()[0]}` ({layer.name}) is never used",
                    span=layer.span,
                    hint="a branch that goes nowhere: merge it (add, concat, ...) or remove it",
                )

    def _check_dtype(self, stmt: Statement, spec: LayerSpec, tensor: _Tensor) -> None:
        is_int = tensor.dtype.startswith("int")
        if spec.input_dtype == "int" and not is_int:
            raise LayerCheckError(
                f"`{stmt.name}` needs integer token ids, but its input is {tensor.dtype}",
                span=stmt.name_span,
                hint="an embedding comes first, on an integer input: `input 100 dtype=int32`",
            )
        if spec.input_dtype == "float" and is_int:
            raise LayerCheckError(
                f"`{stmt.name}` needs float input, but the model input is {tensor.dtype}",
                span=stmt.name_span,
                hint="integer inputs are token ids for an `embedding`; for other data use `dtype=float32`",
            )

    # --- helpers ---------------------------------------------------------------------

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


def _without_refs(stmt: Statement) -> Statement:
    """The statement without its `@tap` positionals (the tensors it reads), for binding its arguments."""
    positionals = tuple(v for v in stmt.positionals if v.kind != "ref")
    return Statement(stmt.name, stmt.name_span, positionals, stmt.options, stmt.span)


@dataclass
class _Tensor:
    """A tensor during checking: the layer that made it (or the model input), shape, dtype, mask."""

    name: str
    shape: Shape
    dtype: str
    mask_origin: Layer | None
    layer: Layer | None
    #: The attention layer that read this masked tensor: Keras's MultiHeadAttention deletes the
    #: mask of the tensors it reads, so a later reader would see none.
    mask_taken_by: Layer | None = None

    @staticmethod
    def unknown() -> _Tensor:
        """What a failed statement leaves: later layers of its chain are checked for their
        arguments only, since their input shape is unknown."""
        return _Tensor("", (), "", None, None)

    @property
    def known(self) -> bool:
        return bool(self.dtype)

    def origin(self) -> str:
        if self.layer is None:
            return "the model input" if self.name == INPUT_NAME else f"the input `{self.name}`"
        return f"`{self.layer.source.split()[0]}` on line {self.layer.span.line}"


_RECURRENT = ("lstm", "gru", "simplernn", "bidirectional")


def _sequence_hint(tensor: _Tensor) -> str | None:
    """For a sequence layer that receives a recurrent layer's last output alone: the fix."""
    layer = tensor.layer
    if layer is None or layer.kind not in _RECURRENT:
        return None
    args = layer.args["inner"] if layer.kind == "bidirectional" else layer.args
    if args["return_sequences"]:
        return None
    return (
        f"add `return_sequences=true` to the `{layer.source.split()[0]}` on line {layer.span.line}: "
        "without it, it returns only its last output, not the sequence"
    )


@dataclass
class _BlockDef:
    name: str
    params: tuple[str, ...]
    defaults: dict[str, Value]
    body: tuple[Item, ...]
    span: Span

    @property
    def signature(self) -> tuple[str, ...]:
        return (*self.params, *self.defaults)

    def ir(self) -> BlockDef:
        defaults = Args(tuple((key, _python_value(value)) for key, value in self.defaults.items()))
        return BlockDef(self.name, self.params, defaults, self.span)


def _python_value(value: Value) -> Any:
    """A block argument as the Python value a backend would render: `true` is True, `same` is "same"."""
    if value.kind == "name" and value.value in ("true", "false"):
        return value.value == "true"
    if value.kind == "dims":
        return tuple(value.value)  # type: ignore[arg-type]
    return value.value


@dataclass
class _Scope:
    """Where statements run: the top level, or one block instance (its name prefix and taps)."""

    prefix: str
    chain: tuple[str, ...]
    names: tuple[str, ...]  # block names in the call chain, for recursion checks
    parent: _Scope | None
    taps: dict[str, _Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    #: The tensor the block instance reads (its `in_channels`); None at the top level.
    entry: _Tensor | None = None

    @staticmethod
    def top() -> _Scope:
        return _Scope("", (), (), None)

    def block_names(self) -> list[str]:
        return list(self.names)

    def child(self, instance: str, block: str, stmt: Statement) -> _Scope:
        if len(self.chain) >= MAX_BLOCK_DEPTH:
            raise LayerCheckError(f"blocks nest more than {MAX_BLOCK_DEPTH} deep", span=stmt.name_span)
        name = self.prefixed(instance)
        return _Scope(name, (*self.chain, name), (*self.names, block), self)

    def prefixed(self, name: str) -> str:
        return f"{self.prefix}_{name}" if self.prefix else name

    def fresh_name(self, base: str, unavailable: Callable[[str], bool]) -> str:
        """Keras-style `base`, `base_1`, ... within this scope, prefixed by the block instance."""
        return self.prefixed(self.fresh_local(base, unavailable))

    def fresh_local(self, base: str, unavailable: Callable[[str], bool]) -> str:
        """The next free `base`, `base_1`, ... in this scope, without the instance prefix."""
        while True:
            n = self.counts.get(base, 0)
            self.counts[base] = n + 1
            local = base if n == 0 else f"{base}_{n}"
            if not unavailable(self.prefixed(local)):
                return local

    def tap(self, name: str, span: Span) -> _Tensor:
        scope: _Scope | None = self
        known: list[str] = []
        while scope is not None:
            if name in scope.taps:
                return scope.taps[name]
            known.extend(scope.taps)
            scope = scope.parent
        raise LayerCheckError(
            f"unknown tap `@{name}`",
            span=span,
            hint=did_you_mean(name, known) or "name a tensor first with `tap NAME`, then refer to it as `@NAME`",
        )


def _substitute(item: Item, bound: dict[str, Value]) -> Item:
    """A block body item with parameter names replaced by the bound values (inside expressions too)."""
    if isinstance(item, Reference):
        return item
    numbers = {k: int(v.value) if v.kind == "int" else v.source() for k, v in bound.items()}  # type: ignore[arg-type]

    def value(v: Value) -> Value:
        if v.kind == "name":
            return bound.get(str(v.value), v)
        if v.kind == "expr":
            return dataclasses.replace(v, value=expressions.substitute(v.value, numbers))  # type: ignore[arg-type]
        if v.kind == "dims_expr":
            parts = tuple(p if isinstance(p, int) else expressions.substitute(p, numbers) for p in v.value)  # type: ignore[union-attr]
            return dataclasses.replace(v, value=parts)
        return v

    return dataclasses.replace(
        item,
        written=item.written or item,
        positionals=tuple(value(v) for v in item.positionals),
        options=tuple(dataclasses.replace(o, value=value(o.value)) for o in item.options),
        bodies=tuple(tuple(_substitute(i, bound) for i in body) for body in item.bodies),
    )


def _names_used(items: Iterable[Item]) -> set[str]:
    """Every name written as a value in the items, bodies included (block parameters in use)."""
    used: set[str] = set()
    for item in items:
        if isinstance(item, Statement):
            values = [*item.positionals, *(o.value for o in item.options)]
            used.update(str(v.value) for v in values if v.kind in ("name", "ref"))
            used.update(name for v in values for name in _expression_names(v))
            for body in item.bodies:
                used |= _names_used(body)
    return used


class _NeedsShape(Exception):
    """`in_channels` read where the input is unknown (after an error): the statement is skipped."""


def _expression_names(value: Value) -> set[str]:
    if value.kind == "expr":
        return expressions.names(value.value)  # type: ignore[arg-type]
    if value.kind == "dims_expr":
        return set().union(*(expressions.names(p) for p in value.value if not isinstance(p, int)))  # type: ignore[union-attr]
    return set()


def _constant(value: Value) -> int | None:
    """An integer, or an expression of integers alone (a repeat count), else None."""
    if value.kind == "int":
        return int(value.value)  # type: ignore[arg-type]
    if value.kind == "expr" and not expressions.names(value.value):  # type: ignore[arg-type]
        try:
            return expressions.evaluate(value.value, expressions.environment({}))  # type: ignore[arg-type]
        except LayerCheckError:
            return None
    return None


def _resolve(stmt: Statement, current: _Tensor, entry: _Tensor) -> Statement:
    """The statement with its expressions evaluated: `channels` is the last axis of the tensor it
    reads, `in_channels` that of the tensor its block instance reads (at the top level, the same);
    names left in an expression are not the block's parameters."""

    def lookup(name: expressions.Name) -> int:
        if name.name in expressions.SHAPE_NAMES:
            tensor = entry if name.name == expressions.CHANNELS else current
            if not tensor.known:
                raise _NeedsShape
            return tensor.shape[-1]
        raise LayerCheckError(
            f"unknown name `{name.name}` in an expression",
            span=name.span,
            hint="expressions read integers, the enclosing block's parameters, `in_channels` (the channel count "
            "of the tensor the block reads) and `channels` (that of the tensor the statement reads)",
        )

    def value(v: Value) -> Value:
        if v.kind == "name" and v.value in expressions.SHAPE_NAMES:
            return Value("int", lookup(expressions.Name(str(v.value), v.span)), v.span)
        if v.kind == "expr":
            return Value("int", expressions.evaluate(v.value, lookup), v.span)  # type: ignore[arg-type]
        if v.kind == "dims_expr":
            parts = tuple(p if isinstance(p, int) else expressions.evaluate(p, lookup) for p in v.value)  # type: ignore[union-attr]
            return Value("dims", parts, v.span)
        return v

    if not any(_expression_names(v) or v.kind in ("expr", "dims_expr") or v.value in expressions.SHAPE_NAMES
               for v in (*stmt.positionals, *(o.value for o in stmt.options))):
        return stmt
    return dataclasses.replace(
        stmt,
        written=stmt.written or stmt,
        positionals=tuple(value(v) for v in stmt.positionals),
        options=tuple(dataclasses.replace(o, value=value(o.value)) for o in stmt.options),
    )


def _explicit_names(items: Iterable[Item]) -> set[str]:
    """Every `name=` at the top level, so default names never take one a later layer asks for."""
    return {
        str(o.value.value)
        for item in items
        if isinstance(item, Statement) and item.name != "block"
        for o in item.options
        if o.key == "name" and o.value.kind == "name"
    }


__all__ = ["check", "keras_snake_case", "model_name_from_path"]
