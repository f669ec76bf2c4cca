"""How an embedding belongs to the clusters: distances, the nearest centroid, soft assignments.

Shared by Grad-CeAM's ``assignment`` target, the cardinality table, NEON's evidence and the
scores, so they agree on what "assigned to c" means.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from clustercam.exceptions import UserError

Assignment = Literal["softmax", "student_t"]
ASSIGNMENTS: tuple[str, ...] = ("softmax", "student_t")


def squared_distances(z: Tensor, centroids: Tensor) -> Tensor:
    """Squared Euclidean distances ``||z_n - mu_k||^2`` by explicit differences.

    No ``|a|^2 - 2ab + |b|^2`` cancellation: a sample on its centroid is at distance 0.

    Args:
        z: embeddings N x m.
        centroids: K x m.

    Returns:
        N x K in z's dtype, differentiable in z.

    Example:
        >>> import torch
        >>> from clustercam.explain.assignments import squared_distances
        >>> squared_distances(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0], [4.0, 5.0]]))
        tensor([[ 0., 25.]])
    """
    return (z[:, None, :] - centroids[None].to(z.dtype)).pow(2).sum(-1)


def nearest(z: Tensor, centroids: Tensor) -> Tensor:
    """The nearest centroid of each embedding: the k-means assignment.

    Args:
        z: embeddings N x m.
        centroids: K x m.

    Returns:
        N cluster ids (long; the distances in float64, ties to the lower index).
    """
    return squared_distances(z.double(), centroids.double()).argmin(1)


def log_soft_assignment(z: Tensor, centroids: Tensor, temperature: float = 1.0) -> Tensor:
    """The log soft assignment ``log softmax_k(-||z - mu_k||^2 / T)``.

    Args:
        z: embeddings N x m.
        centroids: K x m.
        temperature: T (> 0).

    Returns:
        N x K, differentiable in z.

    Raises:
        UserError: a temperature that is not > 0.
    """
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature}")
    return torch.log_softmax(-squared_distances(z, centroids) / temperature, dim=1)


def soft_assignment(
    z: Tensor,
    centroids: Tensor,
    kind: Assignment = "softmax",
    temperature: float = 1.0,
    alpha: float = 1.0,
) -> Tensor:
    """The soft cluster assignment q, whose rows sum to 1.

    Args:
        z: embeddings N x m.
        centroids: K x m.
        kind: ``softmax`` (``softmax_k(-||z - mu_k||^2 / temperature)``, the target of
            Grad-CeAM's ``assignment`` mode) or ``student_t`` (DEC's kernel
            ``(1 + ||z - mu_k||^2 / alpha)^(-(alpha+1)/2)`` normalised over k: heavier
            tails, so it saturates less on large embeddings).
        temperature: of ``softmax`` (> 0).
        alpha: of ``student_t`` (> 0).

    Returns:
        N x K, float64.

    Raises:
        UserError: an unknown kind, a temperature or alpha that is not > 0.

    Example:
        >>> import torch
        >>> from clustercam.explain.assignments import soft_assignment
        >>> z, mu = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
        >>> soft_assignment(z, mu, "student_t").round(decimals=4).tolist()  # (1 + d^2)^-1, normalised
        [[0.8333, 0.1667], [0.5, 0.5]]
    """
    if kind == "softmax":
        return log_soft_assignment(z.double(), centroids.double(), temperature).exp()
    if kind == "student_t":
        if not alpha > 0:
            raise UserError(f"alpha must be > 0, got {alpha}")
        q = (1 + squared_distances(z.double(), centroids.double()) / alpha).pow(-(alpha + 1) / 2)
        return q / q.sum(1, keepdim=True)
    raise UserError(f"unknown assignment {kind!r}; choose one of {ASSIGNMENTS}")


def spread_temperature(z: Tensor, centroids: Tensor) -> float:
    """Mean squared distance of each embedding to its nearest centroid (k-means inertia / N).

    A scale-free softmax temperature: the embedding's scale is arbitrary, and a fixed
    T = 1 makes the soft assignment uniform on a collapsed embedding and a 0/1 step on a
    spread-out one; with this T a sample at a typical distance keeps a graded assignment.

    Args:
        z: embeddings N x m.
        centroids: K x m.

    Returns:
        The temperature (0 when every embedding lies on a centroid).
    """
    return float(squared_distances(z.double(), centroids.double()).min(1).values.mean())
