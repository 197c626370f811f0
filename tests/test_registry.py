"""Every layer kind is realized by every backend, drawn in a diagram category, and read by every
importer (or refused there with a reason); the facts its spec states about it hold."""

import importlib
import pkgutil
from collections.abc import Mapping

import numpy as np
import pytest

import layerdsl
from layerdsl import graph, specs
from layerdsl.backends import BACKENDS
from layerdsl.testing import ATOL, RTOL, random_weights


@pytest.mark.parametrize("target", sorted(BACKENDS))
def test_every_layer_kind_has_an_entry_in_every_backend(target):
    backend = BACKENDS[target]
    missing = [kind for kind in specs.layer_kinds() if kind not in backend.emitters and kind not in backend.unsupported]
    assert not missing, f"the {target} backend has no entry for {missing}"


@pytest.mark.parametrize("target", sorted(BACKENDS))
def test_unsupported_entries_give_reasons(target):
    for kind, reason in BACKENDS[target].unsupported.items():
        assert kind in specs.layer_kinds()
        assert len(reason) > 10


def test_registry_aliases_resolve_to_known_kinds():
    for name, spec in specs.REGISTRY.items():
        assert spec.kind in specs.layer_kinds()
        assert name.isidentifier()
    assert specs.REGISTRY["relu"].fixed_args() == {"function": "relu"}
    assert not set(specs.REGISTRY) & set(specs.DIRECTIVES)


def test_every_kind_is_its_own_registry_name():
    """Backends and the diagram look a layer's facts up as ``REGISTRY[layer.kind]``."""
    for kind in specs.layer_kinds():
        assert specs.REGISTRY[kind].kind == kind


def test_every_spec_documents_its_params():
    for spec in specs.REGISTRY.values():
        assert spec.doc
        for param in spec.params:
            assert param.doc, f"{spec.kind}.{param.name} has no doc"


# --- diagram categories -------------------------------------------------------------------


@pytest.mark.parametrize("kind", specs.layer_kinds())
def test_every_kind_is_drawn_in_its_specs_category(kind):
    spec = specs.REGISTRY[kind]
    assert getattr(spec, "category", None) in specs.CATEGORIES, f"{kind} sets no known diagram category"
    assert graph.category(kind) == spec.category


def test_every_category_has_its_colours():
    assert set(graph.model.COLOURS) == {*specs.CATEGORIES, "input"}
    assert graph.category("input") == "input"


# --- importers ------------------------------------------------------------------------------


def _importers() -> dict[str, tuple[Mapping[str, str], Mapping[str, str]]]:
    """Importer name -> (IMPORTABLE, NOT_IMPORTABLE).

    An importer module declares ``IMPORTABLE`` (DSL kind -> the framework classes read as it)
    and ``NOT_IMPORTABLE`` (DSL kind -> why not); it is named after its module. The modules are
    ``layerdsl.importers`` and, once that is a package, each module in it. A module that holds
    several importers declares ``<NAME>_IMPORTABLE`` and ``<NAME>_NOT_IMPORTABLE`` for each.
    """
    package = importlib.import_module("layerdsl.importers")
    modules = [package]
    if hasattr(package, "__path__"):
        modules += [
            importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)
        ]
    found = {}
    for module in modules:
        for attribute in vars(module):
            if attribute.endswith("IMPORTABLE") and not attribute.endswith("NOT_IMPORTABLE"):
                prefix = attribute[: -len("IMPORTABLE")]
                name = prefix.rstrip("_").lower() or module.__name__.rsplit(".", 1)[-1]
                found[name] = (getattr(module, attribute), getattr(module, prefix + "NOT_IMPORTABLE"))
    return found


IMPORTERS = _importers()


def test_the_keras_and_torch_importers_declare_what_they_read():
    for framework in ("keras", "torch"):
        assert any(framework in name for name in IMPORTERS), f"no {framework} importer declares IMPORTABLE"


@pytest.mark.parametrize("importer", sorted(IMPORTERS))
def test_every_layer_kind_is_importable_or_refused_with_a_reason(importer):
    importable, refused = IMPORTERS[importer]
    kinds = set(specs.layer_kinds())
    missing = sorted(kinds - set(importable) - set(refused))
    assert not missing, f"the {importer} importer says nothing about {missing}"
    assert not set(importable) & set(refused), f"the {importer} importer both reads and refuses them"
    assert set(importable) | set(refused) <= kinds, f"the {importer} importer names kinds that do not exist"
    assert all(importable.values()), f"the {importer} importer reads a kind from no class"
    for kind, reason in refused.items():
        assert len(reason) > 10, f"the {importer} importer refuses {kind} without a reason"


