"""How an embedding belongs to the clusters: distances, the nearest centroid, soft assignments.

Shared by Grad-CeAM's ``assignment`` target, the cardinality table, NEON's evidence, the
scores, CLAM and the deep clustering models (DEC's Student-t q, its target distribution P and
KL(P || Q)), so they all agree on what "assigned to c" means.
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


def log_student_t_assignment(z: Tensor, centroids: Tensor, alpha: float = 1.0) -> Tensor:
    """Log of q, DEC's Student-t soft assignment (Xie et al. 2016, eq. 1), N x K.

    ``q_ik = (1 + ||z_i - mu_k||^2 / alpha)^(-(alpha+1)/2)``, normalised over k; computed as
    logs (``log1p`` and ``logsumexp``) so far-away embeddings do not underflow. Differentiable
    in z and in the centroids (the clustering layer trains them), in the inputs' promoted dtype.

    Args:
        z: N x m embeddings.
        centroids: K x m.
        alpha: the kernel's degrees of freedom, > 0 (DEC: 1).

    Returns:
        N x K log-probabilities; ``exp`` of each row sums to 1.

    Raises:
        UserError: ``alpha`` is not > 0.

    Example:
        >>> import torch
        >>> z, mu = torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [1.0]])
        >>> log_student_t_assignment(z, mu).exp()  # (1 + d^2)^-1: 1 vs 1/2, then 1/5 vs 1/2
        tensor([[0.6667, 0.3333],
                [0.2857, 0.7143]])
    """
    if not alpha > 0:
        raise UserError(f"alpha must be > 0, got {alpha}")
    mu = centroids.to(torch.promote_types(z.dtype, centroids.dtype))
    logits = -(alpha + 1) / 2 * torch.log1p(squared_distances(z.to(mu.dtype), mu) / alpha)
    return logits - torch.logsumexp(logits, dim=1, keepdim=True)


def student_t_assignment(z: Tensor, centroids: Tensor, alpha: float = 1.0) -> Tensor:
    """Q, DEC's Student-t soft assignment: N x K, rows sum to 1.

    The exp of :func:`log_student_t_assignment`; differentiable in z and the centroids.

    Args:
        z: N x m embeddings.
        centroids: K x m.
        alpha: the kernel's degrees of freedom, > 0 (DEC: 1).

    Returns:
        N x K soft assignments.

    Raises:
        UserError: ``alpha`` is not > 0.
    """
    return log_student_t_assignment(z, centroids, alpha).exp()


def target_distribution(q: Tensor, frequencies: Tensor | None = None) -> Tensor:
    """DEC's target distribution P (Xie et al. 2016, eq. 3): q squared over cluster frequency.

    ``p_ik = (q_ik^2 / f_k) / sum_j (q_ij^2 / f_j)`` with ``f_k = sum_i q_ik``. Squaring
    sharpens each row towards its most confident cluster, dividing by f_k keeps large clusters
    from swallowing the others. ``f`` must be the soft cluster sizes of the whole training
    split: give them as ``frequencies`` when ``q`` holds only part of it (a DDP rank's share,
    summed over ranks). Not differentiated through (a fixed target).

    Args:
        q: N x K soft assignments (rows sum to 1).
        frequencies: K soft cluster sizes f_k (None: ``q.sum(0)``).

    Returns:
        N x K, rows sum to 1.

    Raises:
        UserError: q is not N x K, or the frequencies are not K positive numbers.

    Example:
        >>> import torch
        >>> q = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
        >>> target_distribution(q)  # f = (1.25, 0.75); row 0: 0.45 vs 0.0833 before normalising
        tensor([[0.8438, 0.1563],
                [0.3750, 0.6250]])
    """
    if q.dim() != 2:
        raise UserError(f"q must be N x K soft assignments, got shape {tuple(q.shape)}")
    q = q.detach()
    f = q.sum(0) if frequencies is None else frequencies.detach().to(q.dtype)
    if f.shape != (q.shape[1],) or not bool((f > 0).all()):
        raise UserError(f"frequencies must be K = {q.shape[1]} positive soft cluster sizes, got {f.tolist()}")
    weight = q.pow(2) / f
    return weight / weight.sum(1, keepdim=True)


def kl_divergence(p: Tensor, q: Tensor) -> Tensor:
    """KL(P || Q) summed over clusters, mean over samples: DEC's clustering loss (eq. 2).

    Zero entries of P contribute 0; gradients flow into q only.

    Args:
        p: N x K target distribution (:func:`target_distribution`; detached here).
        q: N x K soft assignments.

    Returns:
        The scalar loss.
    """
    p = p.detach().to(q.dtype)
    return torch.special.xlogy(p, p).sub(p * q.clamp_min(torch.finfo(q.dtype).tiny).log()).sum(1).mean()


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
        return student_t_assignment(z.double(), centroids.double(), alpha)
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
