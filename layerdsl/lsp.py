"""The language server, ``layerdsl lsp``: diagnostics, hover, completion, definitions, symbols, formatting.

It speaks the Language Server Protocol over stdio through pygls (``pip install 'layerdsl[lsp]'``).
The first half of this module reads `.layers` text and knows nothing of the protocol: positions
are (line, column) counted from 1 in code points, as ``errors.Span`` counts them. The second half,
``make_server``, adapts it to LSP (lines and characters from 0, in the client's code units).
Diagnostics come from ``diagnostics.diagnose`` only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import LayerDSLError, Span
from .initializers import INITIALIZERS
from .ir import BlockCall, Tap, walk
from .parser import Program, Reference, Statement, parse_syntax
from .specs import ACTIVATIONS, DIRECTIVES, REGISTRY, LayerSpec, Param, shape_text

if TYPE_CHECKING:
    from .ir import Layer, Model

Position = tuple[int, int]  # (line, column) from 1, in code points

DIRECTIVE_DOCS = {
    "model": "`model NAME`: the model's name (a Python identifier).",
    "input": "`input SHAPE [dtype=int32] [layout=channels_first] [name=NAME]`: a model input, without the batch "
    "axis; an `input` after the first (named) starts a new chain, and `@NAME` reads it.",
    "output": "`output @a @b ...`: the model's outputs, in order (without it, the last tensor).",
    "block": "`block NAME PARAMS... [key=default...] { ... }`: a reusable group of layers.",
    "repeat": "`repeat N { ... }`: the body N times in a row.",
    "residual": "`residual { f } [{ shortcut }]`: x + f(x), or shortcut(x) + f(x).",
    "tap": "`tap NAME`: names the current tensor; `@NAME` continues from it or feeds it to a merge.",
}


# --- reading the text ------------------------------------------------------------------


@dataclass(frozen=True)
class Occurrence:
    """A block or tap name where it is defined or used; ``scope`` is the enclosing block definition."""

    kind: str  # "block" or "tap"
    name: str
    span: Span
    definition: bool
    scope: str | None
    statement: Statement | None = None  # the `block` or `tap` statement, for definitions


@dataclass
class Analysis:
    """What the server knows about one version of a document."""

    text: str
    program: Program | None
    model: Model | None
    occurrences: list[Occurrence] = field(default_factory=list)
    statements: list[tuple[Statement, str | None]] = field(default_factory=list)

    @property
    def blocks(self) -> dict[str, Statement]:
        return {o.name: o.statement for o in self.occurrences if o.kind == "block" and o.definition and o.statement}

    def instances_at(self, name_span: Span) -> list[tuple[str, tuple[int, ...]]]:
        """The block instances the call whose name is at ``name_span`` made: (instance, output shape)."""
        if self.model is None:
            return []
        return [
            (node.instance, self._shape_of(node.output))
            for node in walk(self.model.body)
            if isinstance(node, BlockCall) and (node.span.line, node.span.column) == (name_span.line, name_span.column)
        ]

    def tap_shapes(self, name: str, defined_at: Span | None) -> list[tuple[int, ...]]:
        """The shape of the tensor a tap names, once per time its `tap` statement ran (an input's: once)."""
        if self.model is None or defined_at is None:
            return []
        for model_input in self.model.inputs:
            if model_input.name == name and model_input.span is not None and model_input.span.line == defined_at.line:
                return [model_input.shape]
        return [
            self._shape_of(node.tensor)
            for node in walk(self.model.body)
            if isinstance(node, Tap) and node.name == name and node.span.line == defined_at.line
        ]

    def _shape_of(self, tensor: str) -> tuple[int, ...]:
        assert self.model is not None
        return self.model.tensor_shape(tensor)

    def occurrence_at(self, at: Position) -> Occurrence | None:
        return next((o for o in self.occurrences if _contains(o.span, at)), None)

    def statement_at(self, at: Position) -> tuple[Statement, str | None] | None:
        return next(((s, scope) for s, scope in self.statements if _contains(s.name_span, at)), None)

    def definition_of(self, occurrence: Occurrence) -> Occurrence | None:
        """The definition an occurrence refers to: a block by name; a tap in its own block first, then the top level."""
        defs = [o for o in self.occurrences if o.definition and o.kind == occurrence.kind and o.name == occurrence.name]
        if occurrence.kind == "tap":
            for scope in dict.fromkeys((occurrence.scope, None)):
                found = [o for o in defs if o.scope == scope]
                if found:
                    return found[0]
            return None
        return defs[0] if defs else None

    def references_of(self, occurrence: Occurrence, include_definition: bool = True) -> list[Occurrence]:
        target = occurrence if occurrence.definition else self.definition_of(occurrence)
        if target is None:
            return []
        out = []
        for o in self.occurrences:
            if o.kind != target.kind or o.name != target.name:
                continue
            if o.definition:
                if o == target and include_definition:
                    out.append(o)
            elif self.definition_of(o) == target:
                out.append(o)
        return out

    def layers_of(self, stmt: Statement) -> list[Layer]:
        """The checked layers a statement made (several when a block or `repeat` runs it more than once)."""
        if self.model is None:
            return []
        return [layer for layer in self.model.layers if layer.span == stmt.span]


def _contains(span: Span, at: Position) -> bool:
    """Whether the cursor is on the span, counting a cursor just after its last character."""
    return (span.line, span.column) <= at <= (span.end_line, span.end_column)


def _walk(items: tuple[Any, ...], scope: str | None) -> Iterator[tuple[Statement | Reference, str | None]]:
    for item in items:
        yield item, scope
        if isinstance(item, Statement):
            inner = scope
            if item.name == "block" and scope is None and item.positionals and item.positionals[0].kind == "name":
                inner = str(item.positionals[0].value)
            for body in item.bodies:
                yield from _walk(body, inner)


def analyze(text: str) -> Analysis:
    """Parse (and, where the text is correct, check) a document; never raises for the user's mistakes."""
    from .checker import check

    try:
        program = parse_syntax(text, "<lsp>")
    except LayerDSLError:
        return Analysis(text, None, None)
    try:
        model = check(program, filename="<lsp>", source=text)
    except LayerDSLError:
        model = None
    analysis = Analysis(text, program, model)
    walked = list(_walk(program.statements, None))
    block_names = {
        str(item.positionals[0].value)
        for item, scope in walked
        if isinstance(item, Statement) and item.name == "block" and scope is None
        and item.positionals and item.positionals[0].kind == "name"
    }
    for item, scope in walked:
        if isinstance(item, Reference):
            analysis.occurrences.append(Occurrence("tap", item.name, item.span, False, scope))
            continue
        analysis.statements.append((item, scope))
        head = item.positionals[0] if item.positionals else None
        if item.name == "block" and head is not None and head.kind == "name" and scope is None:
            analysis.occurrences.append(Occurrence("block", str(head.value), head.span, True, None, item))
        elif item.name == "tap" and head is not None and head.kind == "name":
            analysis.occurrences.append(Occurrence("tap", str(head.value), head.span, True, scope, item))
        elif item.name == "input" and scope is None:  # an input's name is a tensor `@name` reads, as a tap's
            named = next((o.value for o in item.options if o.key == "name" and o.value.kind == "name"), None)
            if named is not None:
                analysis.occurrences.append(Occurrence("tap", str(named.value), named.span, True, None, item))
        elif item.name in block_names:
            analysis.occurrences.append(Occurrence("block", item.name, item.name_span, False, scope))
        for value in item.positionals:
            if value.kind == "ref":
                analysis.occurrences.append(Occurrence("tap", str(value.value), value.span, False, scope))
    return analysis


# --- what hover shows ------------------------------------------------------------------


def _value_text(value: Any) -> str:
    from .graph.model import value_text as dsl_spelling  # the diagram's spelling of argument values

    return "none" if value is None else dsl_spelling(value)


def _param_line(param: Param) -> str:
    if param.positional:
        shown = param.name.upper() if param.required else f"[{param.name.upper()}={_value_text(param.default)}]"
    else:
        shown = f"{param.name}=" if param.required else f"{param.name}={_value_text(param.default)}"
    doc = f" — {param.doc}" if param.doc else ""
    choices = f" (one of {', '.join(param.choices)})" if param.choices and len(param.choices) <= 4 else ""
    return f"- `{shown}`{doc}{choices}"


def layer_signature(name: str, spec: LayerSpec) -> str:
    positional = [p.name.upper() if p.required else f"[{p.name.upper()}]" for p in spec.params if p.positional]
    return " ".join([name, *positional])


def block_signature(stmt: Statement) -> str:
    """``block conv_bn filters k stride=1``: the definition's head as written, without its body."""
    return stmt.source()


def hover_markdown(analysis: Analysis, at: Position) -> tuple[str, Span] | None:
    """Markdown for the thing under the cursor, and the span it covers."""
    occurrence = analysis.occurrence_at(at)
    if occurrence is not None:
        definition = analysis.definition_of(occurrence)
        if occurrence.kind == "block" and definition is not None and definition.statement is not None:
            text = f"```layers\n{block_signature(definition.statement)}\n```\nblock defined on line {definition.span.line}"
            made = analysis.instances_at(occurrence.span)
            if made:
                text += "\n\n" + "\n".join(f"`{name}`: output shape `{shape_text(shape)}`  " for name, shape in made[:8])
            return text, occurrence.span
        if occurrence.kind == "tap":
            where = f"defined on line {definition.span.line}" if definition else "not defined"
            shapes = analysis.tap_shapes(occurrence.name, definition.span if definition else None)
            shown = ", ".join(f"`{shape_text(shape)}`" for shape in dict.fromkeys(shapes))
            statement = definition.statement if definition is not None else None
            what = "input" if statement is not None and statement.name == "input" else "tap"
            return f"{what} `@{occurrence.name}`, {where}" + (f"; shape {shown}" if shown else ""), occurrence.span
    found = analysis.statement_at(at)
    if found is None:
        return None
    stmt, _scope = found
    if stmt.name in DIRECTIVE_DOCS:
        return DIRECTIVE_DOCS[stmt.name], stmt.name_span
    spec = REGISTRY.get(stmt.name)
    if spec is None:
        return None
    lines = [f"```layers\n{layer_signature(stmt.name, spec)}\n```", spec.doc, ""]
    layers = analysis.layers_of(stmt)
    if layers:
        for layer in layers[:8]:
            lines.append(f"`{layer.name}`: output shape `{shape_text(layer.output_shape)}`, {layer.params:,} parameters  ")
        if len(layers) > 8:
            lines.append(f"... and {len(layers) - 8} more instances  ")
    elif analysis.model is None:
        lines.append("_shapes are shown once the model has no errors_")
    lines.append("")
    lines.extend(_param_line(p) for p in spec.params)
    lines.append("- `name=` — the layer's name (default: Keras-style, from its type)")
    return "\n".join(lines).strip(), stmt.name_span


# --- completion ------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # "layer", "directive", "block", "option", "value", "tap"
    detail: str = ""
    documentation: str = ""
    insert: str | None = None


_BLOCK_DEF = re.compile(r"(?:^|[|{])[ \t]*block[ \t]+([A-Za-z_]\w*)([^{\n|]*)", re.MULTILINE)
_TAP_DEF = re.compile(r"(?:^|[|{ \t])tap[ \t]+([A-Za-z_]\w*)", re.MULTILINE)
_COMMENT = re.compile(r'"(?:[^"\\\r\n]|\\[^\r\n])*"|#[^\r\n]*')


def _without_comments(text: str) -> str:
    """Comments blanked out (strings kept), so names inside comments are not offered."""
    return _COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith('"') else " " * len(m.group(0)), text)


