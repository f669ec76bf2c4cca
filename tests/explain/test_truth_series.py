"""Concept truth over time steps: series masks B x 3 x L against a 1-D layer held as a
1 x l grid, on hand-built cases whose answers are computed by hand."""

import math

import pytest
import torch

from clustercam.explain.concepts.classes.coassociation import ClassConcepts
from clustercam.explain.concepts.classes.pooled import PooledActivations
from clustercam.explain.concepts.classes.scores import ClassConceptScores
from clustercam.explain.concepts.image.ablation import PooledHead
from clustercam.explain.concepts.image.fidelity import concept_fidelity
from clustercam.explain.concepts.image.truth import concept_truth, paint_out_drops, part_shares


def series_masks(length: int = 8) -> torch.Tensor:
    m = torch.zeros(1, 3, length, dtype=torch.bool)
    m[0, 0, 0:2] = True  # motif A: t = 0, 1
    m[0, 1, 2:4] = True  # motif B: t = 2, 3
    m[0, 2, 5] = True  # distractor: t = 5
    return m


def test_concepts_each_on_one_motif_at_input_resolution():
    a = torch.zeros(1, 2, 1, 8)  # B x C x 1 x L: the grid of a 1-D layer
    a[0, 0, 0, 0:2] = 1.0  # channel 0 on motif A
    a[0, 1, 0, 2:4] = 2.0  # channel 1 on motif B
    s = concept_truth(a, torch.tensor([[0, 1]]), torch.tensor([[10.0, 5.0]]), series_masks())["concepts"]
    assert float(s["pointing"]) == 1 and float(s["class_part_mass"]) == 1
    assert float(s["class_part_area"]) == 4 / 8  # |A u B| / L
    assert float(s["distractor_mass"]) == 0
    assert float(s["parts_separated"]) == 1 and float(s["part_purity"]) == 1


def test_a_short_layer_is_resized_linearly_over_time():
    # one channel [1, 0, 0, 0] at 4 steps, linear (align_corners=False) to 8 steps:
    # [1, .75, .25, 0, 0, 0, 0, 0] (sum 2): 1.75 on A (t 0-1), 0.25 on B (t 2-3)
    a = torch.zeros(1, 1, 1, 4)
    a[0, 0, 0, 0] = 1.0
    masks = series_masks()
    s = concept_truth(a, torch.tensor([[0]]), torch.tensor([[3.0]]), masks)["concepts"]
    assert float(s["class_part_mass"]) == pytest.approx(1.0)
    assert float(s["part_purity"]) == pytest.approx(0.875 - 0.125)
    assert float(s["parts_separated"]) == 0  # one concept, mostly on A: nothing on B alone
    assert float(s["pointing"]) == 1  # the maximum at t = 0, on A
    # the same from the drawn maps (the path of signed activations)
    maps = torch.tensor([[[1.0, 0.75, 0.25, 0, 0, 0, 0, 0]]])  # B x n x L
    shares = part_shares(maps, masks)
    assert float(shares["a"]) == pytest.approx(0.875) and float(shares["b"]) == pytest.approx(0.125)
    signed = a.clone()
    signed[0, 0, 0, 3] = -1.0  # signed: maps are drawn, clipped at 0: the same map as above
    s2 = concept_truth(signed, torch.tensor([[0]]), torch.tensor([[3.0]]), masks)["concepts"]
    assert float(s2["part_purity"]) == pytest.approx(0.75)


def test_painting_out_a_motif_replaces_its_time_steps_by_the_background():
    x = torch.zeros(1, 1, 8)
    x[0, 0, 0:2] = 1.0  # motif A on a zero background

    def model(series):  # class 0 reads motif A's steps
        return torch.stack([series[:, 0, :2].sum(-1), torch.zeros(len(series))], 1)

    drops = paint_out_drops(model, x, torch.zeros_like(x), series_masks(), torch.tensor([0]))
    p = 1 / (1 + math.exp(-2))  # softmax([2, 0])[0]
    assert drops[0].tolist() == pytest.approx([p, p - 0.5, 0.0, 0.0])


def test_class_concept_masses_on_series_masks():
    a = torch.zeros(2, 2, 1, 4)
    a[:, 0, 0, 0] = 1.0  # resized to 8 steps: 1.75 on A, 0.25 on B (see above)
    a[:, 1, 0, 3] = 1.0  # resized: [0, 0, 0, 0, 0, .25, .75, 1]: 0.25 on the distractor
    masks = series_masks().expand(2, 3, 8)
    cc = ClassConcepts([0], torch.tensor([[0, 1]]), 2, torch.tensor([2]))
    w = torch.eye(2)

    def head(x):
        return x.mean((2, 3)) @ w

    sc = ClassConceptScores(cc, 0)
    sc.update(head, a, torch.tensor([[0, 1]] * 2), torch.zeros(2), torch.arange(2), masks=masks)
    masses = sc.summary()["masses"][0]
    assert torch.allclose(masses.double(), torch.tensor([[0.875, 0.125, 0.0], [0.0, 0.0, 0.125]], dtype=torch.float64))
    # the pooled head's per-channel region masses: the same numbers without drawing maps
    pooled = PooledActivations.of(PooledHead(pool=lambda x: x.mean((2, 3)), linear=lambda p: p @ w), a, masks)
    expected = torch.tensor([[1.75, 0.25, 0.0, 2.0], [0.0, 0.0, 0.25, 2.0]], dtype=torch.float64)
    assert torch.allclose(pooled.regions[0].double(), expected)


def test_fidelity_curves_of_a_1d_layer_start_at_one():
    w = torch.zeros(2, 4)
    w[0, :2] = 4.0  # class 0 reads channels 0 and 1 (concept 0)

    def head(x):
        return x.mean((2, 3)) @ w.T

    a = torch.ones(1, 4, 1, 6)
    fid = concept_fidelity(head, a, torch.tensor([[0, 0, 1, 1]]), torch.tensor([0]), torch.tensor([[50.0, 0.0]]))
    y1 = 0.5 / (1 / (1 + math.exp(-8)))  # p_t without concept 0 (logits 0, 0) over p_t
    assert fid.deletion["importance"][0].tolist() == pytest.approx([1.0, y1, y1])
    assert fid.insertion["importance"][0].tolist() == pytest.approx([y1, 1.0, 1.0])
    assert float(fid.aucs["importance"]["deletion_auc"][0]) == pytest.approx(0.25 + 0.75 * y1)
