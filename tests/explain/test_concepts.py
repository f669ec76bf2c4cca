"""CGAP / CPHA concepts, importance, maps, metrics and figures on hand-built activations.

Where the right answer is known by construction (three activation patterns, three
maximum positions, a linear head) the tests check it exactly; the batched torch k-means
is checked against scikit-learn on separated blobs and on real nf_resnet50 activations.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from clustercam.explain.concepts import (
    ALGORITHMS,
    DegenerateClusteringWarning,
    batched_kmeans,
    cluster_channels,
    clustering_quality,
    concept_importance,
    concept_maps,
    concept_metrics,
    extract_concepts,
    importance_order,
    sub_concept_maps,
    sub_concepts,
)
from clustercam.explain.concepts.summary import class_means, overall_means
from clustercam.explain.maps import minmax_normalise
from clustercam.explain.plots.concepts import blend, concept_figure, sub_concept_figure
from clustercam.outputs.concept_markdown import summary_markdown
from clustercam.studies.concept_summary import write_summary
from tests.helpers import require_imagenet11


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One BLAS/OpenMP thread: on a busy 2-core machine, spinning threads cost more than they give."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


# every algorithm, k-means on both backends
CASES = [("kmeans", "torch"), ("kmeans", "sklearn"), ("agglomerative", "torch"),
         ("birch", "torch"), ("gmm", "torch")]


def same_partition(labels: torch.Tensor, truth: torch.Tensor) -> bool:
    """Equal up to a permutation of the concept ids (and the same dropped channels)."""
    labels, truth = labels.cpu().numpy(), truth.cpu().numpy()
    if not np.array_equal(labels < 0, truth < 0):
        return False
    keep = truth >= 0
    return adjusted_rand_score(truth[keep], labels[keep]) == 1.0


# ---------------------------------------------------------------------------------------
# hand-built activations
# ---------------------------------------------------------------------------------------
def pattern_activations(n_images: int = 2, per_pattern: int = 12, zeros: int = 4, seed: int = 0):
    """Channels that are noisy scaled copies of 3 disjoint 8x8 patterns, plus zero channels.

    Returns activations B x C x 8 x 8 and the true concept of each channel (-1 for zeros).
    """
    g = torch.Generator().manual_seed(seed)
    pats = torch.zeros(3, 8, 8)
    pats[0, :3, :3] = 1.0  # top-left blob
    pats[1, 5:, 5:] = 1.0  # bottom-right blob
    pats[2, 3:5, :] = 1.0  # horizontal band
    acts, truths = [], []
    for _ in range(n_images):
        truth = torch.cat([torch.arange(3).repeat_interleave(per_pattern), torch.full((zeros,), -1)])
        perm = torch.randperm(len(truth), generator=g)
        truth = truth[perm]
        a = torch.zeros(len(truth), 8, 8)
        for ch, t in enumerate(truth.tolist()):
            if t >= 0:
                scale = 0.8 + 0.4 * torch.rand(1, generator=g)
                noise = 0.05 * torch.rand(8, 8, generator=g)
                a[ch] = scale * pats[t] + noise
        acts.append(a)
        truths.append(truth)
    return torch.stack(acts), torch.stack(truths)


def peak_activations(n_images: int = 2, per_peak: int = 10, seed: int = 0):
    """Channels whose maximum sits in a 3x3 neighbourhood of one of 3 far-apart positions."""
    g = torch.Generator().manual_seed(seed)
    centres = [(1, 1), (1, 6), (6, 3)]
    acts, truths = [], []
    for _ in range(n_images):
        truth = torch.arange(3).repeat_interleave(per_peak)
        truth = truth[torch.randperm(len(truth), generator=g)]
        a = 0.1 * torch.rand(len(truth), 8, 8, generator=g)
        for ch, t in enumerate(truth.tolist()):
            r, c = centres[t]
            dr, dc = torch.randint(-1, 2, (2,), generator=g).tolist()
            a[ch, r + dr, c + dc] = 1.0 + torch.rand(1, generator=g).item()
        acts.append(a)
        truths.append(truth)
    return torch.stack(acts), torch.stack(truths)


@pytest.mark.parametrize(("algorithm", "backend"), CASES)
def test_cgap_recovers_three_activation_patterns(algorithm: str, backend: str) -> None:
    a, truth = pattern_activations()
    res = cluster_channels(a, method="cgap", n_concepts=3, algorithm=algorithm, backend=backend,
                           seed=0, n_init=3)
    assert res.labels.dtype == torch.long and res.labels.shape == truth.shape
    for i in range(len(a)):
        assert same_partition(res.labels[i], truth[i]), (algorithm, backend, i)
        assert res.features[i].shape == (36, 2)  # kept channels x (n_concepts - 1) PCA dims
    assert res.counts().tolist() == [[12, 12, 12]] * 2


@pytest.mark.parametrize(("algorithm", "backend"), CASES)
def test_cpha_recovers_three_maximum_positions(algorithm: str, backend: str) -> None:
    a, truth = peak_activations()
    res = cluster_channels(a, method="cpha", n_concepts=3, algorithm=algorithm, backend=backend,
                           seed=0, n_init=3)
    for i in range(len(a)):
        assert same_partition(res.labels[i], truth[i]), (algorithm, backend, i)
        # the clustered space is the (row, col) of each channel's maximum
        flat = a[i].flatten(1).argmax(1)
        expected = torch.stack([flat // 8, flat % 8], 1).double().numpy()
        np.testing.assert_array_equal(res.features[i], expected)


def test_cpha_takes_the_first_maximum_on_ties() -> None:
    a = torch.zeros(1, 4, 3, 3)
    a[0, 0, 0, 1] = a[0, 0, 2, 0] = 5.0  # tie: (0, 1) comes first in row-major order
    a[0, 1, 2, 2] = 1.0
    a[0, 2, 1, 1] = 2.0
    a[0, 3, 0, 0] = 3.0
    res = cluster_channels(a, method="cpha", n_concepts=2, algorithm="agglomerative")
    assert res.features[0][0].tolist() == [0.0, 1.0]
    assert res.features[0][1].tolist() == [2.0, 2.0]


def test_extract_concepts_drops_zero_channels_and_numbers_by_size() -> None:
    a, truth = pattern_activations(n_images=1)
    keep = (truth[0] != 0) | (torch.arange(truth.shape[1]) % 2 == 0)  # shrink pattern 0
    a, truth = a[:, keep], truth[:, keep]
    labels = extract_concepts(a, method="cgap", n_concepts=3, seed=1)
    assert labels.dtype == torch.long and labels.shape == truth.shape
    assert torch.equal(labels < 0, truth < 0)
    sizes = torch.bincount(labels[labels >= 0], minlength=3)
    assert sizes.tolist() == sorted(sizes.tolist(), reverse=True)  # concept 0 is the largest
    # the smallest concept is the thinned pattern 0
    assert set(truth[0][labels[0] == 2].tolist()) == {0}


@pytest.mark.parametrize("method", ["cgap", "cpha"])
def test_an_image_gets_the_same_concepts_alone_or_in_any_batch(method: str) -> None:
    """Seeds are explicit and per image: batching (or a DDP rank split) changes nothing."""
    a = torch.rand(4, 64, 4, 4, generator=torch.Generator().manual_seed(0))
    together = extract_concepts(a, method=method, n_concepts=4, seed=3, n_init=2)
    assert torch.equal(together, extract_concepts(a, method=method, n_concepts=4, seed=3, n_init=2))
    for i in range(4):
        alone = extract_concepts(a[i:i + 1], method=method, n_concepts=4, seed=3, n_init=2)
        assert torch.equal(alone[0], together[i])
    reordered = extract_concepts(a[[2, 0]], method=method, n_concepts=4, seed=3, n_init=2)
    assert torch.equal(reordered, together[[2, 0]])


# ---------------------------------------------------------------------------------------
# batched k-means vs scikit-learn
# ---------------------------------------------------------------------------------------
def test_batched_kmeans_equals_sklearn_on_separated_blobs() -> None:
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(0)
    problems, truths = [], []
    for _ in range(4):
        centres = 10 * torch.randn(5, 4, generator=g, dtype=torch.float64)
        truth = torch.randint(0, 5, (300,), generator=g)
        problems.append(centres[truth] + 0.3 * torch.randn(300, 4, generator=g, dtype=torch.float64))
        truths.append(truth)
    x = torch.stack(problems)
    mask = torch.ones(4, 300, dtype=torch.bool)
    mask[1, 250:] = False  # a problem with padded rows
    labels, centres, inertia = batched_kmeans(x, mask, 5, n_init=4, seed=0)
    for p in range(4):
        m = mask[p]
        sk = KMeans(5, n_init=4, random_state=0).fit(x[p][m].numpy())
        assert adjusted_rand_score(sk.labels_, labels[p][m].numpy()) == 1.0
        assert adjusted_rand_score(truths[p][m].numpy(), labels[p][m].numpy()) == 1.0
        assert inertia[p].item() == pytest.approx(sk.inertia_, rel=1e-9)
        assert (labels[p][~m] == -1).all()


def frozen_lloyd(x: torch.Tensor, mask: torch.Tensor, k: int, n_init: int, seed: int = 0,
                 max_iter: int = 300, tol: float = 1e-4) -> torch.Tensor:
    """The reference loop: every problem stays in the batch until the slowest has converged
    (converged ones frozen by masks), then the final assignment and the best restart."""
    from clustercam.explain.concepts.image import kmeans as km

    p, n, _ = x.shape
    valid = mask.bool()
    w = valid.to(x.dtype)
    mean = (x * w[..., None]).sum(1) / w.sum(1, keepdim=True)
    var = (((x - mean[:, None]) ** 2) * w[..., None]).sum(1) / w.sum(1, keepdim=True)
    tol_q = (var.mean(-1) * tol).repeat_interleave(n_init)
    xq, vq = x.repeat_interleave(n_init, 0), valid.repeat_interleave(n_init, 0)
    vf, xsq = vq.to(x.dtype), (xq * xq).sum(-1)
    u = km.kmeans_pp_uniforms(p, n_init, k, seed, x.device).reshape(p * n_init, -1)
    xt = xq.transpose(1, 2).contiguous()
    c = km._kmeans_pp(xq, xt, xsq, vq, k, u)
    xe = torch.cat([xt * vf.unsqueeze(1), vf.unsqueeze(1)], 1)
    ids = torch.arange(p * n_init)
    lab = torch.full((p * n_init, n), -1, dtype=torch.long)
    act = torch.ones(p * n_init, dtype=torch.bool)
    for _ in range(max_iter):
        new_lab, new_c, _ = km._lloyd_step(xt, xe, c, xsq, vf, ids)
        shift = ((new_c - c) ** 2).sum((1, 2))
        same = (new_lab == lab).all(1)
        c = torch.where(act.view(-1, 1, 1), new_c, c)
        lab = torch.where(act.view(-1, 1), new_lab, lab)
        act = act & (shift > tol_q) & ~same
        if not act.any():
            break
    best, lab = torch.baddbmm((c * c).sum(-1).unsqueeze(-1), c, xt, alpha=-2).min(1)
    inertia = ((best + xsq).clamp_min(0) * vf).sum(-1).view(p, n_init)
    pick = torch.arange(p) * n_init + inertia.argmin(1)
    return lab[pick].masked_fill(~valid, -1)


@pytest.mark.parametrize("method", ["cgap", "cpha"])
def test_early_stopped_kmeans_gives_the_frozen_loops_labels(nf_resnet50_activations, method: str) -> None:
    """Problems leave the batch as they converge: the labels are those of the loop that
    iterates every problem until the slowest converges, on real activations and fixtures."""
    from clustercam.explain.concepts import batched_pca, kept_channels
    from clustercam.explain.concepts.image.extract import _raw_features

    fixtures = [nf_resnet50_activations, pattern_activations(n_images=3)[0],
                torch.relu(torch.randn(6, 128, 6, 6, generator=torch.Generator().manual_seed(1)) - 1)]
    for a in fixtures:
        mask = kept_channels(a)
        raw = _raw_features(a, method, torch.float64)
        z = (batched_pca(raw, mask, 4) if method == "cgap" else raw).float()
        labels, _, _ = batched_kmeans(z, mask, 5, n_init=10, seed=0)
        assert torch.equal(labels, frozen_lloyd(z, mask, 5, n_init=10))


def test_kmeans_with_empty_clusters_gives_the_frozen_loops_labels(monkeypatch) -> None:
    """Few distinct points empty clusters, whose centres move: there the early-stopped loop
    compares labels again, and must still stop where the reference loop stops."""
    from clustercam.explain.concepts.image import kmeans as km

    moved = []
    step = km._lloyd_step
    monkeypatch.setattr(km, "_lloyd_step", lambda *a: (r := step(*a), moved.append(int(r[2].sum())))[0])
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        n, k = int(torch.randint(6, 60, (1,), generator=g)), int(torch.randint(2, 7, (1,), generator=g))
        x = torch.randint(0, 2, (6, n, 2), generator=g).float()  # 4 distinct points, ties
        x += (torch.rand(6, n, 2, generator=g) < 0.1) * torch.randn(6, n, 2, generator=g) * 5
        mask = torch.rand(6, n, generator=g) < 0.9
        mask[:, :k] = True
        labels, _, _ = batched_kmeans(x, mask, k, n_init=4, seed=trial)
        assert torch.equal(labels, frozen_lloyd(x, mask, k, n_init=4, seed=trial)), trial
    assert sum(moved) > 0  # the relocation path ran


def test_batched_kmeans_rejects_too_few_rows() -> None:
    with pytest.raises(ValueError, match="n_clusters=3"):
        batched_kmeans(torch.rand(1, 5, 2), torch.tensor([[True, True, False, False, False]]), 3)


@pytest.fixture(scope="module")
def nf_resnet50_activations() -> torch.Tensor:
    """Random-weight nf_resnet50 activations (11 x 2048 x 8 x 8) of the 11 real images."""
    images = require_imagenet11("k-means parity with scikit-learn on activations of real photos")
    from clustercam.data.imagenet_subset import ImageNetSubsetDataModule
    from clustercam.models.classifier_module import ClassifierModule

    torch.manual_seed(0)
    dm = ImageNetSubsetDataModule(images, model_name="nf_resnet50.ra2_in1k", batch_size=11)
    model = ClassifierModule("nf_resnet50.ra2_in1k", pretrained=False)
    x, _, _ = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        return model.features(x)


@pytest.mark.parametrize("method", ["cgap", "cpha"])
def test_torch_kmeans_quality_matches_sklearn_on_nf_resnet50(nf_resnet50_activations, method: str) -> None:
    a = nf_resnet50_activations
    assert a.shape == (11, 2048, 8, 8) and (a >= 0).all()
    fast = cluster_channels(a, method=method, n_concepts=5, backend="torch")
    ref = cluster_channels(a, method=method, n_concepts=5, backend="sklearn")
    ss_fast = np.mean([m["silhouette"] for m in concept_metrics(fast)])
    ss_ref = np.mean([m["silhouette"] for m in concept_metrics(ref)])
    assert abs(ss_fast - ss_ref) < 0.02, (ss_fast, ss_ref)
    assert torch.equal(fast.labels < 0, ref.labels < 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_kmeans_runs_on_cuda() -> None:
    a, truth = pattern_activations()
    res = cluster_channels(a.cuda(), method="cgap", n_concepts=3)
    assert res.labels.device.type == "cuda"
    assert all(same_partition(res.labels[i], truth[i]) for i in range(len(a)))


# ---------------------------------------------------------------------------------------
# importance
# ---------------------------------------------------------------------------------------
class CountingLinearHead(torch.nn.Module):
    """h(A) = W GAP(A): logits z0 = g0 + g1 - g3, z1 = g2; counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.w = torch.tensor([[1.0, 1.0, 0.0, -1.0, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]])

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return a.mean((2, 3)) @ self.w.T


