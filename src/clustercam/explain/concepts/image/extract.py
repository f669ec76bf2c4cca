"""Concepts of one image's activations by clustering its channels (CGAP / CPHA, paper § 3.2-3.3).

Every function takes a batch ``B x C x H x W`` of activations (the output of ``g`` for B
images) and treats each image independently, as the paper does. CGAP clusters the
channels' flattened activation maps after a per-image PCA to ``n_concepts - 1`` dimensions
(eq. 1); CPHA clusters the (row, col) of each channel's maximum (eq. 2). k-means has a
batched torch path (all images and all restarts at once, any device, see
:mod:`.kmeans`); the other algorithms run scikit-learn per image.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.checks import (
    check_activations,
    check_args,
    warn_degenerate,
)
from clustercam.explain.concepts.image.kmeans import batched_pca, cluster_rows
from clustercam.explain.deprecation import renamed_parameters


@dataclass
class ConceptClustering:
    """The concepts of a batch and what is needed to judge them.

    ``labels``: B x C (long, on the activations' device), ``-1`` for dropped channels,
    concepts numbered by decreasing size (concept 0 is the largest).
    ``features``: per image, the clustered space of its kept channels in channel order
    (``n_kept x (n_concepts - 1)`` PCA scores for CGAP, ``n_kept x 2`` (row, col) for CPHA).
    ``seconds``: per image, feature extraction + clustering wall time (the batched k-means
    path reports its batch time divided by the number of images; in ``run_concepts``' CPU
    threads the other configuration's tasks run beside it, so compare methods' seconds from
    a serial run, ``torch.set_num_threads(1)``).
    ``degenerate``: per image, why it could not be clustered as asked (``None`` if fine);
    ``clustered``: False where the algorithm was not run at all (no non-zero channel, fewer
    distinct channels than concepts: one concept per distinct channel instead).
    ``space``: the same clustered space as one tensor on the activations' device,
    B x C x dims aligned with the channels (zero rows for dropped channels), so the metrics
    of the whole batch are a few tensor operations; ``grid``: (H, W) of the activation maps
    for CPHA, whose (row, col) points lie on that grid. ``rows``: the B x C x F float64
    rows before any PCA (flattened maps for CGAP, (row, col) for CPHA), which
    :func:`sub_concepts` can take instead of making them again.
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
    space: Tensor | None = field(default=None, repr=False)
    grid: tuple[int, int] | None = None
    rows: Tensor | None = field(default=None, repr=False)

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



def kept_channels(activations: Tensor) -> Tensor:
    """B x C bool: channels with at least one non-zero value (the others play no role)."""
    flat = activations.flatten(2)
    if flat.shape[-1] == 0:
        return torch.zeros(flat.shape[:2], dtype=torch.bool, device=flat.device)
    # two vectorised reductions, no B x C x HW mask: ~10x faster on a CPU (NaN kept, as != 0)
    top = flat.amax(2)
    return (top > 0) | (flat.amin(2) < 0) | top.isnan()


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


def _row_keys(raw: Tensor, method: str) -> Tensor:
    """... x C: one number per channel that equal channels share, computed without rounding
    (the map's maximum for CGAP, the maximum's flat position for CPHA), so the distinct
    keys of a set of channels are never more than its distinct channels."""
    if method == "cpha":
        return raw[..., 0] * 65536 + raw[..., 1]
    return raw.amax(-1)


def _distinct_lower_bound(keys: Tensor, mask: Tensor) -> Tensor:
    """... : the distinct keys among the rows where ``mask`` (all problems at once, one
    sort): a lower bound of the distinct channels, exact for CPHA."""
    v = keys.masked_fill(~mask, math.inf)
    if v.device.type == "cpu" and v.dtype == torch.float64:  # the same values, numpy's vectorised sort: ~8x
        v = torch.from_numpy(np.sort(v.numpy(), axis=-1))
    else:
        v = v.sort(-1).values
    new = torch.ones_like(mask)
    new[..., 1:] = v[..., 1:] != v[..., :-1]
    return (new & (v < math.inf)).sum(-1)


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


@renamed_parameters(labels="concept_labels")
def concept_counts(concept_labels: Tensor, n_concepts: int) -> Tensor:
    """B x n_concepts: channels per concept.

    Args:
        concept_labels: ... x C concept ids per channel (``-1``: dropped, not counted).
        n_concepts: the number of concepts.

    Returns:
        ... x n_concepts long counts.

    Raises:
        UserError: when a concept id is ``n_concepts`` or more.
    """
    lab = concept_labels.long()
    if lab.numel() and int(lab.max()) >= n_concepts:
        raise UserError(f"concept_labels go up to {int(lab.max())}, beyond n_concepts={n_concepts}")
    counts = torch.zeros(*lab.shape[:-1], n_concepts, dtype=torch.long, device=lab.device)
    return counts.scatter_add_(-1, lab.clamp_min(0), (lab >= 0).long())


def cluster_channels(
    activations: Tensor,
    *,
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
    kept: Tensor | None = None,
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
    ``kept``: :func:`kept_channels` of the activations if already computed (the pipeline
    makes it once for every configuration).
    """
    check_args(method, n_concepts, algorithm, n_init, backend)
    check_activations(activations, warn_negative=warn)
    kwargs = dict(algorithm_kwargs or {})
    dev = activations.device
    dtype = torch.float32 if dtype is None else dtype
    b, c = activations.shape[:2]
    mask = kept_channels(activations) if kept is None else kept.to(dev)
    raw = _raw_features(activations, method, torch.float64)
    k = n_concepts - 1
    labels = torch.full((b, c), -1, dtype=torch.long, device=dev)
    features: list[np.ndarray | None] = [None] * b
    seconds = [0.0] * b
    degenerate: list[str | None] = [None] * b
    dims = min(k, raw.shape[-1]) if method == "cgap" else 2
    space = torch.zeros(b, c, dims, dtype=torch.float64, device=dev)

    # degenerate images first: no kept channel, or fewer distinct channels than concepts;
    # one sort of exact per-channel keys clears almost every image, the rest get torch.unique
    t0 = time.perf_counter()
    enough = (_distinct_lower_bound(_row_keys(raw, method), mask) >= n_concepts).tolist()
    t_check = (time.perf_counter() - t0) / max(b, 1)
    good: list[int] = []
    for i in range(b):
        if enough[i]:
            good.append(i)
            continue
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
            warn_degenerate(f"image {i}: {degenerate[i]} ({method}, {algorithm}); NaN metrics")
        seconds[i] = time.perf_counter() - t0 + t_check

    if good and algorithm == "kmeans" and backend == "torch":
        t0 = time.perf_counter()
        sel = torch.tensor(good, device=dev)
        ks = torch.full((len(good),), n_concepts, dtype=torch.long, device=dev)
        lab, z = cluster_rows(raw, mask[sel], ks, method == "cgap", dtype, seed, n_init,
                              max_iter, tol, source=sel)
        labels[sel] = lab
        space[sel] = z
        zc = z.cpu()
        m_cpu = mask[sel].cpu()
        per = (time.perf_counter() - t0) / len(good) + t_check
        for j, i in enumerate(good):
            features[i] = zc[j][m_cpu[j]].numpy()
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
            space[i, mask[i], : z.shape[1]] = torch.as_tensor(features[i], device=dev)
            seconds[i] = time.perf_counter() - t0 + t_check
    labels = _relabel_by_size(labels, n_concepts)
    good_set = set(good)
    found = (concept_counts(labels, n_concepts) > 0).sum(1).tolist()
    for i in good:
        if found[i] < n_concepts:
            degenerate[i] = f"{algorithm} found {found[i]} of {n_concepts} concepts"
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
        space=space,
        grid=tuple(activations.shape[-2:]) if method == "cpha" else None,
        rows=raw,
    )


def extract_concepts(
    activations: Tensor,
    *,
    method: str = "cgap",
    n_concepts: int = 5,
    algorithm: str = "kmeans",
    seed: int = 0,
    n_init: int = 10,
    **kwargs: Any,
) -> Tensor:
    """B x C x H x W activations -> B x C concept labels C_l (eq. 1; ``-1`` for all-zero channels).

    Concepts are numbered 0 .. n_concepts - 1 by decreasing size. See
    :func:`cluster_channels` for the options and for the clustered space and timings that
    the metrics need.

    Example:
        >>> import torch
        >>> from clustercam.explain import extract_concepts
        >>> a = torch.zeros(1, 6, 4, 4)
        >>> a[0, :3, 0, 0] = torch.tensor([1.0, 2.0, 3.0])   # three channels peak top-left
        >>> a[0, 3:5, 3, 3] = torch.tensor([1.0, 2.0])       # two peak bottom-right
        >>> extract_concepts(a, method="cpha", n_concepts=2).tolist()
        [[0, 0, 0, 1, 1, -1]]
    """
    return cluster_channels(activations, method=method, n_concepts=n_concepts,
                            algorithm=algorithm, seed=seed, n_init=n_init, **kwargs).labels


@renamed_parameters(labels="concept_labels")
def sub_concepts(
    activations: Tensor,
    concept_labels: Tensor,
    *,
    method: str = "cgap",
    n_sub: int = 3,
    algorithm: str = "kmeans",
    seed: int = 0,
    n_init: int = 10,
    n_concepts: int | None = None,
    min_channels: int | None = None,
    kept: Tensor | None = None,
    rows: Tensor | None = None,
    **kwargs: Any,
) -> SubConcepts:
    """Split every concept again with the same method into up to ``n_sub`` sub-concepts.

    A parent with fewer than ``min_channels`` channels (default ``2 * n_sub``) or fewer
    than 2 distinct channels is left whole; one with fewer distinct channels than
    ``n_sub`` gets that many sub-concepts. With batched k-means (the default) every
    concept of every image is one problem of ONE batched k-means (problems with the same
    number of sub-concepts share a PCA and a Lloyd loop); other algorithms cluster each
    parent for all images at once by zeroing the other channels.
    ``kept`` (:func:`kept_channels`) and ``rows`` (:attr:`ConceptClustering.rows` of the
    same activations and method), if given, are not made again.
    """
    check_activations(activations)
    labels = concept_labels
    if n_sub < 2:
        raise UserError(f"n_sub must be >= 2, got {n_sub}")
    if labels.shape != activations.shape[:2]:
        raise UserError(f"concept_labels must be B x C = {tuple(activations.shape[:2])}, got {tuple(labels.shape)}")
    n = int(labels.max()) + 1 if n_concepts is None else int(n_concepts)
    n = max(n, 1)
    min_channels = 2 * n_sub if min_channels is None else min_channels
    raw = _raw_features(activations, method, torch.float64) if rows is None else rows
    b, c = activations.shape[:2]
    labels = labels.to(activations.device)
    member = labels.unsqueeze(1) == torch.arange(n, device=labels.device)[None, :, None]  # B x n x C
    big = member.sum(-1) >= min_channels  # B x n
    keys = _row_keys(raw, method).unsqueeze(1).expand(b, n, c)
    eff = torch.where(big, _distinct_lower_bound(keys, member).clamp_max(n_sub), 0)
    for i, parent in (big & (eff < n_sub)).nonzero().tolist():  # rare: count exactly
        eff[i, parent] = min(n_sub, _n_distinct(raw[i][member[i, parent]]))
    out = torch.full_like(labels, -1)
    split = eff >= 2
    batched = kwargs.get("backend", "torch") == "torch" and algorithm == "kmeans"
    if batched and bool(split.any()):
        img, par = split.nonzero().unbind(1)
        ks = eff[img, par]
        kept = kept_channels(activations) if kept is None else kept.to(labels.device)
        sub_mask = member[img, par] & kept[img]
        sub = _sub_rows(raw, img, sub_mask, ks, keys[img, par], method, seed, n_init, kwargs)
        vals = torch.where(sub >= 0, par[:, None] * n_sub + sub, -1)  # parents: disjoint channels
        out.scatter_reduce_(0, img.unsqueeze(1).expand_as(vals), vals, "amax")
    elif bool(split.any()):
        kwargs = {k: v for k, v in kwargs.items() if k != "warn"}
        for parent in range(n):
            for m in range(2, n_sub + 1):
                sel = (eff[:, parent] == m).nonzero().flatten()
                if len(sel) == 0:
                    continue
                keep = member[sel, parent].unsqueeze(-1).unsqueeze(-1).to(activations.dtype)
                res = cluster_channels(activations[sel] * keep, method=method, n_concepts=m,
                                       algorithm=algorithm, seed=seed, n_init=n_init, warn=False,
                                       **kwargs)
                out[sel] = torch.where(res.labels >= 0, parent * n_sub + res.labels, out[sel])
    return SubConcepts(labels=out, split=split, n_sub=n_sub, n_concepts=n, parents=labels)


def _sub_rows(raw: Tensor, img: Tensor, mask: Tensor, ks: Tensor, keys: Tensor, method: str,
              seed: int, n_init: int, kwargs: Mapping[str, Any]) -> Tensor:
    """Labels of the sub-concept problems (one per split parent, P x C; parent p's rows are
    ``raw[img[p]]``), as :func:`cluster_channels` would give each: batched k-means, except
    (rare) parents whose non-zero channels have fewer distinct rows than ``ks``: one
    sub-concept per distinct one."""
    labels = torch.full(mask.shape, -1, dtype=torch.long, device=raw.device)
    run = torch.ones(len(ks), dtype=torch.bool)
    for q in (_distinct_lower_bound(keys, mask) < ks).nonzero().flatten().tolist():
        rows = raw[img[q]][mask[q]]
        if _n_distinct(rows) < int(ks[q]):
            labels[q, mask[q]] = _distinct_inverse(rows) if len(rows) else -1
            run[q] = False
    if bool(run.any()):
        r = run.nonzero().flatten().to(raw.device)
        labels[r], _ = cluster_rows(raw, mask[r], ks[r], method == "cgap",
                                    kwargs.get("dtype") or torch.float32, seed, n_init,
                                    kwargs.get("max_iter", 300), kwargs.get("tol", 1e-4),
                                    source=img[r])
    return _relabel_by_size(labels, int(ks.max()))
