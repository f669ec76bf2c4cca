"""The LightningModule for any clustercam autoencoder: reconstruction training + embeddings.

The wrapped net exposes ``encoder`` (x -> z) and ``decoder`` (z -> x_hat), and may declare
``target_layer`` (the dotted name of the encoder module Grad-CeAM explains by default;
otherwise the callbacks' ``target_layer`` setting names it). Validation and test steps
return each batch's embeddings with their dataset indices so that epoch-end callbacks
can gather the whole split across ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.models.optim import check_optimizer


class AutoencoderModule(LightningModule):
    """Trains an autoencoder on the MSE reconstruction loss (paper eq. 11, § IV-B; Adam).

    Validation and test steps return ``{"z", "y", "idx"}`` per batch (embeddings N x m,
    labels, dataset indices) for the clustering callbacks; the losses are logged as
    ``train/loss``, ``val/loss`` and ``test/loss``.

    Args:
        net: ``net(input_shape=...) -> nn.Module`` (the config's ``model.net``, a Hydra
            ``_partial_``) or an already built module; either way it must have ``encoder``
            (x -> z) and ``decoder`` (z -> x_hat).
        optimizer: ``optimizer(params=...)`` (the config's ``model.optimizer``, a Hydra
            ``_partial_``; None: Adam at lr 1e-3). Built once on a dummy parameter here, so
            a bad setting fails before the data are loaded.
        input_shape: the input's shape without the batch axis, (C, L) or (C, H, W): what
            ``net`` is built for (the train script fills it from the datamodule).
        compile: ``torch.compile`` the net.

    Raises:
        UserError: a partial ``net`` without ``input_shape``, a net without ``encoder`` or
            ``decoder``, a bad optimizer setting.

    Example:
        >>> import functools
        >>> import torch
        >>> from clustercam.models.autoencoder_module import AutoencoderModule
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> module = AutoencoderModule(functools.partial(ResNetCAE, filters=(4,), embedding_dim=3),
        ...                            input_shape=(1, 16))
        >>> module.target_layer, tuple(module.encoder(torch.randn(2, 1, 16)).shape)
        ('features', (2, 3))
    """

    def __init__(
        self,
        net: Callable[..., nn.Module] | nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        input_shape: Sequence[int] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        # plain ints, so checkpoints load with torch.load(weights_only=True) (no OmegaConf types)
        input_shape = None if input_shape is None else [int(s) for s in input_shape]
        self.save_hyperparameters(ignore=["net", "optimizer"])
        if isinstance(net, nn.Module):
            self.net = net
        else:
            if input_shape is None:
                raise UserError("input_shape is needed to build the autoencoder from a partial")
            self.net = net(input_shape=tuple(input_shape))
        for attr in ("encoder", "decoder"):
            if not isinstance(getattr(self.net, attr, None), nn.Module):
                raise UserError(f"{type(self.net).__name__} has no '{attr}' module (an autoencoder "
                                "needs net.encoder: x -> z and net.decoder: z -> x_hat)")
        check_optimizer(optimizer)
        self.optimizer_factory = optimizer
        if compile:
            self.net = torch.compile(self.net)

    @property
    def encoder(self) -> nn.Module:
        """The net's encoder, x -> z (what the explanations explain)."""
        return self.net.encoder

    @property
    def target_layer(self) -> str | None:
        """The encoder module the net declares for Grad-CeAM (None: the callbacks must name one)."""
        return getattr(self.net, "target_layer", None)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of x (the input's shape)."""
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The MSE between a batch and its reconstruction (eq. 11), logged as ``train/loss``."""
        x = batch[0]
        loss = F.mse_loss(self.net(x), x)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def _eval_step(self, batch: Any, split: str) -> dict[str, Tensor]:
        x, y, idx = batch
        z = self.net.encoder(x)
        loss = F.mse_loss(self.net.decoder(z), x)
        self.log(f"{split}/loss", loss, on_epoch=True, prog_bar=split == "val", sync_dist=True,
                 batch_size=len(x))
        return {"z": z.detach(), "y": y, "idx": idx}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Log ``val/loss``; return the batch's embeddings, labels and dataset indices."""
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Log ``test/loss``; return the batch's embeddings, labels and dataset indices."""
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The batch's embeddings, N x m."""
        return self.net.encoder(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """The configured optimizer over the net's parameters (Adam at lr 1e-3 by default)."""
        if self.optimizer_factory is None:
            return torch.optim.Adam(self.parameters(), lr=1e-3)
        return self.optimizer_factory(params=self.parameters())
