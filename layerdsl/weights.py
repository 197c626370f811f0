"""Canonical weights: ``{"<layer name>.<param>": array}`` in Keras layout, for every backend.

Weights files are ``.npz`` archives written and read without pickle.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ir
from .errors import WeightsError

if TYPE_CHECKING:
    import numpy as np


def _ir_of(obj: Any, source: ir.Model | str | None) -> ir.Model:
    from . import backends

    if source is not None:
        from .api import _model

        return _model(source)
    model = getattr(obj, backends.IR_ATTRIBUTE, None)
    if model is None:
        raise WeightsError(
            "this model was not built by layerdsl.build, so its layer layout is unknown",
            hint="pass the model's .layers text or IR: get_weights(model, source=...)",
        )
    return model


def get_weights(model: Any, source: ir.Model | str | None = None) -> dict[str, np.ndarray]:
    """Return the model's weights by canonical name, in Keras layout (float32 arrays)."""
    from . import backends

    spec = _ir_of(model, source)
    return backends.owner_of(model).get_weights(model, spec)


def set_weights(model: Any, weights: Mapping[str, Any], source: ir.Model | str | None = None) -> None:
    """Load canonical weights into a live model of any backend.

    Every weight of the model must be given, with its canonical shape; extra
    names are an error too, so a typo never goes unnoticed.
    """
    from . import backends
    from .backends.base import validated_weights

    spec = _ir_of(model, source)
    backends.owner_of(model).set_weights(model, spec, validated_weights(spec, weights))


def save_weights(path: str | os.PathLike[str], weights: Mapping[str, Any]) -> None:
    """Write weights to an ``.npz`` file atomically (no pickle)."""
    import numpy as np

    path = Path(path)
    arrays = {key: np.asarray(value) for key, value in weights.items()}
    for key, array in arrays.items():
        if array.dtype == object:
            raise WeightsError(f"weight `{key}` is not a numeric array")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_weights(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read weights written by save_weights; never unpickles."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        raise WeightsError(f"{path}: not a layerdsl weights file ({exc})") from None
