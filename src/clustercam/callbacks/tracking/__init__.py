"""One logging path to every tracking dashboard: an adapter per Lightning logger kind.

Scalars reach every logger through ``Logger.log_metrics``; tables, figures, a logger's
config before the run and the run folder's files after it go through the logger's adapter
(:class:`~clustercam.callbacks.tracking.base.LoggerAdapter`). A logger without one (CSV)
gets the scalars only: its tables and figures are the files in the run folder.
"""

from __future__ import annotations

from lightning.pytorch.loggers import Logger

from clustercam.callbacks.tracking.base import LoggerAdapter, RunInfo
from clustercam.callbacks.tracking.mlflow_adapter import MLflowAdapter
from clustercam.callbacks.tracking.tensorboard_adapter import TensorBoardAdapter
from clustercam.callbacks.tracking.wandb_adapter import WandbAdapter

# one instance per kind (an adapter may remember what it sent during the run)
ADAPTERS: tuple[LoggerAdapter, ...] = (WandbAdapter(), TensorBoardAdapter(), MLflowAdapter())


def adapter_for(logger: Logger) -> LoggerAdapter | None:
    return next((a for a in ADAPTERS if a.handles(logger)), None)


def adapter_for_target(target: str) -> LoggerAdapter | None:
    """The adapter of the logger a config node's ``_target_`` builds."""
    return next((a for a in ADAPTERS if a.handles_target(target)), None)


__all__ = ["ADAPTERS", "LoggerAdapter", "RunInfo", "adapter_for", "adapter_for_target"]
