"""Keras and PyTorch models -> `.layers` text plus canonical weights.

``from_keras`` (``keras.py``) reads a Sequential or functional Keras 3 model;
``from_torch`` (``torch.py``) traces a torch module with ``torch.fx``. Both
turn each framework layer into one statement (``_common.Statement``) with only
the options that differ from the DSL's defaults, collect the statements as a
graph, and write it out as text (``_graph``: chains, nested branches, taps),
which is then checked like any `.layers` file. The weights come out in
canonical (Keras) layout, so ``layerdsl.set_weights`` loads them into a build
for any backend.

A layer layerdsl cannot express exactly is refused with a ModelImportError
naming it. Settings that only shape a fresh model's initial weights (an
initializer layerdsl has no name for, torch's embedding ``padding_idx``) are
replaced by the DSL default and listed in ``Imported.notes``.

Neither framework is imported until ``from_keras`` or ``from_torch`` runs.
"""

from ._common import Imported, ModelImportError
from .keras import from_keras, load_keras
from .torch import from_torch

__all__ = ["Imported", "ModelImportError", "from_keras", "from_torch", "load_keras"]
