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
    """MSE reconstruction with Adam (paper § IV-B); ``net`` is built from ``input_shape``.

    ``net`` is a callable ``net(input_shape=...) -> nn.Module`` (a Hydra ``_partial_``) or
    an already built module.
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
        return self.net.encoder

    @property
    def target_layer(self) -> str | None:
        """The encoder module the net declares for Grad-CeAM (None: the callbacks must name one)."""
        return getattr(self.net, "target_layer", None)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
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
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.net.encoder(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            return torch.optim.Adam(self.parameters(), lr=1e-3)
        return self.optimizer_factory(params=self.parameters())
