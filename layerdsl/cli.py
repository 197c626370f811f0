"""The ``layerdsl`` command: check, summary, graph, compile, import, fmt, lsp, playground.

Exit codes: 0 success; 1 the model has an error (printed as
``FILE:LINE:COL: error: ...`` with the source line and a caret); 2 usage or
I/O errors (missing file, a directory, not UTF-8). Compile writes its output
atomically: a failed compile never creates, truncates or changes ``-o OUT``;
``fmt`` rewrites files the same way, and only files whose layout changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_MODEL_ERROR, EXIT_USAGE = 0, 1, 2
TARGETS = ("keras", "torch", "numpy", "onnx")  # kept in step with backends.TARGETS by a test
BINARY_TARGETS = ("onnx",)  # a model file, written only with -o


class UsageError(Exception):
    """Bad command line or unreadable input (exit 2)."""


def _read(path: str) -> tuple[str, str]:
    """Return (display name, text) for a path or ``-`` (stdin)."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        p = Path(path)
        if p.is_dir():
            raise UsageError(f"{path}: is a directory")
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror or exc}") from None
        name = path
    try:
        return name, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not UTF-8 text (invalid byte at offset {exc.start})") from None


def _parse(path: str):  # type: ignore[no-untyped-def]
    from .api import parse

    name, text = _read(path)
    return parse(text, filename=name)


