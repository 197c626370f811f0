"""Diagrams: SVG layout and markup, DOT, Mermaid, the terminal graph, Jupyter HTML, the CLI."""

import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

import layerdsl
from layerdsl import graph
from layerdsl.graph import build_graph, key_args, model_html, to_dot, to_mermaid, to_svg, to_text
from layerdsl.specs import shape_text

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"

RESNET = """\
model tiny_resnet
input 32x32x3
block conv_bn filters stride=1 {
  conv2d filters 3 stride=stride pad=same bias=false
  batchnorm
}
block res_block filters stride=1 {
  residual project=true {
    conv_bn filters stride=stride | relu
    conv_bn filters
  }
  relu
}
conv2d 16 3 pad=same name=stem | relu
res_block 16
res_block 32 stride=2
globalavgpool
dense 10 | softmax
"""

INCEPTION = """\
input 28x28x8
concat {
  conv2d 8 1 activation=relu
} {
  conv2d 8 1 activation=relu | conv2d 8 3 pad=same activation=relu
} {
  maxpool 3 stride=1 pad=same | conv2d 8 1 activation=relu
}
globalavgpool
dense 10
"""


def examples() -> list[Path]:
    return sorted((ROOT / "examples").glob("*.layers"))


def models() -> list[tuple[str, layerdsl.Model]]:
    found = [(p.stem, layerdsl.load(p)) for p in examples()]
    return [*found, ("resnet", layerdsl.parse(RESNET)), ("inception", layerdsl.parse(INCEPTION))]


def edge_count(model: layerdsl.Model) -> int:
    return sum(max(1, len(layer.inputs)) for layer in model.layers)


def parse_svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def groups_of_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == cls]


def box(g: ET.Element) -> tuple[float, float, float, float]:
    rect = g.find(f"{SVG}rect")
    assert rect is not None
    return tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))  # type: ignore[return-value]


def path_points(d: str) -> list[tuple[float, float]]:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


# --- SVG -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "model"), models(), ids=[n for n, _ in models()])
@pytest.mark.parametrize("direction", ["TB", "LR"])
def test_svg_parses_with_one_box_per_layer_and_one_path_per_edge(name, model, direction):
    root = parse_svg(to_svg(model, direction))
    layers = groups_of_class(root, "layer")
    assert [g.get("data-name") for g in layers] == [layer.name for layer in model.layers]
    assert len(groups_of_class(root, "input")) == 1
    edges = [p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]
    assert len(edges) == edge_count(model)
    for g in layers:
        text = " ".join(t.text or "" for t in g.iter(f"{SVG}text"))
        layer = model.layer(g.get("data-name"))
        assert layer.name in text and layer.kind in text
        assert shape_text(layer.output_shape) in text
        assert f"{layer.params:,} param" in text


