"""The batched clustering scores equal scikit-learn's, problem by problem, degenerate ones too.

scikit-learn is the reference: silhouette, Calinski-Harabasz and Davies-Bouldin of every
problem of a batch (random and degenerate partitions, float32 and float64 points) must be
within 1e-6 (relative) of its scores, and NaN exactly where it raises.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from clustercam.explain.concepts import (
    DegenerateClusteringWarning,
    cluster_channels,
    clustering_quality,
    concept_metrics,
)
from clustercam.explain.concepts.image import metrics as metrics_module
from clustercam.explain.concepts.image.metrics import batched_quality, grid_points, point_weights

SCORES = (silhouette_score, calinski_harabasz_score, davies_bouldin_score)
TOL = 1e-6  # absolute for scores up to 1 in magnitude, relative beyond (CHI is in the 1000s)


def sklearn_scores(x: np.ndarray, labels: np.ndarray) -> list[float]:
    """scikit-learn's three scores, NaN where it raises."""
    out = []
    for score in SCORES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out.append(float(score(x, labels)))
        except ValueError:
            out.append(math.nan)
    return out


def padded(problems: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Problems of different sizes as B x N x d points (zero padding) and B x N labels (-1)."""
    n = max(len(lab) for _, lab in problems)
    d = problems[0][0].shape[1]
    x = torch.zeros(len(problems), n, d, dtype=dtype)
    labels = torch.full((len(problems), n), -1, dtype=torch.long)
    for i, (pts, lab) in enumerate(problems):
        x[i, : len(lab)] = torch.as_tensor(pts, dtype=dtype)
        labels[i, : len(lab)] = torch.as_tensor(lab)
    return x, labels


def assert_like_sklearn(q: torch.Tensor, problems, dtype: torch.dtype) -> None:
    for i, (pts, lab) in enumerate(problems):
        ref = sklearn_scores(pts.astype(np.float64 if dtype == torch.float64 else np.float32), lab)
        got = q[i].tolist()
        for name, r, g in zip(("silhouette", "CHI", "DBI"), ref, got):
            if math.isnan(r):
                assert math.isnan(g), (i, name, g)
            else:
                assert abs(g - r) <= TOL * max(1.0, abs(r)), (i, name, g, r)


def random_problems(seed: int, n_problems: int = 6, k: int = 4, d: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(n_problems):
        n = int(rng.integers(12, 80))
        centres = 3 * rng.normal(size=(k, d))
        lab = rng.integers(0, k, n)
        problems.append((centres[lab] + rng.normal(size=(n, d)), lab))
    return problems


@pytest.mark.parametrize("d", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_scores_equal_sklearn_on_random_partitions(dtype: torch.dtype, d: int) -> None:
    problems = random_problems(d, d=d)
    x, labels = padded(problems, dtype)
    q = batched_quality(x, point_weights(labels, 4))
    assert q.shape == (len(problems), 3) and q.dtype == torch.float64
    assert_like_sklearn(q, problems, dtype)
    # the batch does not matter: each problem alone gives the same scores
    for i in range(len(problems)):
        alone = batched_quality(x[i:i + 1], point_weights(labels[i:i + 1], 4))
        assert torch.allclose(alone[0], q[i], rtol=1e-12, atol=0)


@pytest.mark.parametrize("copies", [1, 2])
def test_large_problems_use_row_blocks_and_still_equal_sklearn(copies: int) -> None:
    """U x U beyond the CPU block (U = 900 and 1,100 points, padded; a singleton and an empty
    cluster in the second): the silhouette is summed over blocks of one image, and must not
    change. One copy per point: the blocks follow the clusters (one-hot weights, CGAP);
    two (weight 2, as CPHA's grid positions): square blocks of the upper triangle."""
    rng = np.random.default_rng(3)
    problems = []
    for n in (900, 1100):
        centres = 3 * rng.normal(size=(5, 4))
        lab = rng.integers(0, 5, n)
        problems.append((centres[lab] + rng.normal(size=(n, 4)), lab))
    lab = problems[1][1]
    lab[lab == 4] = 3
    lab[7] = 4  # cluster 4: one point; cluster 2 empty below
    lab[lab == 2] = 1
    x, labels = padded(problems, torch.float64)
    assert x.shape[1] ** 2 > metrics_module._BLOCK  # a blocked path is the one tested
    q = batched_quality(x, point_weights(labels, 5) * copies)
    assert_like_sklearn(q, [(np.repeat(p, copies, 0), np.repeat(lb, copies)) for p, lb in problems],
                        torch.float64)


def degenerate_problems() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(10, 2))
    same = np.repeat(rng.normal(size=(1, 2)), 4, 0)
    return [
        (pts, np.array([0] * 9 + [1])),                                   # a singleton cluster
        (np.concatenate([same, pts[:6]]), np.array([0] * 4 + [1] * 3 + [2] * 3)),  # identical points
        (np.repeat(pts[:2], 3, 0), np.array([0, 0, 1, 1, 2, 2])),         # 2 distinct points, 3 clusters
        (np.repeat(pts[:1], 5, 0), np.array([0, 0, 1, 1, 2])),            # all points identical
        (pts, np.zeros(10, dtype=int)),                                    # one cluster: sklearn raises
        (pts[:4], np.array([0, 1, 2, 3])),                                 # as many clusters as points
        (pts, np.array([0, 3] * 5)),                                       # cluster ids with gaps
        (np.concatenate([same, same + 1.0]), np.array([0] * 4 + [1] * 4)),  # two tight clusters
    ]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_scores_on_degenerate_partitions(dtype: torch.dtype) -> None:
    problems = degenerate_problems()
    x, labels = padded(problems, dtype)
    q = batched_quality(x, point_weights(labels, 4))
    assert_like_sklearn(q, problems, dtype)
    assert torch.isnan(q[4]).all() and torch.isnan(q[5]).all()  # where scikit-learn raises
    assert q[0, 0] < 1 and q[7, 0] == pytest.approx(1.0)  # the singleton's silhouette is 0


def test_grid_points_equal_the_channels_they_stand_for() -> None:
    """CPHA: channels on an H x W grid scored as weighted grid positions = scored one by one."""
    rng = np.random.default_rng(2)
    coords = rng.integers(0, 8, (3, 300, 2)).astype(np.float64)
    lab = rng.integers(0, 5, (3, 300))
    lab[1, 250:] = -1  # dropped channels
    x, labels = torch.as_tensor(coords), torch.as_tensor(lab)
    grid, wts = grid_points(x, labels, 5, (8, 8))
    assert grid.shape == (3, 64, 2) and wts.sum().item() == 3 * 300 - 50
    fast = batched_quality(grid, wts)
    plain = batched_quality(x, point_weights(labels, 5))
    assert torch.allclose(fast, plain, rtol=1e-10)
    assert_like_sklearn(fast, [(coords[i][lab[i] >= 0], lab[i][lab[i] >= 0]) for i in range(3)],
                        torch.float64)


def test_calinski_harabasz_and_davies_bouldin_match_torchmetrics() -> None:
    from torchmetrics.functional.clustering import calinski_harabasz_score as tm_chi
    from torchmetrics.functional.clustering import davies_bouldin_score as tm_dbi

    problems = random_problems(3, n_problems=3)
    x, labels = padded(problems, torch.float64)
    q = batched_quality(x, point_weights(labels, 4))
    for i, (pts, lab) in enumerate(problems):
        t = torch.as_tensor(pts)
        assert q[i, 1].item() == pytest.approx(float(tm_chi(t, torch.as_tensor(lab))), rel=1e-6)
        assert q[i, 2].item() == pytest.approx(float(tm_dbi(t, torch.as_tensor(lab))), rel=1e-5)


@pytest.mark.parametrize("method", ["cgap", "cpha"])
def test_concept_metrics_equal_sklearn_per_image(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(5, 96, 6, 6, generator=g))
    a[2, :90] = 0  # 6 kept channels for 5 concepts
    res = cluster_channels(a, method=method, n_concepts=5, n_init=3)
    rows = concept_metrics(res)
    for i, row in enumerate(rows):
        lab = res.labels[i][res.labels[i] >= 0].numpy()
        ref = sklearn_scores(res.features[i], lab)
        for key, r in zip(("silhouette", "calinski_harabasz", "davies_bouldin"), ref):
            assert abs(row[key] - r) <= TOL * max(1.0, abs(r)), (i, key, row[key], r)
        one = clustering_quality(res.features[i], lab, warn=False)  # the one-image entry point
        assert [one[k] for k in one] == pytest.approx([row[k] for k in one], rel=1e-9, nan_ok=True)


def test_degenerate_images_warn_and_give_nan() -> None:
    a = torch.zeros(2, 6, 3, 3)
    a[0, :, 1, 1] = torch.arange(1.0, 7.0)  # CPHA: every maximum at one place -> one concept
    a[1] = torch.rand(6, 3, 3, generator=torch.Generator().manual_seed(0))
    with pytest.warns(DegenerateClusteringWarning):
        res = cluster_channels(a, method="cpha", n_concepts=2)
    with pytest.warns(DegenerateClusteringWarning, match="image 0"):
        rows = concept_metrics(res)
    assert all(math.isnan(rows[0][k]) for k in ("silhouette", "calinski_harabasz", "davies_bouldin"))
    assert not math.isnan(rows[1]["silhouette"])
