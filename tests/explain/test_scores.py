"""Deletion / insertion and localisation scores: toy encoders with known answers, hand values."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from clustercam.exceptions import UserError
from clustercam.explain.assignments import soft_assignment, spread_temperature
from clustercam.explain.cluster_scores import ClusterScoreModel
from clustercam.explain.gradceam import grad_ceam
from clustercam.explain.scores import (
    DEFAULT_MAP_METHODS,
    ScoreSettings,
    curve_auc,
    deletion_insertion,
    explanation_maps,
    gaussian_blur,
    localisation_scores,
    make_baseline,
    mask_auroc,
    pointing_game,
    position_ranks,
    random_maps,
    relevance_mass,
    score_explanations,
    step_counts,
    summarise_curves,
)
from clustercam.models.components.resnet_cae import ResNetCAE


class WindowEncoder(nn.Module):
    """z = (mean of x over one window, 0): only the window's positions matter."""

    def __init__(self, window: tuple[slice, ...]):
        super().__init__()
        self.window = window

    def forward(self, x):
        w = x[(slice(None), slice(None), *self.window)].flatten(1).mean(1)
        return torch.stack([w, torch.zeros_like(w)], 1)


def _window_data(shape, window, n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, 1, *shape, generator=gen)
    x[(slice(None), slice(None), *window)] += 3.0
    good = torch.zeros(n, *shape)
    good[(slice(None), *window)] = 1 + torch.rand(good[(slice(None), *window)].shape, generator=gen)
    return x, good


@pytest.mark.parametrize(
    "shape,window",
    [((64,), (slice(20, 30),)), ((12, 12), (slice(3, 6), slice(7, 10)))],
    ids=["1d", "2d"],
)
def test_deleting_the_window_first_drops_the_assignment_fastest(shape, window):
    enc = WindowEncoder(window)
    x, good = _window_data(shape, window)
    mu = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    rnd = random_maps(good.shape, seed=1)
    worst = 1.0 - good  # the window last
    res = {name: deletion_insertion(enc, x, m, mu, steps=16, temperature=1.0)
           for name, m in {"good": good, "random": rnd, "worst": worst}.items()}
    auc = {name: {k: float(v.mean()) for k, v in c.aucs().items()} for name, c in res.items()}
    assert (res["good"].clusters == 0).all()  # every sample starts in the window's cluster
    # deletion: lowest area for the window map, then random, then the window last
    assert auc["good"]["deletion_auc"] < auc["random"]["deletion_auc"] - 0.2
    assert auc["random"]["deletion_auc"] < auc["worst"]["deletion_auc"] - 0.2
    # fastest at every step: the mean curve never lies above random's
    assert (res["good"].deletion.mean(0) <= res["random"].deletion.mean(0) + 1e-6).all()
    # the window is a share w of the positions: once it is gone the assignment is gone
    share = good[0].gt(0).double().mean()
    after = res["good"].fractions >= share + 1e-9
    assert (res["good"].deletion_hard[:, after] == 0).all()
    # insertion mirrors it
    assert auc["good"]["insertion_auc"] > auc["random"]["insertion_auc"] + 0.2
    assert auc["random"]["insertion_auc"] > auc["worst"]["insertion_auc"] + 0.2
    assert (res["good"].insertion.mean(0) >= res["random"].insertion.mean(0) - 1e-6).all()


