"""The concept run's ``metrics.json`` entries (also logged as scalars), by key.

Keys: ``n_images``, ``top1``, ``p_target_mean``; ``concepts/<config>/<metric>`` and
``concepts/<method>/<metric>`` (the same keys in every job of a sweep);
``fidelity/<config>/<order>/<auc>[_median]``; ``truth/<config>/<partition>/<score>``;
``paint_out/<column>``; ``class_concepts/<method>/<source>/<score>`` and
``class_concepts/<method>/truth/<source>/<score>``. ``<config>`` is
:attr:`~clustercam.explain.concepts.ConceptConfig.name` (e.g. ``cgap_kmeans_n5``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clustercam.explain.concepts.image.batch import ConceptBatch
from clustercam.explain.concepts.summary import finite_mean_std, finite_median, overall_means
from clustercam.explain.concepts.vocabulary import (
    CLASS_TRUTH_SCORES,
    CONCEPT_METRIC_NAMES,
    FIDELITY_AUCS,
    ORDERS,
    TRUTH_SCORES,
    ConceptConfig,
)
from clustercam.outputs.concept_tables import concept_truth_rows
from clustercam.outputs.contract import NMF_METHOD


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def concept_results(batch: ConceptBatch, metric_rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Top-1 accuracy, mean p_target, each configuration's mean metrics (mean over classes
    of the metric rows) and per method their mean over configurations."""
    res: dict[str, float] = {
        "n_images": int(len(batch.idx)),
        "top1": float((batch.pred == batch.y).double().mean()),
        "p_target_mean": float(batch.p_target.mean()),
    }
    per_method: dict[str, list[dict[str, float]]] = {}
    for _, r in overall_means(metric_rows).iterrows():
        key = f"concepts/{ConceptConfig(r['method'], r['algorithm'], int(r['n_concepts'])).name}"
        vals = {m: float(r[m]) for m in CONCEPT_METRIC_NAMES}
        res.update({f"{key}/{m}": v for m, v in vals.items()})
        per_method.setdefault(str(r["method"]), []).append(vals)
    for method, rows in per_method.items():
        for m in CONCEPT_METRIC_NAMES:
            res[f"concepts/{method}/{m}"] = _mean([v[m] for v in rows])
    return res


def validation_results(configs: Sequence[ConceptConfig], batch: ConceptBatch) -> dict[str, float]:
    """Means over the images of the fidelity AUCs (and their medians), the truth scores and
    the painting-out check, where the batch holds them."""
    res: dict[str, float] = {}
    if batch.fidelity_auc is not None:
        for c, cfg in enumerate(configs):
            for o, order in enumerate(ORDERS):
                for auc in FIDELITY_AUCS:
                    values = batch.fidelity_auc[auc][:, c, o]
                    key = f"fidelity/{ConceptConfig(*cfg).name}/{order}/{auc}"
                    res[key] = finite_mean_std(values)[0]
                    res[f"{key}_median"] = finite_median(values)
    if batch.truth is not None:
        for row in concept_truth_rows(configs, batch):
            name = ConceptConfig(row["method"], row["algorithm"], row["n_concepts"]).name
            for t in TRUTH_SCORES:
                res[f"truth/{name}/{row['partition']}/{t}"] = row[t]
    if batch.paint_out is not None:
        for k, values in batch.paint_out.items():
            res[f"paint_out/{k}"] = finite_mean_std(values)[0]
    return res


def _source(row: Mapping[str, Any]) -> tuple[str, str]:
    """(method, source) of a class-concept row (NMF rows: method ``nmf``)."""
    if row["method"] == NMF_METHOD:
        return str(row["algorithm"]).split("/")[0], "nmf"
    return str(row["method"]), "coassociation"


def class_results(rows: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per method and source, means over the classes (concepts pooled; the all-images group
    left out) of stability, importance and the truth scores; from the class-concept rows
    (CSV strings or numbers), so a notebook gets the same numbers from the files."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if int(r["class"]) >= 0:
            m, src = _source(r)
            for col in ("stability", "importance"):
                acc.setdefault(f"class_concepts/{m}/{src}/{col}", []).append(float(r[col]))
    for r in truth:
        if int(r["class"]) >= 0:
            for col in CLASS_TRUTH_SCORES:
                acc.setdefault(f"class_concepts/{r['method']}/truth/{r['source']}/{col}", []).append(float(r[col]))
    return {k: _mean(v) for k, v in acc.items()}