@pytest.mark.parametrize(("name", "model"), models(), ids=[n for n, _ in models()])
@pytest.mark.parametrize("direction", ["TB", "LR"])
def test_svg_boxes_do_not_overlap_and_edges_join_their_boxes(name, model, direction):
    root = parse_svg(to_svg(model, direction))
    width, height = float(root.get("width")), float(root.get("height"))
    nodes = {g.get("data-name"): box(g) for g in groups_of_class(root, "input") + groups_of_class(root, "layer")}
    rects = list(nodes.values())
    for x, y, w, h in rects:
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height
    for i, (x1, y1, w1, h1) in enumerate(rects):
        for x2, y2, w2, h2 in rects[i + 1 :]:
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1, "boxes overlap"
    for path in (p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"):
        points = path_points(path.get("d"))
        (sx, sy, sw, sh), (tx, ty, tw, th) = nodes[path.get("data-from")], nodes[path.get("data-to")]
        (x0, y0), (x1, y1) = points[0], points[-1]
        if direction == "TB":  # leaves the source's bottom, enters the target's top
            assert y0 == pytest.approx(sy + sh, abs=0.1) and sx <= x0 <= sx + sw
            assert y1 == pytest.approx(ty, abs=0.1) and tx <= x1 <= tx + tw
        else:
            assert x0 == pytest.approx(sx + sw, abs=0.1) and sy <= y0 <= sy + sh
            assert x1 == pytest.approx(tx, abs=0.1) and ty <= y1 <= ty + th


def test_svg_chain_runs_straight_down_or_across():
    model = layerdsl.load(ROOT / "examples" / "mnist_convnet.layers")
    for direction in ("TB", "LR"):
        root = parse_svg(to_svg(model, direction))
        boxes = [box(g) for g in groups_of_class(root, "input") + groups_of_class(root, "layer")]
        centres = [(x + w / 2, y + h / 2) for x, y, w, h in boxes]
        cross = {round(c[0] if direction == "TB" else c[1], 1) for c in centres}
        assert len(cross) == 1, "a chain is one straight column (row)"
        main = [c[1] if direction == "TB" else c[0] for c in centres]
        assert main == sorted(main) and len(set(main)) == len(main)


def test_svg_residual_draws_skip_edge_beside_the_main_path_and_blocks_as_groups():
    model = layerdsl.parse(RESNET)
    root = parse_svg(to_svg(model))
    blocks = groups_of_class(root, "block")
    labels = [g.get("data-label") for g in blocks]
    # every block call, nested calls named inside their parent
    assert labels == ["res_block", "conv_bn", "conv_bn_1", "res_block_1", "conv_bn", "conv_bn_1"]
    nodes = {g.get("data-name"): box(g) for g in groups_of_class(root, "layer")}
    frames = [box(g) for g in blocks]
    for frame, group in zip(frames, build_graph(model).groups, strict=True):
        fx, fy, fw, fh = frame
        for member in group.members:
            x, y, w, h = nodes[model.layers[member - 1].name]
            assert fx < x and x + w < fx + fw and fy < y and y + h < fy + fh
    add = model.layer("res_block_add")
    skip = [p for p in root.iter(f"{SVG}path") if p.get("data-to") == add.name and p.get("data-from") == add.inputs[0]]
    assert len(skip) == 1
    # the skip edge crosses five ranks: it bends around the main path instead of through its boxes
    xs = [x for x, _ in path_points(skip[0].get("d"))]
    main_boxes = [nodes[layer.name] for layer in model.layers[2:7]]
    assert all(min(xs) < x or max(xs) > x + w for x, _, w, _ in main_boxes)


def test_svg_merge_edges_enter_at_distinct_ports():
    model = layerdsl.parse(INCEPTION)
    root = parse_svg(to_svg(model))
    concat = next(layer for layer in model.layers if layer.kind == "concat")
    ends = [path_points(p.get("d"))[-1] for p in root.iter(f"{SVG}path") if p.get("data-to") == concat.name]
    assert len(ends) == 3 and len({x for x, _ in ends}) == 3


def test_svg_escapes_file_names_and_is_deterministic():
    odd = "we<ird> & \"quoted\" 'file'\x01.layers"
    model = layerdsl.parse("dense 4 in=3 | relu", filename=odd)
    text = to_svg(model)
    root = parse_svg(text)  # parses: nothing unescaped, no control characters
    title = root.find(f"{SVG}title")
    assert "we<ird> & \"quoted\" 'file'\ufffd.layers" in title.text
    assert to_svg(model) == text


def test_svg_ids_differ_between_diagrams_so_pages_can_hold_several():
    a = to_svg(layerdsl.parse("dense 4 in=3"))
    b = to_svg(layerdsl.parse("dense 5 in=3"))
    ids = [set(re.findall(r'id="([^"]+)"', s)) for s in (a, b)]
    assert ids[0] and not ids[0] & ids[1]


def test_layout_rejects_unknown_direction():
    with pytest.raises(ValueError, match="direction must be one of TB, LR"):
        to_svg(layerdsl.parse("dense 4 in=3"), "BT")


# --- key arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input 8x8x3 | conv2d 16 3", "16 3x3"),
        ("input 8x8x3 | conv2d 16 3 pad=same stride=2 activation=relu", "16 3x3 stride=2x2 pad=same activation=relu"),
        ("input 8x8x3 | maxpool 2", "2x2"),  # stride defaults to the window: not shown
        ("input 8x8x3 | maxpool 2 stride=1", "2x2 stride=1x1"),
        ("dense 10 in=4 bias=false", "10 bias=false"),  # in= is the input, shown there
        ("input 10x4 | bidirectional lstm 8 return_sequences=true merge=sum", "lstm 8 return_sequences=true merge=sum"),
        ("dense 4 in=3 | leaky_relu", "leaky_relu"),
        ("dense 4 in=3 | dropout 0.25", "0.25"),
    ],
)
def test_key_args_shows_positionals_and_options_that_differ_from_defaults(text, expected):
    assert key_args(layerdsl.parse(text).layers[-1]) == expected


