"""The browser playground: build a static folder that runs layerdsl under Pyodide, and serve it locally.

``python -m layerdsl.playground build OUT`` (or ``layerdsl playground``, which builds when needed and
serves) assembles:

- ``pyodide/``: Pyodide's core files from the npm package ``pyodide`` (fetched once with ``npm pack``
  into the cache folder); no micropip, no numpy;
- ``wheels/``: lark's wheel (``pip download``, cached) and a wheel of this layerdsl, written here
  from the package's own files; the page loads both by URL with ``pyodide.loadPackage``;
- the page itself (``playground/`` in the repository: HTML, JavaScript, CSS and ``glue.py``), the
  examples (``examples/*.layers``) and ``manifest.json`` naming the wheels and examples.

Nothing is fetched from a CDN when the page runs: every file comes from the built folder.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

PYODIDE_VERSION = "314.0.8"
#: The npm package's files that make up Pyodide's core (the lock file lists packages we never load,
#: but loadPyodide reads it at start).
PYODIDE_CORE = ("pyodide.js", "pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip",
                "pyodide-lock.json", "package.json")
PAGE_FILES = ("index.html", "playground.js", "style.css", "glue.py")

_PACKAGE = Path(__file__).resolve().parent


class PlaygroundError(Exception):
    """The playground cannot be built (a missing tool, no registry) or served."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "layerdsl"


def page_sources() -> Path:
    """The page's sources: inside an installed wheel, or the repository's playground/ folder."""
    for candidate in (_PACKAGE / "_playground", _PACKAGE.parent / "playground"):
        if (candidate / "index.html").is_file():
            return candidate
    raise PlaygroundError("the playground's page (playground/index.html) is missing from this installation")


def example_files() -> list[Path]:
    folder = _PACKAGE.parent / "examples"
    return sorted(folder.glob("*.layers")) if folder.is_dir() else []


def _package_files() -> list[tuple[str, Path]]:
    """(path inside the wheel, file) for every module of layerdsl and its grammar."""
    from .parser import _grammar_path

    files = [
        (path.relative_to(_PACKAGE.parent).as_posix(), path)
        for path in sorted(_PACKAGE.rglob("*.py"))
        if "__pycache__" not in path.parts and "_playground" not in path.parts
    ]
    files.append(("layerdsl/grammars/layers.lark", _grammar_path()))
    return files


def _fingerprint() -> str:
    """Changes whenever anything the built folder is made from changes (so `playground` rebuilds)."""
    digest = hashlib.sha256(PYODIDE_VERSION.encode())
    inputs = [*_package_files(), *((p.name, p) for p in example_files())]
    inputs += [(name, page_sources() / name) for name in PAGE_FILES]
    for name, path in inputs:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _run(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise PlaygroundError(f"{what} needs `{command[0]}`, which is not installed") from None
    except subprocess.CalledProcessError as exc:
        raise PlaygroundError(f"{what} failed: {' '.join(command)}\n{exc.stderr.strip()}") from None


def fetch_pyodide(cache: Path) -> Path:
    """The npm package's tarball, fetched once with ``npm pack`` into ``cache``."""
    tarball = cache / f"pyodide-{PYODIDE_VERSION}.tgz"
    if not tarball.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            _run(["npm", "pack", f"pyodide@{PYODIDE_VERSION}", "--pack-destination", tmp, "--silent"], "fetching Pyodide")
            os.replace(Path(tmp) / tarball.name, tarball)
    return tarball


def fetch_lark_wheel(cache: Path) -> Path:
    """lark's pure-Python wheel, the version installed here, fetched once with ``pip download``."""
    version = importlib.metadata.version("lark")
    wheel = cache / f"lark-{version}-py3-none-any.whl"
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                  "--dest", tmp, f"lark=={version}"], "fetching lark's wheel")
            os.replace(Path(tmp) / wheel.name, wheel)
    return wheel


def write_layerdsl_wheel(folder: Path) -> Path:
    """A wheel of this layerdsl (pure Python), written from the package's files.

    It declares no dependencies: in the page lark is loaded beside it, and numpy is neither
    available nor needed to parse, check, summarize, draw and compile.
    """
    from . import __version__

    name = f"layerdsl-{__version__}"
    info = f"{name}.dist-info"
    members = [(arcname, path.read_bytes()) for arcname, path in _package_files()]
    members.append((f"{info}/METADATA", f"Metadata-Version: 2.1\nName: layerdsl\nVersion: {__version__}\n".encode()))
    members.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: layerdsl.playground\n"
                                     b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    record = []
    for arcname, data in members:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    members.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    wheel = folder / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in members:
            archive.writestr(zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return wheel


def build(out: str | os.PathLike[str], *, cache: Path | None = None) -> Path:
    """Assemble the playground in ``out`` (replaced whole, atomically) and return its path."""
    out = Path(out).resolve()
    cache = cache or cache_dir()
    fingerprint = _fingerprint()
    tarball = fetch_pyodide(cache)
    lark_wheel = fetch_lark_wheel(cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the folder is meant to be served
    try:
        (staging / "pyodide").mkdir()
        with tarfile.open(tarball) as archive:
            for name in PYODIDE_CORE:
                member = archive.extractfile(f"package/{name}")
                if member is None:
                    raise PlaygroundError(f"the pyodide package has no {name}")
                (staging / "pyodide" / name).write_bytes(member.read())
        wheels = staging / "wheels"
        wheels.mkdir()
        shutil.copy2(lark_wheel, wheels / lark_wheel.name)
        own_wheel = write_layerdsl_wheel(wheels)
        for name in PAGE_FILES:
            shutil.copy2(page_sources() / name, staging / name)
        examples = {path.stem: path.read_text(encoding="utf-8") for path in example_files()}
        manifest = {
            "pyodide": PYODIDE_VERSION,
            "wheels": [f"wheels/{lark_wheel.name}", f"wheels/{own_wheel.name}"],
            "examples": examples,
            "fingerprint": fingerprint,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def is_current(folder: Path) -> bool:
    """Whether ``folder`` holds a playground built from exactly these sources."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("fingerprint") == _fingerprint()


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".whl": "application/zip",
        ".zip": "application/zip",
        ".json": "application/json",
    }

    def log_message(self, format: str, *args: object) -> None:  # quiet: one line per request is noise here
        pass


def make_server(folder: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``folder`` on 127.0.0.1 (``port`` 0 picks a free one); call serve_forever()."""

    def handler(*args: object) -> _Handler:
        return _Handler(*args, directory=str(folder))  # type: ignore[arg-type]

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def default_folder() -> Path:
    from . import __version__

    return cache_dir() / f"playground-{__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerdsl.playground", description="Build the browser playground.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="assemble the static folder")
    p.add_argument("out", metavar="OUT", help="the folder to write (replaced)")
    args = parser.parse_args(argv)
    try:
        print(build(args.out))
    except PlaygroundError as exc:
        print(f"layerdsl: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
