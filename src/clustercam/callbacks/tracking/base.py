"""What one kind of Lightning logger gets beyond scalars, and what a run tells every logger.

Scalars reach every logger through Lightning's own ``Logger.log_metrics``; tables and
figures need a call of the logger's own API, which is what an adapter holds. Adding a
logger kind is one :class:`LoggerAdapter` subclass in this package, listed in
``clustercam.callbacks.tracking.ADAPTERS``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lightning.pytorch.loggers import Logger

# a job's name in a multirun: its overrides, made safe as one path component
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+\-]+")


@dataclass(frozen=True)
class RunInfo:
    """The run as the loggers name and tag it (read from the composed config and Hydra)."""

    output_dir: Path
    experiment: str  # the experiment config's name (experiment=trace), else the task name
    dataset: str | None = None
    seed: int | None = None
    sweep: str | None = None  # the multirun's folder name; None in a single run
    job: str | None = None  # the job's number and overrides in a multirun
    tags: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: Any) -> RunInfo:
        """Read what names the run from ``cfg`` and, inside a Hydra run, the Hydra config."""
        choices: Mapping[str, Any] = {}
        sweep = job = None
        try:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            hc = HydraConfig.get()
            choices = hc.runtime.choices
            if hc.mode == RunMode.MULTIRUN:
                sweep = Path(hc.sweep.dir).name
                job = job_name(hc.job.num, ",".join(swept(list(hc.overrides.task), Path(hc.sweep.dir))))
        except (ImportError, ValueError):  # composed outside Hydra (a notebook)
            pass
        data = cfg.get("data") or {}
        name = data.get("name") if isinstance(data.get("name"), str) else None
        group = choices.get("data")
        dataset = "/".join(p for p in (group, name) if p) or None
        seed = cfg.get("seed")
        return cls(output_dir=Path(cfg.paths.output_dir).resolve(),
                   experiment=str(choices.get("experiment") or cfg.get("task_name") or "clustercam"),
                   dataset=dataset, seed=None if seed is None else int(seed), sweep=sweep, job=job,
                   tags=tuple(str(t) for t in (cfg.get("tags") or ())))

    def as_tags(self) -> dict[str, str]:
        """The run's tags as strings (what MLflow shows; absent values left out)."""
        tags = {"experiment": self.experiment, "dataset": self.dataset, "seed": self.seed,
                "sweep": self.sweep, "job": self.job, "output_dir": str(self.output_dir),
                "tags": ",".join(self.tags) or None}
        return {k: str(v) for k, v in tags.items() if v is not None}


def swept(overrides: list[str], sweep_dir: Path) -> list[str]:
    """The overrides of a job that its sweep varies (``seed=2`` of ``seed=1,2,3``): those that
    differ from the sweep's own command line (``<sweep>/multirun.yaml``; all without it)."""
    try:
        from omegaconf import OmegaConf

        common = set(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task)
    except Exception:  # not written (yet): name the job by all its overrides
        common = set()
    return [o for o in overrides if o not in common] or list(overrides)


def job_name(num: int, overrides: str) -> str:
    """``<num>_<overrides>`` (Hydra's ``override_dirname``), safe as a folder name."""
    name = _UNSAFE.sub("_", overrides).strip("_")[:120]
    return f"{num}_{name}" if name else str(num)


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """A table as Markdown (what TensorBoard's text dashboard renders); NaN as ``nan``."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.6g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


class LoggerAdapter:
    """One logger kind: its tables and figures during a run, its config before, its files after.

    Every method but :meth:`handles` has a do-nothing default, so an adapter writes only what
    its logger has an API for. ``logger_class`` is the Lightning class (subclasses match).
    """

    logger_class: ClassVar[type[Logger]]

    def handles(self, logger: Logger) -> bool:
        return isinstance(logger, self.logger_class)

    def handles_target(self, target: str) -> bool:
        """Whether a config node with this ``_target_`` builds this adapter's logger."""
        try:
            from hydra.utils import get_class

            return issubclass(get_class(target), self.logger_class)
        except Exception:  # an unimportable target: instantiation will name it
            return False

    def log_table(self, logger: Logger, key: str, columns: list[str],
                  rows: Sequence[Mapping[str, Any]], step: int) -> None:
        """A table of ``rows`` (dicts with ``columns``) under ``key``."""

    def log_images(self, logger: Logger, key: str, paths: Sequence[Path], captions: Sequence[str],
                   step: int, root: Path) -> None:
        """Image files under ``key``; ``root``: the run folder the paths are in."""

    def prepare(self, node: Any, run: RunInfo) -> bool:
        """Adjust the logger's config ``node`` before it is built; False: leave the logger out
        (the reason has been logged as one warning)."""
        return True

    def finish(self, node: Any, run: RunInfo, failed: bool = False) -> list[str]:
        """After the run (``failed``: it ended with an error): hand the run folder's files to
        the logger. Returns lines for the terminal (where to look at the run)."""
        return []