# --- DOT and Mermaid --------------------------------------------------------------------------


def test_dot_has_a_node_per_layer_an_edge_per_input_and_clusters_for_blocks():
    model = layerdsl.parse(RESNET)
    dot = to_dot(model, "LR")
    assert dot.startswith('digraph "tiny_resnet" {') and dot.rstrip().endswith("}")
    assert "rankdir=LR" in dot
    assert len(re.findall(r"^\s*n\d+ \[label=<", dot, re.M)) == len(model.layers) + 1
    assert len(re.findall(r"^\s*n\d+ -> n\d+;$", dot, re.M)) == edge_count(model)
    assert dot.count("subgraph cluster_") == 6
    assert dot.count("{") == dot.count("}")


def test_dot_escapes_quotes_backslashes_and_markup():
    model = layerdsl.parse("dense 4 in=3", filename='a "b" \\c <d>.layers')
    dot = to_dot(model)
    assert '  ·  a \\"b\\" \\\\c <d>.layers  ·  ' in dot
    assert graph.dot_escape('x"\\\ny') == 'x\\"\\\\\\ny'
    assert "&lt;" in graph.xml_escape("<") and "&quot;" in graph.xml_escape('"')


def test_mermaid_flowchart_with_subgraphs_and_escaped_labels():
    model = layerdsl.parse(RESNET)
    text = to_mermaid(model, "LR")
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert len([line for line in lines if re.fullmatch(r'\s*n\d+\[".*"\]', line)]) == len(model.layers) + 1
    assert len([line for line in lines if re.fullmatch(r"\s*n\d+ --> n\d+", line)]) == edge_count(model)
    assert sum(line.strip().startswith("subgraph ") for line in lines) == 6
    assert sum(line.strip() == "end" for line in lines) == 6
    # node ids never collide with Mermaid keywords such as `end`, whatever the layer names are
    assert "n0[" in text and "end[" not in text
    assert graph.mermaid_escape('a"b<c>#d;') == "a#34;b#60;c#62;#35;d#59;"


# --- terminal text ----------------------------------------------------------------------------


def test_text_graph_is_one_line_per_layer_for_a_chain():
    model = layerdsl.load(ROOT / "examples" / "mnist_convnet.layers")
    lines = to_text(model).splitlines()
    assert lines[0].startswith("mnist_convnet  (")
    assert len(lines) == 1 + 1 + len(model.layers)
    assert lines[1].split()[:2] == ["○", "input"]
    for line, layer in zip(lines[2:], model.layers, strict=True):
        assert line.split()[:3] == ["●", layer.name, layer.kind]
        assert line.endswith(f"{layer.params:,} params")


def test_text_graph_draws_forks_merges_and_blocks_with_rails():
    model = layerdsl.parse(
        "input 28x28x8\n"
        "block inc {\n"
        "  concat { conv2d 8 1 } { conv2d 8 1 | conv2d 8 3 pad=same } { maxpool 3 stride=1 pad=same | conv2d 8 1 }\n"
        "}\n"
        "inc\nglobalavgpool\ndense 10\n"
    )
    text = to_text(model)
    lines = text.splitlines()
    assert "├─┬─╮" in lines[2]  # the input feeds three branches
    assert lines[3].split() == ["│", "│", "│", "▾", "inc"]
    assert any(line.startswith("├─┴─╯") for line in lines)  # three branches merge into concat
    concat = next(line for line in lines if "concat" in line)
    assert concat.startswith("●    ") and concat.split()[1] == "inc_concatenate"
    assert lines[4].startswith("● │ │") and lines[5].startswith("│ ● │")


# --- Jupyter HTML -----------------------------------------------------------------------------


def test_model_html_holds_the_summary_table_and_the_inline_svg():
    model = layerdsl.parse(RESNET)
    page = model_html(model)
    root = ET.fromstring(page)  # well-formed: every piece of text is escaped
    table = root.find(".//table")
    rows = table.findall("./tbody/tr")
    assert len(rows) == len(model.layers) + 1
    assert [r.find("./td/code").text for r in rows[1:]] == [layer.name for layer in model.layers]
    assert f"{model.total_params:,}" in ET.tostring(table.find("./tfoot"), encoding="unicode")
    svg = root.find(f".//{SVG}svg")
    assert svg is not None and len(groups_of_class(svg, "layer")) == len(model.layers)


# --- the command line -------------------------------------------------------------------------


def cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "layerdsl", *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_graph_writes_svg_and_infers_the_format_from_the_suffix(tmp_path):
    source = tmp_path / "net.layers"
    source.write_text(RESNET)
    for name, check in [
        ("net.svg", lambda t: parse_svg(t).tag == f"{SVG}svg"),
        ("net.dot", lambda t: t.startswith("digraph")),
        ("net.mmd", lambda t: t.startswith("flowchart TB")),
        ("net.txt", lambda t: "├─╯" in t),
    ]:
        result = cli("graph", str(source), "-o", str(tmp_path / name))
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout == b""
        assert check((tmp_path / name).read_text(encoding="utf-8")), name


def test_cli_graph_to_stdout_with_format_and_direction():
    result = cli("graph", "-", "--format", "mermaid", "--direction", "LR", stdin="dense 4 in=3 | relu\n")
    assert result.returncode == 0
    assert result.stdout.decode().startswith("flowchart LR\n")
    result = cli("graph", "-", stdin="dense 4 in=3 | relu\n")
    assert len(groups_of_class(parse_svg(result.stdout.decode()), "layer")) == 2


def test_cli_graph_model_error_exits_1_and_writes_nothing(tmp_path):
    out = tmp_path / "bad.svg"
    result = cli("graph", "-", "-o", str(out), stdin="input 8x8x3\nconv2d 4 3\ndense 10\n")
    assert result.returncode == 1
    assert "<stdin>:3:1: error:" in result.stderr.decode()
    assert not out.exists()


def test_cli_graph_rejects_unknown_format_with_exit_2():
    result = cli("graph", "-", "--format", "png", stdin="dense 4 in=3\n")
    assert result.returncode == 2


def test_cli_summary_graph_prints_the_text_graph():
    result = cli("summary", "--graph", str(ROOT / "examples" / "oneliner.layers"))
    assert result.returncode == 0
    out = result.stdout.decode()
    assert out == to_text(layerdsl.load(ROOT / "examples" / "oneliner.layers"))
    assert cli("summary", "--graph", "--json", "-", stdin="dense 4 in=3\n").returncode == 2


# --- rendering in a browser -------------------------------------------------------------------


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            chunks.append(data[at + 8 : at + 8 + length])
        at += 12 + length
    return width, height, zlib.decompress(b"".join(chunks))


@pytest.mark.skipif(find_chromium() is None, reason="chromium not found (scripts/setup.sh installs it as root)")
def test_svg_renders_in_headless_chromium():
    model = layerdsl.parse(RESNET, filename="tiny_resnet.layers")
    svg_root = parse_svg(to_svg(model))
    width, height = int(svg_root.get("width")), int(svg_root.get("height"))
    page = f'<!doctype html><html><body style="margin:0">{model_html(model)}</body></html>'
    out_dir = ROOT / "out"
    out_dir.mkdir(exist_ok=True)
    screenshot = out_dir / "graph_screenshot.png"
    screenshot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        html_file = Path(tmp) / "model.html"
        html_file.write_text(page, encoding="utf-8")
        result = subprocess.run(
            [
                find_chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--screenshot={screenshot}",
                f"--window-size={width + 40},{height + 30 * len(model.layers) + 120}",
                html_file.as_uri(),
            ],
            capture_output=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    print(f"screenshot of the rendered diagram: {screenshot}")
    shot_w, shot_h, pixels = png_pixels(screenshot)
    assert (shot_w, shot_h) == (width + 40, height + 30 * len(model.layers) + 120)
    assert len(set(pixels)) > 50, "the page rendered blank"


@pytest.mark.parametrize(
    ("svg", "source"),
    [("mnist_convnet.svg", "examples/mnist_convnet.layers"), ("tiny_resnet.svg", "docs/tiny_resnet.layers")],
)
def test_readme_diagrams_are_what_layerdsl_graph_draws_today(svg, source):
    model = layerdsl.parse((ROOT / source).read_text(encoding="utf-8"), filename=source)
    assert (ROOT / "docs" / svg).read_text(encoding="utf-8") == to_svg(model), (
        f"regenerate: layerdsl graph {source} -o docs/{svg}"
    )


def test_models_show_summary_and_diagram_in_jupyter():
    html = layerdsl.parse("input 8x8x3\nconv2d 4 3 | flatten | dense 2")._repr_html_()
    assert "<table" in html and "<svg" in html and "conv2d" in html
