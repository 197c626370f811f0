"""The project's layout: modules import one another without cycles (lazy imports included), and the
documentation's links and models hold."""

import ast
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import layerdsl

PACKAGE = Path(layerdsl.__file__).parent

#: Edges allowed to close a cycle, each with why and when it goes. Kept honest by the test below.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = _module_names()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> set[str]:
    """The layerdsl modules ``module`` imports anywhere (inside functions too), except for type checking."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in MODULES and name != module}


def _import_graph() -> dict[str, set[str]]:
    return {module: _imports(module, path) for module, path in MODULES.items()}


def _a_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_import_walk_sees_lazy_and_relative_imports():
    edges = _import_graph()
    assert "layerdsl.graph" in edges["layerdsl.cli"]  # inside a function
    assert "layerdsl.specs" in edges["layerdsl.backends.torch_backend"]  # from .. import specs
    assert "layerdsl.ir" not in edges["layerdsl.graph.svg"]  # under TYPE_CHECKING only


def test_no_module_imports_itself_through_others():
    edges = _import_graph()
    for source, target in KNOWN_CYCLE_EDGES:
        assert target in edges[source], f"{source} no longer imports {target}: remove it from KNOWN_CYCLE_EDGES"
        edges[source].discard(target)
    cycle = _a_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_first_in_any_order():
    """Each module imported into an interpreter with no layerdsl module loaded yet, in a shuffled order."""
    modules = [m for m in MODULES if m != "layerdsl.__main__"]  # that one runs the CLI
    seed = random.randrange(2**32)
    random.Random(seed).shuffle(modules)
    script = (
        "import importlib, json, sys\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    for loaded in [m for m in sys.modules if m == 'layerdsl' or m.startswith('layerdsl.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(modules)],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        check=False,
    )
    assert result.returncode == 0, f"order {modules} (seed {seed}):\n{result.stderr[-3000:]}"


# --- the documentation ------------------------------------------------------------------------

ROOT = PACKAGE.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _split(document: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The document's lines outside fenced code blocks, and each block as (info string, text)."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    block: list[str] | None = None
    for line in document.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if block is None:
                info, block = line[3:].strip(), []
            else:
                blocks.append((info, "\n".join(block) + "\n"))
                block = None
        elif block is None:
            prose.append(line)
        else:
            block.append(line)
    return prose, blocks


def _prose(document: Path) -> list[str]:
    return _split(document)[0]


def _anchors(document: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in _prose(document) if line.startswith("#")}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_reaches_a_file_and_heading(document):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", "\n".join(_prose(document))):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists() or (anchor and anchor not in _anchors(linked)):
            broken.append(target)
    assert not broken, f"{document.name} links to nothing at {broken}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_the_models_in_the_documentation_check(document):
    """Unlabelled code blocks that start a model (`input`, `model`, or a comment first) are valid models."""
    models = [text for info, text in _split(document)[1] if not info and re.match(r"(#.*\n)*(input|model) ", text)]
    assert models, f"{document.name} shows no model"
    for text in models:
        layerdsl.parse(text)
