"""Concept-clustering metrics in the layouts of the paper's Tables 1-2 (``concept_summary.md``).

Table 1: method x algorithm (mean over classes); Table 2: method x n_concepts. Means are
taken per class first, then over classes (the paper's "mean over all labels"); NaN
(degenerate) images are left out and counted. Pure pandas on metric rows: one run's or
every run of a multirun (``python -m clustercam.concept_summary``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

METRICS_FILE = "concept_metrics.csv"
SUMMARY_FILE = "concept_summary.md"
METRIC_COLUMNS = ("silhouette", "calinski_harabasz", "davies_bouldin", "seconds")
HEADERS = {"silhouette": "SS", "calinski_harabasz": "CHI", "davies_bouldin": "DBI", "seconds": "Time (s)"}
ALGO_ORDER = ("agglomerative", "birch", "gmm", "kmeans")  # the paper's row order (A, B, G, k)

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


def _frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    needed = {"class", "method", "algorithm", "n_concepts", *METRIC_COLUMNS}
    missing = needed - set(df.columns)
    if missing:
        raise ValueError(f"concept metrics lack the columns {sorted(missing)}")
    for col in METRIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["n_concepts"] = df["n_concepts"].astype(int)
    return df


def class_means(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean of each metric per (method, algorithm, n_concepts, class), NaN images left out."""
    df = _frame(rows)
    keys = ["method", "algorithm", "n_concepts", "class"]
    g = df.groupby(keys, sort=True)
    out = g[list(METRIC_COLUMNS)].mean()
    out["images"] = g.size()
    out["degenerate"] = g["silhouette"].apply(lambda s: int(s.isna().sum()))
    return out.reset_index()


def overall_means(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean over classes of the per-class means, per (method, algorithm, n_concepts)."""
    per_class = class_means(rows)
    keys = ["method", "algorithm", "n_concepts"]
    g = per_class.groupby(keys, sort=True)
    out = g[list(METRIC_COLUMNS)].mean()
    out["classes"] = g.size()
    out["images"] = g["images"].sum()
    out["degenerate"] = g["degenerate"].sum()
    return out.reset_index()


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
    return [_num(r["silhouette"], 3), _num(r["calinski_harabasz"], 2), _num(r["davies_bouldin"], 3),
            _num(r["seconds"], 3)]


def summary_markdown(rows: pd.DataFrame | Iterable[Mapping[str, Any]], title: str = "Concept clustering") -> str:
    """The whole ``concept_summary.md`` text from concept-metric rows (one or many runs)."""
    df = _frame(rows)
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
