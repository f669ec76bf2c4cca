"""NEON's neuralized k-means: the cluster evidence f_c and the midpoint rule. Pure torch.

Kauffmann et al., IEEE TNNLS 2022. The midpoint rule hands f_c to the embedding features.

For centroids mu_1..mu_K, embedding z and cluster c, every other centroid k gives a linear
unit ``h_ck(z) = ||z - mu_k||^2 - ||z - mu_c||^2 = w_ck . (z - m_ck)`` with
``w_ck = 2 (mu_c - mu_k)`` and the midpoint ``m_ck = (mu_c + mu_k) / 2``; the cluster
evidence is their (soft) minimum ``f_c``, positive exactly when z is assigned to c.
Below :mod:`~clustercam.explain.neon` (which carries the relevance on through the encoder
with LRP) and the cluster score module of the attribution methods, which both use it.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.assignments import nearest, squared_distances

STABILIZER = 1e-9  # sign-preserving, on h_ck in the midpoint rule (float64)
EVIDENCE = ("min", "soft_min")


def _margins(z: Tensor, centroids: Tensor) -> Tensor:
    """h[n, c, k] = ||z_n - mu_k||^2 - ||z_n - mu_c||^2 (N x K x K, float64; h[n, c, c] = 0)."""
    d = squared_distances(z.double(), centroids.double())
    return d[:, None, :] - d[:, :, None]


def default_beta(z: Tensor, centroids: Tensor) -> float:
    """The scale-free soft-min stiffness ``1 / mean_n min_{k != c(n)} |h_c(n)k(z_n)|``.

    The inverse of the mean margin of the samples to the boundary of their own cluster c(n)
    (the NEON authors' heuristic). The embedding's scale is arbitrary; with this beta a
    sample at a typical margin shares its evidence between the nearest competitors instead
    of giving it all to one.

    Args:
        z: embeddings N x m.
        centroids: K x m.

    Returns:
        beta > 0; NaN (and a ``RuntimeWarning``) when every margin is 0 (a collapsed
        embedding).

    Example:
        >>> import torch
        >>> from clustercam.explain.evidence import default_beta
        >>> z, mu = torch.tensor([[0.0], [3.0]]), torch.tensor([[0.0], [4.0]])
        >>> round(default_beta(z, mu), 4)  # margins 16 - 0 and 9 - 1: 1 / mean(16, 8)
        0.0833
    """
    h = _margins(z, centroids)
    own = nearest(z, centroids)
    rows = h[torch.arange(len(z)), own]  # N x K
    rows[torch.arange(len(z)), own] = math.inf
    margin = float(rows.abs().min(1).values.mean())
    if not margin > 0 or not math.isfinite(margin):
        warnings.warn("every sample lies on a cluster boundary (mean margin 0): the default "
                      "beta is undefined (NaN); give beta, or beta=None for the hard minimum",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    return 1.0 / margin


def check_beta(beta: float | str | None, evidence: str = "min") -> None:
    """Check NEON's ``beta`` and ``evidence`` settings.

    Args:
        beta: ``auto``, None (hard: every share on the minimising unit) or a finite
            number > 0.
        evidence: ``min`` or ``soft_min`` (which needs a beta).

    Raises:
        UserError: an unknown ``evidence``, or a ``beta`` that is none of the above.
    """
    if evidence not in EVIDENCE:
        raise UserError(f"unknown evidence {evidence!r}; choose one of {EVIDENCE}")
    if beta is None and evidence == "soft_min":
        raise UserError("evidence='soft_min' needs a beta ('auto' or a number > 0), got None")
    if beta is None or beta == "auto":
        return
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not (math.isfinite(beta) and beta > 0):
        raise UserError(f"beta must be a finite number > 0, 'auto' or None (the hard minimum), got {beta!r}")


def cluster_evidence(z: Tensor, centroids: Tensor, beta: float | None = None) -> Tensor:
    """NEON's cluster evidence f_c(z) for every cluster: the output of the neuralized k-means.

    Args:
        z: embeddings N x m.
        centroids: K x m.
        beta: None: the hard minimum ``f_c = min_{k != c} h_ck``, > 0 exactly when z is
            nearest to mu_c. A number > 0: the soft-min
            ``-(1/beta) log sum_{k != c} exp(-beta h_ck)``, smooth, at most the minimum and
            equal to it as beta grows (it can be <= 0 for a sample of c with several close
            competitors).

    Returns:
        N x K, float64, differentiable in z.

    Raises:
        UserError: a ``beta`` that is not None or a finite number > 0 (``auto`` included:
            use :func:`default_beta`).

    Example:
        >>> import torch
        >>> from clustercam.explain.evidence import cluster_evidence
        >>> cluster_evidence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
        tensor([[ 8., -8.]], dtype=torch.float64)
    """
    check_beta(beta, "min")
    if beta == "auto":
        raise UserError("cluster_evidence needs a number for beta: use default_beta(z, centroids)")
    h = _margins(z, centroids)
    eye = torch.eye(h.shape[1], dtype=torch.bool, device=h.device)
    if beta is None:
        return h.masked_fill(eye, math.inf).amin(-1)
    return -torch.logsumexp((-float(beta) * h).masked_fill(eye, -math.inf), -1) / float(beta)


def midpoint_relevance(
    z: Tensor, centroids: Tensor, beta: float | None = None, evidence: str = "min",
    clusters: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The evidence f_c handed to the embedding features by NEON's midpoint rule.

    The K - 1 units share f_c as ``R_k = f_c softmax_{k != c}(-beta h_ck)`` (all on the
    minimising unit for ``beta=None``), and unit k hands R_k to feature j in proportion to
    its term of ``h_ck = sum_j (z_j - m_ck,j) w_ck,j``: ``R_j = sum_k (z_j - m_ck,j) w_ck,j /
    h_ck R_k`` (a tiny sign-preserving stabiliser on h_ck), so ``sum_j R_j = f_c``.

    Args:
        z: embeddings N x m.
        centroids: K x m.
        beta: the stiffness of the shares (None: all on the minimising unit).
        evidence: ``min`` (the hard minimum, as the NEON authors' code) or ``soft_min``
            (:func:`cluster_evidence` at ``beta``).
        clusters: N cluster ids: only each sample's given cluster (K' = 1); None: all K.

    Returns:
        The relevance of the features, N x K' x m, and the evidence f_c, N x K' (float64).

    Raises:
        UserError: bad ``beta`` or ``evidence`` (:func:`check_beta`).

    Example:
        >>> import torch
        >>> from clustercam.explain.evidence import midpoint_relevance
        >>> rel, f = midpoint_relevance(torch.tensor([[1.0, 2.0]]),
        ...                             torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
        >>> rel[0, 0].round(decimals=6).tolist(), f[0, 0].item()  # the shares sum to f_c
        ([8.0, 0.0], 8.0)
    """
    check_beta(beta, evidence)
    zd, mu = z.detach().double(), centroids.detach().double()
    n, k = zd.shape[0], mu.shape[0]
    h = _margins(zd, mu)  # N x K x K
    eye = torch.eye(k, dtype=torch.bool)
    if beta is None:
        share = torch.zeros_like(h).scatter_(-1, h.masked_fill(eye, math.inf).argmin(-1, keepdim=True), 1.0)
    else:
        share = torch.softmax((-float(beta) * h).masked_fill(eye, -math.inf), -1)
    f = cluster_evidence(zd, mu, beta if evidence == "soft_min" else None)  # N x K
    w = 2 * (mu[:, None, :] - mu[None, :, :])  # c x k x m
    mid = (mu[:, None, :] + mu[None, :, :]) / 2
    if clusters is not None:
        sel = torch.as_tensor(clusters, dtype=torch.long).flatten()
        rows = torch.arange(n)
        h, share, f = h[rows, sel][:, None], share[rows, sel][:, None], f[rows, sel][:, None]
        w, mid = w[sel][:, None], mid[sel][:, None]  # N x 1 x K x m
    else:
        w, mid = w[None], mid[None]
    terms = (zd[:, None, None, :] - mid) * w  # N x K' x K x m, summing over m to h
    sign = torch.where(h >= 0, 1.0, -1.0).to(h)
    unit = (share * f[..., None]) / (h + STABILIZER * sign)  # R_k / h_ck, 0 where share is 0
    return (terms * unit[..., None]).sum(2), f
