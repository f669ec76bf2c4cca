"""The clusters of the evaluated split: the model's own centroids where it has them (a deep
clustering model's clustering layer), else k-means on the embeddings.

A model declares centroids through a ``centroids`` attribute (K x m, or None while it has
none, e.g. before the k-means initialisation of DCEC) and may add keys to ``metrics.json``
through ``clustering_results()`` (DCEC: the k-means initialisation's ``pretrain_*`` scores).
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor

from clustercam.explain.assignments import squared_distances
from clustercam.explain.clustering import KMeansResult, fit_kmeans


def model_centroids(pl_module: Any) -> Tensor | None:
    """The model's learned centroids (K x m, float64 on the CPU), None if it has none."""
    mu = getattr(pl_module, "centroids", None)
    return mu.detach().double().cpu() if isinstance(mu, Tensor) else None


def cluster_split(pl_module: Any, z: Tensor, k: int, n_init: int, seed: int) -> KMeansResult:
    """Each embedding's cluster: nearest of the model's centroids (= argmax of its Student-t
    q), else k-means with ``k`` clusters; inertia = summed squared distance to the centroid."""
    mu = model_centroids(pl_module)
    if mu is None:
        return fit_kmeans(z.double().numpy(), k, n_init=n_init, seed=seed)
    if k != mu.shape[0]:
        warnings.warn(f"n_clusters = {k} is ignored: the model has {mu.shape[0]} learned centroids",
                      RuntimeWarning, stacklevel=2)
    d = squared_distances(z.double(), mu)
    best = d.min(1)
    return KMeansResult(best.indices.numpy(), mu.numpy(), float(best.values.sum()))


def clustering_results(pl_module: Any) -> dict[str, Any]:
    """Extra metrics.json keys the model reports about its clustering (none for autoencoders)."""
    fn = getattr(pl_module, "clustering_results", None)
    return dict(fn()) if callable(fn) else {}



