"""The concept run's markdown summary (:data:`~clustercam.outputs.contract.CONCEPT_SUMMARY`).

The paper's Tables 1-2 from concept-metric rows (Table 1: method x algorithm, Table 2:
method x n_concepts; means per class, then over classes, with the paper's values beside
them), then the fidelity, ground-truth and painting-out tables of a run and its class
concepts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from clustercam.explain.concepts.image.batch import ConceptBatch
from clustercam.explain.concepts.summary import (
    class_means,
    finite_mean_std,
    finite_median,
    frame,
    overall_means,
)
from clustercam.explain.concepts.vocabulary import (
    CLASS_TRUTH_SCORES,
    CONCEPT_METRIC_NAMES,
    FIDELITY_AUCS,
    ORDERS,
    PAINT_COLUMNS,
    TRUTH_SCORES,
)
from clustercam.outputs.concept_results import class_results
from clustercam.outputs.concept_tables import concept_truth_rows
from clustercam.outputs.contract import CLASS_CONCEPTS, CLASS_CONCEPTS_TRUTH

ALGO_ORDER = ("agglomerative", "birch", "gmm", "kmeans")  # the paper's row order (A, B, G, k)
SOURCE_ORDER = {"coassociation": 0, "nmf": 1, "random": 2}

# the paper's values (mean over its 11 classes) for side-by-side comparison
PAPER_TABLE1 = {
    ("cgap", "agglomerative"): (0.61, 398.70, 1.00, 0.14),
    ("cgap", "birch"): (0.62, 398.14, 0.97, 0.22),
    ("cgap", "gmm"): (-0.03, 111.39, 1.84, 0.73),
    ("cgap", "kmeans"): (0.64, 441.05, 0.97, 0.20),
    ("cpha", "agglomerative"): (0.41, 892.39, 0.84, 0.14),
    ("cpha", "birch"): (0.37, 724.83, 0.90, 0.22),
    ("cpha", "gmm"): (0.32, 564.51, 1.41, 0.73),
    ("cpha", "kmeans"): (0.43, 948.69, 0.84, 0.20),
}
PAPER_TABLE2 = {
    ("cgap", 3): (0.75, 966.00, 0.72), ("cgap", 5): (0.64, 441.05, 0.97),
    ("cgap", 7): (0.57, 288.34, 1.10), ("cgap", 9): (0.52, 218.93, 1.17),
    ("cpha", 3): (0.43, 900.18, 0.85), ("cpha", 5): (0.43, 948.69, 0.84),
    ("cpha", 7): (0.44, 979.13, 0.83), ("cpha", 9): (0.46, 1018.18, 0.81),
}


def _num(v: Any, digits: int) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if math.isnan(f) else f"{f:.{digits}f}"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return lines


def _algo_key(a: str) -> tuple[int, str]:
    return (ALGO_ORDER.index(a) if a in ALGO_ORDER else len(ALGO_ORDER), a)


def _metric_cells(r: Mapping[str, Any]) -> list[str]:
    """SS, CHI, DBI, Time (s): the metrics in their order, CHI with 2 digits."""
    return [_num(r[m], 2 if m == "calinski_harabasz" else 3) for m in CONCEPT_METRIC_NAMES]


def summary_markdown(rows: pd.DataFrame | Iterable[Mapping[str, Any]], title: str = "Concept clustering") -> str:
    """The Tables 1-2 part of :data:`CONCEPT_SUMMARY` from concept-metric rows (one run's
    or every run of a multirun)."""
    df = frame(rows)
    lines = [f"# {title}", ""]
    if df.empty:
        return "\n".join([*lines, "No concept metrics.", ""])
    overall = overall_means(df)
    n_classes = df["class"].nunique()
    lines += [f"{len(df)} rows, {n_classes} classes. Means per class, then over classes; "
              "`degenerate` counts images with NaN metrics (left out of the means).", ""]

    # Table 1: method x algorithm, one table per n_concepts (5 first, as the paper)
    ns = sorted(overall["n_concepts"].unique(), key=lambda n: (n != 5, n))
    for n in ns:
        sub = overall[overall["n_concepts"] == n]
        body = []
        for method in sorted(sub["method"].unique()):
            for algo in sorted(sub[sub["method"] == method]["algorithm"].unique(), key=_algo_key):
                r = sub[(sub["method"] == method) & (sub["algorithm"] == algo)].iloc[0]
                paper = PAPER_TABLE1.get((method, algo)) if n == 5 else None
                ref = " / ".join(_num(v, 2) for v in paper) if paper else ""
                body.append([method.upper(), algo, *_metric_cells(r), str(int(r["images"])),
                             str(int(r["degenerate"])), ref])
        lines += [f"## Table 1: method x algorithm, n_concepts = {n} (mean over classes)", ""]
        lines += _md_table(["Method", "Cls", "SS", "CHI", "DBI", "Time (s)", "images",
                            "degenerate", "paper SS / CHI / DBI / Time"], body)
        lines.append("")

    # Table 2: method x n_concepts, one table per algorithm (k-means first, as the paper)
    for algo in sorted(overall["algorithm"].unique(), key=lambda a: (a != "kmeans", _algo_key(a))):
        sub = overall[overall["algorithm"] == algo]
        body = []
        for method in sorted(sub["method"].unique()):
            for n in sorted(sub[sub["method"] == method]["n_concepts"].unique()):
                r = sub[(sub["method"] == method) & (sub["n_concepts"] == n)].iloc[0]
                paper = PAPER_TABLE2.get((method, int(n))) if algo == "kmeans" else None
                ref = " / ".join(_num(v, 2) for v in paper) if paper else ""
                body.append([method.upper(), str(int(n)), *_metric_cells(r)[:3],
                             str(int(r["images"])), str(int(r["degenerate"])), ref])
        lines += [f"## Table 2: {algo}, method x n_concepts (mean over classes)", ""]
        lines += _md_table(["Method", "N_concept", "SS", "CHI", "DBI", "images", "degenerate",
                            "paper SS / CHI / DBI"], body)
        lines.append("")

    # per class
    per_class = class_means(df)
    name_col = "class_name" if "class_name" in df.columns else None
    names = (df.drop_duplicates("class").set_index("class")[name_col].to_dict() if name_col else {})
    body = [[r["method"].upper(), r["algorithm"], str(int(r["n_concepts"])),
             f"{r['class']}" + (f" {names.get(r['class'], '')}" if names else ""),
             *_metric_cells(r), str(int(r["images"]))]
            for _, r in per_class.sort_values(["method", "algorithm", "n_concepts", "class"]).iterrows()]
    lines += ["## Per class", ""]
    lines += _md_table(["Method", "Cls", "N_concept", "class", "SS", "CHI", "DBI", "Time (s)", "images"], body)
    lines.append("")
    return "\n".join(lines)


def _f(v: float, digits: int = 3) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.{digits}f}"


def validation_markdown(configs: Sequence[tuple[str, str, int]], batch: ConceptBatch) -> str:
    """The fidelity, ground-truth and painting-out tables of a run (those the batch holds)."""
    out: list[str] = []
    if batch.fidelity_auc is not None:
        out += ["## Concept fidelity", "",
                "Deletion / insertion of whole concepts in importance order vs random orders and "
                "random channel groups of the same sizes (mean ± std over images, median in brackets: "
                "the curves are p_t ratios, unbounded for images the model is unsure of; deletion: "
                "lower is more faithful, insertion: higher).", "",
                "| method | algorithm | n | " + " | ".join(f"deletion {o}" for o in ORDERS) + " | "
                + " | ".join(f"insertion {o}" for o in ORDERS) + " |",
                "|" + "---|" * (3 + 2 * len(ORDERS))]
        for c, (method, algo, n) in enumerate(configs):
            cells = []
            for auc in FIDELITY_AUCS:
                for o in range(len(ORDERS)):
                    values = batch.fidelity_auc[auc][:, c, o]
                    m, s, _ = finite_mean_std(values)
                    cells.append(f"{_f(m)} ± {_f(s)} ({_f(finite_median(values))})")
            out.append(f"| {method.upper()} | {algo} | {n} | " + " | ".join(cells) + " |")
        out.append("")
    if batch.truth is not None:
        out += ["## Concepts against the parts", "",
                "Found concepts vs random channel partitions with the same sizes (means over "
                "images; `class_part_area` is the chance level of `class_part_mass`).", "",
                "| method | algorithm | n | partition | " + " | ".join(TRUTH_SCORES) + " | images |",
                "|" + "---|" * (5 + len(TRUTH_SCORES))]
        for r in concept_truth_rows(configs, batch):
            out.append(f"| {r['method'].upper()} | {r['algorithm']} | {r['n_concepts']} | "
                       f"{r['partition']} | " + " | ".join(_f(r[s]) for s in TRUTH_SCORES)
                       + f" | {r['n_images']} |")
        out.append("")
    if batch.paint_out is not None:
        out += ["## Input-space check", "",
                "Mean p_t and its drop when a region is painted out with the object-free "
                "background (a classifier that uses both parts drops for A and B, not for the "
                "distractor).", "", "| p_t | drop part A | drop part B | drop distractor |",
                "|---|---|---|---|",
                "| " + " | ".join(_f(finite_mean_std(batch.paint_out[k])[0]) for k in PAINT_COLUMNS) + " |", ""]
    return "\n".join(out)


def class_markdown(rows: Sequence[Mapping[str, Any]], truth: Sequence[Mapping[str, Any]]) -> str:
    """The class-concept section: mean stability / importance, and the table against the parts."""
    res = class_results(rows, [])
    lines = ["\n## Class concepts\n", f"Means over the classes (`{CLASS_CONCEPTS}`).\n",
             "| method | source | stability | importance |", "| --- | --- | --- | --- |"]
    for key in sorted({k.rsplit("/", 1)[0] for k in res}):
        _, m, src = key.split("/")
        lines.append(f"| {m} | {src} | {res[key + '/stability']:.3f} | {res[key + '/importance']:.2f} |")
    text = "\n".join(lines) + "\n"
    if truth:
        text += f"\nAgainst the parts (`{CLASS_CONCEPTS_TRUTH}`):\n\n" + class_truth_table([truth])
    return text


def class_truth_table(runs: Sequence[Sequence[Mapping[str, Any]]]) -> str:
    """The table of the class concepts against the parts over several runs (seeds), from
    their truth rows: per (method, algorithm, source), each run's mean over its classes (the
    dataset row left out), then mean +- std (ddof 1) over the runs. CSV strings or numbers."""
    per: dict[tuple[str, str, str], list[list[float]]] = {}
    for rows in runs:
        acc: dict[tuple[str, str, str], list[list[float]]] = {}
        for r in rows:
            if int(r["class"]) < 0:
                continue
            key = (str(r["method"]), str(r["algorithm"]), str(r["source"]))
            acc.setdefault(key, []).append([float(r[c]) for c in CLASS_TRUTH_SCORES])
        for key, vals in acc.items():
            t = torch.tensor(vals, dtype=torch.float64)
            ok = ~t.isnan()
            per.setdefault(key, []).append((t.nan_to_num(0.0).sum(0) / ok.sum(0).clamp_min(1)).tolist())
    lines = ["| method | algorithm | source | " + " | ".join(CLASS_TRUTH_SCORES) + " | runs |",
             "| --- | --- | --- | " + " | ".join("---" for _ in CLASS_TRUTH_SCORES) + " | --- |"]
    for key in sorted(per, key=lambda k: (k[0], k[1], SOURCE_ORDER.get(k[2], 9))):
        t = torch.tensor(per[key], dtype=torch.float64)
        mean = t.mean(0).tolist()
        std = t.std(0).tolist() if len(t) > 1 else [math.nan] * t.shape[1]
        cells = [f"{m:.3f} ± {s:.3f}" if len(t) > 1 else f"{m:.3f}" for m, s in zip(mean, std)]
        lines.append(f"| {' | '.join(key)} | {' | '.join(cells)} | {len(t)} |")
    return "\n".join(lines) + "\n"
