"""Concept localisation against part masks, on hand-built maps and masks."""

import math

import pytest
import torch

from clustercam.explain.concepts.image.truth import (
    PAINT_COLUMNS,
    concept_truth,
    paint_out_drops,
    part_shares,
    spearman_rows,
    truth_scores,
)


def masks_8x8():
    m = torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    m[0, 0, :2, :2] = True  # part A: 4 px
    m[0, 1, 6:, 6:] = True  # part B: 4 px
    m[0, 2, 4, :4] = True  # distractor: 4 px
    return m


def test_a_map_entirely_on_part_a_has_mass_one_and_points_there():
    masks = masks_8x8()
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, :2, :2] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    s = part_shares(maps, masks)
    assert float(s["a"]) == 1 and float(s["b"]) == 0 and float(s["distractor"]) == 0
    assert float(s["pointing"]) == 1
    scores = truth_scores(s, torch.tensor([[7.0]]), torch.tensor([[3]]), masks)
    assert float(scores["class_part_mass"]) == 1 and float(scores["pointing"]) == 1
    assert float(scores["part_purity"]) == 1 and float(scores["parts_separated"]) == 0  # no B concept


def test_a_uniform_map_has_the_area_share_as_mass():
    masks = masks_8x8()
    maps = torch.ones(1, 1, 8, 8)
    s = part_shares(maps, masks)
    scores = truth_scores(s, torch.tensor([[1.0]]), torch.tensor([[5]]), masks)
    area = 8 / 64
    assert float(scores["class_part_area"]) == pytest.approx(area)
    assert float(scores["class_part_mass"]) == pytest.approx(area)
    assert float(scores["distractor_mass"]) == pytest.approx(4 / 64)
    assert float(scores["pointing"]) == pytest.approx(area)  # ties: the expected hit
    assert float(scores["part_purity"]) == pytest.approx(0)  # as much on A as on B


def test_separation_purity_and_the_top_concept():
    masks = masks_8x8()
    maps = torch.zeros(1, 3, 8, 8)
    maps[0, 0, :2, :2] = 0.9  # concept 0: 90 % of its part mass on A
    maps[0, 0, 7, 7] = 0.4  # ... 10 % on B (0.4 on one pixel vs 3.6)
    maps[0, 1, 6:, 6:] = 1.0  # concept 1: all on B
    maps[0, 2, 4, :4] = 1.0  # concept 2: the distractor, the most important
    maps[0, 2, 0, 0] = 1.0
    s = part_shares(maps, masks)
    assert s["a"][0].tolist() == pytest.approx([0.9, 0.0, 0.2])
    imp = torch.tensor([[10.0, 5.0, 30.0]])
    sc = truth_scores(s, imp, torch.tensor([[4, 4, 4]]), masks)
    assert float(sc["parts_separated"]) == 1
    # purity: (|0.9 - 0.1| + |0 - 1| + |0.2 - 0|) / (1 + 1 + 0.2)
    assert float(sc["part_purity"]) == pytest.approx((0.8 + 1 + 0.2) / 2.2)
    # the top concept is the distractor concept: 0.2 on class parts, 0.8 on the distractor
    assert float(sc["class_part_mass"]) == pytest.approx(0.2)
    assert float(sc["distractor_mass"]) == pytest.approx(0.8)
    # importance 10, 5, 30 vs class-part mass 1, 1, 0.2: ranks 2, 1, 3 vs 2.5, 2.5, 1
    assert float(sc["importance_spearman"]) == pytest.approx(-0.866, abs=1e-3)


