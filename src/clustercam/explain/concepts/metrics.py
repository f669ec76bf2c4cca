"""Clustering quality of each image's concepts: silhouette, Calinski-Harabasz, Davies-Bouldin
(paper § 4.2, Tables 1-2), on the space that was clustered (PCA scores for CGAP, (row, col)
for CPHA); NaN and a warning where a score is undefined."""

from __future__ import annotations

import math
import warnings

import numpy as np

from clustercam.explain.concepts.checks import METRICS, warn_degenerate
from clustercam.explain.concepts.extract import ConceptClustering


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
            warn_degenerate(f"{n_labels} clusters for {len(labels)} channels: metrics undefined (NaN)")
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
                warn_degenerate(f"image {i}: {result.degenerate[i]}; metrics are NaN")
            scores = dict.fromkeys(METRICS, math.nan)
        else:
            scores = clustering_quality(feats, lab, warn=warn)
        rows.append({**scores, "seconds": float(result.seconds[i])})
    return rows
