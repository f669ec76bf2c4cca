"""Weights & Biases: tables as ``wandb.Table``, figures as images with captions.

The jobs of a multirun share a W&B group named after the sweep (``clustercam.train``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

from clustercam.callbacks.tracking.base import LoggerAdapter


class WandbAdapter(LoggerAdapter):
    logger_class = WandbLogger

    def log_table(self, logger: Logger, key: str, columns: list[str],
                  rows: Sequence[Mapping[str, Any]], step: int) -> None:
        logger.log_table(key=key, columns=columns, data=[[r.get(c) for c in columns] for r in rows])

    def log_images(self, logger: Logger, key: str, paths: Sequence[Path], captions: Sequence[str],
                   step: int, root: Path) -> None:
        kwargs = {"caption": list(captions)} if captions else {}
        logger.log_image(key=key, images=[str(p) for p in paths], **kwargs)
