"""Means of the concept measurements as the paper takes them, and over finite values.

The clustering metrics (:data:`~clustercam.explain.concepts.vocabulary.CONCEPT_METRIC_NAMES`)
of per-image rows are averaged per class first, then over classes (the paper's "mean over
all labels", Tables 1-2); NaN (degenerate) images are left out and counted. Pure pandas on
metric rows: one run's or every run of a multirun.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.vocabulary import CONCEPT_METRIC_NAMES, ConceptConfig

CONFIG_KEYS = list(ConceptConfig._fields)  # method, algorithm, n_concepts


def frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Metric rows as a frame with numeric metrics (a user error if a needed column is missing)."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    needed = {"class", *CONFIG_KEYS, *CONCEPT_METRIC_NAMES}
    missing = needed - set(df.columns)
    if missing:
        raise UserError(f"concept metrics lack the columns {sorted(missing)}")
    for col in CONCEPT_METRIC_NAMES:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["n_concepts"] = df["n_concepts"].astype(int)
    return df


def class_means(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean of each metric per (method, algorithm, n_concepts, class), NaN images left out."""
    df = frame(rows)
    g = df.groupby([*CONFIG_KEYS, "class"], sort=True)
    out = g[list(CONCEPT_METRIC_NAMES)].mean()
    out["images"] = g.size()
    out["degenerate"] = g["silhouette"].apply(lambda s: int(s.isna().sum()))
    return out.reset_index()


def overall_means(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean over classes of the per-class means, per (method, algorithm, n_concepts)."""
    per_class = class_means(rows)
    g = per_class.groupby(CONFIG_KEYS, sort=True)
    out = g[list(CONCEPT_METRIC_NAMES)].mean()
    out["classes"] = g.size()
    out["images"] = g["images"].sum()
    out["degenerate"] = g["degenerate"].sum()
    return out.reset_index()


def finite_mean_std(values: Tensor) -> tuple[float, float, int]:
    """Mean, std (ddof 1; NaN for one value) and count of the finite values (NaN, NaN, 0 if none)."""
    ok = values[torch.isfinite(values)].double()
    if not len(ok):
        return math.nan, math.nan, 0
    return float(ok.mean()), float(ok.std()) if len(ok) > 1 else math.nan, len(ok)


def finite_median(values: Tensor) -> float:
    """Median of the non-NaN values (NaN if none). The fidelity curves are p_t ratios,
    unbounded above for an image the model is unsure of (p_t(h(A)) small), so a few such
    images can move the mean far past 1 (MNIST: 1.5 % of the images); the median is not
    moved by them."""
    ok = values[~torch.isnan(values)]
    return float(ok.double().quantile(0.5)) if len(ok) else math.nan
