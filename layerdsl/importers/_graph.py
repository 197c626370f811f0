"""A graph of imported layers -> `.layers` text, for every importer.

An importer adds one statement per framework layer with the tensors it reads
(``Graph.add``); ``finish`` writes the text and checks it. Branches that fork
from one tensor and meet again at one merge are written as nested bodies:
``concat { a } { b }``, ``residual { f }`` (an ``add`` of a tensor and a path
from it), ``residual { f } { g }`` (an ``add`` of two paths, the one made
first the main path). A graph whose branches do not nest that way (a merge reading a
tensor from before its fork, as DenseNet's concatenations do) is written flat
with taps: ``tap NAME`` after a tensor read out of turn, ``@NAME`` to continue
from it, ``concat @NAME`` to merge with it.

Text order is the checker's layer order (a merge's bodies, then the merge), so
the statements come back in the order of the checked model's layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .. import ir
from ..errors import LayerDSLError
from ._common import ModelImportError, Statement
from ._text import default_names, explicit_names, statement_text

#: The model input's tensor in a Graph.
INPUT = 0


@dataclass
class Graph:
    """Statements and the tensors each reads; tensor ``i > 0`` is the output of the i-th statement added."""

    statements: list[Statement | None] = field(default_factory=list)  # None: a model input after the first
    reads: list[tuple[int, ...]] = field(default_factory=lambda: [()])  # by tensor; the input reads nothing
    #: Every model input's tensor, the first (INPUT) included, with its name, shape and dtype.
    inputs: list[tuple[int, str, tuple[int, ...], str]] = field(default_factory=list)

    def add(self, stmt: Statement, inputs: tuple[int, ...]) -> int:
        self.statements.append(stmt)
        self.reads.append(inputs)
        return len(self.statements)

    def add_input(self, name: str, shape: tuple[int, ...], dtype: str) -> int:
        """A model input: INPUT for the first, a tensor of its own for each one after it."""
        if not self.inputs:
            self.inputs.append((INPUT, name, shape, dtype))
            return INPUT
        self.statements.append(None)
        self.reads.append(())
        self.inputs.append((len(self.statements), name, shape, dtype))
        return len(self.statements)

    def statement(self, tensor: int) -> Statement | None:
        """The statement that computes ``tensor`` (None for a model input)."""
        return None if tensor == INPUT else self.statements[tensor - 1]


# --- what the text is made of ---------------------------------------------------------------


@dataclass
class _Layer:
    index: int
    refs: tuple[int, ...] = ()  # tapped tensors a merge reads after the current one (flat form)


@dataclass
class _Merge:
    index: int
    bodies: list[list[_Item]]
    residual: bool  # `residual { main } [{ shortcut }]`; else `<merge> { } { }` in input order


@dataclass
class _Ref:
    tensor: int  # `@NAME`: continue from this tensor


@dataclass
class _Tap:
    tensor: int  # `tap NAME`: name the current tensor


@dataclass
class _Input:
    tensor: int  # `input SHAPE name=NAME`: a model input after the first, starting a chain


@dataclass
class _Outputs:
    tensors: tuple[int, ...]  # `output @a @b`


_Item = _Layer | _Merge | _Ref | _Tap | _Input | _Outputs


class _NotNested(Exception):
    """The graph's branches do not nest as bodies; it is written with taps instead."""


