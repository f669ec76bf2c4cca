"""The run's loggers around a run: their configs before it, the run folder's files after it,
then the run's web page and where to look at the run.

``clustercam.train`` calls :func:`prepare_loggers` before anything is built,
:func:`finish_loggers` once the run is over (after an error too) and :func:`end_run` last.
Rank zero only: the other processes of a DDP run log nothing.
"""

from __future__ import annotations

import logging
import sys

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from clustercam.callbacks.tracking import RunInfo, adapter_for_target

log = logging.getLogger(__name__)


def _nodes(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    loggers = cfg.get("logger")
    if not isinstance(loggers, DictConfig):
        return []
    return [(name, node) for name, node in loggers.items()
            if isinstance(node, DictConfig) and "_target_" in node]


def prepare_loggers(cfg: DictConfig) -> None:
    """Let each logger's adapter name and tag the run in its config node (MLflow: create the
    run); a logger whose server does not answer is left out with one warning.

    Raises:
        MissingDependencyError: a chosen logger's package is not installed (a UserError).
    """
    if rank_zero_only.rank != 0:
        return
    run = RunInfo.from_config(cfg)
    with open_dict(cfg):
        for name, node in _nodes(cfg):
            adapter = adapter_for_target(node._target_)
            if adapter is not None and not adapter.prepare(node, run):
                del cfg.logger[name]


def finish_loggers(cfg: DictConfig) -> list[str]:
    """Hand the run folder's files to the loggers that take them; returns where to look at
    the run (one line per logger). A logger that fails is named in a warning. Called from a
    ``finally`` block: an exception on its way up marks the run as failed."""
    if rank_zero_only.rank != 0:
        return []
    failed = sys.exc_info()[0] is not None
    lines: list[str] = []
    run = RunInfo.from_config(cfg)
    for name, node in _nodes(cfg):
        adapter = adapter_for_target(node._target_)
        if adapter is None:
            continue
        try:
            lines += adapter.finish(node, run, failed)
        except Exception as exc:
            log.warning("logger %s did not get the run's files: %s: %s", name, type(exc).__name__, exc)
    return lines


@rank_zero_only
def end_run(cfg: DictConfig, lines: list[str]) -> None:
    """``report=true``: write the run's page; print it and ``lines`` (last in the terminal)."""
    if cfg.get("report"):
        from clustercam.reporting.site import write_run_report

        try:
            lines = [f"Report: {write_run_report(cfg.paths.output_dir)}", *lines]
        except Exception as exc:  # the page is a view of the files, which are all there
            log.warning("the run's report was not written: %s: %s", type(exc).__name__, exc)
    for line in lines:
        print(line)