def test_importance_on_a_linear_head_matches_hand_computation() -> None:
    # channel means g = [1, 1, 2, 1, 0]; concepts: {0, 1} -> 0, {2} -> 1, {3} -> 2, 3 empty
    a = torch.tensor([1.0, 1.0, 2.0, 1.0, 0.0]).view(1, 5, 1, 1).expand(1, 5, 2, 2).clone()
    a = torch.cat([a, a])  # two images
    labels = torch.tensor([[0, 0, 1, 2, -1], [0, 0, 1, 2, -1]])
    head = CountingLinearHead()

    def p0(z0: float, z1: float) -> float:
        return 1 / (1 + math.exp(z1 - z0))

    pt = p0(1.0, 2.0)  # z0 = 1 + 1 - 1 = 1, z1 = 2
    expected = [(pt - p0(-1.0, 2.0)) / pt * 100,  # without g0, g1: z0 = -1
                (pt - p0(1.0, 0.0)) / pt * 100,  # without g2: z1 = 0
                (pt - p0(2.0, 2.0)) / pt * 100]  # without g3: z0 = 2
    imp = concept_importance(head, a, labels, torch.tensor([0, 0]), n_concepts=4)
    assert head.calls == 1  # all concepts of the batch in ONE head call
    assert imp.shape == (2, 4)
    for i in range(2):
        assert imp[i, :3].tolist() == pytest.approx(expected, rel=1e-9)
        assert math.isnan(imp[i, 3])  # empty concept
    assert expected[0] == pytest.approx(82.36, abs=0.01)
    assert imp[0, 1] < 0 and imp[0, 2] < 0  # removing them makes class 0 MORE likely

    # target None: the predicted class (1, p = 1 / (1 + e^-1)); removing g2 drops it
    head.calls = 0
    imp_pred, p_t, p_l = concept_importance(head, a, labels, None, n_concepts=4, return_probs=True)
    p1 = 1 - pt
    assert head.calls == 1
    assert p_t[0].item() == pytest.approx(p1)
    assert imp_pred[0, 1].item() == pytest.approx((p1 - (1 - p0(1.0, 0.0))) / p1 * 100)
    assert p_l[0, 1].item() == pytest.approx(1 - p0(1.0, 0.0))


