"""Early, named errors (and warnings) for what the explanation methods are given."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from clustercam.exceptions import UserError


def check_batch(x: Tensor) -> None:
    """Check a batch: N x C x L (series) or N x C x H x W (images), non-empty and finite.

    Args:
        x: the batch.

    Raises:
        UserError: another shape, N = 0, or NaN / infinite values (the first samples named).
    """
    if not isinstance(x, Tensor) or x.dim() not in (3, 4):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise UserError(
            f"x must be a batch N x C x L (series) or N x C x H x W (images), got shape {shape}"
        )
    if x.shape[0] == 0:
        raise UserError("x is an empty batch (N = 0)")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise UserError(f"x contains NaN or infinite values (samples {bad} ...)")


def check_centroids(centroids: Tensor) -> None:
    """Check centroids: K x m, K >= 2, finite.

    Duplicate centroids get a ``RuntimeWarning``: their clusters cannot differ.

    Args:
        centroids: the centroids.

    Raises:
        UserError: not a K x m matrix, K < 2, or NaN / infinite values.
    """
    if not isinstance(centroids, Tensor) or centroids.dim() != 2:
        shape = tuple(centroids.shape) if isinstance(centroids, Tensor) else type(centroids)
        raise UserError(f"centroids must be a K x m matrix, got shape {shape}")
    if centroids.shape[0] < 2:
        raise UserError(f"need at least K = 2 centroids, got K = {centroids.shape[0]}")
    if not torch.isfinite(centroids).all():
        raise UserError("centroids contain NaN or infinite values")
    same = (centroids[:, None, :] == centroids[None, :, :]).all(-1)
    same.fill_diagonal_(False)
    if bool(same.any()):
        pairs = same.triu().nonzero().tolist()
        warnings.warn(
            f"centroids {pairs[:5]} are identical: their clusters get the same explanation "
            "(did k-means find fewer distinct clusters than K?)",
            RuntimeWarning,
            stacklevel=3,
        )


def check_inputs(x: Tensor, centroids: Tensor) -> None:
    """Check what a cluster explanation is given (:func:`check_batch`, :func:`check_centroids`).

    Args:
        x: N x C x L or N x C x H x W.
        centroids: K x m.

    Raises:
        UserError: see :func:`check_batch` and :func:`check_centroids`.
    """
    check_batch(x)
    check_centroids(centroids)


def check_embedding(z: Tensor, centroids: Tensor) -> None:
    """Check that the encoder's output is N x m with the centroids' m.

    Args:
        z: the encoder's output.
        centroids: K x m.

    Raises:
        UserError: z is not 2-D, or its m differs from the centroids'.
    """
    if z.dim() != 2 or z.shape[1] != centroids.shape[1]:
        raise UserError(
            f"the encoder's embedding has shape {tuple(z.shape)} but the centroids are "
            f"{tuple(centroids.shape)}: the embedding dimension m must match the centroids' "
            f"{centroids.shape[1]}"
        )


def check_clusters(clusters: Tensor, n: int, k: int) -> Tensor:
    """Check per-sample cluster ids and return them as a long tensor on the CPU.

    Args:
        clusters: N cluster ids (a tensor or anything ``torch.as_tensor`` takes).
        n: N, the number of samples.
        k: K, the number of clusters.

    Returns:
        N ids in [0, K), long, on the CPU.

    Raises:
        UserError: not N ids, or an id outside [0, K).
    """
    ids = torch.as_tensor(clusters, dtype=torch.long).flatten().cpu()
    if ids.shape[0] != n or bool((ids < 0).any()) or bool((ids >= k).any()):
        raise UserError(f"clusters must be N = {n} indices in [0, {k}), got {ids.tolist()[:10]}")
    return ids