def _write_atomic(path: str, text: str | bytes) -> None:
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path}: is a directory")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"{path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        if isinstance(text, bytes):
            with os.fdopen(fd, "wb") as fh:
                fh.write(text)
        else:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_check(args: argparse.Namespace) -> int:
    from .errors import LayerDSLError

    status = EXIT_OK
    for path in args.files:
        try:
            model = _parse(path)
        except LayerDSLError as exc:
            for error in exc.all_errors():
                print(error.render(), file=sys.stderr)
            status = max(status, EXIT_MODEL_ERROR)
        except UsageError as exc:
            print(f"layerdsl: error: {exc}", file=sys.stderr)
            status = EXIT_USAGE
        else:
            for warning in model.warnings:
                print(warning.render(), file=sys.stderr)
            if not args.quiet:
                print(f"{'<stdin>' if path == '-' else path}: ok")
    return status


def cmd_summary(args: argparse.Namespace) -> int:
    from .summary import summary_dict, summary_text

    model = _parse(args.file)
    if args.json:
        print(json.dumps(summary_dict(model), indent=2))
    elif args.graph:
        from .graph import to_text

        sys.stdout.write(to_text(model))
    else:
        print(summary_text(model))
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from .graph import SUFFIXES, render

    to_file = args.output and args.output != "-"
    fmt = args.format or (SUFFIXES.get(Path(args.output).suffix.lower(), "svg") if to_file else "svg")
    text = render(_parse(args.file), fmt, args.direction)
    if to_file:
        _write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    from .api import compile as compile_model

    if args.target in BINARY_TARGETS:
        return _compile_binary(args)
    given = [flag for flag, value in (("--weights", args.weights), ("--opset", args.opset), ("--seed", args.seed)) if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only for --target {'/'.join(BINARY_TARGETS)}")
    model = _parse(args.file)
    source = compile_model(model, args.target)
    if args.output and args.output != "-":
        _write_atomic(args.output, source)
    else:
        sys.stdout.write(source)
    return EXIT_OK


def _compile_binary(args: argparse.Namespace) -> int:
    """An ONNX model file: always to ``-o`` (never binary on a terminal or a pipe), written atomically."""
    from .api import compile as compile_model
    from .errors import LayerDSLError, WeightsError
    from .weights import load_weights

    if not args.output or args.output == "-":
        raise UsageError(f"--target {args.target} writes a binary model file: give it with -o MODEL.{args.target}")
    model = _parse(args.file)
    weights = None
    if args.weights:
        if not Path(args.weights).is_file():
            raise UsageError(f"{args.weights}: no such file")
        weights = load_weights(args.weights)
    options = {key: value for key, value in (("opset", args.opset), ("seed", args.seed)) if value is not None}
    try:
        data = compile_model(model, args.target, weights, **options)
    except LayerDSLError as exc:
        if exc.filename is None:
            exc.filename = args.weights if isinstance(exc, WeightsError) else args.file
        raise
    _write_atomic(args.output, data)
    return EXIT_OK


#: Model files whose loading can run code: pickles, and legacy HDF5 Keras files (Lambda layers hold bytecode).
_UNSAFE_MODEL_FILES = (".h5", ".hdf5", ".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".ckpt")


def cmd_import(args: argparse.Namespace) -> int:
    """Import a Keras ``.keras`` file: write its `.layers` text, and optionally its weights."""
    from .errors import LayerDSLError
    from .importers import from_keras, load_keras
    from .weights import save_weights

    path = Path(args.file)
    suffix = path.suffix.lower()
    if suffix in _UNSAFE_MODEL_FILES:
        raise UsageError(
            f"{args.file}: refusing to load a {suffix} file: pickle-based formats (and legacy HDF5 Keras files) "
            "can run arbitrary code when loaded; save the model as .keras (model.save('model.keras')), or "
            "for a torch module you trust call layerdsl.from_torch(module, input_shape) in Python"
        )
    if suffix != ".keras":
        raise UsageError(f"{args.file}: expected a Keras 3 .keras file")
    if path.is_dir():
        raise UsageError(f"{args.file}: is a directory")
    if not path.is_file():
        raise UsageError(f"{args.file}: no such file")
    try:
        model = load_keras(path)
    except LayerDSLError:
        raise
    except Exception as exc:  # Keras raises many kinds for a file it cannot read
        raise UsageError(f"{args.file}: Keras cannot load it: {exc}") from None
    try:
        imported = from_keras(model)
    except LayerDSLError as exc:
        exc.filename = exc.filename or args.file
        raise
    if args.output and args.output != "-":
        _write_atomic(args.output, imported.text)
    else:
        sys.stdout.write(imported.text)
    if args.weights:
        save_weights(args.weights, imported.weights)
    for note in imported.notes:
        print(f"layerdsl: note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_fmt(args: argparse.Namespace) -> int:
    """Rewrite files in canonical layout (atomically, only when they change); ``-`` is stdin to stdout."""
    from .errors import LayerDSLError
    from .formatter import FormatterBug, format_text

    status = EXIT_OK
    for path in args.files:
        try:
            name, text = _read(path)
            formatted = format_text(text, filename=name)
            if path == "-":
                changed = formatted != text
                if not args.check:
                    sys.stdout.write(formatted)
            else:
                # Compare bytes, so a BOM or CRLF line endings count as a change.
                changed = formatted.encode("utf-8") != Path(path).read_bytes()
                if changed and not args.check:
                    _write_atomic(str(Path(path).resolve()), formatted)  # through symlinks
                    print(f"reformatted {path}", file=sys.stderr)
        except LayerDSLError as exc:
            print(exc.render(), file=sys.stderr)
            status = max(status, EXIT_MODEL_ERROR)
            continue
        except (UsageError, FormatterBug, OSError) as exc:
            print(f"layerdsl: error: {exc}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        if changed and args.check:
            print(f"would reformat {name}", file=sys.stderr)
            status = max(status, EXIT_MODEL_ERROR)
    return status


def cmd_lsp(args: argparse.Namespace) -> int:
    from .lsp import make_server

    try:
        server = make_server()
    except ImportError:
        raise UsageError("the language server needs pygls: pip install 'layerdsl[lsp]'") from None
    server.start_io()
    return EXIT_OK


def cmd_playground(args: argparse.Namespace) -> int:
    """Build the browser playground when its folder is missing or stale, then serve it on 127.0.0.1."""
    from .playground import PlaygroundError, build, default_folder, is_current, make_server

    folder = Path(args.dir) if args.dir else default_folder()
    try:
        if not is_current(folder):
            print(f"building the playground in {folder} ...", file=sys.stderr)
            build(folder)
    except PlaygroundError as exc:
        raise UsageError(str(exc)) from None
    if args.build_only:
        print(folder)
        return EXIT_OK
    try:
        server = make_server(folder, args.port)
    except OSError as exc:
        raise UsageError(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    with server:
        print(f"layerdsl playground: http://127.0.0.1:{server.server_address[1]}/  (Ctrl+C stops it)", flush=True)
        server.serve_forever()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="layerdsl",
        description="Check, summarize and compile .layers neural-network models.",
    )
    parser.add_argument("--version", action="version", version=f"layerdsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check", help="check files for errors (exit 1 if any)")
    p.add_argument("files", nargs="+", metavar="FILE", help="a .layers file, or - for stdin")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid files")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("summary", help="print a Keras-style summary table")
    p.add_argument("file", metavar="FILE", help="a .layers file, or - for stdin")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print JSON instead of a table")
    shown.add_argument("--graph", action="store_true", help="draw the layer graph with box-drawing characters")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("graph", help="draw the model: SVG, Graphviz DOT, Mermaid or text")
    p.add_argument("file", metavar="FILE", help="a .layers file, or - for stdin")
    p.add_argument("-o", "--output", metavar="OUT", help="write here (atomically) instead of stdout")
    p.add_argument(
        "-f",
        "--format",
        choices=("svg", "dot", "mermaid", "text"),
        help="default: from OUT's suffix (.svg .dot .gv .mmd .txt), else svg",
    )
    p.add_argument("-d", "--direction", choices=("TB", "LR"), default="TB", help="top to bottom (default) or left to right")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("compile", help="generate standalone Python source, or an ONNX model file")
    p.add_argument("file", metavar="FILE", help="a .layers file, or - for stdin")
    p.add_argument("-t", "--target", required=True, choices=TARGETS, help="the framework to generate for")
    p.add_argument("-o", "--output", metavar="OUT", help="write here (atomically) instead of stdout; required for onnx")
    p.add_argument("--weights", metavar="NPZ", help="onnx: canonical weights (.npz, as save_weights writes)")
    p.add_argument("--opset", type=int, metavar="N", help="onnx: the opset to target (default 17)")
    p.add_argument("--seed", type=int, metavar="N", help="onnx without --weights: draw the initial weights with this seed")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("import", help="turn a Keras .keras model into .layers text (and weights)")
    p.add_argument("file", metavar="MODEL", help="a Keras 3 .keras file (loaded in safe mode)")
    p.add_argument("-o", "--output", metavar="OUT", help="write the text here (atomically) instead of stdout")
    p.add_argument("--weights", metavar="NPZ", help="also write the weights, canonical layout, as .npz")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("fmt", help="rewrite files in canonical layout, keeping comments")
    p.add_argument("files", nargs="+", metavar="FILE", help="a .layers file, or - for stdin (formatted to stdout)")
    p.add_argument(
        "--check", action="store_true", help="change nothing; list files that would change and exit 1 if any"
    )
    p.set_defaults(func=cmd_fmt)

    p = sub.add_parser("lsp", help="run the language server on stdin/stdout (needs the `lsp` extra)")
    p.set_defaults(func=cmd_lsp)

    p = sub.add_parser("playground", help="build (when needed) and serve the browser playground on 127.0.0.1")
    p.add_argument("--dir", metavar="DIR", help="where the built page lives (default: a folder in ~/.cache/layerdsl)")
    p.add_argument("--port", type=int, default=8000, help="the port to serve on (default 8000; 0 picks a free one)")
    p.add_argument("--build-only", action="store_true", help="build the folder, print its path, serve nothing")
    p.set_defaults(func=cmd_playground)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import LayerDSLError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LayerDSLError as exc:
        for error in exc.all_errors():
            print(error.render(), file=sys.stderr)
        return EXIT_MODEL_ERROR
    except UsageError as exc:
        print(f"layerdsl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # e.g. -o into a read-only directory: a message, not a traceback
        print(f"layerdsl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
