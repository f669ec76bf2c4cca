"""Hand scalars, tables and figures to every logger the trainer has (rank zero only).

The one logging path of the callbacks: scalars go to every logger, tables and figures to
each logger kind's adapter (``clustercam.callbacks.tracking``): W&B tables and images,
TensorBoard text and images, MLflow tables and artifacts. A logger that fails is named in
a warning and the run goes on: its files in the run folder are what counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning import Trainer
from lightning.pytorch.utilities import rank_zero_only

from clustercam.callbacks.tracking import adapter_for

log = logging.getLogger(__name__)


def _each(trainer: Trainer, what: str, call: Any) -> None:
    for logger in trainer.loggers:
        adapter = adapter_for(logger)
        if adapter is None:
            continue
        try:
            call(adapter, logger)
        except Exception as exc:  # a dashboard's failure never costs the run its files
            log.warning("%s could not take the %s: %s: %s", type(logger).__name__, what,
                        type(exc).__name__, exc)


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
    """``rows`` (dicts, the first one's keys are the columns) as a table under ``key``."""
    if not rows:
        return
    columns = list(rows[0])
    _each(trainer, f"table {key}",
          lambda a, lg: a.log_table(lg, key, columns, rows, trainer.global_step))


@rank_zero_only
def log_images(trainer: Trainer, key: str, paths: Sequence[str | Path], captions: Sequence[str] | None = None) -> None:
    """Image files under ``key`` (one caption per image, or none)."""
    if not paths:
        return
    files, root = [Path(p) for p in paths], Path(trainer.default_root_dir)
    _each(trainer, f"images {key}",
          lambda a, lg: a.log_images(lg, key, files, list(captions or []), trainer.global_step, root))