def test_importance_rejects_bad_targets() -> None:
    a = torch.rand(2, 5, 2, 2)
    labels = torch.tensor([[0, 0, 1, 1, 1]] * 2)
    with pytest.raises(ValueError, match="class indices"):
        concept_importance(CountingLinearHead(), a, labels, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="3 entries"):
        concept_importance(CountingLinearHead(), a, labels, torch.tensor([0, 1, 1]))


# ---------------------------------------------------------------------------------------
# maps and sub-concepts
# ---------------------------------------------------------------------------------------
def test_concept_maps_sum_resize_and_normalise() -> None:
    a = torch.zeros(1, 3, 2, 2)
    a[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    a[0, 1] = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    a[0, 2] = torch.tensor([[5.0, 5.0], [5.0, 5.0]])  # a constant concept alone
    labels = torch.tensor([[0, 0, 1]])
    raw = concept_maps(a, labels, 2, n_concepts=3, normalise=False)
    assert torch.equal(raw[0, 0], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # sum of channels
    maps = concept_maps(a, labels, (4, 6), n_concepts=3)
    assert maps.shape == (1, 3, 4, 6)
    assert maps[0, 0].min() == 0 and maps[0, 0].max() == 1
    assert torch.equal(maps[0, 1], torch.zeros(4, 6))  # constant map -> zeros
    assert torch.equal(maps[0, 2], torch.zeros(4, 6))  # empty concept -> zeros
    # bilinear, align_corners=False: the 2x2 -> 4x4 corners keep the corner values
    up = concept_maps(a, labels, 4, n_concepts=2, normalise=False)
    assert up[0, 0, 0, 0] == 1.0 and up[0, 0, -1, -1] == 4.0
    assert up[0, 0, 0, 1].item() == pytest.approx(1.25)


def test_normalise_maps_with_given_bounds_clamps() -> None:
    m = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])
    out = minmax_normalise(m, 2, torch.tensor([2.0]), torch.tensor([4.0]))
    assert out.tolist() == [[[0.0, 0.0], [1.0, 1.0]]]


