"""The run-folder files of the explanation scores (the outputs contract)."""

from __future__ import annotations

from pathlib import Path

from clustercam.explain.scores import LOCALISATION_COLUMNS, SCORES_COLUMNS, ScoreReport
from clustercam.outputs import contract
from clustercam.outputs.files import write_csv, write_json


def write_score_report(out: Path, report: ScoreReport) -> None:
    """Write ``explanation_scores.csv``, ``localisation_scores.csv`` (data with masks) and the
    report's ``scores/...`` entries of ``metrics.json`` into the run folder ``out``."""
    write_csv(out / contract.EXPLANATION_SCORES, report.rows, SCORES_COLUMNS)
    if report.localisation:
        write_csv(out / contract.LOCALISATION_SCORES, report.localisation, LOCALISATION_COLUMNS)
    write_json(out / contract.METRICS, report.results, merge=True)