def _defined_blocks(text: str) -> dict[str, list[str]]:
    """Block name -> its parameters as written (``filters``, ``k=3``), read leniently: the text may not parse."""
    return {m.group(1): m.group(2).split() for m in _BLOCK_DEF.finditer(_without_comments(text))}


def complete(text: str, at: Position) -> list[Completion]:
    """What may come at the cursor: statement names, a statement's options, option values, or taps after `@`."""
    lines = text.split("\n")
    if not 1 <= at[0] <= len(lines):
        return []
    before = lines[at[0] - 1][: at[1] - 1]
    if "#" in _COMMENT.sub(lambda m: "s" * len(m.group(0)) if m.group(0).startswith('"') else m.group(0), before):
        return []  # inside a comment
    statement = re.split(r"[|{}]", before)[-1]
    word = re.search(r"[@A-Za-z0-9_=.+-]*$", statement).group(0)  # type: ignore[union-attr]
    words = statement[: len(statement) - len(word)].split()
    blocks = _defined_blocks(text)
    if word.startswith("@"):
        taps = dict.fromkeys(_TAP_DEF.findall(_without_comments(text)))
        return [Completion(name, "tap", "tap", insert=name) for name in taps]
    if not words:
        items = [Completion(name, "layer", layer_signature(name, spec), spec.doc) for name, spec in REGISTRY.items()]
        items += [Completion(name, "directive", "directive", DIRECTIVE_DOCS[name]) for name in DIRECTIVES]
        items += [Completion(name, "block", f"block {name} {' '.join(params)}".strip()) for name, params in blocks.items()]
        return items
    params = _params_for(words, blocks)
    if "=" in word:
        key = word.split("=", 1)[0]
        param = next((p for p in params if p.name == key), None)
        return [Completion(value, "value", key) for value in _values_for(param)] if param else []
    spec = REGISTRY.get(words[0])
    if spec is not None and spec.wraps and len(words) == 1:
        return [Completion(kind, "layer", f"wrapped by {words[0]}", REGISTRY[kind].doc) for kind in spec.wraps]
    given = {w.split("=", 1)[0] for w in words if "=" in w}
    return [
        Completion(f"{p.name}=", "option", "required" if p.required else f"default: {_default_text(p)}",
                   p.doc, insert=f"{p.name}=")
        for p in params
        if not p.positional and p.name not in given
    ]