class _Nester:
    """Writes a graph as a chain with nested bodies, or raises _NotNested."""

    def __init__(self, graph: Graph, no_residual: set[int]) -> None:
        self.graph = graph
        self.reads = graph.reads
        self.users: list[list[int]] = [[] for _ in self.reads]
        for index, reads in enumerate(self.reads):
            for tensor in dict.fromkeys(reads):
                self.users[tensor].append(index)
        self.no_residual = no_residual

    def ancestors(self, tensor: int) -> set[int]:
        """``tensor`` and every tensor it is computed from."""
        seen, pending = {tensor}, [tensor]
        while pending:
            for read in self.reads[pending.pop()]:
                if read not in seen:
                    seen.add(read)
                    pending.append(read)
        return seen

    def descendants(self, tensor: int) -> set[int]:
        """Every tensor computed from ``tensor`` (not itself)."""
        seen: set[int] = set()
        pending = [tensor]
        while pending:
            for user in self.users[pending.pop()]:
                if user not in seen:
                    seen.add(user)
                    pending.append(user)
        return seen

    def region(self, start: int, stop: int, allowed: set[int]) -> list[_Item]:
        """The items that compute ``stop`` from ``start``, using only the tensors in ``allowed``."""
        items: list[_Item] = []
        current = start
        while current != stop:
            users = [u for u in self.users[current] if u in allowed]
            if len(users) == 1 and self.reads[users[0]] == (current,):
                items.append(_Layer(users[0]))
                current = users[0]
                continue
            merge = self.meet(current, stop, allowed)
            items.append(self.merge(current, merge, allowed))
            current = merge
        return items

    def meet(self, fork: int, stop: int, allowed: set[int]) -> int:
        """The first tensor every path from ``fork`` to ``stop`` passes through."""
        inside = sorted((self.descendants(fork) & allowed) | {fork}, reverse=True)  # statement order is topological
        after: dict[int, set[int]] = {}
        for node in inside:
            users = [u for u in self.users[node] if u in allowed]
            if node == stop:
                after[node] = {node}
            elif not users:
                raise _NotNested
            else:
                after[node] = set.intersection(*(after[u] for u in users)) | {node}
        return min(after[fork] - {fork})

    def merge(self, fork: int, merge: int, allowed: set[int]) -> _Merge:
        stmt = self.graph.statement(merge)
        if stmt is None or stmt.kind not in ("add", "multiply", "average", "subtract", "maximum", "minimum", "concat"):
            raise _NotNested
        below = self.descendants(fork) & allowed
        bodies: list[list[_Item]] = []
        claimed: set[int] = set()
        for tensor in self.reads[merge]:
            if tensor == fork:
                bodies.append([])
                continue
            branch = self.ancestors(tensor) & below
            if tensor not in below or branch & claimed:
                raise _NotNested
            for node in branch:
                reads_inside = all(r in branch or r == fork for r in self.reads[node])
                used_inside = all(u in branch or u == merge for u in self.users[node])
                if not (reads_inside and used_inside):
                    raise _NotNested
            claimed |= branch
            bodies.append(self.region(fork, tensor, branch))
        if any(u != merge and u not in claimed for u in self.users[fork] if u in allowed):
            raise _NotNested
        if stmt.kind in ("concat", "subtract"):
            return _Merge(merge, bodies, residual=False)  # their order is their output's order
        # the other merges are commutative: their bodies go in the order their layers were made
        first = [min(_order(body), default=merge) for body in bodies]
        if stmt.kind == "add" and len(bodies) == 2 and any(bodies) and merge not in self.no_residual:
            # `residual { main } { shortcut }` makes main's layers first and reads the shortcut first
            main = 0 if first[0] < first[1] else 1
            return _Merge(merge, [bodies[main], bodies[1 - main]], residual=True)
        made = [first[i] for i in range(len(bodies)) if bodies[i]]
        if made != sorted(made):
            bodies = [body for _, body in sorted(zip(first, bodies, strict=True), key=lambda pair: pair[0])]
        return _Merge(merge, bodies, residual=False)


def _flat(graph: Graph, output: int, outputs: tuple[int, ...] = ()) -> list[_Item]:
    """Statement order, with a tap wherever a tensor is read out of turn (and `output @...` for several)."""
    items: list[_Item] = []
    current = INPUT
    tapped: set[int] = set()
    inputs = {tensor for tensor, *_ in graph.inputs[1:]}
    for index in range(1, len(graph.reads)):
        if index in inputs:
            items.append(_Input(index))
            current = index
            continue
        first, *rest = graph.reads[index]
        if first != current:
            items.append(_Ref(first))
            tapped.add(first)
        items.append(_Layer(index, tuple(rest)))
        tapped.update(rest)
        current = index
    if len(outputs) > 1:
        items.append(_Outputs(outputs))
        tapped.update(outputs)
    elif output != current:
        items.append(_Ref(output))
        tapped.add(output)
    named_inputs = {tensor for tensor, *_ in graph.inputs} if len(graph.inputs) > 1 else set()
    tapped -= named_inputs  # an input with a name is `@name` without a tap
    out: list[_Item] = [_Tap(INPUT)] if INPUT in tapped else []
    for item in items:
        out.append(item)
        if isinstance(item, _Layer) and item.index in tapped:
            out.append(_Tap(item.index))
    return out


def _order(items: list[_Item]) -> Iterator[int]:
    """Statement indices in text order: a merge's bodies, then the merge (the checker's layer order)."""
    for item in items:
        if isinstance(item, _Merge):
            for body in item.bodies:
                yield from _order(body)
            yield item.index
        elif isinstance(item, _Layer):
            yield item.index