# --- the facts on each spec --------------------------------------------------------------------


def test_layers_that_take_a_mask_accept_one():
    """A mask reaching a layer without ``supports_mask`` is refused, so one that reads it must accept it."""
    for kind in specs.layer_kinds():
        spec = specs.REGISTRY[kind]
        assert not spec.takes_mask or spec.supports_mask, kind


#: A layer of each kind that names feature weights, reading 7 features.
FEATURE_WEIGHT_SAMPLES = {
    "dense": "input 7\ndense 5",
    "batchnorm": "input 7\nbatchnorm",
    "layernorm": "input 7\nlayernorm",
    "lstm": "input 3x7\nlstm 5",
    "gru": "input 3x7\ngru 5",
    "simplernn": "input 3x7\nsimplernn 5",
    "bidirectional": "input 3x7\nbidirectional lstm 5",
    "normalization": "input 7\nnormalization",
    "layerscale": "input 7\nlayerscale",
}


def test_every_kind_with_feature_weights_has_a_sample():
    named = {kind for kind in specs.layer_kinds() if specs.REGISTRY[kind].feature_weights}
    assert named == set(FEATURE_WEIGHT_SAMPLES)


@pytest.mark.parametrize("kind", sorted(FEATURE_WEIGHT_SAMPLES))
def test_feature_weights_run_over_the_input_features_on_their_first_axis(kind):
    (layer,) = layerdsl.parse(FEATURE_WEIGHT_SAMPLES[kind]).layers
    weights = {w.name: w for w in layer.weights}
    for name in specs.REGISTRY[kind].feature_weights:
        assert weights[name].shape[0] == layer.input_shape[-1] == 7, (kind, name)


#: The per-feature layers, each as it might read a flattened vector of 6 features.
PER_FEATURE_SAMPLES = {
    "dropout": ["dropout 0.5"],
    "activation": [f"activation {name}" for name in specs.ACTIVATIONS],
    "batchnorm": ["batchnorm"],
    "layernorm": ["layernorm"],
    "rescaling": ["rescaling 0.5 offset=1.0"],
    "normalization": ["normalization", "normalization mean=0.5 variance=2.0"],
    "layerscale": ["layerscale 0.5"],
}


def test_every_per_feature_kind_has_a_sample():
    assert {kind for kind in specs.layer_kinds() if specs.REGISTRY[kind].per_feature} == set(PER_FEATURE_SAMPLES)


@pytest.mark.parametrize("statement", [statement for samples in PER_FEATURE_SAMPLES.values() for statement in samples])
def test_per_feature_layers_commute_with_a_permutation_of_the_features(statement):
    """What a flatten's feature order relies on: permuted input and feature weights, permuted output."""
    model = layerdsl.parse(f"input 6\n{statement}")
    (layer,) = model.layers
    perm = np.random.default_rng(2).permutation(6)
    x = np.random.default_rng(3).normal(0.0, 1.0, (4, 6)).astype(np.float32)
    weights = random_weights(model)
    permuted = {
        key: array[perm] if key.split(".", 1)[1] in specs.REGISTRY[layer.kind].feature_weights else array
        for key, array in weights.items()
    }
    plain, reordered = layerdsl.build(model, "numpy"), layerdsl.build(model, "numpy")
    layerdsl.set_weights(plain, weights, model)
    layerdsl.set_weights(reordered, permuted, model)
    np.testing.assert_allclose(reordered(x[:, perm]), plain(x)[:, perm], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("target", sorted(BACKENDS))
def test_every_emitter_has_the_one_shared_signature(target):
    """emit(layer, ctx): the same contract drives source writers and the ONNX graph builder."""
    import inspect

    for kind, emit in BACKENDS[target].emitters.items():
        parameters = list(inspect.signature(emit).parameters.values())
        assert len(parameters) == 2, f"{target} emitter for {kind} takes {[p.name for p in parameters]}"
        assert parameters[0].name == "layer", f"{target} emitter for {kind} takes {parameters[0].name} first"