def test_spearman_needs_three_finite_points():
    x = torch.tensor([[1.0, 2.0, 3.0, math.nan], [1.0, 2.0, math.nan, math.nan], [1.0, 1.0, 1.0, 1.0]])
    y = torch.tensor([[3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    r = spearman_rows(x, y)
    assert float(r[0]) == pytest.approx(-1) and math.isnan(float(r[1])) and math.isnan(float(r[2]))


def test_concepts_that_split_the_parts_beat_random_partitions():
    """Channels 0-3 fire on part A, 4-7 on part B: concepts {0-3}, {4-7} separate the parts;
    random groups of the same sizes mix them."""
    masks = masks_8x8().expand(4, 3, 8, 8)
    a = torch.zeros(4, 8, 2, 2)
    a[:, :4, 0, 0] = 1.0  # the top-left activation cell covers part A after resizing
    a[:, 4:, 1, 1] = 1.0
    labels = torch.tensor([[0] * 4 + [1] * 4]).repeat(4, 1)
    imp = torch.tensor([[20.0, 10.0]]).repeat(4, 1)
    g = torch.Generator().manual_seed(0)
    parts = torch.stack([labels[:, torch.randperm(8, generator=g)] for _ in range(10)])
    res = concept_truth(a, labels, imp, masks, partitions=parts, partition_importance=torch.rand(10, 4, 2, generator=g))
    found, rand = res["concepts"], res["random"]
    assert (found["parts_separated"] == 1).all()
    assert (found["part_purity"] > 0.9).all()
    assert (rand["part_purity"] < found["part_purity"]).all()
    assert float(rand["parts_separated"].mean()) < 1
    with pytest.raises(ValueError, match="need their importances"):
        concept_truth(a, labels, imp, masks, partitions=parts, partition_importance=None)


def test_painting_out_the_part_the_model_reads_drops_p_t():
    x = torch.zeros(2, 3, 8, 8)
    masks = masks_8x8().expand(2, 3, 8, 8).clone()
    x[:, :, :2, :2] = 1.0  # part A bright
    x[:, :, 4, :4] = 1.0  # distractor bright
    bg = torch.zeros_like(x)

    def model(inp):  # class 0 reads the top-left corner only
        z = inp[:, :, :2, :2].mean((1, 2, 3)) * 4
        return torch.stack([z, torch.zeros_like(z)], 1)

    d = paint_out_drops(model, x, bg, masks, torch.tensor([0, 0]))
    assert d.shape == (2, len(PAINT_COLUMNS))
    p = torch.sigmoid(torch.tensor(4.0, dtype=torch.float64))
    assert torch.allclose(d[:, 0], p.expand(2))
    assert torch.allclose(d[:, 1], (p - 0.5).expand(2))  # part A gone: p_t 0.5
    assert torch.allclose(d[:, 2:], torch.zeros(2, 2, dtype=d.dtype))  # B and the bar unused


def test_mask_shapes_must_fit():
    with pytest.raises(ValueError, match="part_masks must be B x 3 x H x W"):
        part_shares(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="must have one size"):
        part_shares(torch.zeros(1, 2, 8, 8), torch.zeros(1, 3, 4, 4, dtype=torch.bool))


def test_region_masses_from_channels_equal_those_of_the_drawn_maps():
    """The fast path (channel masses through the resize's adjoint) against drawn maps."""
    from clustercam.data.parts import make_parts
    from clustercam.explain.concepts.image.extract import concept_counts
    from clustercam.explain.concepts.image.truth import scoring_maps

    _, _, masks, _ = make_parts(3, seed=5)
    masks = torch.from_numpy(masks)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 20, 8, 8, generator=g) ** 4  # non-negative, peaked
    a[:, 0] = 0  # a dropped channel
    labels = torch.randint(0, 4, (3, 20), generator=g)
    labels[:, 0] = -1
    imp = torch.rand(3, 4, generator=g) * 50
    fast = concept_truth(a, labels, imp, masks)["concepts"]
    slow = truth_scores(part_shares(scoring_maps(a, labels, 4, (64, 64)), masks), imp,
                        concept_counts(labels, 4), masks)
    for k in fast:
        assert torch.allclose(fast[k], slow[k], atol=1e-5, equal_nan=True), k
    # negative activations: clipping matters, the maps are drawn (same scores as by hand)
    neg = a - 0.05
    got = concept_truth(neg, labels, imp, masks)["concepts"]
    ref = truth_scores(part_shares(scoring_maps(neg, labels, 4, (64, 64)), masks), imp,
                       concept_counts(labels, 4), masks)
    for k in got:
        assert torch.allclose(got[k], ref[k], equal_nan=True), k
