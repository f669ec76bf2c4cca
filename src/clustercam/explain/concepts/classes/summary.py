"""Run-level numbers of the class concepts: the ``metrics.json`` means and the summary section.

From the rows of ``class_concepts.csv`` and ``class_concepts_truth.csv``
(:func:`~clustercam.explain.concepts.classes.scores.class_concept_rows`,
:func:`~clustercam.explain.concepts.classes.scores.truth_rows`), so a notebook gets the same
numbers from the CSVs as the callback logs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clustercam.explain.concepts.classes.scores import TRUTH_COLUMNS, truth_table_markdown


def _source(row: Mapping[str, Any]) -> tuple[str, str]:
    """(method, source) of a ``class_concepts.csv`` row (NMF rows: method ``nmf``)."""
    if row["method"] == "nmf":
        return str(row["algorithm"]).split("/")[0], "nmf"
    return str(row["method"]), "coassociation"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def class_results(rows: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``metrics.json`` keys: per method and source, means over the classes (concepts
    pooled; the all-images group left out) of stability, importance and the truth scores."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if r["class"] >= 0:
            m, src = _source(r)
            for col in ("stability", "importance"):
                acc.setdefault(f"class_concepts/{m}/{src}/{col}", []).append(float(r[col]))
    for r in truth:
        if r["class"] >= 0:
            for col in TRUTH_COLUMNS[4:]:
                acc.setdefault(f"class_concepts/{r['method']}/truth/{r['source']}/{col}", []).append(float(r[col]))
    return {k: _mean(v) for k, v in acc.items()}


def class_markdown(rows: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]]) -> str:
    """The ``concept_summary.md`` section: mean stability / importance, and the truth table."""
    res = class_results(rows, [])
    lines = ["\n## Class concepts\n", "Means over the classes (`class_concepts.csv`).\n",
             "| method | source | stability | importance |", "| --- | --- | --- | --- |"]
    for key in sorted({k.rsplit("/", 1)[0] for k in res}):
        _, m, src = key.split("/")
        lines.append(f"| {m} | {src} | {res[key + '/stability']:.3f} | {res[key + '/importance']:.2f} |")
    text = "\n".join(lines) + "\n"
    if truth:
        text += "\nAgainst the parts (`class_concepts_truth.csv`):\n\n" + truth_table_markdown([truth])
    return text
