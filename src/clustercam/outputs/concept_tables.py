"""The concept run's CSV rows, from the typed results of ``clustercam.explain.concepts``.

Each function returns rows of dicts whose keys are one column set of the contract, in its
order (:mod:`clustercam.outputs.contract`): per image and configuration from a gathered
:class:`~clustercam.explain.concepts.ConceptBatch` (with ``idx`` and ``y``), per class from a
:class:`~clustercam.explain.concepts.classes.passes.ClassConceptRun`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clustercam.explain.concepts.classes.coassociation import ClassConcepts, group_name
from clustercam.explain.concepts.classes.passes import ClassConceptRun
from clustercam.explain.concepts.classes.scores import ClassConceptScores, truth_by_group
from clustercam.explain.concepts.image.batch import ConceptBatch
from clustercam.explain.concepts.image.importance import importance_order
from clustercam.explain.concepts.image.settings import ConceptSettings
from clustercam.explain.concepts.summary import finite_mean_std
from clustercam.explain.concepts.vocabulary import (
    CONCEPT_METRIC_NAMES,
    FIDELITY_AUCS,
    ORDERS,
    PARTITIONS,
    TRUTH_SCORES,
    ConceptConfig,
)
from clustercam.outputs.contract import (
    CLASS_CONCEPT_COLUMNS,
    CLASS_CONCEPTS_TRUTH_COLUMNS,
    CONCEPT_COLUMNS,
    CONCEPT_FIDELITY,
    CONCEPT_FIDELITY_COLUMNS,
    CONCEPT_METRIC_COLUMNS,
    CONCEPT_TRUTH,
    CONCEPT_TRUTH_COLUMNS,
    NMF_METHOD,
    SUB_CONCEPT_COLUMNS,
)

Row = dict[str, Any]


def _row(columns: Sequence[str], **values: Any) -> Row:
    """The values in the order of ``columns`` (every column must be given)."""
    return {c: values[c] for c in columns}


@dataclass
class ConceptTables:
    """The rows of the three per-image concept CSVs (:data:`CONCEPT_COLUMNS`,
    :data:`SUB_CONCEPT_COLUMNS`, :data:`CONCEPT_METRIC_COLUMNS`)."""

    concepts: list[Row]
    sub_concepts: list[Row]
    metrics: list[Row]


def concept_tables(settings: ConceptSettings, batch: ConceptBatch, names: Sequence[str],
                   class_names: Sequence[str]) -> ConceptTables:
    """Rows per image x configuration (x concept, x sub-concept) of a gathered batch (with
    ``idx`` and ``y``); ``names``, ``class_names``: per image. ``rank`` 0 is the most
    important concept."""
    s = settings
    tables = ConceptTables([], [], [])
    for i, name in enumerate(names):
        image = {"image": name, "class": int(batch.y[i]), "index": int(batch.idx[i]),
                 "class_name": class_names[i]}
        for c, cfg in enumerate(s.configs):
            base = {**image, **cfg._asdict()}
            n = cfg.n_concepts
            tables.metrics.append(_row(
                CONCEPT_METRIC_COLUMNS, **base,
                **{m: float(batch.metrics[m][i, c]) for m in CONCEPT_METRIC_NAMES},
                kept_channels=int(batch.kept[i, c]),
                backend=s.backend if cfg.algorithm == "kmeans" else "sklearn"))
            imp = batch.importance[i, c, :n].tolist()
            rank = {j: r for r, j in enumerate(importance_order(imp))}
            for j in range(n):
                tables.concepts.append(_row(
                    CONCEPT_COLUMNS, **base, concept=j, channels=int(batch.channels[i, c, j]),
                    importance=imp[j], rank=rank[j], predicted=int(batch.pred[i]),
                    p_target=float(batch.p_target[i])))
            if not s.n_sub or cfg not in s.details:
                continue
            f = s.details.index(cfg)
            for j in range(n):
                for q in range(s.n_sub):
                    ch = int(batch.sub_channels[i, f, j, q])
                    if ch:
                        tables.sub_concepts.append(_row(
                            SUB_CONCEPT_COLUMNS, **base, concept=j, sub_concept=q, channels=ch,
                            importance=float(batch.sub_importance[i, f, j, q]),
                            parent_channels=int(batch.channels[i, c, j]), parent_importance=imp[j]))
    return tables


def fidelity_rows(configs: Sequence[ConceptConfig], batch: ConceptBatch, names: Sequence[str]) -> list[Row]:
    """One row per image x configuration x order (:data:`CONCEPT_FIDELITY_COLUMNS`)."""
    rows = []
    for i, name in enumerate(names):
        for c, cfg in enumerate(configs):
            for o, order in enumerate(ORDERS):
                rows.append(_row(CONCEPT_FIDELITY_COLUMNS, image=name, **{"class": int(batch.y[i])},
                                 **ConceptConfig(*cfg)._asdict(), order=order,
                                 **{auc: float(batch.fidelity_auc[auc][i, c, o]) for auc in FIDELITY_AUCS}))
    return rows


def concept_truth_rows(configs: Sequence[ConceptConfig], batch: ConceptBatch) -> list[Row]:
    """Per configuration x partition (found concepts / random channel partitions), each
    score's mean over images (NaN images left out); ``n_images`` the images scored."""
    rows = []
    for c, cfg in enumerate(configs):
        for p, part in enumerate(PARTITIONS):
            vals = {t: finite_mean_std(batch.truth[t][:, c, p])[0] for t in TRUTH_SCORES}
            n = int(torch.isfinite(batch.truth["class_part_mass"][:, c, p]).sum())
            rows.append(_row(CONCEPT_TRUTH_COLUMNS, **ConceptConfig(*cfg)._asdict(), partition=part,
                             **vals, n_images=n))
    return rows