class _Writer:
    def __init__(self, graph: Graph, names: dict[int, str], explicit: set[int]) -> None:
        self.graph = graph
        self.names = names  # statement index -> layer name
        self.explicit = explicit  # statements written with `name=`
        taken = set(names.values())
        self.input_tap = "model_input"
        while self.input_tap in taken:
            self.input_tap += "_"
        self.input_names = {tensor: name for tensor, name, *_ in graph.inputs} if len(graph.inputs) > 1 else {}

    def tap_name(self, tensor: int) -> str:
        if tensor in self.input_names:
            return self.input_names[tensor]
        return self.input_tap if tensor == INPUT else self.names[tensor]

    def input_line(self, tensor: int) -> str:
        _, name, shape, dtype = next(i for i in self.graph.inputs if i[0] == tensor)
        text = "input " + "x".join(str(d) for d in shape) + ("" if dtype == "float32" else f" dtype={dtype}")
        return text + (f" name={name}" if tensor in self.input_names else "")

    def line(self, index: int, refs: tuple[int, ...] = ()) -> str:
        stmt = self.graph.statement(index)
        assert stmt is not None
        name = self.names[index] if index in self.explicit else None
        return statement_text(stmt, name, [self.tap_name(t) for t in refs])

    def lines(self, items: list[_Item], indent: str) -> list[str]:
        out = []
        for item in items:
            if isinstance(item, _Layer):
                out.append(indent + self.line(item.index, item.refs))
            elif isinstance(item, _Ref):
                out.append(f"{indent}@{self.tap_name(item.tensor)}")
            elif isinstance(item, _Tap):
                out.append(f"{indent}tap {self.tap_name(item.tensor)}")
            elif isinstance(item, _Input):
                out.append(indent + self.input_line(item.tensor))
            elif isinstance(item, _Outputs):
                out.append(indent + "output " + " ".join(f"@{self.tap_name(t)}" for t in item.tensors))
            else:
                head = "residual" if item.residual else self.line(item.index)
                bodies = item.bodies[:1] if item.residual and not item.bodies[1] else item.bodies  # x + f(x)
                for body in bodies:
                    if not body:
                        head += " { }"
                        continue
                    out.append(f"{indent}{head} {{")
                    out += self.lines(body, indent + "  ")
                    head = "}"
                out.append(indent + head)
        return out


def finish(
    graph: Graph, output: int | tuple[int, ...], name: str, shape: tuple[int, ...], dtype: str
) -> tuple[str, ir.Model, list[Statement]]:
    """The `.layers` text, its checked model, and the statements in the order of the model's layers.

    ``output`` is the output tensor, or a tuple of them for a model with several outputs; a model
    with several inputs declares them with ``Graph.add_input`` (``shape`` and ``dtype`` are then the first's).
    """
    from ..api import parse

    if not any(graph.statements):
        raise ModelImportError("the model has no layers to import")
    outputs = output if isinstance(output, tuple) else (output,)
    if not graph.inputs:
        graph.inputs.append((INPUT, ir.INPUT_NAME, shape, dtype))
    several = len(graph.inputs) > 1 or len(outputs) > 1
    nester = _Nester(graph, set())
    used = set().union(*(nester.ancestors(t) for t in outputs))
    unused = set(range(len(graph.reads))) - used - {tensor for tensor, *_ in graph.inputs}
    if unused:
        stmt = graph.statement(min(unused))
        raise ModelImportError(f"the output of layer {stmt.label if stmt else 'input'} is never used")
    while True:
        try:
            if several:  # the nesting reads one input to one output: several are written flat, with taps
                raise _NotNested
            items = nester.region(INPUT, outputs[0], nester.ancestors(outputs[0]))
        except _NotNested:
            items = _flat(graph, outputs[0], outputs)
        order = list(_order(items))
        statements = [graph.statements[i - 1] for i in order]
        explicit = explicit_names(statements)
        # `residual` has no `name=`: an add that keeps its framework name is written as `add { } { }`
        named_residuals = {order[p] for p in explicit} & set(_residuals(items))
        if not named_residuals:
            break
        nester.no_residual |= named_residuals
    names = dict(zip(order, default_names(statements, explicit), strict=True))
    writer = _Writer(graph, names, {order[p] for p in explicit})
    lines = [] if name == "model" else [f"model {name}"]  # `model` is the default (and reserved)
    lines.append(writer.input_line(INPUT))
    lines += writer.lines(items, "")
    text = "\n".join(lines) + "\n"
    try:
        model = parse(text)
    except LayerDSLError as exc:
        raise ModelImportError(
            f"the imported model does not check: {exc.message}",
            notes=(f"imported text:\n{text}",),
        ) from None
    return text, model, statements


def _residuals(items: list[_Item]) -> Iterator[int]:
    for item in items:
        if isinstance(item, _Merge):
            if item.residual:
                yield item.index
            for body in item.bodies:
                yield from _residuals(body)