def test_sub_concepts_split_a_concept_and_use_parent_bounds() -> None:
    # concept 0 = three sub-patterns (12 channels each), concept 1 = 4 channels (too few)
    a3, truth3 = pattern_activations(n_images=1, per_pattern=12, zeros=0)
    small = 0.5 * torch.ones(1, 4, 8, 8)
    a = torch.cat([a3, small], 1)
    labels = torch.cat([torch.zeros(1, 36, dtype=torch.long), torch.ones(1, 4, dtype=torch.long)], 1)
    sub = sub_concepts(a, labels, method="cgap", n_sub=3, n_concepts=2)
    assert sub.split.tolist() == [[True, False]]
    assert (sub.labels[0, 36:] == -1).all()  # 4 < min_channels = 6: not split
    assert same_partition(sub.labels[0, :36], truth3[0])
    assert sub.counts()[0, 0].tolist() == [12, 12, 12]
    maps = sub_concept_maps(a, sub, 16)
    assert maps.shape == (1, 2, 3, 16, 16)
    parent = concept_maps(a, labels, 16, n_concepts=2, normalise=False)[0, 0]
    lo, hi = parent.min(), parent.max()
    for j in range(3):
        raw = concept_maps(a, sub.labels, 16, n_concepts=6, normalise=False)[0, j]
        assert torch.allclose(maps[0, 0, j], ((raw - lo) / (hi - lo)).clamp(0, 1))
    assert maps[0, 0].amax() < 1  # each part is weaker than the whole