def validation_tables(configs: Sequence[ConceptConfig], batch: ConceptBatch,
                      names: Sequence[str]) -> dict[str, tuple[list[Row], tuple[str, ...]]]:
    """File name -> (rows, columns) of the checks the batch holds: :data:`CONCEPT_FIDELITY`
    (when fidelity ran) and :data:`CONCEPT_TRUTH` (when the data has part masks)."""
    tables = {}
    if batch.fidelity_auc is not None:
        tables[CONCEPT_FIDELITY] = (fidelity_rows(configs, batch, names), CONCEPT_FIDELITY_COLUMNS)
    if batch.truth is not None:
        tables[CONCEPT_TRUTH] = (concept_truth_rows(configs, batch), CONCEPT_TRUTH_COLUMNS)
    return tables


# -- class-level concepts ---------------------------------------------------------------------------
def class_concept_rows(concepts: ClassConcepts, scores: ClassConceptScores, method: str, algorithm: str,
                       class_names: Sequence[str] | Mapping[int, str] | None = None) -> list[Row]:
    """Rows of :data:`CLASS_CONCEPT_COLUMNS` per group and concept (by decreasing size). NMF
    rows: method :data:`NMF_METHOD`, algorithm ``<method>/<algorithm>`` (the partitions
    their stability is measured in)."""
    s, counts = scores.summary(), concepts.counts()
    m, a = (NMF_METHOD, f"{method}/{algorithm}") if concepts.source == "nmf" else (method, algorithm)
    rows = []
    for r, g in enumerate(concepts.groups):
        for j in range(concepts.n_concepts):
            rows.append(_row(CLASS_CONCEPT_COLUMNS, **{"class": g}, class_name=group_name(g, class_names),
                             method=m, algorithm=a, concept=j, channels=int(counts[r, j]),
                             stability=float(s["stability"][r, j]), importance=float(s["importance"][r, j]),
                             importance_std=float(s["importance_std"][r, j]),
                             n_images=int(concepts.n_images[r])))
    return rows


def class_truth_rows(scores: Mapping[str, ClassConceptScores | Sequence[ClassConceptScores]], method: str,
                     algorithm: str) -> list[Row]:
    """Rows of :data:`CLASS_CONCEPTS_TRUTH_COLUMNS` per group and source
    (:func:`~clustercam.explain.concepts.classes.scores.truth_by_group`)."""
    return [_row(CLASS_CONCEPTS_TRUTH_COLUMNS, **{"class": g}, method=method, algorithm=algorithm,
                 source=source, **vals)
            for g, source, vals in truth_by_group(scores)]


def class_run_rows(run: ClassConceptRun, class_names: Sequence[str] | None = None) -> list[Row]:
    """Every class-concept row of a run: co-association then NMF, per configuration."""
    return [row for cfg, _, c, sc in run.scored()
            for row in class_concept_rows(c, sc, cfg.method, cfg.algorithm, class_names)]


def class_run_truth_rows(run: ClassConceptRun) -> list[Row]:
    """Every row against the parts of a run (empty unless it was scored with part masks)."""
    return [_row(CLASS_CONCEPTS_TRUTH_COLUMNS, **{"class": g}, method=cfg.method, algorithm=cfg.algorithm,
                 source=source, **vals)
            for cfg, g, source, vals in run.truth()]
