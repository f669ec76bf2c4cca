"""Hand scalars, tables and figures to whatever loggers the trainer has (rank zero only)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning import Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


@rank_zero_only
def log_scalars(trainer: Trainer, metrics: Mapping[str, Any], step: int | None = None) -> None:
    """The finite numbers of ``metrics`` (strings, booleans, NaN and lists are left out)."""
    numbers = {k: float(v) for k, v in metrics.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    if not numbers:
        return
    for logger in trainer.loggers:
        logger.log_metrics(numbers, step=trainer.global_step if step is None else step)


@rank_zero_only
def log_table(trainer: Trainer, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """A ``wandb.Table`` on W&B; other loggers get nothing (the CSV is in the run directory)."""
    if not rows:
        return
    columns = list(rows[0])
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=[[r[c] for c in columns] for r in rows])


@rank_zero_only
def log_images(trainer: Trainer, key: str, paths: Sequence[str | Path], captions: Sequence[str] | None = None) -> None:
    if not paths:
        return
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            kwargs = {"caption": list(captions)} if captions else {}
            logger.log_image(key=key, images=[str(p) for p in paths], **kwargs)