@pytest.mark.parametrize("method", ["cgap", "cpha"])
def test_sub_concepts_in_one_call_equal_each_parent_clustered_alone(method: str) -> None:
    """All parents of all images in one batched k-means = each parent of the batch clustered
    by itself with the other channels zeroed (how sub-concepts were computed before)."""
    a = torch.relu(torch.randn(4, 96, 6, 6, generator=torch.Generator().manual_seed(2)) - 0.3)
    a[1, :80] = 0  # small concepts: some parents too small to split, some with 2 sub-concepts
    res = cluster_channels(a, method=method, n_concepts=4, n_init=3)
    sub = sub_concepts(a, res.labels, method=method, n_sub=3, n_concepts=4, n_init=3)
    expected = torch.full_like(res.labels, -1)
    for parent in range(4):
        member = res.labels == parent
        for i in range(len(a)):
            rows = a[i][member[i]].flatten(1)
            if int(member[i].sum()) < 6:
                continue
            m = min(3, len(torch.unique(rows if method == "cgap" else rows.argmax(1), dim=0)))
            if m < 2:
                continue
            part = a[i:i + 1] * member[i].view(1, -1, 1, 1).to(a.dtype)
            alone = cluster_channels(part, method=method, n_concepts=m, n_init=3, warn=False).labels[0]
            expected[i] = torch.where(alone >= 0, parent * 3 + alone, expected[i])
    assert torch.equal(sub.labels, expected)
    assert (sub.labels >= 0).sum() > 0.5 * (res.labels >= 0).sum()  # most parents were split