def test_hand_computed_curves():
    # z = (sum of x, 0); centroids 9 and 0 on the first axis; T = 9: q0 = 1 / (1 + e^(9 - 2z))
    class Sum(nn.Module):
        def forward(self, x):
            s = x.flatten(1).sum(1)
            return torch.stack([s, torch.zeros_like(s)], 1)

    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    maps = torch.tensor([[0.1, 0.4, 0.3, 0.2]])  # order: 2, 3, 4, 1
    mu = torch.tensor([[9.0, 0.0], [0.0, 0.0]])
    c = deletion_insertion(Sum(), x, maps, mu, steps=4, temperature=9.0)
    q0 = lambda z: 1 / (1 + math.exp(9 - 2 * z))  # noqa: E731
    torch.testing.assert_close(c.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    del_z, ins_z = [10, 8, 5, 1, 0], [0, 2, 5, 9, 10]
    torch.testing.assert_close(c.deletion[0], torch.tensor([q0(z) for z in del_z], dtype=torch.float64))
    torch.testing.assert_close(c.insertion[0], torch.tensor([q0(z) for z in ins_z], dtype=torch.float64))
    assert c.deletion_hard[0].tolist() == [1, 1, 1, 0, 0]
    assert c.insertion_hard[0].tolist() == [0, 0, 1, 1, 1]
    aucs = c.aucs()
    assert aucs["deletion_hard_auc"].item() == pytest.approx(0.25 * (1 + 1 + 0.5))
    assert aucs["insertion_hard_auc"].item() == pytest.approx(0.25 * (0.5 + 1 + 1))
    # the cluster explained can be chosen: cluster 1's curves are the complements
    c1 = deletion_insertion(Sum(), x, maps, mu, steps=4, temperature=9.0, clusters=torch.tensor([1]))
    torch.testing.assert_close(c1.deletion, 1 - c.deletion)
    assert c1.assigned.tolist() == [0] and c1.clusters.tolist() == [1]


def test_curve_ends_batching_and_state():
    torch.manual_seed(0)
    enc = ResNetCAE((2, 24), filters=(4, 4), embedding_dim=3).encoder.train()
    x = torch.randn(7, 2, 24)
    maps = torch.rand(7, 24)
    mu = torch.randn(3, 3)
    a = deletion_insertion(enc, x, maps, mu, steps=5, batch_size=1000, baseline="mean")
    assert enc.training and all(m.training for m in enc.modules())  # train mode restored
    assert all(p.grad is None for p in enc.parameters())
    b = deletion_insertion(enc, x, maps, mu, steps=5, batch_size=7, baseline="mean")
    for key in ("deletion", "insertion", "deletion_hard", "insertion_hard"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key))
    # deletion starts at the sample and ends at the baseline; insertion the other way round
    torch.testing.assert_close(a.deletion[:, 0], a.insertion[:, -1])
    torch.testing.assert_close(a.deletion[:, -1], a.insertion[:, 0])
    with torch.no_grad():  # the curves use running BatchNorm statistics (eval mode)
        q = soft_assignment(enc.eval()(x), mu)
    torch.testing.assert_close(a.deletion[:, 0], q[torch.arange(7), a.clusters])


