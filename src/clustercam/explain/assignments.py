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
    """N x K squared Euclidean distances ||z_n - mu_k||^2 by explicit differences (no
    |a|^2 - 2ab + |b|^2 cancellation), in the promoted dtype of the inputs, differentiable in z."""
    return (z[:, None, :] - centroids[None].to(z.dtype)).pow(2).sum(-1)


def nearest(z: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid for each row of z (computed in float64)."""
    return squared_distances(z.double(), centroids.double()).argmin(1)


def log_soft_assignment(z: Tensor, centroids: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax_k(-||z - mu_k||^2 / T): N x K, differentiable in z."""
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
    """Soft cluster assignment q (N x K, rows sum to 1), in float64.

    ``softmax``: softmax_k(-||z - mu_k||^2 / temperature), the target of Grad-CeAM's
    ``assignment`` mode. ``student_t``: DEC's kernel (1 + ||z - mu_k||^2 / alpha)^(-(alpha+1)/2),
    normalised over k; heavier tails, so it saturates less on large embeddings.
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
    """
    return float(squared_distances(z.double(), centroids.double()).min(1).values.mean())