# ---------------------------------------------------------------------------------------
# metrics, degenerate cases, errors
# ---------------------------------------------------------------------------------------
def test_metrics_on_the_clustered_space() -> None:
    from sklearn.metrics import silhouette_score

    a, _ = pattern_activations(n_images=1)
    res = cluster_channels(a, method="cgap", n_concepts=3)
    m = concept_metrics(res)[0]
    lab = res.labels[0][res.labels[0] >= 0].numpy()
    assert m["silhouette"] == pytest.approx(silhouette_score(res.features[0], lab))
    assert m["silhouette"] > 0.9 and m["davies_bouldin"] < 0.2 and m["calinski_harabasz"] > 100
    assert m["seconds"] >= 0


def test_degenerate_images_give_nan_metrics_and_a_warning() -> None:
    a = torch.zeros(3, 6, 4, 4)
    a[1, :3] = 1.0  # three identical channels: one distinct point for 3 concepts
    a[1, 3:, 0, 0] = 2.0  # and three more identical ones: 2 distinct points
    a[2] = torch.rand(6, 4, 4)
    with pytest.warns(DegenerateClusteringWarning) as record:
        res = cluster_channels(a, method="cgap", n_concepts=3)
    text = " ".join(str(w.message) for w in record)
    assert "no non-zero channel" in text and "2 distinct channels for 3 concepts" in text
    assert (res.labels[0] == -1).all()  # nothing kept
    assert set(res.labels[1].tolist()) == {0, 1}  # one concept per distinct channel
    assert res.labels[1, 0] == res.labels[1, 1] == res.labels[1, 2] != res.labels[1, 3]
    with pytest.warns(DegenerateClusteringWarning):
        metrics = concept_metrics(res)
    for i in (0, 1):
        assert all(math.isnan(metrics[i][k]) for k in ("silhouette", "calinski_harabasz", "davies_bouldin"))
    assert not math.isnan(metrics[2]["silhouette"])
    with pytest.warns(DegenerateClusteringWarning, match="1 clusters"):
        q = clustering_quality(np.random.default_rng(0).random((5, 2)), np.zeros(5, dtype=int))
    assert math.isnan(q["silhouette"])
    # the CPHA version: every maximum at the same place
    b = torch.zeros(1, 5, 3, 3)
    b[0, :, 1, 1] = torch.arange(1.0, 6.0)
    with pytest.warns(DegenerateClusteringWarning):
        r = cluster_channels(b, method="cpha", n_concepts=2, algorithm="gmm")
    assert (r.labels == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"method": "cgapp"}, "'cgapp'"), ({"algorithm": "dbscan"}, "'dbscan'"),
     ({"n_concepts": 1}, "n_concepts must be >= 2, got 1"), ({"backend": "jax"}, "'jax'"),
     ({"n_init": 0}, "n_init must be >= 1")],
)
def test_clear_errors_for_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        extract_concepts(torch.rand(1, 8, 2, 2), **kwargs)


