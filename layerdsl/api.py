"""The public API: a handful of thin functions over parse -> check -> emit."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checker import check, model_name_from_path
from .errors import LayerDSLError
from .formatter import format_text as format_text  # re-exported: public API
from .ir import Model
from .parser import parse_syntax

ModelOrText = Model | str


def parse(text: str, filename: str | None = None) -> Model:
    """Parse and check `.layers` text; return the checked IR model.

    Raises LayerDSLError (with ``filename``, ``line``, ``column``) on any mistake.
    """
    shown = filename or "<string>"
    # `<stdin>` and `<string>` are display names, not files: they give no model name.
    real_file = filename and not (filename.startswith("<") and filename.endswith(">"))
    default_name = model_name_from_path(Path(filename).stem) if real_file else "model"
    program = parse_syntax(text, shown)
    return check(program, filename=shown, source=text, default_name=default_name)


def load(path: str | os.PathLike[str]) -> Model:
    """Read, parse and check a `.layers` file."""
    path = Path(path)
    try:
        # Bytes, decoded as the CLI does: a BOM is skipped, and line endings reach the
        # parser as written (text mode would turn a lone `\r` into a line break).
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LayerDSLError(f"file is not UTF-8 text (byte {exc.start})", filename=str(path)) from None
    return parse(text, filename=str(path))


def _model(model_or_text: ModelOrText) -> Model:
    if isinstance(model_or_text, Model):
        return model_or_text
    if isinstance(model_or_text, str):
        return parse(model_or_text)
    raise TypeError(f"expected a layerdsl Model or .layers text, got {type(model_or_text).__name__}")


def compile(model_or_text: ModelOrText, target: str, weights: Mapping[str, Any] | None = None, **options: Any) -> Any:
    """Generate standalone Python source for ``target`` (keras, torch or numpy), or the serialized
    model file (bytes) for ``onnx``: with canonical ``weights``, else drawn from the DSL's
    initializers (``seed=0``); ``opset=17``. See ``to_onnx`` for the ``onnx.ModelProto``."""
    from . import backends

    model = _model(model_or_text)
    backend = backends.get(target)
    if backend.binary:
        return backend.emit_bytes(model, weights, **options)
    if weights is not None or options:
        raise TypeError(f"the {target} target generates source: it takes no weights or options")
    return backend.emit_source(model)


def to_onnx(model_or_text: ModelOrText, weights: Mapping[str, Any] | None = None, opset: int = 17, seed: int = 0) -> Any:
    """The model as an ``onnx.ModelProto`` (needs ``pip install 'layerdsl[onnx]'``).

    Input ``input`` takes what the NumPy target's model takes (the layout the DSL declares; the
    batch axis is dynamic); output ``output`` is channels-last. ``weights`` are canonical, as
    ``save_weights`` writes them; without them they are drawn from the DSL's initializers with
    ``seed``. Masked recurrences are ``Scan`` loops that match Keras for any mask.
    """
    from .backends.onnx_backend import to_onnx as export

    return export(_model(model_or_text), weights, opset=opset, seed=seed)


def build(model_or_text: ModelOrText, target: str = "numpy", **kwargs: Any) -> Any:
    """Build a live model object for ``target``: a keras.Model, a torch.nn.Module, or a NumPy model."""
    from . import backends

    model = _model(model_or_text)
    return backends.get(target).build(model, **kwargs)


def summary(model_or_text: ModelOrText) -> str:
    """A Keras-style summary table (Layer (type) | Output Shape | Param #)."""
    from .summary import summary_text

    return summary_text(_model(model_or_text))
