"""Finished runs as records, and the papers' model selection: the best and worst NMI of a
dataset's runs (the Grad-CeAM paper's Fig. 10 "high" and "low" models). Run folders are read
through the outputs contract."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clustercam import outputs
from clustercam.exceptions import UserError
from clustercam.runtime.status import is_finished

# the Grad-CeAM targets every study sweep compares (callbacks.cluster_explain.compare_modes)
GRADCEAM_TARGETS = ("paper", "reference", "assignment")


@dataclass
class RunRecord:
    """One finished Grad-CeAM run: its folder, dataset, seed, metrics and cardinality summaries."""

    run: Path
    dataset: str
    seed: int | None
    metrics: dict[str, Any]
    summary: dict[str, Any]
    modes: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def nmi(self) -> float:
        v = self.metrics.get("nmi")
        return math.nan if v is None else float(v)


def dataset_name(cfg: dict[str, Any]) -> str:
    """UCR configs name their dataset; the image datamodules are named by their class."""
    data = cfg.get("data", {}) or {}
    return str(data.get("name") or str(data.get("_target_", "?")).rsplit(".", 1)[-1]
               .replace("DataModule", ""))


def _float(v: str) -> float:
    return float(v) if v not in ("", "None", None) else math.nan


def collect(runs_dir: str | Path) -> list[RunRecord]:
    """Every finished Grad-CeAM run under ``runs_dir`` (a folder with the contract's metrics,
    config and cardinality summary, and no status file saying it failed or is unfinished: see
    :func:`clustercam.runtime.status.unfinished_report`), in folder order."""
    records = []
    for metrics_path in sorted(Path(runs_dir).rglob(outputs.METRICS)):
        run = metrics_path.parent
        if not (run / outputs.CONFIG).is_file() or not (run / outputs.CARDINALITY_SUMMARY).is_file():
            continue
        if not is_finished(run):
            continue
        cfg = yaml.safe_load((run / outputs.CONFIG).read_text()) or {}
        modes = {}
        if (run / outputs.CARDINALITY_BY_MODE).is_file():
            with open(run / outputs.CARDINALITY_BY_MODE) as fh:
                modes = {r[outputs.CARDINALITY_BY_MODE_KEY]: {k: _float(r[k]) for k in outputs.CARDINALITY_STATS} for r in csv.DictReader(fh)}
        records.append(RunRecord(run, dataset_name(cfg), cfg.get("seed"),
                                 json.loads(metrics_path.read_text()),
                                 json.loads((run / outputs.CARDINALITY_SUMMARY).read_text()), modes))
    return records


def by_dataset(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        out[r.dataset].append(r)
    return dict(out)


def high_low(records: list[RunRecord]) -> tuple[RunRecord, RunRecord]:
    """(high, low): the runs with the best and the worst NMI (ties: the lower seed for high, the
    higher seed for low, so two tied runs give two models); runs whose NMI is not finite are
    left out (an error if none is left)."""
    ok = [r for r in records if math.isfinite(r.nmi)]
    if not ok:
        raise UserError(f"no run with a finite NMI among {[str(r.run) for r in records]}")
    key = lambda r: (r.seed if r.seed is not None else math.inf)  # noqa: E731
    high = max(sorted(ok, key=key), key=lambda r: r.nmi)
    low = min(sorted(ok, key=key, reverse=True), key=lambda r: r.nmi)
    return high, low
