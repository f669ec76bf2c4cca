"""Clustering quality of each image's concepts: silhouette, Calinski-Harabasz, Davies-Bouldin
(paper § 4.2, Tables 1-2), on the space that was clustered (PCA scores for CGAP, (row, col)
for CPHA); NaN and a warning where a score is undefined.

All images of a batch are scored at once, on the activations' device, exactly as
scikit-learn defines the three scores (scikit-learn is the reference of the tests). Each
image is a set of U *distinct* points with, per point, how many channels of each cluster
sit there (``weights``, U x K): for CGAP every kept channel is its own point, for CPHA
the at most H x W grid positions carry all channels, so the silhouette of 2,048 channels
costs a 64 x 64 distance matrix instead of a 2,048 x 2,048 one. Duplicate points are at
distance 0 from each other, so sums over distinct points with weights equal the sums over
channels.

torchmetrics' ``calinski_harabasz_score`` / ``davies_bouldin_score`` take one problem at a
time (a Python loop over clusters; Davies-Bouldin keeps its intra-cluster distances in
float32): they are the same formulas, so the tests compare with them too, but the batched
ones here score a batch in a few tensor operations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from clustercam.explain.concepts.checks import warn_degenerate
from clustercam.explain.concepts.image.extract import ConceptClustering
from clustercam.explain.concepts.vocabulary import CONCEPT_METRIC_NAMES, QUALITY_METRICS
from clustercam.explain.deprecation import renamed_parameters

# elements of the B x U x U distances made at once: on the CPU a block that stays in cache
# (float64: 4 MiB), on a GPU 128 MiB
_BLOCK = 1 << 19
_CHUNK = 1 << 24
_DIRECT = "donot_use_mm_for_euclid_dist"
# numpy.allclose(x, 0)'s tolerance, as scikit-learn's Davies-Bouldin uses it
_ATOL = 1e-8


def point_weights(labels: Tensor, n_clusters: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """B x N x K: one-hot cluster membership of each point (zero rows where ``labels < 0``)."""
    valid = labels >= 0
    onehot = torch.zeros(*labels.shape, n_clusters, dtype=dtype, device=labels.device)
    onehot.scatter_(-1, labels.clamp_min(0).unsqueeze(-1), valid.unsqueeze(-1).to(dtype))
    return onehot


def grid_points(coords: Tensor, labels: Tensor, n_clusters: int, shape: Sequence[int],
                dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Integer (row, col) points B x N x 2 -> the H x W grid positions as distinct points
    (B x HW x 2) and the number of points of each cluster at each position (B x HW x K)."""
    h, w = int(shape[0]), int(shape[1])
    code = (coords[..., 0].long() * w + coords[..., 1].long()).clamp(0, h * w - 1)
    b = labels.shape[0]
    lab = labels.clamp_min(0)
    flat = torch.zeros(b, h * w * n_clusters, dtype=dtype, device=labels.device)
    flat.scatter_add_(1, code * n_clusters + lab, (labels >= 0).to(dtype))
    rows = torch.arange(h * w, device=labels.device)
    grid = torch.stack([rows // w, rows % w], -1).to(dtype).expand(b, -1, -1)
    return grid, flat.view(b, h * w, n_clusters)


def _cluster_distance_sums(x: Tensor, wts: Tensor) -> Tensor:
    """B x U x K: the summed distance from each point to the points of each cluster.

    The U x U distances are made in blocks of about :data:`_BLOCK` elements (whole images
    when small, else square blocks of one image's upper triangle, each used for its rows
    and its columns) that stay in cache and are reduced at once;
    direct differences (not ``|x|^2 + |y|^2 - 2 x.y``): the diagonal is exactly 0 and the
    sums at least as accurate as scikit-learn's expansion.
    """
    b, u, _ = x.shape
    sums = torch.empty(b, u, wts.shape[-1], dtype=x.dtype, device=x.device)
    block = _BLOCK if x.device.type == "cpu" else _CHUNK
    step = block // max(u * u, 1)
    if step >= 1:  # several whole images per block
        for s in range(0, b, step):
            xs = x[s:s + step]
            sums[s:s + step] = torch.bmm(torch.cdist(xs, xs, compute_mode=_DIRECT), wts[s:s + step])
        return sums
    if bool(((wts == 0) | (wts == 1)).all()) and bool((wts.sum(-1) <= 1).all()):
        return _sums_by_cluster(x, wts, block)
    # one image at a time, in square blocks of its upper triangle: each distance block
    # serves its rows and, transposed, its columns (half the square roots)
    rows = max(1, block // u)
    sums.zero_()
    for i in range(b):
        xi, wi, si = x[i], wts[i], sums[i]
        for r in range(0, u, rows):
            for c in range(r, u, rows):
                d = torch.cdist(xi[r:r + rows], xi[c:c + rows], compute_mode=_DIRECT)
                si[r:r + rows].addmm_(d, wi[c:c + rows])
                if c != r:
                    si[c:c + rows].addmm_(d.T, wi[r:r + rows])
    return sums


def _sums_by_cluster(x: Tensor, wts: Tensor, block: int) -> Tensor:
    """:func:`_cluster_distance_sums` where every point is in at most one cluster (CGAP's
    channels): one image at a time, points sorted by cluster, the distances of each pair
    of clusters (k <= l) in blocks of about ``block`` elements summed along rows (the sums
    to l) and columns (to k). No skinny matmul, half the square roots: ~1.6x faster at
    2,048 points in 5 clusters. Points in no cluster get 0."""
    b, u, k = wts.shape
    sums = torch.zeros(b, u, k, dtype=x.dtype, device=x.device)
    has = wts.sum(-1) > 0
    lab = torch.where(has, wts.argmax(-1), k)  # no cluster: sorted last, skipped
    order = torch.argsort(lab, dim=1, stable=True)
    bins = torch.arange(k + 1, device=x.device).expand(b, -1).contiguous()
    ends = torch.searchsorted(lab.gather(1, order), bins)
    for i, bounds in enumerate(ends.tolist()):
        xs = x[i, order[i]]
        si = torch.zeros(u, k, dtype=x.dtype, device=x.device)
        for c1 in range(k):
            s1, e1 = bounds[c1], bounds[c1 + 1]
            for c2 in range(c1, k):
                s2, e2 = bounds[c2], bounds[c2 + 1]
                if e1 == s1 or e2 == s2:
                    continue
                step = max(1, block // (e2 - s2))
                for r in range(s1, e1, step):
                    d = torch.cdist(xs[r:min(r + step, e1)], xs[s2:e2], compute_mode=_DIRECT)
                    si[r:r + d.shape[0], c2] += d.sum(1)
                    if c2 != c1:
                        si[s2:e2, c1] += d.sum(0)
        sums[i, order[i]] = si
    return sums


def _silhouette(x: Tensor, wts: Tensor, counts: Tensor, n: Tensor) -> Tensor:
    """Mean silhouette of B problems of U distinct points x (B x U x d), weights B x U x K."""
    sums = _cluster_distance_sums(x, wts)
    cs = counts
    present = cs > 0
    mean = torch.where(present.unsqueeze(1), sums / cs.clamp_min(1).unsqueeze(1), math.inf)
    k = cs.shape[-1]
    a = sums / (cs - 1).clamp_min(1).unsqueeze(1)  # own cluster (self at distance 0)
    eye = torch.eye(k, dtype=torch.bool, device=x.device)
    others = mean.unsqueeze(2).masked_fill(eye, math.inf)  # B x U x K(own) x K(other)
    bb = others.amin(-1)
    sil = (bb - a) / torch.maximum(a, bb)
    sil = torch.nan_to_num(sil, nan=0.0, posinf=0.0, neginf=0.0)
    sil = torch.where((cs == 1).unsqueeze(1), torch.zeros_like(sil), sil)  # singletons: 0
    return (sil * wts).sum((1, 2)) / n.clamp_min(1)


def batched_quality(points: Tensor, weights: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """B x 3 (silhouette, Calinski-Harabasz, Davies-Bouldin) of B clusterings at once.

    ``points``: B x U x d distinct points (padding rows have zero weight); ``weights``:
    B x U x K, how many points of cluster k sit at point u (:func:`point_weights` for plain
    labels, :func:`grid_points` for CPHA positions). The scores follow scikit-learn's
    ``silhouette_score``, ``calinski_harabasz_score`` and ``davies_bouldin_score`` (which
    score the present clusters only) and are NaN where those raise: fewer than 2 clusters,
    or as many clusters as points.

    Example:
        >>> import torch
        >>> from clustercam.explain.concepts.image.metrics import batched_quality, point_weights
        >>> x = torch.tensor([[[0.0], [1.0], [10.0], [11.0]]], dtype=torch.float64)
        >>> q = batched_quality(x, point_weights(torch.tensor([[0, 0, 1, 1]]), 2))
        >>> [round(v, 4) for v in q[0].tolist()]  # silhouette, CHI, DBI
        [0.8997, 200.0, 0.1]
    """
    x = points.to(dtype)
    wts = weights.to(dtype=dtype, device=x.device)
    counts = wts.sum(1)  # B x K
    n = counts.sum(-1)  # B
    present = counts > 0
    n_labels = present.sum(-1)
    defined = (n_labels >= 2) & (n_labels.to(dtype) < n)
    # Calinski-Harabasz: between / within dispersion
    total = (wts.sum(-1, keepdim=True) * x).sum(1) / n.clamp_min(1).unsqueeze(-1)  # B x d
    centres = torch.bmm(wts.transpose(1, 2), x) / counts.clamp_min(1).unsqueeze(-1)  # B x K x d
    extra = (counts * ((centres - total.unsqueeze(1)) ** 2).sum(-1)).sum(-1)
    diff = x.unsqueeze(2) - centres.unsqueeze(1)  # B x U x K x d
    dist2 = (diff * diff).sum(-1)
    intra = (dist2 * wts).sum((1, 2))
    kf = n_labels.to(dtype)
    chi = torch.where(intra == 0, torch.ones_like(intra),
                      extra * (n - kf) / (intra * (kf - 1)).clamp_min(torch.finfo(dtype).tiny))
    # Davies-Bouldin: mean over clusters of the worst (s_i + s_j) / d(c_i, c_j)
    spread = (dist2.sqrt() * wts).sum(1) / counts.clamp_min(1)  # B x K
    cd = (centres.unsqueeze(2) - centres.unsqueeze(1)).pow(2).sum(-1).sqrt()  # B x K x K
    pair = present.unsqueeze(2) & present.unsqueeze(1)
    flat_s = ((spread.abs() <= _ATOL) | ~present).all(-1)
    flat_c = ((cd.abs() <= _ATOL) | ~pair).flatten(1).all(-1)
    ratio = (spread.unsqueeze(2) + spread.unsqueeze(1)) / cd.masked_fill(cd == 0, math.inf)
    ratio = ratio.masked_fill(~pair, -math.inf).amax(-1).masked_fill(~present, 0)
    dbi = ratio.sum(-1) / kf.clamp_min(1)
    dbi = torch.where(flat_s | flat_c, torch.zeros_like(dbi), dbi)
    sil = _silhouette(x, wts, counts, n)
    out = torch.stack([sil, chi, dbi], -1)
    return out.masked_fill(~defined.unsqueeze(-1), math.nan)


@renamed_parameters(labels="concept_labels")
def clustering_quality(features: np.ndarray, concept_labels: np.ndarray, *, warn: bool = True) -> dict[str, float]:
    """Silhouette, Calinski-Harabasz, Davies-Bouldin of one image; NaN when undefined.

    Undefined: fewer than 2 clusters, or as many clusters as points (scikit-learn would
    raise); a warning says which.
    """
    lab = torch.as_tensor(np.asarray(concept_labels), dtype=torch.long).view(1, -1)
    x = torch.as_tensor(np.asarray(features, dtype=np.float64)).reshape(1, lab.shape[1], -1)
    n_labels = int(torch.unique(lab).numel())
    if lab.shape[1] == 0 or n_labels < 2 or n_labels >= lab.shape[1]:
        if warn:
            warn_degenerate(f"{n_labels} clusters for {lab.shape[1]} channels: metrics undefined (NaN)")
        return dict.fromkeys(QUALITY_METRICS, math.nan)
    _, inverse = torch.unique(lab, return_inverse=True)
    q = batched_quality(x, point_weights(inverse, n_labels))[0].tolist()
    return dict(zip(QUALITY_METRICS, q))


def result_quality(result: ConceptClustering) -> Tensor:
    """B x 3 scores of a :class:`ConceptClustering` (NaN for images it did not cluster)."""
    labels = result.labels
    k = max(result.n_concepts, int(labels.max()) + 1 if labels.numel() else 1)
    space = result.space
    if space is None:  # built by hand: the per-image features, padded
        space = torch.zeros(*labels.shape, result.features[0].shape[1] if result.features else 1,
                            dtype=torch.float64, device=labels.device)
        for i, f in enumerate(result.features):
            space[i, labels[i] >= 0] = torch.as_tensor(f, dtype=torch.float64, device=labels.device)
    if result.method == "cpha" and result.grid is not None:
        points, wts = grid_points(space, labels, k, result.grid)
    else:
        points, wts = space, point_weights(labels, k)
    q = batched_quality(points, wts)
    ok = torch.as_tensor(result.clustered, dtype=torch.bool, device=q.device)
    return q.masked_fill(~ok.unsqueeze(-1), math.nan)


def concept_metrics(result: ConceptClustering, *, warn: bool = True) -> list[dict[str, float]]:
    """Per image: silhouette, calinski_harabasz, davies_bouldin (clustered space), seconds.

    On the PCA space for CGAP and on the (row, col) coordinates for CPHA, as the paper;
    all images of the batch at once (:func:`batched_quality`). Degenerate images (see
    :class:`ConceptClustering`) get NaN metrics and a warning.
    """
    q = result_quality(result).cpu().tolist()  # torch only: no warning filters (threads share them)
    rows: list[dict[str, float]] = []
    for i, scores in enumerate(q):
        if warn and not result.clustered[i]:
            warn_degenerate(f"image {i}: {result.degenerate[i]}; metrics are NaN")
        elif warn and any(math.isnan(v) for v in scores):
            found = int((result.labels[i] >= 0).sum())
            warn_degenerate(f"image {i}: clusters for {found} channels: metrics undefined (NaN)")
        rows.append(dict(zip(CONCEPT_METRIC_NAMES, [*scores, float(result.seconds[i])])))
    return rows
