"""The encoder shape every clustercam autoencoder shares: conv ``features`` -> pool -> linear."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError

POOLINGS = ("gap", "flatten")


class Encoder(nn.Module):
    """``features`` (the target layer Grad-CeAM explains by default), pooling, linear embedding.

    ``z = fc(pool(features(x)))``; the encoder declares this through :meth:`linear_head`,
    which lets Grad-CeAM compute its gradients in closed form.

    Args:
        features: the convolutional part, x -> A (N x C x spatial).
        feature_shape: A's shape without the batch axis, (C, L) or (C, H, W).
        embedding_dim: m, the embedding's size (>= 1).
        pooling: ``gap`` (the mean over positions) or ``flatten`` (keeps them: the authors'
            code).

    Raises:
        UserError: an unknown pooling, or ``embedding_dim`` < 1.

    Example:
        >>> import torch
        >>> from clustercam.models.components.encoder import Encoder
        >>> enc = Encoder(torch.nn.Conv1d(1, 4, 3, padding=1), (4, 16), embedding_dim=2, pooling="gap")
        >>> tuple(enc(torch.randn(5, 1, 16)).shape), enc.linear_head(enc.features)[1]
        ((5, 2), 'gap')
    """

    target_layer = "features"

    def __init__(
        self, features: nn.Module, feature_shape: tuple[int, ...], embedding_dim: int, pooling: str
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise UserError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if embedding_dim < 1:
            raise UserError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.features = features
        self.pooling = pooling
        channels = feature_shape[0]
        n_in = channels if pooling == "gap" else int(torch.tensor(feature_shape).prod())
        self.fc = nn.Linear(n_in, embedding_dim)

    def linear_head(self, layer: nn.Module) -> tuple[Tensor, str] | None:
        """(fc weight, pooling) when ``z = fc(pool(layer's output))`` exactly, else None.

        Lets Grad-CeAM compute dL/dA in closed form; a subclass that overrides ``forward``
        opts out.

        Args:
            layer: the target layer asked about.

        Returns:
            The fc weight (m x C, or m x C·S for ``flatten``) and the pooling, or None.
        """
        if type(self).forward is not Encoder.forward or layer is not self.features:
            return None
        if type(self.fc) is not nn.Linear:
            return None
        return self.fc.weight, self.pooling

    def forward(self, x: Tensor) -> Tensor:
        """The embeddings z (N x m) of x."""
        a = self.features(x)
        pooled = a.flatten(2).mean(-1) if self.pooling == "gap" else a.flatten(1)
        return self.fc(pooled)


def check_input(x: Tensor, expected: tuple[int, ...], name: str) -> None:
    """Check that a batch has the shape the autoencoder was built for.

    Args:
        x: the batch, N x ``expected``.
        expected: the input's shape without the batch axis.
        name: the network's name, for the message.

    Raises:
        UserError: another shape.
    """
    if tuple(x.shape[1:]) != tuple(expected):
        raise UserError(
            f"{name} was built for inputs of shape (N, {', '.join(map(str, expected))}), "
            f"got {tuple(x.shape)}"
        )


class Autoencoder(nn.Module):
    """Shared by the CAEs: ``encoder`` (an :class:`Encoder`), ``decoder``, ``input_shape``.

    ``forward`` checks the input's shape and reconstructs it: ``decoder(encoder(x))``.
    """

    encoder: Encoder
    decoder: nn.Module
    input_shape: tuple[int, ...]

    @property
    def target_layer(self) -> str:
        """The encoder module Grad-CeAM explains by default: ``features``."""
        return Encoder.target_layer

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of x (N x ``input_shape``)."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.decoder(self.encoder(x))
