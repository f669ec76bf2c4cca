"""A timm classifier trained in the run (from scratch or fine-tuned), then frozen for concepts.

``python -m clustercam.train experiment=concepts_parts`` fits it on the training split
(cross-entropy, AdamW with a one-cycle schedule, random horizontal flips), then the test
loop runs the concept callback on the frozen network, exactly as for
:class:`~clustercam.models.classifier_module.ClassifierModule`. At the end of fitting the
network's weights are written to ``save_weights`` (a ``.safetensors`` state dict), which a
later run loads with ``model.checkpoint_path=<file>`` (the same model name, ``num_classes``
and ``model_kwargs``), e.g. ``experiment=concepts_imagenet`` on an image folder.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.layouts import LayoutSpec
from clustercam.models.classifier_module import ClassifierModule

log = logging.getLogger(__name__)


class TrainableClassifierModule(ClassifierModule):
    """:class:`ClassifierModule` with a training step; frozen again when fitting ends.

    ``pretrained=False`` (default) trains from scratch (no random-weights warning: the
    weights are about to be learned); ``pretrained=True`` or ``checkpoint_path`` fine-tunes
    those weights. ``lr``: the one-cycle peak of AdamW; ``pct_start``: the share of steps
    spent warming up; ``hflip``: flip each training image left-right with probability 1/2.
    ``layer`` / ``layout``: the concept layer, as for :class:`ClassifierModule`.
    """

    warn_random = False  # random initial weights are the starting point, not the result

    def __init__(
        self,
        name: str = "resnet18",
        num_classes: int | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        pretrained_tag: str | None = None,
        lr: float = 2e-3,
        weight_decay: float = 0.01,
        pct_start: float = 0.25,
        hflip: bool = True,
        save_weights: str | None = None,
        layer: str | None = None,
        layout: LayoutSpec = "auto",
    ) -> None:
        if num_classes is None or int(num_classes) < 2:
            raise UserError(f"a trained classifier needs num_classes >= 2, got {num_classes}")
        if lr <= 0 or weight_decay < 0 or not 0 < pct_start < 1:
            raise UserError(f"need lr > 0, weight_decay >= 0, 0 < pct_start < 1; got {lr}, "
                             f"{weight_decay}, {pct_start}")
        kwargs = dict(model_kwargs or {})
        if input_shape is not None and "in_chans" not in kwargs:
            kwargs["in_chans"] = int(input_shape[0])
        super().__init__(name, pretrained, checkpoint_path, pretrained_tag, num_classes,
                         kwargs, input_shape, layer, layout)
        self.save_hyperparameters()
        if self.weights_source == "random":
            self.weights_source = "untrained"
        self.lr, self.weight_decay, self.pct_start, self.hflip = lr, weight_decay, pct_start, hflip
        self.save_weights = save_weights
        self.fit_seconds: float | None = None
        self.val_accuracy: float | None = None
        self._t0 = 0.0

    # -- fitting -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> TrainableClassifierModule:
        """Train mode while fitting; eval (frozen) otherwise."""
        fitting = self._trainer is not None and self.trainer.training
        return super(ClassifierModule, self).train(mode and fitting)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None)
        k = getattr(dm, "num_classes", None) if dm is not None else None
        out = self.net.get_classifier().out_features if hasattr(self.net, "get_classifier") else None
        if k is not None and out is not None and int(k) > int(out):
            raise UserError(f"the datamodule has {k} classes but model.num_classes={out}")

    def on_fit_start(self) -> None:
        self.train()  # Lightning keeps the mode a module starts in: frozen ones are in eval
        self._t0 = time.perf_counter()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1].long()
        if self.hflip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, on_step=False,
                      on_epoch=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1].long()
        logits = self.net(x)
        self.log_dict({"val/loss": F.cross_entropy(logits, y),
                       "val/acc": (logits.argmax(-1) == y).float().mean()},
                      prog_bar=True, batch_size=x.shape[0])

    def configure_optimizers(self) -> Any:
        for p in self.net.parameters():
            p.requires_grad_(True)
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # a few steps more than a tiny run takes keep both phases of the schedule non-empty
        steps = max(int(self.trainer.estimated_stepping_batches), math.ceil(2 / self.pct_start) + 1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps,
                                                    pct_start=self.pct_start)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_fit_end(self) -> None:
        """Freeze, record the fitting time, save the weights for later runs."""
        self.fit_seconds = time.perf_counter() - self._t0
        acc = self.trainer.callback_metrics.get("val/acc")
        self.val_accuracy = float(acc) if acc is not None else None
        self.freeze_net()
        self.weights_source = f"trained:{self.trainer.current_epoch} epochs"
        self.pretrained = True
        if self.save_weights and self.trainer.is_global_zero:
            from safetensors.torch import save_file

            path = Path(self.save_weights)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                      str(path))
            self.weights_source = f"trained:{path}"
            log.info("Trained %s weights written to %s (load them with model.checkpoint_path=%s)",
                     self.full_name, path, path)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "trained_here": self.fit_seconds is not None,
                "fit_seconds": self.fit_seconds, "val_accuracy": self.val_accuracy,
                "epochs": self.trainer.current_epoch if self._trainer is not None else None}
