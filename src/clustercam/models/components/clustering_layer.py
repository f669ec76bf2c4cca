"""DEC's clustering layer: K trainable centroids and the Student-t soft assignment q."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.assignments import student_t_assignment


class ClusteringLayer(nn.Module):
    """``q_ik = (1 + ||z_i - mu_k||^2 / alpha)^(-(alpha+1)/2)``, normalised over k (DEC eq. 1).

    The centroids ``mu`` (K x m) are a parameter trained with the encoder; they start at zero
    and are set by :meth:`initialise` (k-means on the pretrained embeddings). The buffer
    ``initialised`` travels with the state dict, so a checkpoint says whether its centroids
    are meaningful.

    Args:
        n_clusters: K, >= 2.
        embedding_dim: m, >= 1.
        alpha: the Student-t kernel's degrees of freedom, > 0 (DEC: 1).

    Raises:
        UserError: a setting out of range.

    Example:
        >>> import torch
        >>> layer = ClusteringLayer(2, 1)
        >>> layer.initialise(torch.tensor([[0.0], [2.0]]))
        >>> layer(torch.tensor([[0.0], [1.0]]))
        tensor([[0.8333, 0.1667],
                [0.5000, 0.5000]], grad_fn=<ExpBackward0>)
    """

    initialised: Tensor

    def __init__(self, n_clusters: int, embedding_dim: int, alpha: float = 1.0) -> None:
        super().__init__()
        if not isinstance(n_clusters, int) or n_clusters < 2:
            raise UserError(f"n_clusters must be an integer >= 2, got {n_clusters!r}")
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise UserError(f"embedding_dim must be an integer >= 1, got {embedding_dim!r}")
        if not alpha > 0:
            raise UserError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self.centroids = nn.Parameter(torch.zeros(n_clusters, embedding_dim))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def n_clusters(self) -> int:
        return self.centroids.shape[0]

    @torch.no_grad()
    def initialise(self, centroids: Tensor) -> None:
        """Set the centroids (K x m, e.g. k-means' on the pretrained embeddings)."""
        if tuple(centroids.shape) != tuple(self.centroids.shape):
            raise UserError(f"centroids must be {tuple(self.centroids.shape)}, got {tuple(centroids.shape)}")
        if not bool(torch.isfinite(centroids).all()):
            raise UserError("centroids contain NaN or infinite values (did pretraining diverge?)")
        self.centroids.copy_(centroids.to(self.centroids))
        self.initialised.fill_(True)

    def forward(self, z: Tensor) -> Tensor:
        return student_t_assignment(z, self.centroids, self.alpha)

    def extra_repr(self) -> str:
        k, m = self.centroids.shape
        return f"n_clusters={k}, embedding_dim={m}, alpha={self.alpha}"
