"""The multirun's page, written once every job has finished (a Hydra callback).

Each job writes its own page at its end (``report=true``); the sweep's page, a table of
every job, can only be written after the last one, in the process that launched them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)


class MultirunReport(Callback):
    """``on_multirun_end``: ``<sweep dir>/report/index.html`` when the config says ``report``."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if not config.get("report"):
            return
        from clustercam.reporting.site import write_multirun_report

        try:
            index = write_multirun_report(Path(config.hydra.sweep.dir), jobs=False)
        except Exception as exc:  # the jobs' own files are what matters; say why, go on
            log.warning("the multirun's report was not written: %s", exc)
            return
        print(f"Report: {index}")
