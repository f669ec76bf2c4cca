"""The deep clustering net (DEC / IDEC / DCEC): an autoencoder with a clustering layer on z.

DCEC (Guo et al., ICONIP 2017) is IDEC (Guo et al., IJCAI 2017) on a convolutional
autoencoder: reconstruction + gamma KL(P || Q) keeps the decoder so the embedding cannot
collapse; DEC (Xie et al., ICML 2016) trains the encoder on KL alone. Which loss is the
LightningModule's business; this module only holds the parts and runs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.models.components.clustering_layer import ClusteringLayer


def default_autoencoder(input_shape: Sequence[int], **settings: Any) -> nn.Module:
    """The paper's autoencoder for the data's shape: the ResNet CAE for series (C x L), the
    convolutional AE for images (C x H x W); ``settings`` (filters, ...) go to it."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        from clustercam.models.components.resnet_cae import ResNetCAE

        return ResNetCAE(shape, **settings)
    if len(shape) == 3:
        from clustercam.models.components.cae import ConvAutoencoder

        return ConvAutoencoder(shape, **settings)
    raise UserError(f"no default autoencoder for inputs of shape {shape}: give model.net")


def embedding_size(autoencoder: nn.Module) -> int:
    """m: the encoder's ``fc.out_features``, else one forward pass of a zero input."""
    fc = getattr(autoencoder.encoder, "fc", None)
    if isinstance(fc, nn.Linear):
        return int(fc.out_features)
    shape = getattr(autoencoder, "input_shape", None)
    if shape is None:
        raise UserError(f"cannot tell the embedding size of {type(autoencoder).__name__}: give "
                        "it an encoder.fc (nn.Linear) or an input_shape")
    was = autoencoder.training
    autoencoder.eval()
    with torch.no_grad():
        z = autoencoder.encoder(torch.zeros(1, *shape))
    autoencoder.train(was)
    return int(z.shape[1])


class DeepClusteringNet(nn.Module):
    """``autoencoder`` (with ``encoder`` and ``decoder``) + a :class:`ClusteringLayer` on z.

    ``encoder``, ``decoder`` and ``target_layer`` are the autoencoder's, so every explanation
    method runs on a DCEC model as on a plain autoencoder, with the clustering layer's centroids.

    Args:
        autoencoder: an nn.Module with ``encoder`` (x -> z) and ``decoder`` (z -> x_hat).
        n_clusters: K.
        alpha: the Student-t kernel's degrees of freedom.

    Example:
        >>> import torch
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> net = DeepClusteringNet(ResNetCAE((1, 16), filters=(4,), embedding_dim=3), 2)
        >>> z, q, x_hat = net(torch.randn(5, 1, 16))
        >>> tuple(z.shape), tuple(q.shape), tuple(x_hat.shape)
        ((5, 3), (5, 2), (5, 1, 16))
    """

    def __init__(self, autoencoder: nn.Module, n_clusters: int, alpha: float = 1.0) -> None:
        super().__init__()
        for attr in ("encoder", "decoder"):
            if not isinstance(getattr(autoencoder, attr, None), nn.Module):
                raise UserError(f"{type(autoencoder).__name__} has no '{attr}' module (a deep "
                                "clustering model needs net.encoder: x -> z and net.decoder: z -> x_hat)")
        self.autoencoder = autoencoder
        self.clustering = ClusteringLayer(n_clusters, embedding_size(autoencoder), alpha)

    @property
    def encoder(self) -> nn.Module:
        return self.autoencoder.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.autoencoder.decoder

    @property
    def target_layer(self) -> str | None:
        return getattr(self.autoencoder, "target_layer", None)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z, q, x_hat)."""
        z = self.encoder(x)
        return z, self.clustering(z), self.decoder(z)


def build_autoencoder(net: Any, input_shape: Sequence[int] | None) -> nn.Module:
    """The autoencoder from a config value: a module, a partial ``net(input_shape=...)``, or
    None / a mapping of settings for :func:`default_autoencoder`."""
    if isinstance(net, nn.Module):
        return net
    if input_shape is None:
        raise UserError("input_shape is needed to build the autoencoder (clustercam.train sets it "
                        "from the datamodule)")
    if net is None or isinstance(net, Mapping):
        return default_autoencoder(input_shape, **dict(net or {}))
    if callable(net):
        return net(input_shape=tuple(int(s) for s in input_shape))
    raise UserError(f"model.net must be an autoencoder config (a _partial_), a mapping of its "
                    f"settings or null, got {type(net).__name__}")
