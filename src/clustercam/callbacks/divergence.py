"""Stop a diverging training run at its first non-finite loss, with one line that says why.

A learning rate that is too high (or fp16 overflow) turns the loss into NaN or inf; without
this, training goes on for every epoch and the embeddings clustered at the end are NaN. The
loss is checked before its backward pass (and, with gradient clipping on, the gradient norm
before the optimizer step), so the weights of the last good step are the ones kept. The run
ends with :class:`~clustercam.exceptions.TrainingDivergedError` naming the epoch and step,
the value, the last good checkpoint and the settings to look at; nothing downstream (the
test loop, k-means, explanations) runs. Under DDP the check is gathered over the ranks every
step, so a NaN on one rank stops every rank at the same step (no rank is left waiting).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from clustercam.exceptions import TrainingDivergedError


class DivergenceCallback(Callback):
    """Raise :class:`TrainingDivergedError` at the first non-finite training loss.

    Args:
        check_grad_norm: with ``trainer.gradient_clip_val`` set, also stop at a non-finite
            gradient norm (skipped under fp16 loss scaling, whose scaler skips such steps
            on purpose).
    """

    def __init__(self, check_grad_norm: bool = True) -> None:
        self.check_grad_norm = check_grad_norm
        self._batch_idx = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        self._check(trainer, pl_module, loss, "training loss")

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if not self.check_grad_norm or not trainer.gradient_clip_val:
            return
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        if grads:
            self._check(trainer, pl_module, torch.nn.utils.get_total_norm(grads), "gradient norm")

    def _check(self, trainer: Trainer, pl_module: LightningModule, value: Tensor, what: str) -> None:
        value = value.detach().float().reshape(-1)[:1]
        if trainer.world_size > 1:  # every rank decides on every rank's value: all stop together
            values = trainer.strategy.all_gather(value).reshape(-1)
        else:
            values = value
        finite = torch.isfinite(values)
        if bool(finite.all()):
            return
        details = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                   "batch": self._batch_idx, "value": str(float(values[~finite][0])), "what": what,
                   "checkpoint": last_good_checkpoint(trainer)}
        where = ""
        if trainer.world_size > 1:
            ranks = (~finite).nonzero().flatten().tolist()
            where = f" on rank{'s' * (len(ranks) > 1)} {', '.join(map(str, ranks))}"
        ckpt = details["checkpoint"]
        err = TrainingDivergedError(
            f"training diverged at epoch {details['epoch']}, step {details['step']} (batch "
            f"{details['batch']}): the {what} is {details['value']}{where}. Last good checkpoint: "
            f"{ckpt if ckpt else 'none saved yet'}. Look at {settings_to_check(trainer, pl_module)}")
        err.details = details  # type: ignore[attr-defined]  # read into status.json
        raise err


def last_good_checkpoint(trainer: Trainer) -> str | None:
    """The newest checkpoint file saved (or resumed from) before this step, if any."""
    for cb in trainer.checkpoint_callbacks:
        for path in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")):
            if path and Path(path).is_file():
                return str(path)
    resumed = trainer.ckpt_path
    return str(resumed) if resumed and Path(resumed).is_file() else None


def settings_to_check(trainer: Trainer, pl_module: LightningModule) -> str:
    """The learning rate (its config key and the value now) and the precision."""
    key = "model.lr" if "lr" in getattr(pl_module, "hparams", {}) else "model.optimizer.lr"
    lrs = [g.get("lr") for opt in trainer.optimizers for g in opt.param_groups]
    lr = f"{lrs[0]:g}" if lrs and isinstance(lrs[0], float) and math.isfinite(lrs[0]) else "?"
    clip = trainer.gradient_clip_val
    return (f"the learning rate {key} (now {lr}; try 10x lower), trainer.precision (now "
            f"{trainer.precision}; 32-true rules out fp16 overflow) and trainer.gradient_clip_val "
            f"(now {clip if clip else 'off'})")


def check_finite_embeddings(z: Tensor, what: str = "embeddings") -> None:
    """Nothing is clustered on NaN: ``z`` (N x ...) must be finite, else one line saying how
    many samples are not (weights that diverged, or overflow in the forward pass)."""
    bad = ~torch.isfinite(z.reshape(len(z), -1)).all(1)
    if bool(bad.any()):
        raise TrainingDivergedError(
            f"{int(bad.sum())} of {len(z)} {what} are NaN or infinite (first indices "
            f"{bad.nonzero().flatten()[:5].tolist()}): the weights have diverged or the forward "
            "pass overflows (trainer.precision); nothing is clustered")