def test_clear_errors_for_bad_activations() -> None:
    with pytest.raises(ValueError, match=r"B x C x H x W, got shape \(8, 2, 2\).*a\[None\]"):
        extract_concepts(torch.rand(8, 2, 2))
    bad = torch.rand(3, 8, 2, 2)
    bad[2, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 images \(first indices \[2\]\)"):
        extract_concepts(bad)
    assert set(ALGORITHMS) == {"kmeans", "agglomerative", "birch", "gmm"}


# ---------------------------------------------------------------------------------------
# figures and summary tables
# ---------------------------------------------------------------------------------------
def test_blend_and_importance_order() -> None:
    image = torch.full((3, 4, 4), 0.5)
    heat = torch.zeros(4, 4)
    heat[0, 0] = 1.0
    out = blend(image, heat, cmap="jet", alpha=0.6)
    assert out.shape == (4, 4, 3)
    np.testing.assert_allclose(out[1, 1], [0.5, 0.5, 0.5])  # no concept: the gray image
    import matplotlib.pyplot as plt

    red = np.asarray(plt.get_cmap("jet")(1.0)[:3])
    np.testing.assert_allclose(out[0, 0], 0.4 * 0.5 + 0.6 * red)
    assert importance_order([1.0, float("nan"), 5.0, -2.0]) == [2, 0, 3, 1]


def test_concept_figures_are_sorted_by_importance() -> None:
    image = torch.rand(3, 32, 32)
    maps = torch.rand(3, 32, 32)
    fig = concept_figure(image, maps, [10, 0, 5], [1.5, float("nan"), 20.0], title="t")
    titles = [t.get_text() for t in fig.texts if not t.get_gid()]  # the panel titles, in panel order
    assert titles[0] == "input"
    assert titles[1].startswith("C2  n=5") and "I=20.00%" in titles[1]
    assert titles[2].startswith("C0  n=10") and titles[3].startswith("C1  n=0")
    panels = [a.panels for a in fig.artists if hasattr(a, "panels")][0]  # (box, RGB bytes)
    assert len(panels) == 4 and fig._suptitle.get_text() == "t"
    empty = panels[3][1].astype(int)  # RGB bytes; a concept's panel is a Blend of levels  # C1 has no channel: the grey image, no colour
    assert (empty[..., 0] == empty[..., 1]).all() and (empty[..., 1] == empty[..., 2]).all()
    assert np.abs(panels[1][1].pixels().astype(int) - panels[2][1].pixels()).max() > 0  # C2 and C0 differ
    assert [box[0] for box, _ in panels] == sorted(box[0] for box, _ in panels)  # left to right
    sub = sub_concept_figure(image, maps, [10, 0, 5], [1.5, float("nan"), 20.0],
                             torch.rand(3, 2, 32, 32), torch.tensor([[6, 4], [0, 0], [0, 0]]),
                             torch.tensor([[-1.0, 2.0], [0, 0], [0, 0]]))
    assert sub is not None
    assert [t.get_text().split("  ")[0] for t in sub.texts] == ["C0", "C01", "C00"]
    assert sub_concept_figure(image, maps, [1, 1, 1], [1, 1, 1], torch.rand(3, 2, 32, 32),
                              torch.zeros(3, 2), torch.zeros(3, 2)) is None


def metric_row(cls: int, method: str, algo: str, n: int, ss: float, image: str = "x") -> dict:
    return {"image": image, "class": cls, "method": method, "algorithm": algo, "n_concepts": n,
            "silhouette": ss, "calinski_harabasz": 10 * ss, "davies_bouldin": 1 - ss, "seconds": 0.1}


def test_summary_means_per_class_then_over_classes(tmp_path: Path) -> None:
    rows = [metric_row(0, "cgap", "kmeans", 5, 0.2), metric_row(0, "cgap", "kmeans", 5, 0.4),
            metric_row(1, "cgap", "kmeans", 5, 0.9), metric_row(1, "cgap", "kmeans", 5, float("nan")),
            metric_row(0, "cpha", "gmm", 3, 0.5)]
    per_class = class_means(rows)
    assert per_class[(per_class["class"] == 0) & (per_class["method"] == "cgap")]["silhouette"].item() == pytest.approx(0.3)
    overall = overall_means(rows)
    cg = overall[overall["method"] == "cgap"].iloc[0]
    assert cg["silhouette"] == pytest.approx((0.3 + 0.9) / 2)  # not the image mean 0.5
    assert cg["degenerate"] == 1 and cg["images"] == 4
    md = summary_markdown(rows)
    assert "## Table 1: method x algorithm, n_concepts = 5" in md
    assert "| CGAP | kmeans | 0.600 | 6.00 | 0.400 | 0.100 | 4 | 1 | 0.64 / 441.05 / 0.97 / 0.20 |" in md
    assert "## Table 2: kmeans, method x n_concepts" in md and "## Table 2: gmm" in md
    # a multirun: two run directories aggregated into one summary
    import csv

    for k, part in enumerate((rows[:2], rows[2:])):
        run = tmp_path / "multirun" / str(k)
        run.mkdir(parents=True)
        with open(run / "concept_metrics.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(part[0]))
            w.writeheader()
            w.writerows(part)
    out = write_summary([tmp_path / "multirun"])
    assert out == tmp_path / "multirun" / "concept_summary.md"
    assert "(2 runs)" in out.read_text() and "| CGAP | kmeans | 0.600 |" in out.read_text()


def test_warnings_are_not_raised_for_clean_data() -> None:
    a, _ = pattern_activations(n_images=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateClusteringWarning)
        concept_metrics(cluster_channels(a, method="cgap", n_concepts=3))


def test_problems_of_very_different_sizes_cluster_as_each_alone() -> None:
    """cluster_rows buckets problems by kept-row count (less padding); a problem's labels and
    space must not depend on its bucket or on the others: the batch equals one call each."""
    from clustercam.explain.concepts.image.kmeans import _buckets, cluster_rows

    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(5, 120, 6, generator=gen, dtype=torch.float64)
    sizes = torch.tensor([120, 100, 40, 35, 8])
    mask = torch.arange(120) < sizes[:, None]
    ks = torch.tensor([3, 3, 3, 2, 3])
    buckets = [sorted(sel.tolist()) for _, sel in _buckets(ks, sizes)]
    assert buckets == [[3], [0, 1], [2], [4]]  # by k, then within 0.6 x the largest count
    labels, space = cluster_rows(raw, mask, ks, pca=True)
    for p in range(5):
        alone_l, alone_s = cluster_rows(raw[p:p + 1], mask[p:p + 1], ks[p:p + 1], pca=True)
        assert torch.equal(labels[p], alone_l[0])
        assert torch.allclose(space[p, :, : int(ks[p]) - 1], alone_s[0, :, : int(ks[p]) - 1], atol=1e-12)


def test_a_checked_tensor_modified_in_place_is_checked_again() -> None:
    """check_activations skips a second pass over the same unmodified tensor; writing a NaN
    into it (in place) must still be caught."""
    from clustercam.explain.concepts.checks import check_activations

    a = torch.rand(2, 4, 3, 3)
    check_activations(a)
    check_activations(a)  # the cached pass
    a[1, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values in 1 images"):
        check_activations(a)
    b = torch.rand(2, 4, 3, 3) - 2
    with pytest.warns(UserWarning, match="negative values"):
        check_activations(b)
    with pytest.warns(UserWarning, match="negative values"):
        check_activations(b)  # cached, still warns
    with torch.inference_mode():  # as in Lightning's test loop: no version counter, no cache
        c = torch.rand(2, 4, 3, 3)
        check_activations(c)
        c[0, 0, 0, 0] = float("inf")
        with pytest.raises(ValueError, match="NaN or infinite"):
            check_activations(c)


def test_kept_channels_are_the_channels_with_a_non_zero_value_signed_or_not() -> None:
    from clustercam.explain.concepts.image.extract import kept_channels

    a = torch.zeros(1, 5, 2, 2)
    a[0, 1, 0, 1] = 3.0
    a[0, 2, 1, 1] = -0.5  # signed activations: kept
    a[0, 3] = -0.0  # a negative zero is zero: dropped
    a[0, 4, 0, 0] = float("nan")  # as != 0 says (the pipeline rejects it before)
    assert kept_channels(a).tolist() == [[False, True, True, False, True]]
    assert kept_channels(torch.zeros(2, 3, 0, 4)).tolist() == [[False] * 3] * 2


def test_checked_once_checks_an_inference_tensor_once_and_still_rejects_nan(monkeypatch) -> None:
    from clustercam.explain.concepts import checks

    calls: list[int] = []
    real = checks._finite_min
    monkeypatch.setattr(checks, "_finite_min", lambda a: (calls.append(1), real(a))[1])
    with torch.inference_mode():
        a = torch.rand(2, 3, 4, 4) - 0.5
        with checks.checked_once(a):
            for _ in range(3):
                with pytest.warns(checks.NegativeActivationWarning):  # its minimum is kept
                    checks.check_activations(a)
        assert len(calls) == 1
        checks.check_activations(a, warn_negative=False)  # outside the block: checked again
        assert len(calls) == 2
        a[1, 2, 0, 0] = float("nan")
        with pytest.raises(ValueError, match=r"NaN or infinite values in 1 images \(first indices \[1\]\)"):
            with checks.checked_once(a):
                pass
