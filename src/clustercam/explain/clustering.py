"""k-means on embeddings (scikit-learn) and the clustering scores NMI, ARI and accuracy.

The scores (Grad-CeAM paper § IV-B; accuracy by the Hungarian matching of clusters to
classes) go through torchmetrics, so that DDP ranks can compute them together.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.clustering import AdjustedRandScore, ClusterAccuracy, NormalizedMutualInfoScore
from torchmetrics.functional.classification import multiclass_confusion_matrix
from torchmetrics.utilities.imports import _TORCH_LINEAR_ASSIGNMENT_AVAILABLE

from clustercam.exceptions import UserError


@dataclass
class KMeansResult:
    """What :func:`fit_kmeans` found.

    Attributes:
        labels: N cluster ids (int64), each sample's nearest centroid.
        centroids: K x m (float64).
        inertia: the sum of squared distances of the samples to their centroids.

    Example:
        >>> import numpy as np
        >>> from clustercam.explain import fit_kmeans
        >>> km = fit_kmeans(np.array([[0.0], [0.2], [5.0], [5.2]]), 2, n_init=2)
        >>> sorted(km.centroids.ravel().round(2).tolist()), round(km.inertia, 2)
        ([0.1, 5.1], 0.04)
    """

    labels: np.ndarray  # N
    centroids: np.ndarray  # K x m
    inertia: float


def fit_kmeans(embeddings: np.ndarray, n_clusters: int, n_init: int = 25, seed: int = 0) -> KMeansResult:
    """k-means (scikit-learn's ``KMeans``) on embeddings, with early, named errors.

    Args:
        embeddings: N x m, finite.
        n_clusters: K, from 2 to N.
        n_init: k-means restarts (>= 1); the best inertia wins.
        seed: scikit-learn's ``random_state``.

    Returns:
        A :class:`KMeansResult`: labels N, centroids K x m, inertia.

    Raises:
        UserError: embeddings that are not N x m or not finite, K < 2 or K > N, n_init < 1.

    Example:
        >>> import numpy as np
        >>> from clustercam.explain import fit_kmeans
        >>> km = fit_kmeans(np.array([[0.0, 0.0], [0.0, 1.0], [9.0, 9.0], [9.0, 8.0]]), 2, n_init=2)
        >>> km.labels.tolist() in ([0, 0, 1, 1], [1, 1, 0, 0]), km.centroids.shape
        (True, (2, 2))
    """
    z = np.asarray(embeddings, dtype=np.float64)
    if z.ndim != 2:
        raise UserError(f"embeddings must be N x m, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise UserError("embeddings contain NaN or infinite values (did training diverge?)")
    if n_clusters < 2:
        raise UserError(f"n_clusters must be >= 2, got {n_clusters}")
    if n_clusters > len(z):
        raise UserError(f"n_clusters = {n_clusters} is larger than the number of samples {len(z)}")
    if n_init < 1:
        raise UserError(f"n_init must be >= 1, got {n_init}")
    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(z)
    return KMeansResult(km.labels_.astype(np.int64), km.cluster_centers_, float(km.inertia_))


class HungarianAccuracy(Metric):
    """torchmetrics' ``ClusterAccuracy`` where its solver (``torch_linear_assignment``) is missing.

    The same confusion-matrix state (summed over DDP ranks), matched by SciPy's
    ``linear_sum_assignment``.

    Args:
        num_classes: the number of class (and cluster) ids, labels ``0 .. num_classes - 1``.
        **kwargs (Any): torchmetrics ``Metric`` options.

    Raises:
        UserError: ``num_classes`` is not a positive integer.

    Example:
        >>> import torch
        >>> from clustercam.explain.clustering import HungarianAccuracy
        >>> acc = HungarianAccuracy(3)
        >>> acc.update(torch.tensor([2, 2, 0, 0, 1]), torch.tensor([0, 0, 1, 1, 1]))
        >>> acc.compute().item()
        0.8
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: Tensor

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: cluster ids ``preds`` and class ids ``target`` (N each)."""
        self.confmat += multiclass_confusion_matrix(preds, target, num_classes=self.num_classes)

    def compute(self) -> Tensor:
        """The share of samples in the best one-to-one matching of clusters to classes."""
        cm = self.confmat.cpu().numpy()
        rows, cols = linear_sum_assignment(cm, maximize=True)
        return torch.tensor(cm[rows, cols].sum() / max(cm.sum(), 1), dtype=torch.float64)


def clustering_metrics(num_classes: int) -> MetricCollection:
    """``nmi`` (arithmetic mean), ``ari`` and ``acc`` (Hungarian) as one torchmetrics collection.

    Args:
        num_classes: labels are ``0 .. num_classes - 1``, classes and clusters alike.

    Returns:
        A ``MetricCollection`` updated with ``(cluster ids, class ids)``.
    """
    acc = ClusterAccuracy(num_classes) if _TORCH_LINEAR_ASSIGNMENT_AVAILABLE else HungarianAccuracy(num_classes)
    return MetricCollection({"nmi": NormalizedMutualInfoScore(average_method="arithmetic"),
                             "ari": AdjustedRandScore(), "acc": acc})


@contextmanager
def _float64() -> Iterator[None]:
    """Torchmetrics computes NMI in the default float dtype: float64 here, as scikit-learn."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def clustering_scores(
    y_true: np.ndarray | Tensor,
    y_pred: np.ndarray | Tensor,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """NMI (arithmetic mean), ARI and Hungarian accuracy of cluster labels against classes.

    torchmetrics' ``NormalizedMutualInfoScore``, ``AdjustedRandScore`` and ``ClusterAccuracy``
    (SciPy's matching where ``torch_linear_assignment`` is missing). Under DDP every rank
    calls this with the whole gathered split and feeds its share (every ``world_size``-th
    sample from ``rank``) to the metrics, whose states torchmetrics gathers (a collective),
    so the scores equal one process's.

    Args:
        y_true: the class labels, N (any integer ids).
        y_pred: the cluster labels, N (any integer ids).
        rank: this process's rank under DDP.
        world_size: the number of ranks.
        device: where the metric states live (the model's, for NCCL; None: the CPU).

    Returns:
        ``{"nmi", "ari", "acc"}``.

    Raises:
        UserError: ``y_true`` and ``y_pred`` of different lengths.

    Example:
        >>> import numpy as np
        >>> from clustercam.explain.clustering import clustering_scores
        >>> s = clustering_scores(np.array([0, 0, 1, 1, 2, 2]), np.array([2, 2, 0, 0, 1, 0]))
        >>> round(s["nmi"], 4), round(s["ari"], 4), round(s["acc"], 4)
        (0.7397, 0.4444, 0.8333)
    """
    t = torch.as_tensor(np.asarray(y_true) if not isinstance(y_true, Tensor) else y_true).long().flatten()
    p = torch.as_tensor(np.asarray(y_pred) if not isinstance(y_pred, Tensor) else y_pred).long().flatten()
    if t.shape != p.shape:
        raise UserError(f"y_true and y_pred must have the same length, got {len(t)} and {len(p)}")
    classes, clusters = torch.unique(t), torch.unique(p)
    n = max(len(classes), len(clusters), 2)
    share = slice(rank, None, world_size)
    t_enc = torch.searchsorted(classes, t[share].contiguous())
    p_enc = torch.searchsorted(clusters, p[share].contiguous())
    dev = torch.device(device or "cpu")
    metrics = clustering_metrics(n).to(dev)
    metrics.update(p_enc.to(dev), t_enc.to(dev))
    with _float64(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchmetrics: sparse tensors are beta
        values = metrics.compute()
    out = {k: float(values[k]) for k in ("nmi", "ari", "acc")}
    if len(classes) == len(clusters) == 1:  # one class, one cluster: a perfect match (as sklearn)
        out["nmi"] = 1.0
    return out
