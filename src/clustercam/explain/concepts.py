"""Concepts from one image's activations by clustering its channels (CGAP / CPHA, SPEC § 5).

Pure torch + scikit-learn: no Lightning, no Hydra. Every function takes a batch
``B x C x H x W`` of activations (the output of ``g`` for B images) and treats each image
independently, as the paper does.

- :func:`extract_concepts` / :func:`cluster_channels`: one integer concept per channel
  (``-1`` for all-zero channels). CGAP clusters the channels' flattened activation maps
  after a per-image PCA to ``n_concepts - 1`` dimensions; CPHA clusters the (row, col) of
  each channel's maximum. k-means has a batched torch path (all images and all restarts
  at once, any device); the other algorithms run scikit-learn per image.
- :func:`sub_concepts`: split each concept again into up to 3 sub-concepts.
- :func:`concept_importance`: ``I_l = (p_t - p_l) / p_t * 100`` by ablating each concept,
  every concept of the batch in one head call.
- :func:`concept_maps` / :func:`sub_concept_maps`: summed channels, resized, min-max
  normalised (sub-concepts with the parent's bounds).
- :func:`concept_metrics`: silhouette, Calinski-Harabasz, Davies-Bouldin per image on the
  space that was clustered, with NaN (and a warning) for degenerate cases.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

METHODS = ("cgap", "cpha")
ALGORITHMS = ("kmeans", "agglomerative", "birch", "gmm")
BACKENDS = ("torch", "sklearn")
METRICS = ("silhouette", "calinski_harabasz", "davies_bouldin")


class DegenerateClusteringWarning(UserWarning):
    """An image could not be clustered as asked (too few distinct channels, one cluster...)."""


@dataclass
class ConceptClustering:
    """The concepts of a batch and what is needed to judge them.

    ``labels``: B x C (long, on the activations' device), ``-1`` for dropped channels,
    concepts numbered by decreasing size (concept 0 is the largest).
    ``features``: per image, the clustered space of its kept channels in channel order
    (``n_kept x (n_concepts - 1)`` PCA scores for CGAP, ``n_kept x 2`` (row, col) for CPHA).
    ``seconds``: per image, feature extraction + clustering wall time (the batched k-means
    path reports its batch time divided by the number of images).
    ``degenerate``: per image, why it could not be clustered as asked (``None`` if fine);
    ``clustered``: False where the algorithm was not run at all (no non-zero channel, fewer
    distinct channels than concepts: one concept per distinct channel instead).
    """

    labels: Tensor
    features: list[np.ndarray]
    seconds: list[float]
    degenerate: list[str | None]
    clustered: list[bool]
    method: str
    algorithm: str
    n_concepts: int
    backend: str

    def counts(self) -> Tensor:
        """B x n_concepts: the number of channels in each concept."""
        return concept_counts(self.labels, self.n_concepts)


@dataclass
class SubConcepts:
    """Sub-concepts of every concept of a batch.

    ``labels``: B x C, ``parent * n_sub + sub`` for channels of a split parent, ``-1``
    elsewhere (dropped channels, parents too small to split). ``split``: B x n_concepts,
    whether the parent was split. ``n_sub``: the maximum number of sub-concepts.
    """

    labels: Tensor
    split: Tensor
    n_sub: int
    n_concepts: int
    parents: Tensor = field(repr=False)

    def counts(self) -> Tensor:
        """B x n_concepts x n_sub: the channels of each sub-concept."""
        return concept_counts(self.labels, self.n_concepts * self.n_sub).view(
            -1, self.n_concepts, self.n_sub
        )


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------
def _check_activations(activations: Tensor) -> None:
    if not isinstance(activations, Tensor):
        raise TypeError(f"activations must be a torch.Tensor, got {type(activations).__name__}")
    if activations.ndim != 4:
        hint = " (one image? add a batch dimension: a[None])" if activations.ndim == 3 else ""
        raise ValueError(
            f"activations must have shape B x C x H x W, got shape {tuple(activations.shape)}{hint}"
        )
    if not activations.is_floating_point():
        raise ValueError(f"activations must be floating point, got dtype {activations.dtype}")
    finite = torch.isfinite(activations).flatten(1).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise ValueError(
            f"activations contain NaN or infinite values in {len(bad)} images "
            f"(first indices {bad[:5].tolist()})"
        )


def _check_args(method: str, n_concepts: int, algorithm: str, n_init: int, backend: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown concept method {method!r}; choose one of {METHODS}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown clustering algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    if isinstance(n_concepts, bool) or not isinstance(n_concepts, int | np.integer):
        raise ValueError(f"n_concepts must be an integer >= 2, got {n_concepts!r}")
    if n_concepts < 2:
        raise ValueError(f"n_concepts must be >= 2, got {n_concepts}")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def _warn(message: str) -> None:
    warnings.warn(message, DegenerateClusteringWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------
def kept_channels(activations: Tensor) -> Tensor:
    """B x C bool: channels with at least one non-zero value (the others play no role)."""
    return (activations != 0).flatten(2).any(2)


def _raw_features(activations: Tensor, method: str, dtype: torch.dtype) -> Tensor:
    """B x C x F: flattened maps (CGAP) or (row, col) of the first maximum (CPHA)."""
    flat = activations.flatten(2)
    if method == "cgap":
        return flat.to(dtype)
    pos = flat.argmax(2)  # torch returns the first maximal index on ties
    w = activations.shape[-1]
    return torch.stack([pos // w, pos % w], dim=-1).to(dtype)


def _n_distinct(rows: Tensor) -> int:
    return 0 if len(rows) == 0 else int(torch.unique(rows, dim=0).shape[0])


def _distinct_inverse(rows: Tensor) -> Tensor:
    return torch.unique(rows, dim=0, return_inverse=True)[1]


def batched_pca(x: Tensor, mask: Tensor, n_components: int) -> Tensor:
    """Per-problem PCA scores: B x N x D -> B x N x n_components (zero rows where masked).

    Each problem is centred on its own valid rows; the components are the top eigenvectors
    of its covariance (D x D, small for 8 x 8 maps), all problems in one ``eigh`` call.
    Signs are arbitrary, as in any PCA; clustering and the metrics do not depend on them.
    """
    m = mask.to(x.dtype).unsqueeze(-1)
    n = m.sum(1, keepdim=True).clamp_min(1)
    xc = (x - (x * m).sum(1, keepdim=True) / n) * m
    cov = xc.transpose(1, 2) @ xc
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    k = min(n_components, x.shape[-1])
    comps = vecs[..., -k:].flip(-1)
    return xc @ comps


# ---------------------------------------------------------------------------------------
# batched k-means (k-means++ init, n_init restarts, Lloyd) in torch
# ---------------------------------------------------------------------------------------
def _sqdist(x: Tensor, xsq: Tensor, c: Tensor) -> Tensor:
    """Squared distances: x Q x N x d (xsq = |x|^2, Q x N x 1) against c Q x K x d -> Q x N x K."""
    d = torch.baddbmm(xsq, x, c.transpose(1, 2), alpha=-2) + (c * c).sum(-1).unsqueeze(1)
    return d.clamp_min_(0)


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """Rows of x (Q x N x d) at idx (Q x J) -> Q x J x d."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(*idx.shape, x.shape[-1]))


def _sample(weights: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draws: row q picks index i with probability weights[q, i] / sum (u in (0, 1])."""
    cum = weights.cumsum(-1)
    idx = torch.searchsorted(cum, (u * cum[:, -1:]).contiguous())
    return idx.clamp_max(weights.shape[-1] - 1)


def kmeans_pp_uniforms(n_problems: int, n_init: int, k: int, seed: int, device: torch.device) -> Tensor:
    """The random numbers of k-means++ seeding: P x n_init x (1 + (k - 1) * (2 + log k)).

    Every problem (image) draws from its own generator seeded with ``seed`` (as
    scikit-learn's ``random_state=seed`` per image), so an image's concepts do not depend
    on which other images share its batch, on the DDP rank, or on the device.
    """
    n_local = 2 + int(math.log(k))
    gen = torch.Generator().manual_seed(int(seed))
    u = 1 - torch.rand(n_init, 1 + (k - 1) * n_local, generator=gen, dtype=torch.float64)
    return u.to(device).expand(n_problems, -1, -1)


def _kmeans_pp(x: Tensor, xsq: Tensor, valid: Tensor, k: int, u: Tensor) -> Tensor:
    """Greedy k-means++ seeding of Q problems (``2 + log(k)`` candidates per centre).

    ``u``: Q x (1 + (k - 1) * n_local) uniforms in (0, 1], see :func:`kmeans_pp_uniforms`.
    """
    q, n, d = x.shape
    vf = valid.to(x.dtype)
    n_local = 2 + int(math.log(k))
    u = u.to(x.dtype)
    first = _sample(vf, u[:, :1])  # Q x 1, uniform over the valid rows
    centres = [_rows(x, first)]
    closest = _sqdist(x, xsq, centres[0]).squeeze(-1) * vf  # Q x N
    for step in range(1, k):
        weights = torch.where(closest.sum(1, keepdim=True) > 0, closest, vf)  # duplicates: uniform
        cand = _sample(weights, u[:, 1 + (step - 1) * n_local: 1 + step * n_local])  # Q x L
        cpts = _rows(x, cand)
        new = torch.minimum(closest.unsqueeze(-1), _sqdist(x, xsq, cpts)) * vf.unsqueeze(-1)
        best = new.sum(1).argmin(-1)  # Q
        closest = torch.gather(new, 2, best.view(q, 1, 1).expand(q, n, 1)).squeeze(-1)
        centres.append(torch.gather(cpts, 1, best.view(q, 1, 1).expand(q, 1, d)))
    return torch.cat(centres, 1)


def _lloyd_step(
    xt: Tensor, xw: Tensor, xsq: Tensor, vf: Tensor, c: Tensor
) -> tuple[Tensor, Tensor]:
    """One Lloyd iteration for Q problems: labels (Q x N) and new centres (Q x K x d).

    ``xt`` is x transposed (Q x d x N), ``xw`` x times the validity weights ``vf``
    (Q x N x d). The assignment only needs ``|c|^2 - 2 c.x``, computed as Q x K x N (one
    ``baddbmm``, reduced over K which is not the contiguous dimension: fast on CPU);
    sums and counts use ``scatter_add`` (O(N d)).
    """
    q, d, n = xt.shape
    k = c.shape[1]
    score = torch.baddbmm((c * c).sum(-1).unsqueeze(-1), c, xt, alpha=-2)  # Q x K x N
    best, lab = score.min(1)  # Q x N
    counts = torch.zeros(q, k, dtype=xt.dtype, device=xt.device).scatter_add_(1, lab, vf)
    sums = torch.zeros(q, k, d, dtype=xt.dtype, device=xt.device).scatter_add_(
        1, lab.unsqueeze(-1).expand(q, n, d), xw)
    new_c = sums / counts.clamp_min(1).unsqueeze(-1)
    empty = counts == 0
    if bool(empty.any()):  # move empty clusters onto the points farthest from their centres
        mind = (best + xsq) * vf - (1 - vf)
        far = mind.topk(k, dim=-1).indices  # Q x K
        rank = (empty.long().cumsum(-1) - 1).clamp_min(0)
        pts = torch.gather(xt, 2, torch.gather(far, 1, rank).unsqueeze(1).expand(q, d, k))
        new_c = torch.where(empty.unsqueeze(-1), pts.transpose(1, 2), new_c)
    return lab, new_c


def batched_kmeans(
    x: Tensor,
    mask: Tensor,
    n_clusters: int,
    n_init: int = 10,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> tuple[Tensor, Tensor, Tensor]:
    """k-means on P independent problems at once: x P x N x d, mask P x N (valid rows).

    Greedy k-means++ seeding (as scikit-learn; each problem's random numbers come from its
    own generator seeded with ``seed``, so a problem's result does not depend on the
    others in the batch), ``n_init`` restarts run side by side as P x n_init problems, Lloyd iterations until the labels stop changing or the centre
    shift falls below ``tol`` x the mean feature variance (scikit-learn's criteria).
    Converged problems are frozen and leave the working batch once it has shrunk by a
    quarter. Empty clusters move to the points farthest from their centres. Keeps the
    restart with the lowest inertia. Every problem needs at least ``n_clusters`` valid
    rows. Returns labels (P x N, ``-1`` where masked), centres (P x K x d), inertia (P).
    """
    p, n, d = x.shape
    k, r = n_clusters, n_init
    dev, dt = x.device, x.dtype
    valid = mask.bool()
    if bool((valid.sum(1) < k).any()):
        raise ValueError(f"every problem needs at least n_clusters={k} valid rows")
    w = valid.to(dt)
    cnt = w.sum(1, keepdim=True)
    mean = (x * w[..., None]).sum(1) / cnt
    var = (((x - mean[:, None]) ** 2) * w[..., None]).sum(1) / cnt
    tol_q = (var.mean(-1) * tol).repeat_interleave(r)  # Q
    xq = x.repeat_interleave(r, 0)  # Q x N x d, restarts of a problem are adjacent
    vq = valid.repeat_interleave(r, 0)
    vfq = vq.to(dt)
    xsq = (xq * xq).sum(-1)  # Q x N
    u = kmeans_pp_uniforms(p, r, k, seed, dev).reshape(p * r, -1)
    c = _kmeans_pp(xq, xsq.unsqueeze(-1), vq, k, u)
    labels = torch.full((p * r, n), -1, dtype=torch.long, device=dev)

    xt, xw = xq.transpose(1, 2).contiguous(), xq * vfq.unsqueeze(-1)
    ids = torch.arange(p * r, device=dev)  # the working set
    w_xt, w_xw, w_xsq, w_vf, w_c, w_lab = xt, xw, xsq, vfq, c, labels
    w_act = torch.ones(p * r, dtype=torch.bool, device=dev)
    for _ in range(max_iter):
        lab, new_c = _lloyd_step(w_xt, w_xw, w_xsq, w_vf, w_c)
        shift = ((new_c - w_c) ** 2).sum((1, 2))
        same = (lab == w_lab).all(1)
        upd = w_act.view(-1, 1, 1)
        w_c = torch.where(upd, new_c, w_c)
        w_lab = torch.where(upd.view(-1, 1), lab, w_lab)
        w_act = w_act & (shift > tol_q[ids]) & ~same
        n_act = int(w_act.sum())
        if n_act == 0 or n_act <= 0.75 * len(ids):
            c[ids], labels[ids] = w_c, w_lab
            if n_act == 0:
                break
            keep = w_act.nonzero().flatten()
            ids = ids[keep]
            w_xt, w_xw, w_xsq, w_vf = xt[ids], xw[ids], xsq[ids], vfq[ids]
            w_c, w_lab, w_act = w_c[keep], w_lab[keep], w_act[keep]
    else:
        c[ids], labels[ids] = w_c, w_lab
    score = torch.baddbmm((c * c).sum(-1).unsqueeze(-1), c, xt, alpha=-2)
    best, lab = score.min(1)
    inertia = ((best + xsq).clamp_min(0) * vfq).sum(-1).view(p, r)
    pick_r = inertia.argmin(1)
    pick = torch.arange(p, device=dev) * r + pick_r
    return (lab[pick].masked_fill(~valid, -1), c[pick],
            inertia.gather(1, pick_r[:, None]).squeeze(1))


# ---------------------------------------------------------------------------------------
# scikit-learn per image
# ---------------------------------------------------------------------------------------
def _sklearn_cluster(
    z: np.ndarray, n: int, algorithm: str, seed: int, n_init: int, kwargs: Mapping[str, Any]
) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering, Birch, KMeans
    from sklearn.mixture import GaussianMixture

    if algorithm == "kmeans":
        return KMeans(n_clusters=n, n_init=n_init, random_state=seed, **kwargs).fit_predict(z)
    if algorithm == "agglomerative":
        return AgglomerativeClustering(n_clusters=n, linkage="ward", **kwargs).fit_predict(z)
    if algorithm == "birch":
        with warnings.catch_warnings():  # "fewer subclusters than n_clusters": handled below
            warnings.simplefilter("ignore")
            return Birch(n_clusters=n, **kwargs).fit_predict(z)
    opts = {"covariance_type": "full", "reg_covar": 1e-6, **kwargs}
    try:
        return GaussianMixture(n_components=n, n_init=n_init, random_state=seed, **opts).fit_predict(z)
    except ValueError:  # ill-defined covariances (many identical points): regularise more
        opts["reg_covar"] = max(1e-3, 10 * opts["reg_covar"])
        return GaussianMixture(n_components=n, n_init=n_init, random_state=seed, **opts).fit_predict(z)


def _sklearn_pca(raw: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    k = min(k, raw.shape[1], raw.shape[0])
    return PCA(n_components=k, svd_solver="auto", random_state=seed).fit_transform(raw)


def _relabel_by_size(labels: Tensor, n: int) -> Tensor:
    """Renumber concepts per image by decreasing size (ties: lowest old id); keeps -1."""
    counts = concept_counts(labels, n)  # B x n
    order = torch.argsort(-counts * (n + 1) + torch.arange(n, device=labels.device), dim=1)
    new_id = torch.empty_like(order)
    new_id.scatter_(1, order, torch.arange(n, device=labels.device).expand_as(order).contiguous())
    out = torch.gather(new_id, 1, labels.clamp_min(0))
    return torch.where(labels >= 0, out, labels)


def concept_counts(labels: Tensor, n_concepts: int) -> Tensor:
    """B x n_concepts: channels per concept (labels ``-1`` are not counted)."""
    onehot = F.one_hot(labels.clamp_min(0).long(), n_concepts) * (labels >= 0).unsqueeze(-1)
    return onehot.sum(1)


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------
def cluster_channels(
    activations: Tensor,
    method: str = "cgap",
    n_concepts: int = 5,
    algorithm: str = "kmeans",
    seed: int = 0,
    n_init: int = 10,
    backend: str = "torch",
    max_iter: int = 300,
    tol: float = 1e-4,
    algorithm_kwargs: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    warn: bool = True,
) -> ConceptClustering:
    """Cluster the kept channels of each image into concepts; labels + the clustered space.

    ``backend="torch"`` runs k-means batched over the images (PCA included) on the
    activations' device; ``"sklearn"`` runs scikit-learn's PCA + KMeans per image (the
    reference). Agglomerative (ward), Birch and GMM always run scikit-learn per image;
    ``algorithm_kwargs`` go to their constructors (e.g. Birch ``threshold``).
    ``dtype``: the torch k-means precision (default float32: twice as fast, same partitions
    in our parity tests); PCA and the returned features are float64.
    Images that cannot be clustered (no non-zero channel, fewer distinct channels than
    concepts) get one concept per distinct channel and a warning, never an error.
    """
    _check_args(method, n_concepts, algorithm, n_init, backend)
    _check_activations(activations)
    kwargs = dict(algorithm_kwargs or {})
    dev = activations.device
    dtype = torch.float32 if dtype is None else dtype
    b, c = activations.shape[:2]
    mask = kept_channels(activations)
    raw = _raw_features(activations, method, torch.float64)
    k = n_concepts - 1
    labels = torch.full((b, c), -1, dtype=torch.long, device=dev)
    features: list[np.ndarray | None] = [None] * b
    seconds = [0.0] * b
    degenerate: list[str | None] = [None] * b
    dims = min(k, raw.shape[-1]) if method == "cgap" else 2

    # degenerate images first: no kept channel, or fewer distinct channels than concepts
    good: list[int] = []
    for i in range(b):
        t0 = time.perf_counter()
        rows = raw[i][mask[i]]
        n_distinct = _n_distinct(rows)
        if n_distinct >= n_concepts:
            good.append(i)
            continue
        if n_distinct == 0:
            degenerate[i] = "no non-zero channel"
            features[i] = np.zeros((0, dims))
        else:
            degenerate[i] = f"{n_distinct} distinct channels for {n_concepts} concepts"
            labels[i, mask[i]] = _distinct_inverse(rows)
            z = batched_pca(rows[None], torch.ones(1, len(rows), dtype=torch.bool, device=dev), k)[0] \
                if method == "cgap" else rows
            features[i] = z.double().cpu().numpy()
        if warn:
            _warn(f"image {i}: {degenerate[i]} ({method}, {algorithm}); NaN metrics")
        seconds[i] = time.perf_counter() - t0

    if good and algorithm == "kmeans" and backend == "torch":
        t0 = time.perf_counter()
        sel = torch.tensor(good, device=dev)
        # kept channels first, padded to the largest count: the cost follows the kept
        # channels, not C (sub-concepts keep only one concept's channels)
        m_sel = mask[sel]
        n_kept = m_sel.sum(1)
        order = torch.argsort((~m_sel).to(torch.uint8), dim=1, stable=True)[:, : int(n_kept.max())]
        m_cmp = torch.arange(order.shape[1], device=dev) < n_kept[:, None]
        x_cmp = torch.gather(raw[sel], 1, order.unsqueeze(-1).expand(*order.shape, raw.shape[-1]))
        z = batched_pca(x_cmp, m_cmp, k) if method == "cgap" else x_cmp
        lab, _, _ = batched_kmeans(z.to(dtype), m_cmp, n_concepts, n_init=n_init, seed=seed,
                                   max_iter=max_iter, tol=tol)
        full = torch.full((len(good), c), -1, dtype=torch.long, device=dev)
        labels[sel] = full.scatter(1, order, lab)
        zc = z.double().cpu()
        nk = n_kept.cpu().tolist()
        per = (time.perf_counter() - t0) / len(good)
        for j, i in enumerate(good):
            features[i] = zc[j, : nk[j]].numpy()
            seconds[i] = per
    elif good:
        mask_cpu = mask.cpu()
        raw_cpu = raw.double().cpu()
        for i in good:
            t0 = time.perf_counter()
            rows = raw_cpu[i][mask_cpu[i]].numpy()
            z = _sklearn_pca(rows, k, seed) if method == "cgap" else rows
            lab_i = _sklearn_cluster(z, n_concepts, algorithm, seed, n_init, kwargs)
            labels[i, mask[i]] = torch.as_tensor(lab_i, dtype=torch.long, device=dev)
            features[i] = np.ascontiguousarray(z, dtype=np.float64)
            seconds[i] = time.perf_counter() - t0
    labels = _relabel_by_size(labels, n_concepts)
    good_set = set(good)
    for i in good:
        found = int(torch.unique(labels[i][labels[i] >= 0]).numel())
        if found < n_concepts:
            degenerate[i] = f"{algorithm} found {found} of {n_concepts} concepts"
    return ConceptClustering(
        labels=labels,
        features=[f if f is not None else np.zeros((0, dims)) for f in features],
        seconds=seconds,
        degenerate=degenerate,
        clustered=[i in good_set for i in range(b)],
        method=method,
        algorithm=algorithm,
        n_concepts=n_concepts,
        backend=backend if algorithm == "kmeans" else "sklearn",
    )


def extract_concepts(
    activations: Tensor,
    method: str = "cgap",
    n_concepts: int = 5,
    algorithm: str = "kmeans",
    seed: int = 0,
    n_init: int = 10,
    **kwargs: Any,
) -> Tensor:
    """B x C x H x W activations -> B x C concept labels (``-1`` for all-zero channels).

    The stable entry point of SPEC § 5; see :func:`cluster_channels` for the options and
    for the clustered space and timings that the metrics need.
    """
    return cluster_channels(activations, method=method, n_concepts=n_concepts,
                            algorithm=algorithm, seed=seed, n_init=n_init, **kwargs).labels


def sub_concepts(
    activations: Tensor,
    labels: Tensor,
    method: str = "cgap",
    n_sub: int = 3,
    algorithm: str = "kmeans",
    seed: int = 0,
    n_init: int = 10,
    n_concepts: int | None = None,
    min_channels: int | None = None,
    **kwargs: Any,
) -> SubConcepts:
    """Split every concept again with the same method into up to ``n_sub`` sub-concepts.

    A parent with fewer than ``min_channels`` channels (default ``2 * n_sub``) or fewer
    than 2 distinct channels is left whole; one with fewer distinct channels than
    ``n_sub`` gets that many sub-concepts. Each parent is clustered for all images at once
    by zeroing the other channels (which :func:`cluster_channels` then drops).
    """
    _check_activations(activations)
    if n_sub < 2:
        raise ValueError(f"n_sub must be >= 2, got {n_sub}")
    if labels.shape != activations.shape[:2]:
        raise ValueError(f"labels must be B x C = {tuple(activations.shape[:2])}, got {tuple(labels.shape)}")
    n = int(labels.max()) + 1 if n_concepts is None else int(n_concepts)
    n = max(n, 1)
    min_channels = 2 * n_sub if min_channels is None else min_channels
    raw = _raw_features(activations, method, torch.float64)
    b = activations.shape[0]
    out = torch.full_like(labels, -1)
    split = torch.zeros(b, n, dtype=torch.bool, device=labels.device)
    for parent in range(n):
        member = labels == parent  # B x C
        eff = torch.zeros(b, dtype=torch.long)
        for i in range(b):
            if int(member[i].sum()) >= min_channels:
                eff[i] = min(n_sub, _n_distinct(raw[i][member[i]]))
        for m in range(2, n_sub + 1):
            sel = (eff == m).nonzero().flatten().to(labels.device)
            if len(sel) == 0:
                continue
            part = activations[sel] * member[sel].unsqueeze(-1).unsqueeze(-1).to(activations.dtype)
            res = cluster_channels(part, method=method, n_concepts=m, algorithm=algorithm,
                                   seed=seed, n_init=n_init, warn=False, **kwargs)
            sub = res.labels
            out[sel] = torch.where(sub >= 0, parent * n_sub + sub, out[sel])
            split[sel, parent] = True
    return SubConcepts(labels=out, split=split, n_sub=n_sub, n_concepts=n, parents=labels)


@torch.no_grad()
def concept_importance(
    head: Callable[[Tensor], Tensor],
    activations: Tensor,
    labels: Tensor,
    targets: Tensor | Sequence[int] | None,
    n_concepts: int | None = None,
    return_probs: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """B x n_concepts importance in percent: ``(p_t - p_l) / p_t * 100`` (SPEC § 5).

    ``p_t``: softmax probability of class ``targets[b]`` (``None``: the predicted class)
    from ``head(A)``; ``p_l``: the same with concept l's channels zeroed. Negative when
    removing the concept makes the model more confident; NaN for an empty concept. The
    original and all B x n_concepts ablated copies go through ``head`` in ONE call.
    With ``return_probs`` also returns ``p_t`` (B) and ``p_l`` (B x n_concepts).
    """
    _check_activations(activations)
    if labels.shape != activations.shape[:2]:
        raise ValueError(f"labels must be B x C = {tuple(activations.shape[:2])}, got {tuple(labels.shape)}")
    b = activations.shape[0]
    n = int(labels.max()) + 1 if n_concepts is None else int(n_concepts)
    if n < 1:
        raise ValueError(f"n_concepts must be >= 1, got {n}")
    labels = labels.to(activations.device)
    ids = torch.arange(n, device=activations.device)
    keep = (labels.unsqueeze(1) != ids[None, :, None]).to(activations.dtype)  # B x n x C
    ablated = activations.unsqueeze(1) * keep[..., None, None]  # B x n x C x H x W
    stacked = torch.cat([activations, ablated.flatten(0, 1)])
    probs = torch.softmax(head(stacked).double(), dim=-1)
    base, abl = probs[:b], probs[b:].view(b, n, -1)
    if targets is None:
        t = base.argmax(-1)
    else:
        t = torch.as_tensor(targets, dtype=torch.long, device=probs.device).view(-1)
        if len(t) != b:
            raise ValueError(f"targets has {len(t)} entries for {b} images")
        if bool(((t < 0) | (t >= probs.shape[-1])).any()):
            raise ValueError(f"targets must be class indices in [0, {probs.shape[-1]}), got {t.tolist()}")
    p_t = base.gather(1, t[:, None]).squeeze(1)
    p_l = abl.gather(2, t[:, None, None].expand(b, n, 1)).squeeze(-1)
    imp = (p_t[:, None] - p_l) / p_t[:, None] * 100
    empty = concept_counts(labels, n).to(imp.device) == 0
    imp = imp.masked_fill(empty, float("nan"))
    if return_probs:
        return imp, p_t, p_l.masked_fill(empty, float("nan"))
    return imp


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def raw_concept_maps(activations: Tensor, labels: Tensor, n_concepts: int | None = None) -> Tensor:
    """B x n_concepts x H x W: the sum of each concept's channels (activation resolution)."""
    _check_activations(activations)
    n = int(labels.max()) + 1 if n_concepts is None else int(n_concepts)
    onehot = F.one_hot(labels.clamp_min(0).long(), max(n, 1)).to(activations.dtype)
    onehot = onehot * (labels >= 0).unsqueeze(-1).to(activations.dtype)
    return torch.einsum("bchw,bcl->blhw", activations, onehot.to(activations.device))


def resize_maps(maps: Tensor, size: int | Sequence[int]) -> Tensor:
    """Bilinear resize of ... x H x W maps (``align_corners=False``)."""
    lead = maps.shape[:-2]
    out = F.interpolate(maps.reshape(-1, 1, *maps.shape[-2:]), size=_size(size), mode="bilinear",
                        align_corners=False)
    return out.view(*lead, *out.shape[-2:])


def normalise_maps(maps: Tensor, lo: Tensor | None = None, hi: Tensor | None = None) -> Tensor:
    """Min-max normalise ... x H x W maps to [0, 1], by their own bounds or by ``lo``/``hi``.

    With given bounds (a parent concept's) values are clamped to [0, 1]. A constant map
    (``hi == lo``, e.g. an empty concept) becomes all zeros.
    """
    if lo is None:
        lo = maps.flatten(-2).amin(-1)
    if hi is None:
        hi = maps.flatten(-2).amax(-1)
    lo, hi = lo[..., None, None], hi[..., None, None]
    span = hi - lo
    out = torch.where(span > 0, (maps - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                      torch.zeros_like(maps))
    return out.clamp(0, 1)


def concept_maps(
    activations: Tensor,
    labels: Tensor,
    size: int | Sequence[int],
    n_concepts: int | None = None,
    normalise: bool = True,
) -> Tensor:
    """B x n_concepts x H_out x W_out: summed channels, bilinear resize, min-max normalised.

    ``normalise=False`` keeps the resized sums (e.g. to normalise sub-concepts with their
    parent's bounds, see :func:`sub_concept_maps`).
    """
    maps = resize_maps(raw_concept_maps(activations, labels, n_concepts), size)
    return normalise_maps(maps) if normalise else maps


def sub_concept_maps(
    activations: Tensor,
    sub: SubConcepts,
    size: int | Sequence[int],
) -> Tensor:
    """B x n_concepts x n_sub x H_out x W_out, each normalised with its PARENT's min and max.

    So a sub-concept is drawn in proportion to the whole concept (paper § 3.4).
    """
    parent = concept_maps(activations, sub.parents, size, sub.n_concepts, normalise=False)
    maps = concept_maps(activations, sub.labels, size, sub.n_concepts * sub.n_sub, normalise=False)
    maps = maps.view(maps.shape[0], sub.n_concepts, sub.n_sub, *maps.shape[-2:])
    lo = parent.flatten(-2).amin(-1).unsqueeze(-1)
    hi = parent.flatten(-2).amax(-1).unsqueeze(-1)
    return normalise_maps(maps, lo.expand(*maps.shape[:3]), hi.expand(*maps.shape[:3]))


def clustering_quality(features: np.ndarray, labels: np.ndarray, warn: bool = True) -> dict[str, float]:
    """Silhouette, Calinski-Harabasz, Davies-Bouldin of one image; NaN when undefined.

    Undefined: fewer than 2 clusters, or as many clusters as points (scikit-learn would
    raise); a warning says which.
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    nan = dict.fromkeys(METRICS, math.nan)
    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if len(labels) == 0 or n_labels < 2 or n_labels >= len(labels):
        if warn:
            _warn(f"{n_labels} clusters for {len(labels)} channels: metrics undefined (NaN)")
        return nan
    x = np.asarray(features, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "silhouette": float(silhouette_score(x, labels)),
            "calinski_harabasz": float(calinski_harabasz_score(x, labels)),
            "davies_bouldin": float(davies_bouldin_score(x, labels)),
        }


def concept_metrics(result: ConceptClustering, warn: bool = True) -> list[dict[str, float]]:
    """Per image: silhouette, calinski_harabasz, davies_bouldin (clustered space), seconds.

    On the PCA space for CGAP and on the (row, col) coordinates for CPHA, as the paper.
    Degenerate images (see :class:`ConceptClustering`) get NaN metrics and a warning.
    """
    rows: list[dict[str, float]] = []
    labels = result.labels.cpu()
    for i, feats in enumerate(result.features):
        lab = labels[i][labels[i] >= 0].numpy()
        if not result.clustered[i]:
            if warn:
                _warn(f"image {i}: {result.degenerate[i]}; metrics are NaN")
            scores = dict.fromkeys(METRICS, math.nan)
        else:
            scores = clustering_quality(feats, lab, warn=warn)
        rows.append({**scores, "seconds": float(result.seconds[i])})
    return rows