def _params_for(words: list[str], blocks: dict[str, list[str]]) -> list[Param]:
    """The options a statement that starts with ``words`` takes."""
    head = words[0]
    if head in blocks:
        params = []
        for written in blocks[head]:
            name, _, default = written.partition("=")
            params.append(Param(name, "block", **({"default": default} if default else {}), doc="block parameter"))
        return [*params, Param("name", "name", default=None, doc="the block instance's name")]
    spec = REGISTRY.get(head)
    if spec is None:
        return []
    params = list(spec.params)
    if spec.wraps and len(words) > 1 and words[1] in REGISTRY:
        params += [p for p in REGISTRY[words[1]].params if p.name not in {q.name for q in params}]
    return [*params, Param("name", "name", default=None, doc="the layer's name")]


def _default_text(param: Param) -> str:
    """A default as written: block defaults are kept as the text of their definition."""
    return str(param.default) if param.type == "block" else _value_text(param.default)


def _values_for(param: Param) -> tuple[str, ...]:
    if param.choices:
        return param.choices
    if param.type == "bool":
        return ("true", "false")
    if param.name == "activation":
        return ACTIVATIONS
    if param.name.endswith("init"):
        return INITIALIZERS
    return ()


# --- the protocol ----------------------------------------------------------------------


def make_server():  # type: ignore[no-untyped-def]
    """The pygls server with every feature registered (imports pygls: call only with the `lsp` extra)."""
    from lsprotocol import types as lsp
    from pygls.lsp.server import LanguageServer

    from . import __version__
    from .diagnostics import diagnose
    from .formatter import format_text

    server = LanguageServer("layerdsl", __version__)
    cache: dict[str, tuple[int | None, Analysis]] = {}

    def document(uri: str):  # type: ignore[no-untyped-def]
        return server.workspace.get_text_document(uri)

    def analysis_of(uri: str) -> Analysis:
        doc = document(uri)
        cached = cache.get(uri)
        if cached is None or cached[0] != doc.version or cached[1].text != doc.source:
            cache[uri] = (doc.version, analyze(doc.source))
        return cache[uri][1]

    def units(doc: Any, line_text: str) -> int:
        return int(doc.position_codec.client_num_units(line_text))

    def to_client(doc: Any, line: int, column: int) -> Any:
        """(line, column) from 1 in code points -> an LSP position."""
        lines = doc.source.split("\n")
        if line > len(lines):
            return lsp.Position(line=len(lines) - 1, character=units(doc, lines[-1]))
        return lsp.Position(line=line - 1, character=units(doc, lines[line - 1][: column - 1]))

    def from_client(doc: Any, position: Any) -> Position:
        lines = doc.source.split("\n")
        if position.line >= len(lines):
            return (len(lines), len(lines[-1]) + 1)
        text, counted, column = lines[position.line], 0, 0
        while column < len(text) and counted < position.character:
            counted += units(doc, text[column])
            column += 1
        return (position.line + 1, column + 1)

    def span_range(doc: Any, span: Span) -> Any:
        return lsp.Range(start=to_client(doc, span.line, span.column), end=to_client(doc, span.end_line, span.end_column))

    def publish(uri: str) -> None:
        doc = document(uri)
        items = []
        for d in diagnose(doc.source, filename=doc.filename or uri):
            whole = lsp.Range(start=to_client(doc, d.line, d.column), end=to_client(doc, d.end_line, d.end_column))
            related = []
            for note in d.notes:
                mentioned = re.search(r"\bline (\d+)", note)
                line = int(mentioned.group(1)) if mentioned else None
                where = span_range(doc, Span(line, 1, line, 1)) if line else whole
                related.append(lsp.DiagnosticRelatedInformation(lsp.Location(uri=uri, range=where), note))
            items.append(
                lsp.Diagnostic(
                    range=whole,
                    message=d.message + (f"\nhint: {d.hint}" if d.hint else ""),
                    severity=lsp.DiagnosticSeverity.Error if d.severity == "error" else lsp.DiagnosticSeverity.Warning,
                    source="layerdsl",
                    related_information=related or None,
                )
            )
        server.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, version=doc.version, diagnostics=items)
        )

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: lsp.DidOpenTextDocumentParams) -> None:
        publish(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: lsp.DidChangeTextDocumentParams) -> None:
        publish(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: lsp.DidCloseTextDocumentParams) -> None:
        cache.pop(params.text_document.uri, None)
        server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(params: lsp.HoverParams) -> lsp.Hover | None:
        doc = document(params.text_document.uri)
        found = hover_markdown(analysis_of(doc.uri), from_client(doc, params.position))
        if found is None:
            return None
        text, span = found
        return lsp.Hover(
            contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text), range=span_range(doc, span)
        )

    kinds = {
        "layer": lsp.CompletionItemKind.Class,
        "directive": lsp.CompletionItemKind.Keyword,
        "block": lsp.CompletionItemKind.Function,
        "option": lsp.CompletionItemKind.Property,
        "value": lsp.CompletionItemKind.EnumMember,
        "tap": lsp.CompletionItemKind.Variable,
    }

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["@", "="]))
    def completion(params: lsp.CompletionParams) -> lsp.CompletionList:
        doc = document(params.text_document.uri)
        items = [
            lsp.CompletionItem(
                label=c.label,
                kind=kinds[c.kind],
                detail=c.detail or None,
                documentation=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=c.documentation)
                if c.documentation else None,
                insert_text=c.insert,
            )
            for c in complete(doc.source, from_client(doc, params.position))
        ]
        return lsp.CompletionList(is_incomplete=False, items=items)

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def definition(params: lsp.DefinitionParams) -> lsp.Location | None:
        doc = document(params.text_document.uri)
        analysis = analysis_of(doc.uri)
        occurrence = analysis.occurrence_at(from_client(doc, params.position))
        target = analysis.definition_of(occurrence) if occurrence else None
        return lsp.Location(uri=doc.uri, range=span_range(doc, target.span)) if target else None

    @server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
    def references(params: lsp.ReferenceParams) -> list[lsp.Location]:
        doc = document(params.text_document.uri)
        analysis = analysis_of(doc.uri)
        occurrence = analysis.occurrence_at(from_client(doc, params.position))
        if occurrence is None:
            return []
        found = analysis.references_of(occurrence, params.context.include_declaration)
        return [lsp.Location(uri=doc.uri, range=span_range(doc, o.span)) for o in found]

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def symbols(params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
        doc = document(params.text_document.uri)
        analysis = analysis_of(doc.uri)
        out: list[lsp.DocumentSymbol] = []
        by_block: dict[str, lsp.DocumentSymbol] = {}
        for o in analysis.occurrences:
            if not o.definition or o.statement is None:
                continue
            symbol = lsp.DocumentSymbol(
                name=o.name if o.kind == "block" else f"@{o.name}",
                kind=lsp.SymbolKind.Function if o.kind == "block" else lsp.SymbolKind.Variable,
                detail=block_signature(o.statement) if o.kind == "block" else "tap",
                range=span_range(doc, o.statement.span),
                selection_range=span_range(doc, o.span),
                children=[] if o.kind == "block" else None,
            )
            if o.kind == "block":
                by_block[o.name] = symbol
                out.append(symbol)
            elif o.scope in by_block:
                by_block[o.scope].children.append(symbol)  # type: ignore[union-attr]
            else:
                out.append(symbol)
        return out

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def formatting(params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
        doc = document(params.text_document.uri)
        try:
            formatted = format_text(doc.source)
        except LayerDSLError:
            return None  # the diagnostics already say what is wrong
        if formatted == doc.source:
            return []
        lines = doc.source.split("\n")
        end = lsp.Position(line=len(lines) - 1, character=units(doc, lines[-1]))
        return [lsp.TextEdit(range=lsp.Range(start=lsp.Position(line=0, character=0), end=end), new_text=formatted)]

    return server


def serve() -> None:
    """Run the server on stdin/stdout until the client says exit."""
    make_server().start_io()