def test_agrees_with_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    x, mu, maps = torch.randn(5, 1, 16), torch.randn(3, 3), torch.rand(5, 16)
    c = deletion_insertion(enc, x, maps, mu, steps=4, temperature=2.0)
    model = ClusterScoreModel(enc, mu, temperature=2.0).eval()
    metric = quantus.PixelFlipping(features_in_step=4, perturb_baseline=0.0, normalise=False,
                                   abs=False, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric(model=model, x_batch=x.numpy(), y_batch=c.clusters.numpy(),
                        a_batch=maps[:, None].numpy(), channel_first=True, device="cpu",
                        softmax=False)
    # Quantus's curve starts after the first perturbation
    np.testing.assert_allclose(np.asarray(theirs), c.deletion[:, 1:].numpy(), rtol=1e-5, atol=1e-6)


def test_ties_are_broken_at_random():
    flat = torch.zeros(3, 50)
    ranks = position_ranks(flat, torch.Generator().manual_seed(0))
    assert all(sorted(r.tolist()) == list(range(50)) for r in ranks)
    assert not torch.equal(ranks[0], torch.arange(50))  # not "delete left to right"
    m = torch.tensor([[0.0, 5.0, 0.0, 2.0, 0.0]])
    r = position_ranks(m, torch.Generator().manual_seed(0))[0]
    assert r[1] == 0 and r[3] == 1 and sorted(r[[0, 2, 4]].tolist()) == [2, 3, 4]
    assert step_counts(10, 4).tolist() == [0, 2, 5, 8, 10]  # rounded half to even at 2.5, 7.5


def test_assignments_and_temperature():
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    mu = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    q = soft_assignment(z, mu, temperature=2.0)
    assert q[0, 0].item() == pytest.approx(1 / (1 + math.exp(-4 / 2)))
    t = soft_assignment(z, mu, kind="student_t", alpha=1.0)
    # DEC: (1 + d^2)^-1 normalised; sample 1: d^2 = 9 and 1
    assert t[1, 1].item() == pytest.approx((1 / 2) / (1 / 10 + 1 / 2))
    assert spread_temperature(z, mu) == pytest.approx((0 + 1) / 2)
    torch.testing.assert_close(q.sum(1), torch.ones(2, dtype=torch.float64))


def test_baselines():
    x = torch.arange(12.0).reshape(1, 2, 6)
    assert make_baseline(x, "zero").abs().sum() == 0
    torch.testing.assert_close(make_baseline(x, "mean")[0, :, 0], torch.tensor([2.5, 8.5]))
    assert (make_baseline(x, 0.5) == 0.5).all()
    img = torch.full((2, 3, 9, 9), 0.7)
    torch.testing.assert_close(make_baseline(img, "blur"), img)  # a constant image stays
    spike = torch.zeros(1, 1, 15, 15)
    spike[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(spike, 1.5)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5) and blurred.max() < 0.1
    with pytest.raises(UserError, match="baseline"):
        make_baseline(x, "noise")


# -- localisation -------------------------------------------------------------------------
def test_localisation_hand_values():
    maps = torch.tensor([[0.1, 0.9, 0.3, 0.0],
                         [0.5, 0.2, 0.8, -1.0],
                         [1.0, 1.0, 0.0, 0.0]])
    masks = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert pointing_game(maps, masks).tolist() == [1.0, 0.0, 0.5]  # a tie: half the maxima inside
    torch.testing.assert_close(relevance_mass(maps, masks),
                               torch.tensor([1.2 / 1.3, 0.5 / 1.5, 0.5], dtype=torch.float64))
    # pairs (inside, outside) ranked right: all; 1 of 4; (tie 0.5 + 1 + 1) of 3
    torch.testing.assert_close(mask_auroc(maps, masks),
                               torch.tensor([1.0, 0.25, 2.5 / 3], dtype=torch.float64))
    for i in range(3):
        assert mask_auroc(maps[i : i + 1], masks[i : i + 1]).item() == pytest.approx(
            roc_auc_score(masks[i].numpy(), maps[i].numpy()))
    summary = localisation_scores(maps, masks)
    assert summary["pointing_game"] == pytest.approx(0.5)
    assert summary["mask_fraction"] == pytest.approx(5 / 12) and summary["n_samples"] == 3


def test_localisation_2d_and_degenerate_masks():
    maps = torch.zeros(3, 3, 3)
    maps[:, 1, 2] = 1.0
    maps[:, 0, 0] = 0.5
    masks = torch.zeros(3, 3, 3, dtype=torch.bool)
    masks[0, 1, 2] = True  # the peak
    masks[2] = True  # everything
    pg = pointing_game(maps, masks)
    assert pg[0] == 1.0 and math.isnan(pg[1]) and pg[2] == 1.0
    rm = relevance_mass(maps, masks)
    assert rm[0].item() == pytest.approx(1 / 1.5) and math.isnan(rm[1]) and rm[2] == 1.0
    with pytest.warns(RuntimeWarning, match="all 0 or all 1"):
        auroc = mask_auroc(maps, masks)
    assert auroc[0] == 1.0 and math.isnan(auroc[1]) and math.isnan(auroc[2])
    # a map with no positive value has no relevance mass
    assert math.isnan(relevance_mass(-torch.ones(1, 4), torch.tensor([[1, 0, 0, 0]])).item())


def test_localisation_agrees_with_quantus():
    pytest.importorskip("quantus")
    from clustercam.explain.scores import quantus_localisation

    gen = torch.Generator().manual_seed(0)
    for shape in ((6, 40), (6, 8, 8)):
        maps = torch.rand(shape, generator=gen)  # no ties
        masks = torch.rand(shape, generator=gen) > 0.6
        theirs = quantus_localisation(maps, masks)
        np.testing.assert_allclose(theirs["pointing_game"], pointing_game(maps, masks).numpy())
        np.testing.assert_allclose(theirs["relevance_mass"], relevance_mass(maps, masks).numpy(), rtol=1e-5)
        np.testing.assert_allclose(theirs["auroc"], mask_auroc(maps, masks).numpy(), rtol=1e-6)


# -- the maps ----------------------------------------------------------------------------------
def test_explanation_maps():
    torch.manual_seed(0)
    enc = ResNetCAE((1, 32), filters=(4, 6), embedding_dim=3).encoder.eval()
    x = torch.randn(5, 1, 32)
    mu = torch.randn(3, 3)
    clusters = torch.tensor([0, 1, 2, 0, 1])
    maps = explanation_maps(enc, "features", x, mu, clusters=clusters, batch_size=2)
    assert list(maps) == list(DEFAULT_MAP_METHODS)
    for m in maps.values():
        assert m.shape == (5, 32) and m.min() >= 0 and m.max() <= 1
    torch.testing.assert_close(maps["random"], random_maps((5, 32), seed=0))
    # the blobs: neighbours far more alike than in the scattered map
    step = lambda m: (m[:, 1:] - m[:, :-1]).abs().mean()  # noqa: E731
    assert step(maps["random_smooth"]) < step(maps["random"]) / 2
    with torch.no_grad():
        a = enc.features(x).mean(1)  # the target layer keeps the length here
    a = (a - a.min(1, keepdim=True).values) / (a.max(1, keepdim=True).values - a.min(1, keepdim=True).values)
    torch.testing.assert_close(maps["activation"], a)
    ref = grad_ceam(enc, "features", x, mu, target="reference").heatmaps
    torch.testing.assert_close(maps["gradceam_reference"], ref[torch.arange(5), clusters])
    with pytest.raises(UserError, match="unknown methods"):
        explanation_maps(enc, "features", x, mu, clusters=clusters, methods=["saliency"])


def test_summary_rows_per_cluster_all_and_excl_baseline():
    enc = WindowEncoder((slice(0, 4),))
    x = torch.randn(12, 1, 8, generator=torch.Generator().manual_seed(0))
    mu = torch.tensor([[0.5, 0.0], [-1.0, 0.0], [5.0, 5.0]])  # the zero series is in cluster 0
    c = deletion_insertion(enc, x, torch.rand(12, 8), mu, steps=4)
    assert (c.baseline_assigned == 0).all()
    assert torch.equal(c.informative, c.clusters != 0)
    rows = {r["cluster"]: r for r in summarise_curves("random", c, 3)}
    assert list(rows) == ["0", "1", "all", "excl_baseline"]  # cluster 2 is empty: no row
    n0, n1 = int((c.clusters == 0).sum()), int((c.clusters == 1).sum())
    assert n0 > 0 and n1 > 0 and rows["all"]["n_samples"] == n0 + n1 == 12
    assert rows["0"]["baseline_share"] == 1.0 and rows["1"]["baseline_share"] == 0.0
    assert rows["excl_baseline"]["n_samples"] == n1
    assert rows["excl_baseline"]["deletion_auc"] == pytest.approx(rows["1"]["deletion_auc"])
    assert rows["all"]["deletion_auc"] == pytest.approx(float(curve_auc(c.deletion, c.fractions).mean()))
    # for samples of the baseline's cluster, deletion ends and insertion starts in the cluster
    assert (c.deletion_hard[c.clusters == 0, -1] == 1).all()
    assert (c.insertion_hard[c.clusters == 0, 0] == 1).all()
    assert (c.deletion_hard[c.clusters == 1, -1] == 0).all()


# -- the pipeline and its settings ------------------------------------------------------------------
def test_score_settings_hold_the_defaults_and_checks():
    s = ScoreSettings(methods=["random", "occlusion"], method_options={"occlusion": {"window": 4}})
    assert s.methods == ("random", "occlusion") and s.steps == 10 and s.temperature == "auto"
    for bad, match in (({"steps": 0}, "steps must be >= 1"), ({"baseline": "noise"}, "unknown baseline"),
                       ({"assignment": "gauss"}, "unknown assignment"),
                       ({"temperature": -1.0}, "temperature must be 'auto' or a number > 0"),
                       ({"maps_batch_size": 0}, "maps_batch_size must be >= 1"),
                       ({"methods": ["lime"]}, r"unknown methods \['lime'\]"),
                       ({"method_options": {"random": {"x": 1}}}, "unknown settings")):
        with pytest.raises(UserError, match=match):
            ScoreSettings(**bad)


def test_score_explanations_takes_settings_options_and_the_old_order_alike():
    torch.manual_seed(0)
    enc = ResNetCAE((1, 24), filters=(4, 4), embedding_dim=3).encoder.eval()
    x = torch.randn(9, 1, 24)
    with torch.no_grad():
        mu = enc(x[:3]) + 0.01
        own = torch.cdist(enc(x), mu).argmin(1)
    opts = {"methods": ["random", "gradceam_assignment"], "steps": 3}
    a = score_explanations(enc, "features", x, mu, clusters=own, **opts)
    b = score_explanations(enc, "features", x, mu, clusters=own, settings=ScoreSettings(**opts))
    c = score_explanations(enc, "features", x, mu, settings=ScoreSettings(steps=5), **opts)  # options win
    d = score_explanations(enc, "features", x, mu, **opts)  # clusters: the nearest centroid
    with pytest.warns(DeprecationWarning, match="positional order is deprecated"):
        e = score_explanations(enc, "features", x, own, mu, None, ["random", "gradceam_assignment"], 3)
    key = "scores/gradceam_assignment/deletion_auc"
    assert a.rows == b.rows == c.rows == d.rows == e.rows and a.results[key] == e.results[key]
    with pytest.raises(UserError, match=r"score_explanations\(\): unknown settings \['stepz'\]"):
        score_explanations(enc, "features", x, mu, stepz=3)
