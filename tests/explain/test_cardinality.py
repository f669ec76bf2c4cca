"""The cardinality table (the paper's eq. 12) on constructed cases whose answer is known."""

import math

import pytest
import torch

from clustercam.exceptions import UserError
from clustercam.explain.gradceam import amplification_weights, cardinality, grad_ceam
from tests.explain.tiny import GapLinear

# channel means = embeddings: (0.6, 0.4) -> cluster 0; (0.4, 0.6), (0.3, 0.7) -> cluster 1
X = torch.tensor([[[0.6, 0.6], [0.4, 0.4]], [[0.4, 0.4], [0.6, 0.6]], [[0.3, 0.3], [0.7, 0.7]]])
MU = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
# cluster 0 relies on channel 0, cluster 1 on channel 1
W = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).expand(3, 2, 2)


def test_amplification_weights_minmax_to_0_2():
    w = torch.tensor([[[0.5, -1.0, 0.25], [3.0, 3.0, 3.0]]])
    expected = torch.tensor([[[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])
    torch.testing.assert_close(amplification_weights(w), expected)
    torch.testing.assert_close(amplification_weights(w, "raw"), w)
    with pytest.raises(UserError, match="unknown normalise"):
        amplification_weights(w, "zscore")


def test_constructed_case():
    # amplified with cluster 0's weights every z becomes (2 z_0, 0): all go to mu_0 -> 3 / 1
    # with cluster 1's weights every z becomes (0, 2 z_1): all go to mu_1 -> 3 / 2
    res = cardinality(GapLinear(2), "features", X, MU, W)
    assert res.before.tolist() == [1, 2]
    assert res.after.tolist() == [3, 3]
    torch.testing.assert_close(res.ratio, torch.tensor([3.0, 1.5], dtype=torch.float64))
    s = res.summary()
    assert (s["median"], s["mean"], s["min"], s["max"]) == (2.25, 2.25, 1.5, 3.0)
    assert res.rows()[1] == {"cluster": 1, "before": 2, "after": 3, "ratio": 1.5}


def test_chunking_does_not_change_the_table():
    torch.manual_seed(0)
    x = torch.rand(11, 2, 3)
    a = cardinality(GapLinear(2), "features", x, MU, W[:1].expand(11, 2, 2), batch_size=2)
    b = cardinality(GapLinear(2), "features", x, MU, W[:1].expand(11, 2, 2), batch_size=None)
    assert a.after.tolist() == b.after.tolist() and a.before.tolist() == b.before.tolist()


def test_empty_cluster_is_nan_and_excluded_with_a_warning():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [50.0, 50.0]])
    w = torch.zeros(3, 3, 2)
    w[:, 0, 0] = w[:, 1, 1] = w[:, 2, 0] = 1.0
    with pytest.warns(UserWarning, match="empty before"):
        res = cardinality(GapLinear(2), "features", X, mu, w)
    assert res.before.tolist() == [1, 2, 0]
    assert math.isnan(res.ratio[2])
    s = res.summary()
    assert s["empty_clusters"] == 1 and s["max"] == 3.0


def test_assignment_weights_pull_towards_the_centroid():
    """Amplifying cluster c's assignment-mode weights never shrinks cluster c (issue 8)."""
    torch.manual_seed(1)
    # 4 channels; embeddings = channel means through a fixed mixing matrix
    mix = torch.tensor([[1.0, 0.2, 0.0, 0.0], [0.0, 1.0, 0.3, 0.0], [0.0, 0.0, 1.0, 0.2]])
    enc = GapLinear(4)
    enc.fc = torch.nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        enc.fc.weight.copy_(mix)
    x = torch.rand(60, 4, 5) + 0.1  # positive activations
    z = enc(x).detach()
    mu = torch.stack([z[i::3].mean(0) for i in range(3)]) + 0.05 * torch.randn(3, 3)
    res = grad_ceam(enc, "features", x, mu, target="assignment", return_maps=False)
    card = cardinality(enc, "features", x, mu, res.channel_weights)
    assert (card.after >= card.before).all(), (card.before, card.after)
    assert (card.ratio > 1).any()


def test_weights_with_the_wrong_shape_are_a_clear_error():
    with pytest.raises(UserError, match="channel_weights must be N x K x C"):
        cardinality(GapLinear(2), "features", X, MU, torch.ones(3, 3, 2))
    with pytest.raises(UserError, match="channels"):
        cardinality(GapLinear(2), "features", X, MU, torch.ones(3, 2, 5))
