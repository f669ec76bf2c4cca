"""TensorBoard: every figure as an image (tag ``<key>/<caption>``), every table as a Markdown
text entry, the run's config as hparams (``Logger.log_hyperparams``, in ``clustercam.train``).

``tensorboard --logdir outputs/`` shows every run under ``outputs/``; the jobs of a
multirun are each named by their overrides (``<sweep>/<job>/tensorboard/<num>_<overrides>``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger

from clustercam.callbacks.tracking.base import LoggerAdapter, RunInfo, markdown_table
from clustercam.exceptions import MissingDependencyError
from clustercam.outputs import TENSORBOARD

log = logging.getLogger(__name__)
RASTER = (".png", ".jpg", ".jpeg")  # what TensorBoard's image dashboard shows (no SVG)


class TensorBoardAdapter(LoggerAdapter):
    logger_class = TensorBoardLogger

    def log_table(self, logger: Logger, key: str, columns: list[str],
                  rows: Sequence[Mapping[str, Any]], step: int) -> None:
        logger.experiment.add_text(key, markdown_table(columns, rows), global_step=step)

    def log_images(self, logger: Logger, key: str, paths: Sequence[Path], captions: Sequence[str],
                   step: int, root: Path) -> None:
        import numpy as np
        from PIL import Image

        for i, path in enumerate(paths):
            if Path(path).suffix.lower() not in RASTER:
                log.debug("TensorBoard shows no %s images: %s left out", Path(path).suffix, path)
                continue
            caption = captions[i] if captions and i < len(captions) else Path(path).stem
            with Image.open(path) as im:
                pixels = np.asarray(im.convert("RGB"))
            logger.experiment.add_image(f"{key}/{caption}", pixels, global_step=step, dataformats="HWC")

    def prepare(self, node: Any, run: RunInfo) -> bool:
        import importlib.util

        if not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
            raise MissingDependencyError("logger=tensorboard needs the tensorboard package: "
                            "pip install 'clustercam[tracking]'")
        if run.job is not None and node.get("version") is None:
            node.version = run.job  # the job's folder under <job>/tensorboard/: its overrides
        return True

    def finish(self, node: Any, run: RunInfo, failed: bool = False) -> list[str]:
        logdir = Path(str(node.get("save_dir") or run.output_dir / TENSORBOARD)).resolve()
        return [f"TensorBoard: tensorboard --logdir {logdir}"]
