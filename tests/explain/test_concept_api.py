"""The concept API's vocabulary: typed batch results (metrics by name, concatenation), one
configuration type, keyword-only options, and the renamed keywords still accepted."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import clustercam.explain.concepts as concepts
from clustercam.exceptions import UserError
from clustercam.explain.concepts import (
    CONCEPT_METRIC_NAMES,
    ConceptBatch,
    ConceptConfig,
    ConceptSettings,
    cluster_channels,
    concept_importance,
    concept_maps,
    concept_metrics,
    extract_concepts,
    run_concepts,
)


def _acts(n: int = 4, c: int = 24) -> torch.Tensor:
    return torch.relu(torch.randn(n, c, 4, 4, generator=torch.Generator().manual_seed(3)))


def _head(a: torch.Tensor) -> torch.Tensor:
    return a.mean((2, 3))[:, :5]


SETTINGS = ConceptSettings(n_concepts=3, sub_concepts=2, n_init=2, fidelity=False)


def test_a_config_is_a_named_tuple_equal_to_the_plain_tuple() -> None:
    cfg = ConceptConfig("cgap", "kmeans", 5)
    assert cfg == ("cgap", "kmeans", 5) and {("cgap", "kmeans", 5): 1}[cfg] == 1
    assert cfg.name == "cgap_kmeans_n5" and cfg.n_concepts == 5
    assert SETTINGS.configs == [("cgap", "kmeans", 3), ("cpha", "kmeans", 3)]
    assert all(isinstance(c, ConceptConfig) for c in SETTINGS.configs + SETTINGS.details)


def test_batch_metrics_are_keyed_by_name_and_equal_concept_metrics() -> None:
    a = _acts()
    batch = run_concepts(_head, a, torch.arange(4) % 5, settings=SETTINGS)
    assert list(batch.metrics) == list(CONCEPT_METRIC_NAMES)
    for c, (method, algo, n) in enumerate(SETTINGS.configs):
        rows = concept_metrics(cluster_channels(a, method=method, n_concepts=n, algorithm=algo, n_init=2),
                               warn=False)
        for name in ("silhouette", "calinski_harabasz", "davies_bouldin"):
            want = torch.tensor([r[name] for r in rows], dtype=torch.float64)
            torch.testing.assert_close(batch.metrics[name][:, c], want, equal_nan=True)


def test_batches_concatenate_to_the_whole_run_and_survive_a_gather() -> None:
    a, y = _acts(), torch.arange(4) % 5
    whole = run_concepts(_head, a, y, settings=SETTINGS)
    parts = ConceptBatch.cat([run_concepts(_head, a[:2], y[:2], settings=SETTINGS),
                              run_concepts(_head, a[2:], y[2:], settings=SETTINGS)])
    assert len(parts) == 4 and len(parts.degenerate[0]) == 4
    for f in dataclasses.fields(ConceptBatch):
        got, want = getattr(parts, f.name), getattr(whole, f.name)
        if f.name == "metrics":  # the seconds are wall time
            got, want = ({k: v for k, v in d.items() if k != "seconds"} for d in (got, want))
        if isinstance(want, torch.Tensor):
            assert torch.equal(got.nan_to_num(-7.0), want.nan_to_num(-7.0)), f.name
        elif isinstance(want, dict):
            assert all(torch.equal(got[k].nan_to_num(-7.0), want[k].nan_to_num(-7.0)) for k in want), f.name
        else:
            assert got == want, f.name
    back = ConceptBatch.from_tensors(parts.tensors())  # what a DDP gather sends and rebuilds
    assert torch.equal(back.importance.nan_to_num(-7.0), whole.importance.nan_to_num(-7.0))
    assert back.degenerate is None and back.concept_labels is None  # per configuration: not gathered
    with pytest.raises(UserError, match="only some have maps"):
        ConceptBatch.cat([whole, whole.replace(maps=None)])


def test_options_after_the_data_are_keyword_only() -> None:
    a = _acts(1)
    with pytest.raises(TypeError):
        extract_concepts(a, "cpha", 2)
    with pytest.raises(TypeError):
        ConceptSettings(("cgap",), "kmeans", 5)
    labels = extract_concepts(a, method="cpha", n_concepts=2, n_init=2)
    with pytest.raises(TypeError):
        concept_importance(_head, a, labels, [0], 2)


def test_the_old_keywords_still_work_with_a_deprecation_warning() -> None:
    a = _acts(2)
    labels = extract_concepts(a, n_concepts=3, n_init=2)
    with pytest.warns(DeprecationWarning, match="labels= is renamed concept_labels="):
        old = concept_importance(_head, a, labels=labels, targets=[0, 1])
    torch.testing.assert_close(old, concept_importance(_head, a, labels, [0, 1]), equal_nan=True)
    with pytest.warns(DeprecationWarning):
        assert torch.equal(concept_maps(a, labels=labels, size=8), concept_maps(a, labels, 8))
    with pytest.warns(DeprecationWarning, match="labels= is renamed y="):
        run_concepts(_head, a, settings=SETTINGS, labels=torch.tensor([0, 1]))
    with pytest.warns(DeprecationWarning, match="METHODS is renamed CONCEPT_METHODS"):
        assert concepts.METHODS == concepts.CONCEPT_METHODS
