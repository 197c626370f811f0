"""Every layer kind is realized by every backend, or refused there with a reason."""

import pytest

from layerdsl import specs
from layerdsl.backends import BACKENDS


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


def test_every_spec_documents_its_params():
    for spec in specs.REGISTRY.values():
        assert spec.doc
        for param in spec.params:
            assert param.doc, f"{spec.kind}.{param.name} has no doc"
