"""What every backend provides, and the shared build path (source -> live object).

A backend is one module with a table of emitters keyed by IR layer kind
(plus an explicit ``unsupported`` table with reasons). Live objects are made
by running the generated source, so source and live models cannot drift.
Backend modules import their framework lazily, inside functions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import ir
from ..codegen import exec_generated
from ..errors import BackendError, WeightsError

if TYPE_CHECKING:  # numpy stays out of the parse/check path
    import numpy as np

#: Attribute under which ``build`` records the IR on a live model.
IR_ATTRIBUTE = "layerdsl_model"


class Backend(ABC):
    name: str
    #: Extra needed for this backend, as in ``pip install layerdsl[extra]``.
    extra: str | None = None
    #: IR kind -> emitter. Every backend's emitters share one signature, ``emit(layer, ctx)``:
    #: ``layer`` is the IR layer, ``ctx`` the backend's emission context (what the layer reads,
    #: where its weights and name go, which runtime pieces the file needs); what it returns is
    #: what that backend assembles: a module piece (PyTorch), a layer call (Keras), a constructor
    #: expression (NumPy), graph nodes (ONNX). Source backends run each block instance's emitters
    #: under ``codegen.holes()`` and let ``backends.structure`` make one definition per block.
    emitters: Mapping[str, Any]
    #: IR kind -> reason this backend refuses it.
    unsupported: Mapping[str, str] = {}
    #: True for a backend that writes a binary model file (``emit_bytes``) instead of Python source.
    binary: bool = False

    def check_supported(self, model: ir.Model) -> None:
        for layer in model.layers:
            if layer.kind in self.unsupported:
                raise BackendError(
                    f"the {self.name} backend cannot realize `{layer.kind}`: {self.unsupported[layer.kind]}",
                    filename=model.filename,
                    span=layer.span,
                ).located(model.filename, model.source_text)
            if layer.kind not in self.emitters:
                raise BackendError(
                    f"the {self.name} backend has no emitter for `{layer.kind}`",
                    filename=model.filename,
                    span=layer.span,
                ).located(model.filename, model.source_text)

    @abstractmethod
    def emit_source(self, model: ir.Model) -> str:
        """Standalone Python source defining ``build_model()``."""

    def build(self, model: ir.Model, **kwargs: Any) -> Any:
        self.import_framework()
        source = self.emit_source(model)
        namespace = exec_generated(source, f"<layerdsl {self.name}: {model.name}>")
        obj = namespace["build_model"](**kwargs)
        self.attach(obj, model)
        return obj

    def attach(self, obj: Any, model: ir.Model) -> None:
        object.__setattr__(obj, IR_ATTRIBUTE, model)

    def import_framework(self) -> Any:
        """Import and return the framework, or raise BackendError naming the extra to install."""
        return None

    @abstractmethod
    def owns(self, obj: Any) -> bool:
        """True when ``obj`` is a live model of this backend (never imports a framework)."""

    @abstractmethod
    def get_weights(self, obj: Any, model: ir.Model) -> dict[str, np.ndarray]:
        """Canonical weights ``{"<layer>.<param>": array}`` in Keras layout, float32."""

    @abstractmethod
    def set_weights(self, obj: Any, model: ir.Model, weights: Mapping[str, np.ndarray]) -> None:
        """Load canonical weights (already validated against the IR) into ``obj``."""


def missing_framework(backend: str, module: str, extra: str) -> BackendError:
    return BackendError(
        f"the {backend} backend needs `{module}`, which is not installed",
        hint=f"pip install 'layerdsl[{extra}]'",
    )


def validated_weights(spec: ir.Model, weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Every weight of ``spec``, as float32 arrays of its canonical shape; WeightsError naming the
    missing, unexpected or misshapen arrays otherwise."""
    import numpy as np

    expected = {f"{layer.name}.{w.name}": w.shape for layer in spec.layers for w in layer.weights}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append("unexpected " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise WeightsError("weights do not match the model: " + "; ".join(parts))
    arrays: dict[str, np.ndarray] = {}
    for key, shape in expected.items():
        array = np.asarray(weights[key], dtype=np.float32)
        if array.shape != shape:
            raise WeightsError(f"weight `{key}` has shape {array.shape}, expected {shape}")
        arrays[key] = array
    return arrays
