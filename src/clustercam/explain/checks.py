"""Early, named errors (and warnings) for what the explanation methods are given."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from clustercam.exceptions import UserError


def check_batch(x: Tensor) -> None:
    """x must be N x C x L (series) or N x C x H x W (images), non-empty and finite."""
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
    """K x m, K >= 2, finite; duplicate centroids get a warning (their clusters cannot differ)."""
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
    check_batch(x)
    check_centroids(centroids)


def check_embedding(z: Tensor, centroids: Tensor) -> None:
    """The encoder's output must be N x m with the centroids' m."""
    if z.dim() != 2 or z.shape[1] != centroids.shape[1]:
        raise UserError(
            f"the encoder's embedding has shape {tuple(z.shape)} but the centroids are "
            f"{tuple(centroids.shape)}: the embedding dimension m must match the centroids' "
            f"{centroids.shape[1]}"
        )


def check_clusters(clusters: Tensor, n: int, k: int) -> Tensor:
    """N cluster ids in [0, K), as a long tensor on the CPU."""
    ids = torch.as_tensor(clusters, dtype=torch.long).flatten().cpu()
    if ids.shape[0] != n or bool((ids < 0).any()) or bool((ids >= k).any()):
        raise UserError(f"clusters must be N = {n} indices in [0, {k}), got {ids.tolist()[:10]}")
    return ids
