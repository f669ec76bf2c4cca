"""k-means on embeddings and the clustering scores (NMI, ARI, Hungarian accuracy), thin over
scikit-learn and SciPy (paper § IV-B)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score


@dataclass
class KMeansResult:
    labels: np.ndarray  # N
    centroids: np.ndarray  # K x m
    inertia: float


def fit_kmeans(embeddings: np.ndarray, n_clusters: int, n_init: int = 25, seed: int = 0) -> KMeansResult:
    """k-means on N x m embeddings, with early, named errors for impossible requests."""
    z = np.asarray(embeddings, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"embeddings must be N x m, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("embeddings contain NaN or infinite values (did training diverge?)")
    if n_clusters < 2:
        raise ValueError(f"n_clusters must be >= 2, got {n_clusters}")
    if n_clusters > len(z):
        raise ValueError(f"n_clusters = {n_clusters} is larger than the number of samples {len(z)}")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(z)
    return KMeansResult(km.labels_.astype(np.int64), km.cluster_centers_, float(km.inertia_))


def hungarian_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of clusters to classes."""
    labels_t, y_t = np.unique(y_true, return_inverse=True)
    labels_p, y_p = np.unique(y_pred, return_inverse=True)
    n = max(len(labels_t), len(labels_p))
    cm = confusion_matrix(y_t, y_p, labels=np.arange(n))
    rows, cols = linear_sum_assignment(cm, maximize=True)
    return float(cm[rows, cols].sum() / len(y_true))


def clustering_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """NMI (arithmetic mean), ARI and Hungarian accuracy."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {
        "nmi": float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "acc": hungarian_accuracy(y_true, y_pred),
    }
