"""Concepts of 1-D activations (B x C x L, held as B x C x 1 x L): planted groups, time steps
mapped back to the input at strides 1 and 2, fidelity curves on a hand-built head."""

from __future__ import annotations

import pytest
import torch

from clustercam.explain.concepts import concept_importance, extract_concepts
from clustercam.explain.concepts.image.fidelity import PooledHead, concept_fidelity
from clustercam.explain.concepts.image.maps import concept_maps
from clustercam.explain.layouts import grid_2d, infer_layout

ALGORITHMS = ["kmeans", "agglomerative", "birch", "gmm"]


def _same_partition(labels: torch.Tensor, groups: torch.Tensor) -> bool:
    """Whether two labelings of the channels are the same partition (up to renaming)."""
    pairs = {(int(a), int(b)) for a, b in zip(labels.tolist(), groups.tolist())}
    return len(pairs) == len(set(labels.tolist())) == len(set(groups.tolist()))


def _planted(method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """2 series x 12 channels x 60 steps in 3 groups of 4: group g is a bump over steps
    20g..20g+9 (CGAP: the group's time pattern; CPHA: its maximum at step 20g + 3 + channel)."""
    torch.manual_seed(0)
    groups = torch.arange(12) // 4
    a = torch.zeros(2, 12, 60)
    for c in range(12):
        g = int(groups[c])
        a[:, c, 20 * g:20 * g + 10] = 1.0 + 0.05 * torch.rand(2, 10)
        if method == "cpha":
            a[:, c, 20 * g + 3 + c % 4] = 3.0
    return grid_2d(infer_layout(a).read(a)), groups


@pytest.mark.parametrize("method", ["cgap", "cpha"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_planted_time_groups_are_recovered_exactly(method: str, algorithm: str) -> None:
    a, groups = _planted(method)
    assert a.shape == (2, 12, 1, 60)
    labels = extract_concepts(a, method=method, n_concepts=3, algorithm=algorithm, seed=0, n_init=4)
    for row in labels:
        assert _same_partition(row, groups), (method, algorithm, row.tolist())


@pytest.mark.parametrize("stride", [1, 2])
def test_cpha_time_steps_map_back_to_the_input_at_strides_1_and_2(stride: int) -> None:
    # a layer of `stride` that sums `stride` input steps: a spike at input step p fires at
    # layer step p // stride; the concept's map, linearly resized to the input's length, peaks
    # on the input steps that layer step covers, which hold p
    length, spikes = 48, [5, 20, 41]
    layer = torch.nn.Conv1d(1, 3, stride, stride=stride, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.zeros(1, 1, length)
    x[0, 0, spikes] = 1.0  # every channel sees every spike: each keeps only its own, weighted
    with torch.no_grad():
        out = layer(x)
    own = torch.zeros_like(out)
    for c, p in enumerate(spikes):
        own[0, c, p // stride] = out[0, c, p // stride] * (c + 1)
    a = grid_2d(infer_layout(own).read(own))
    assert a.shape == (1, 3, 1, length // stride)
    labels = extract_concepts(a, method="cpha", n_concepts=3, seed=0)
    assert sorted(labels[0].tolist()) == [0, 1, 2]
    maps = concept_maps(a, labels, (length,))
    assert maps.shape == (1, 3, 1, length)
    for c, p in enumerate(spikes):
        m = maps[0, int(labels[0, c]), 0]
        top = (m == m.max()).nonzero().flatten().tolist()
        t = p // stride
        assert top == list(range(stride * t, stride * t + stride)) and p in top


def _group_head(c: int = 8, group=(0, 1, 2), weight: float = 3.0):
    """3 classes; class 0's logit is 3 x the mean over time of the channels of ``group``."""
    fc = torch.nn.Linear(c, 3)
    with torch.no_grad():
        fc.weight.zero_()
        fc.weight[0, list(group)] = weight
        fc.bias.zero_()

    def pool(a: torch.Tensor) -> torch.Tensor:
        return a.flatten(2).mean(-1)

    return (lambda a: fc(pool(a))), PooledHead(pool=pool, linear=fc)


def test_fidelity_curves_of_a_hand_built_series_start_at_1_and_follow_the_definitions() -> None:
    torch.manual_seed(0)
    a = (torch.rand(3, 8, 1, 30) + 0.5)  # 3 series, 8 channels over 30 steps, all kept
    labels = (torch.arange(8) // 4).repeat(3, 1)  # concept 0 = channels 0-3 (holds the group)
    head, pooled = _group_head()
    targets = torch.zeros(3, dtype=torch.long)
    imp = concept_importance(head, a, labels, targets, pooled_head=pooled)
    assert bool((imp[:, 0] > 0).all()) and torch.allclose(imp[:, 1], torch.zeros(3, dtype=imp.dtype))
    fid = concept_fidelity(head, a, labels, targets, imp, repeats=5, seed=0, pooled_head=pooled)
    d, ins = fid.deletion["importance"], fid.insertion["importance"]
    p_t = torch.softmax(head(a).double(), -1)[:, 0]
    ones = torch.ones(3, dtype=d.dtype)
    assert torch.allclose(d[:, 0], ones) and torch.allclose(ins[:, -1], ones)
    # deletion step 1 removes concept 0 (the group): logits all 0, p_t = 1/3
    assert torch.allclose(d[:, 1], (1 / 3) / p_t, atol=1e-6)
    # insertion step 0: nothing kept, p_t = 1/3; step 1 adds concept 0 back: the whole logit
    assert torch.allclose(ins[:, 0], (1 / 3) / p_t, atol=1e-6) and torch.allclose(ins[:, 1], ones, atol=1e-6)


def test_pca_of_long_series_through_the_gram_matrix_equals_the_covariance_pca() -> None:
    from clustercam.explain.concepts.image.kmeans import batched_pca

    torch.manual_seed(0)
    x = torch.rand(3, 20, 60, dtype=torch.float64)  # 20 channels over 60 steps: the Gram path
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, :4] = False
    scores = batched_pca(x, mask, 4)
    m = mask.double().unsqueeze(-1)
    xc = (x - (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)) * m
    ref = xc @ torch.linalg.eigh(xc.mT @ xc)[1][..., -4:].flip(-1)  # D x D covariance, by hand
    assert torch.allclose(scores.abs(), ref.abs(), atol=1e-10)  # equal up to each component's sign
    assert bool((scores[1, :4] == 0).all())
    assert batched_pca(x[:, :2], mask[:, :2], 4).shape == (3, 2, 4)  # more components than rows


def test_cgap_of_long_series_matches_the_sklearn_reference() -> None:
    a, groups = _planted("cgap")
    a = a + 0.3 * torch.rand(a.shape, generator=torch.Generator().manual_seed(1))
    fast = extract_concepts(a, method="cgap", n_concepts=3, seed=0, backend="torch")
    ref = extract_concepts(a, method="cgap", n_concepts=3, seed=0, backend="sklearn")
    for f, r in zip(fast, ref):
        assert _same_partition(f, r) and _same_partition(f, groups)
