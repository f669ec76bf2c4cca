"""The library's boundary: bad values are named errors, suspicious ones are warnings."""

import pytest
import torch

from clustercam.exceptions import UserError
from clustercam.explain import cardinality, extract_concepts, grad_ceam
from clustercam.explain.concepts import NegativeActivationWarning, concept_importance
from clustercam.models.components.resnet_cae import ResNetCAE


@pytest.fixture
def enc():
    torch.manual_seed(0)
    return ResNetCAE((1, 16), filters=(4,), embedding_dim=3).encoder


def test_duplicate_centroids_are_a_warning(enc):
    mu = torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    with pytest.warns(RuntimeWarning, match=r"centroids \[\[0, 1\]\] are identical"):
        res = grad_ceam(enc, "features", torch.randn(4, 1, 16), mu)
    assert torch.equal(res.channel_weights[:, 0], res.channel_weights[:, 1])


def test_non_finite_channel_weights_are_rejected_by_cardinality(enc):
    x, mu = torch.randn(4, 1, 16), torch.randn(2, 3)
    w = torch.ones(4, 2, 4)
    w[2, 1, 3] = float("nan")
    with pytest.raises(UserError, match=r"channel_weights contain NaN or infinite values \(samples \[2\]"):
        cardinality(enc, "features", x, mu, w)


def test_negative_activations_are_a_warning_for_the_concept_functions():
    a = torch.rand(2, 12, 4, 4) - 0.2
    with pytest.warns(NegativeActivationWarning, match="post-ReLU"):
        extract_concepts(a, n_concepts=3, n_init=2)
    with pytest.warns(NegativeActivationWarning):
        concept_importance(lambda t: t.mean((2, 3)), a, torch.zeros(2, 12, dtype=torch.long), [0, 1])


def test_non_negative_activations_give_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NegativeActivationWarning)
        extract_concepts(torch.rand(2, 12, 4, 4), n_concepts=3, n_init=2)
