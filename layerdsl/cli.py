"""The ``layerdsl`` command: check, summary, compile.

Exit codes: 0 success; 1 the model has an error (printed as
``FILE:LINE:COL: error: ...`` with the source line and a caret); 2 usage or
I/O errors (missing file, a directory, not UTF-8). Compile writes its output
atomically: a failed compile never creates, truncates or changes ``-o OUT``.
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
TARGETS = ("keras", "torch", "numpy")  # kept in step with backends.TARGETS by a test


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


def _write_atomic(path: str, text: str) -> None:
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path}: is a directory")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"{path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
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
            _parse(path)
        except LayerDSLError as exc:
            print(exc.render(), file=sys.stderr)
            status = max(status, EXIT_MODEL_ERROR)
        except UsageError as exc:
            print(f"layerdsl: error: {exc}", file=sys.stderr)
            status = EXIT_USAGE
        else:
            if not args.quiet:
                print(f"{'<stdin>' if path == '-' else path}: ok")
    return status


def cmd_summary(args: argparse.Namespace) -> int:
    from .summary import summary_dict, summary_text

    model = _parse(args.file)
    if args.json:
        print(json.dumps(summary_dict(model), indent=2))
    else:
        print(summary_text(model))
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    from .api import compile as compile_model

    model = _parse(args.file)
    source = compile_model(model, args.target)
    if args.output and args.output != "-":
        _write_atomic(args.output, source)
    else:
        sys.stdout.write(source)
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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("compile", help="generate standalone Python source")
    p.add_argument("file", metavar="FILE", help="a .layers file, or - for stdin")
    p.add_argument("-t", "--target", required=True, choices=TARGETS, help="the framework to generate for")
    p.add_argument("-o", "--output", metavar="OUT", help="write here (atomically) instead of stdout")
    p.set_defaults(func=cmd_compile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import LayerDSLError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LayerDSLError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_MODEL_ERROR
    except UsageError as exc:
        print(f"layerdsl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
