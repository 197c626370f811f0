"""The VS Code extension: valid JSON, and a TextMate grammar generated from the layer registry, never stale."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygments")  # layerdsl.lexer, which generates the grammar, is the Pygments lexer's module

from layerdsl import lexer, specs

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"
GRAMMAR = VSCODE / "syntaxes" / "layers.tmLanguage.json"
REGENERATE = "python -m layerdsl.lexer --textmate editors/vscode/syntaxes/layers.tmLanguage.json"


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_committed_textmate_grammar_is_generated_from_the_current_registry():
    committed = GRAMMAR.read_text(encoding="utf-8")
    assert committed == lexer.textmate_json(), f"{GRAMMAR.relative_to(ROOT)} is stale: run `{REGENERATE}`"


def test_the_generator_command_writes_the_grammar(tmp_path):
    out = tmp_path / "layers.tmLanguage.json"
    subprocess.run([sys.executable, "-m", "layerdsl.lexer", "--textmate", str(out)], check=True, timeout=60)
    assert out.read_text(encoding="utf-8") == lexer.textmate_json()


def test_extension_manifest_points_at_its_files():
    manifest = _load(VSCODE / "package.json")
    (language,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert language["id"] == grammar["language"] == "layers"
    assert language["extensions"] == [".layers"]
    assert grammar["scopeName"] == _load(GRAMMAR)["scopeName"] == "source.layers"
    assert (VSCODE / grammar["path"]).is_file()
    config = _load(VSCODE / language["configuration"])
    assert config["comments"]["lineComment"] == "#"
    assert ["{", "}"] in config["brackets"]
    assert re.compile(config["wordPattern"]).fullmatch("@skip")


def _regexes(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("match", "begin", "end"):
                yield value
            else:
                yield from _regexes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _regexes(item)


def test_grammar_regexes_compile():
    found = list(_regexes(_load(GRAMMAR)))
    assert len(found) > 10
    for pattern in found:
        re.compile(pattern)


# A small TextMate engine, enough for this grammar: at each position the leftmost match of the
# patterns wins, the first pattern on a tie (TextMate's rule); `begin`/`end` regions do not nest here.


def _flatten(patterns: list[dict], repository: dict) -> list[dict]:
    rules = []
    for rule in patterns:
        if "include" in rule:
            rules += _flatten([repository[rule["include"].lstrip("#")]], repository)
        elif "patterns" in rule and "match" not in rule and "begin" not in rule:
            rules += _flatten(rule["patterns"], repository)
        else:
            rules.append(rule)
    return rules


def scopes(line: str) -> list[tuple[str, str]]:
    """(scope, text) for each scoped piece of one line."""
    grammar = _load(GRAMMAR)
    rules = _flatten(grammar["patterns"], grammar["repository"])
    found, pos = [], 0
    while pos < len(line):
        best = None
        for rule in rules:
            m = re.compile(rule.get("match") or rule["begin"]).search(line, pos)
            if m and m.end() > m.start() and (best is None or m.start() < best[1].start()):
                best = (rule, m)
        if best is None:
            break
        rule, m = best
        if "begin" in rule:
            pos = m.end()
            while True:  # inside the region its own patterns (escapes) go first when they start earlier
                end = re.compile(rule["end"]).search(line, pos)
                inner = [n for p in rule.get("patterns", []) if (n := re.compile(p["match"]).search(line, pos))]
                first = min(inner, key=lambda n: n.start(), default=None)
                if first is None or first.start() >= end.start():
                    break
                pos = first.end()
            found.append((rule["name"], line[m.start() : end.end()]))
            pos = end.end()
            continue
        if "name" in rule:
            found.append((rule["name"], m.group()))
        for group, capture in sorted(rule.get("captures", {}).items()):
            if m.group(int(group)):
                found.append((capture["name"], m.group(int(group))))
        pos = m.end()
    return found


@pytest.mark.parametrize("name", sorted(specs.REGISTRY))
def test_every_registered_layer_is_scoped_as_a_layer_in_the_textmate_grammar(name):
    assert scopes(f"{name} 3") == [("support.function.layer.layers", name), ("constant.numeric.integer.layers", "3")]


def test_textmate_grammar_scopes_each_part_of_a_statement():
    line = 'model net | input 28x28x1 | conv2d 32 3 pad=same bias=false eps=1e-3 nme=x | tap @a { } "s\\"" # c'
    assert scopes(line) == [
        ("keyword.control.directive.layers", "model"),
        ("entity.name.type.layers", "net"),
        ("punctuation.separator.statement.layers", "|"),
        ("keyword.control.directive.layers", "input"),
        ("constant.numeric.dims.layers", "28x28x1"),
        ("punctuation.separator.statement.layers", "|"),
        ("support.function.layer.layers", "conv2d"),
        ("constant.numeric.integer.layers", "32"),
        ("constant.numeric.integer.layers", "3"),
        ("variable.parameter.option.layers", "pad"),
        ("keyword.operator.assignment.layers", "="),
        ("constant.other.value.layers", "same"),
        ("variable.parameter.option.layers", "bias"),
        ("keyword.operator.assignment.layers", "="),
        ("constant.language.boolean.layers", "false"),
        ("variable.parameter.option.layers", "eps"),
        ("keyword.operator.assignment.layers", "="),
        ("constant.numeric.float.layers", "1e-3"),
        ("variable.other.option.unknown.layers", "nme"),
        ("keyword.operator.assignment.layers", "="),
        ("constant.other.value.layers", "x"),
        ("punctuation.separator.statement.layers", "|"),
        ("keyword.control.directive.layers", "tap"),
        ("variable.other.reference.layers", "@a"),
        ("punctuation.section.block.begin.layers", "{"),
        ("punctuation.section.block.end.layers", "}"),
        ("string.quoted.double.layers", '"s\\""'),
        ("comment.line.number-sign.layers", "# c"),
    ]


# --- the VS Code language client (VS Code itself cannot run here: the manifest is read, and the
# extension's entry point runs under node with stand-ins for the `vscode` and client modules) ---


def test_extension_manifest_starts_the_language_client_on_layers_files():
    manifest = _load(VSCODE / "package.json")
    assert "onLanguage:layers" in manifest["activationEvents"]
    assert (VSCODE / manifest["main"]).is_file()
    assert manifest["dependencies"]["vscode-languageclient"].startswith("^9.")
    # vscode-languageclient 9 needs VS Code 1.82 or newer.
    assert tuple(int(p) for p in manifest["engines"]["vscode"].lstrip("^").split(".")[:2]) >= (1, 82)
    settings = manifest["contributes"]["configuration"]["properties"]
    script = (VSCODE / manifest["main"]).read_text(encoding="utf-8")
    section = re.search(r'getConfiguration\("(\w+)"\)', script).group(1)
    read = re.findall(r'config\.get\("([\w.]+)"\)', script)
    assert read, "the extension reads no settings"
    for key in read:
        assert f"{section}.{key}" in settings, f"the extension reads {section}.{key}, which package.json does not declare"
    # The default command is a real subcommand of the installed CLI.
    default = [settings["layerdsl.server.path"]["default"], *settings["layerdsl.server.args"]["default"]]
    assert default == ["layerdsl", "lsp"]
    from layerdsl.cli import build_parser

    assert build_parser().parse_args(default[1:]).command == "lsp"


_HARNESS = r"""
const Module = require("module");
const settings = JSON.parse(process.argv[3]);
const made = [];
const fakes = {
  vscode: { workspace: { getConfiguration: (section) => ({ get: (key) => settings[section + "." + key] }) } },
  "vscode-languageclient/node": {
    TransportKind: { stdio: 0 },
    LanguageClient: class {
      constructor(id, name, server, client) { made.push({ id, name, server, client }); this.started = false; }
      start() { made[made.length - 1].started = true; return Promise.resolve(); }
      stop() { return Promise.resolve(); }
    },
  },
};
const load = Module._load;
Module._load = function (request, ...rest) { return request in fakes ? fakes[request] : load.call(this, request, ...rest); };
const extension = require(process.argv[2]);
const context = { subscriptions: [] };
extension.activate(context).then(() => {
  console.log(JSON.stringify({ made, subscriptions: context.subscriptions.length }));
});
"""


@pytest.mark.parametrize(
    ("settings", "command"),
    [
        ({}, ["layerdsl", "lsp"]),
        ({"layerdsl.server.path": "/opt/py/bin/python", "layerdsl.server.args": ["-m", "layerdsl", "lsp"]},
         ["/opt/py/bin/python", "-m", "layerdsl", "lsp"]),
    ],
)
def test_extension_activation_starts_the_server_over_stdio_for_layers_documents(tmp_path, settings, command):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    harness = tmp_path / "harness.js"
    harness.write_text(_HARNESS, encoding="utf-8")
    out = subprocess.run(
        [node, str(harness), str(VSCODE / "extension.js"), json.dumps(settings)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    result = json.loads(out.stdout)
    (client,) = result["made"]
    assert client["started"] and result["subscriptions"] == 1
    assert [client["server"]["command"], *client["server"]["args"]] == command
    assert client["server"]["transport"] == 0  # stdio
    assert {"scheme": "file", "language": "layers"} in client["client"]["documentSelector"]
