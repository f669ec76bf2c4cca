"""Build callbacks and loggers from their config groups (each entry has a ``_target_``)."""

from __future__ import annotations

import logging

import hydra
from lightning import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from clustercam.exceptions import UserError

log = logging.getLogger(__name__)


def _instantiate_group(cfg: DictConfig | None, kind: type, what: str) -> list:
    items: list = []
    if not cfg:
        return items
    if not isinstance(cfg, DictConfig):
        raise UserError(f"the {what} config must be a mapping of name -> config, got {type(cfg)}")
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info("Instantiating %s <%s>", what, conf._target_)
            obj = hydra.utils.instantiate(conf)
            if not isinstance(obj, kind):
                raise UserError(f"{what} {name!r} built a {type(obj).__name__}, not a {kind.__name__}")
            items.append(obj)
    return items


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_group(cfg, Callback, "callback")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_group(cfg, Logger, "logger")
