"""The Hydra entry point: compose, instantiate, fit, test, and return the optimised metric.

    python -m clustercam.train experiment=trace trainer.max_epochs=2 seed=3
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

# offline unless the user chose otherwise (the default run needs no network)
os.environ.setdefault("WANDB_MODE", "offline")
# the CPU allocator, before anything below allocates a tensor: torch's huge pages and glibc
# keeping freed blocks for the next batch, unless the environment says otherwise (see
# clustercam.runtime.allocator: a CPU forward of nf_resnet50 at 256 px spent a third of its
# time faulting in fresh pages; 121 -> 93 -> 71 ms a photo on 2 cores)
from clustercam.runtime.allocator import configure_process  # noqa: E402

ALLOCATOR = configure_process()

import hydra  # noqa: E402
import lightning as L  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from lightning.pytorch.utilities import rank_zero_only  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from clustercam import outputs  # noqa: E402
from clustercam.exceptions import TrainingDivergedError, UserError  # noqa: E402
from clustercam.runtime.checkpoints import check_checkpoint  # noqa: E402
from clustercam.runtime.configs import config_path, move_deprecated_keys  # noqa: E402
from clustercam.runtime.console import print_config, print_summary  # noqa: E402
from clustercam.runtime.errors import exit_on_user_error  # noqa: E402
from clustercam.runtime.instantiate import instantiate_callbacks, instantiate_loggers  # noqa: E402
from clustercam.runtime.status import record_skipped_inputs, track_status  # noqa: E402

log = logging.getLogger("clustercam")
CONFIG_PATH = config_path()


@track_status  # status.json: running, then finished / failed / diverged / interrupted
def run(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate everything from ``cfg``, train and/or test; return the final metrics."""
    cfg = move_deprecated_keys(cfg)
    out = outputs.start_run(cfg.paths.output_dir) if rank_zero_only.rank == 0 else Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:
        outputs.write_text(out / outputs.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    check_checkpoint(cfg.get("ckpt_path"))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    record_skipped_inputs(out, datamodule)  # skipped_inputs.csv: the unreadable files left out
    extra: dict[str, Any] = {}
    if hasattr(datamodule, "input_shape") and "input_shape" in cfg.model:
        extra["input_shape"] = list(datamodule.input_shape)
    if "n_clusters" in cfg.model and cfg.model.n_clusters is None and hasattr(datamodule, "num_classes"):
        extra["n_clusters"] = int(datamodule.num_classes)  # deep clustering: K = the classes
    if (cfg.model.get("num_classes", "absent") is None and hasattr(datamodule, "num_classes")
            and str(cfg.model.get("_target_", "")).endswith("TrainableClassifierModule")):
        extra["num_classes"] = int(datamodule.num_classes)  # a classifier trained here: the data's classes
    log.info("Instantiating model <%s>", cfg.model._target_)
    model = hydra.utils.instantiate(cfg.model, **extra)
    check_checkpoint(cfg.get("ckpt_path"), model)  # fits this model, before any training
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(group_multirun(cfg).get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("train"):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    if cfg.get("test"):
        trainer.test(model=model, datamodule=datamodule,
                     ckpt_path=None if cfg.get("train") else ckpt_path)

    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for cb in callbacks:
        metrics.update({f"test/{k}": v for k, v in getattr(cb, "results", {}).items()})
    return metrics


def group_multirun(cfg: DictConfig) -> DictConfig:
    """Jobs of one multirun share a W&B group named after the sweep (unless one is set)."""
    try:
        hc = HydraConfig.get()
    except ValueError:  # composed outside @hydra.main (tests, notebooks)
        return cfg
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if hc.mode == RunMode.MULTIRUN and wandb_cfg is not None and not wandb_cfg.get("group"):
        with open_dict(cfg):
            cfg.logger.wandb.group = Path(hc.sweep.dir).name
            cfg.logger.wandb.name = cfg.logger.wandb.get("name") or f"job{hc.job.num}"
    return cfg


def is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # composed outside @hydra.main
        return False


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value a sweeper optimises; a clear error if the config names a missing metric."""
    if not name:
        return None
    if name not in metrics:
        raise UserError(
            f"optimized_metric {name!r} was not computed; available: {sorted(metrics)[:30]}"
        )
    value = float(metrics[name])
    return value if math.isfinite(value) else float("nan")


def _finish_wandb() -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:  # pragma: no cover
        pass


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train.yaml")
@exit_on_user_error  # a user's mistake: one line, no traceback (HYDRA_FULL_ERROR=1 shows it)
def main(cfg: DictConfig) -> float | None:
    # the user's own modules (_target_: my_model.MyNet) import from the folder they start in,
    # with the console script as with `python -m`
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if cfg.get("print_config"):
        print_config(cfg)
    from clustercam.runtime.tracking import end_run, finish_loggers, prepare_loggers

    prepare_loggers(cfg)  # names, tags, the MLflow run; a tracking server that does not answer
    try:
        metrics = run(cfg)
    except TrainingDivergedError as err:
        if not is_multirun():
            raise
        log.error("%s", err)  # one job of a sweep: the others go on (status.json: diverged)
        return float("nan")
    finally:
        _finish_wandb()  # each job of a multirun closes its own W&B run
        where = finish_loggers(cfg)  # the run folder's files to MLflow (after an error too)
    if cfg.get("test"):  # last, after W&B's own footer (rank zero only)
        print_summary(Path(cfg.paths.output_dir), metrics)
    end_run(cfg, where)  # report=true: the run's web page; where to look at the run
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
