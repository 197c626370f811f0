"""The language server in a real session over stdio: `python -m layerdsl lsp`, driven by pytest-lsp."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")
from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
URI = "file:///work/model.layers"

MODEL = """\
model tiny
input 8x8x3
block conv_bn filters k=3 { conv2d filters k pad=same bias=false | batchnorm | relu }
conv_bn 16 | tap skip
conv_bn 16 k=1 | add @skip
flatten | dense 10 | softmax
"""

_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "layerdsl", "lsp"], server_env=_env)
)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(capabilities=client_capabilities("visual-studio-code"), root_uri="file:///work")
    )
    yield
    await lsp_client.shutdown_session()  # shutdown, then exit


def _open(client: LanguageClient, text: str, version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=URI, language_id="layers", version=version, text=text))
    )


def _change(client: LanguageClient, text: str, version: int) -> None:
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=URI, version=version),
            [types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


def _at(text: str, needle: str, offset: int = 0, occurrence: int = 0) -> types.Position:
    """The LSP position (from 0) of the ``occurrence``-th ``needle`` in ``text``, plus ``offset`` characters."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index)
    return types.Position(line=line, character=index - (text.rfind("\n", 0, index) + 1) + offset)


async def _diagnostics(client: LanguageClient) -> list[types.Diagnostic]:
    await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return list(client.diagnostics[URI])


@pytest.mark.asyncio
async def test_diagnostics_follow_open_and_change_with_hint_and_notes(client: LanguageClient):
    _open(client, MODEL)
    assert await _diagnostics(client) == []

    broken = MODEL.replace("flatten | dense 10", "dense 10")  # dense on an image: a shape error with a note
    _change(client, broken, 2)
    (diagnostic,) = await _diagnostics(client)
    start = _at(broken, "dense 10")
    assert diagnostic.range == types.Range(start, types.Position(start.line, start.character + len("dense")))
    assert diagnostic.severity == types.DiagnosticSeverity.Error
    assert diagnostic.message.startswith("`dense` needs a 1-D input")
    assert "\nhint: " in diagnostic.message
    (related,) = diagnostic.related_information
    assert "comes from `add` on line 5" in related.message
    assert related.location.range.start.line == 4  # the note's line, from 0

    typo = MODEL.replace("conv_bn 16 k=1 | add @skip", "conv_bn 16 k=1 | add @skp")  # second statement on a `|` line
    _change(client, typo, 3)
    (diagnostic,) = await _diagnostics(client)
    assert diagnostic.range.start == _at(typo, "@skp")
    assert diagnostic.range.end.character - diagnostic.range.start.character == len("@skp")
    assert "unknown tap `@skp`" in diagnostic.message and "did you mean" in diagnostic.message.lower()

    _change(client, MODEL, 4)
    assert await _diagnostics(client) == []


@pytest.mark.asyncio
async def test_hover_on_a_layer_after_a_pipe_shows_shape_params_and_defaults(client: LanguageClient):
    _open(client, MODEL)
    await _diagnostics(client)
    position = _at(MODEL, "dense 10", offset=2)
    result = await client.text_document_hover_async(types.HoverParams(types.TextDocumentIdentifier(URI), position))
    text = result.contents.value
    assert "`dense`: output shape `(10,)`, 10,250 parameters" in text  # 8*8*16 = 1024 inputs: 1024*10 + 10
    assert "`activation=linear`" in text and "`init=glorot_uniform`" in text and "`bias=true`" in text
    start = _at(MODEL, "dense 10")
    assert result.range == types.Range(start, types.Position(start.line, start.character + len("dense")))

    # A layer inside a block that runs twice: one line per instance.
    result = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(URI), _at(MODEL, "batchnorm", offset=1))
    )
    assert "`conv_bn_batch_normalization`: output shape `(8, 8, 16)`, 64 parameters" in result.contents.value
    assert "`conv_bn_1_batch_normalization`: output shape `(8, 8, 16)`, 64 parameters" in result.contents.value


@pytest.mark.asyncio
async def test_hover_on_a_block_call_shows_its_signature(client: LanguageClient):
    _open(client, MODEL)
    await _diagnostics(client)
    result = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(URI), _at(MODEL, "conv_bn 16 k=1", offset=3))
    )
    assert "block conv_bn filters k=3" in result.contents.value
    assert "defined on line 3" in result.contents.value


@pytest.mark.asyncio
async def test_completion_offers_layers_options_values_blocks_and_taps(client: LanguageClient):
    text = MODEL + "conv2d 8 3 \n"
    _open(client, text)
    await _diagnostics(client)

    async def labels(line: int, character: int) -> dict[str, types.CompletionItem]:
        result = await client.text_document_completion_async(
            types.CompletionParams(types.TextDocumentIdentifier(URI), types.Position(line, character))
        )
        return {item.label: item for item in result.items}

    last = text.count("\n") - 1
    options = await labels(last, len("conv2d 8 3 "))
    assert {"stride=", "pad=", "activation=", "init=", "name="} <= set(options)
    assert options["pad="].detail == "default: valid"

    _change(client, text.replace("conv2d 8 3 \n", "conv2d 8 3 activation=\n"), 2)
    await _diagnostics(client)
    values = await labels(last, len("conv2d 8 3 activation="))
    assert {"relu", "gelu", "softmax"} <= set(values)

    _change(client, text.replace("conv2d 8 3 \n", "conv2d 8 3 init=\n"), 3)
    await _diagnostics(client)
    assert {"he_normal", "glorot_uniform"} <= set(await labels(last, len("conv2d 8 3 init=")))

    _change(client, text.replace("conv2d 8 3 \n", "relu | con\n"), 4)
    await _diagnostics(client)
    names = await labels(last, len("relu | con"))
    assert {"conv2d", "dense", "repeat", "conv_bn"} <= set(names)
    assert names["conv_bn"].kind == types.CompletionItemKind.Function

    _change(client, text.replace("conv2d 8 3 \n", "add @\n"), 5)
    await _diagnostics(client)
    assert set(await labels(last, len("add @"))) == {"skip"}


@pytest.mark.asyncio
async def test_definition_and_references_for_blocks_and_taps(client: LanguageClient):
    _open(client, MODEL)
    await _diagnostics(client)
    doc = types.TextDocumentIdentifier(URI)

    definition = await client.text_document_definition_async(
        types.DefinitionParams(doc, _at(MODEL, "conv_bn 16 k=1", offset=2))
    )
    start = _at(MODEL, "conv_bn filters")
    assert definition.range == types.Range(start, types.Position(start.line, start.character + len("conv_bn")))

    definition = await client.text_document_definition_async(types.DefinitionParams(doc, _at(MODEL, "@skip", 2)))
    assert definition.range.start == _at(MODEL, "skip")

    found = await client.text_document_references_async(
        types.ReferenceParams(
            types.ReferenceContext(include_declaration=True), doc, _at(MODEL, "conv_bn", 1)
        )
    )
    assert sorted((r.range.start.line, r.range.start.character) for r in found) == [(2, 6), (3, 0), (4, 0)]

    found = await client.text_document_references_async(
        types.ReferenceParams(types.ReferenceContext(include_declaration=False), doc, _at(MODEL, "skip"))
    )
    assert [r.range.start for r in found] == [_at(MODEL, "@skip")]


@pytest.mark.asyncio
async def test_document_symbols_list_blocks_and_taps(client: LanguageClient):
    _open(client, MODEL)
    await _diagnostics(client)
    symbols = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(types.TextDocumentIdentifier(URI))
    )
    assert [(s.name, s.kind) for s in symbols] == [
        ("conv_bn", types.SymbolKind.Function),
        ("@skip", types.SymbolKind.Variable),
    ]


@pytest.mark.asyncio
async def test_formatting_returns_the_formatter_output(client: LanguageClient):
    messy = "dense   10 in=3|relu\n\n\n\ndropout  0.5   # keep\n"
    _open(client, messy)
    await _diagnostics(client)
    (edit,) = await client.text_document_formatting_async(
        types.DocumentFormattingParams(types.TextDocumentIdentifier(URI), types.FormattingOptions(2, True))
    )
    assert edit.new_text == "dense 10 in=3 | relu\n\ndropout 0.5  # keep\n"
    assert edit.range == types.Range(types.Position(0, 0), types.Position(5, 0))


@pytest.mark.asyncio
async def test_positions_count_utf16_units_after_wide_characters(client: LanguageClient):
    text = 'dense 10 in=3 name="\U0001f600" | relu | dropout = 0.5\n'  # an emoji is two UTF-16 units
    _open(client, text)
    (diagnostic,) = await _diagnostics(client)
    assert diagnostic.message.startswith("unexpected `=`")
    assert diagnostic.range.start == types.Position(0, text.index("=", 20) + 1)
