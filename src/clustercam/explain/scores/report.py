"""The scoring pipeline: every map method's deletion / insertion curves and, with masks, its
localisation, for a clustered set of samples, as one function a notebook can call."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.explain.assignments import ASSIGNMENTS, spread_temperature
from clustercam.explain.hooks import embed
from clustercam.explain.scores.baselines import BASELINES
from clustercam.explain.scores.curves import (
    PerturbationCurves,
    deletion_insertion,
    summarise_curves,
)
from clustercam.explain.scores.localisation import localisation_scores
from clustercam.explain.scores.methods import (
    METHODS,
    MapMethod,
    MethodSpec,
    explanation_maps,
    resolve_methods,
)

log = logging.getLogger(__name__)

SCORES_COLUMNS = ("method", "cluster", "deletion_auc", "insertion_auc", "n_samples",
                  "deletion_hard_auc", "insertion_hard_auc", "baseline_share")
LOCALISATION_COLUMNS = ("method", "pointing_game", "relevance_mass", "auroc", "n_samples",
                        "mask_fraction")
AUC_KEYS = ("deletion_auc", "insertion_auc", "deletion_hard_auc", "insertion_hard_auc")


@dataclass
class ScoreReport:
    """What :func:`score_explanations` measured.

    ``rows``: per method, one row per cluster, ``all`` and ``excl_baseline`` (columns
    ``SCORES_COLUMNS``); ``localisation``: per method (``LOCALISATION_COLUMNS``, only with
    masks); ``curves``: per method, the :class:`PerturbationCurves`; ``results``: flat
    ``scores/<method>/<score>`` numbers; ``temperature`` and ``baseline`` as used.
    """

    rows: list[dict[str, Any]]
    localisation: list[dict[str, Any]]
    curves: dict[str, PerturbationCurves]
    results: dict[str, float]
    temperature: float
    baseline: str | float
    seconds: dict[str, float] = field(default_factory=dict)


def typical_temperature(encoder: nn.Module, x: Tensor, centroids: Tensor, batch_size: int = 512) -> float:
    """:func:`spread_temperature` of ``x``'s embeddings (when no k-means inertia is at hand)."""
    return spread_temperature(embed(encoder, x, batch_size), centroids)


def check_score_settings(steps: int, baseline: str | float, assignment: str,
                         temperature: float | str) -> None:
    """Early, named errors for the scoring settings (the callback checks them at setup)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(baseline, str) and baseline not in (*BASELINES, "auto"):
        raise ValueError(f"unknown baseline {baseline!r}; choose auto, {', '.join(BASELINES)} or a number")
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {assignment!r}; choose one of {ASSIGNMENTS}")
    if temperature != "auto" and not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"temperature must be 'auto' or a number > 0, got {temperature!r}")


def score_explanations(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    clusters: Tensor,
    centroids: Tensor,
    masks: Tensor | None = None,
    methods: Sequence[MethodSpec] | Mapping[str, MapMethod] = METHODS,
    steps: int = 10,
    baseline: str | float = "auto",
    blur_sigma: float | None = None,
    assignment: str = "softmax",
    temperature: float | str = "auto",
    alpha: float = 1.0,
    spread: float | None = None,
    gradceam_temperature: float = 1.0,
    seed: int = 0,
    smooth: bool = False,
    batch_size: int = 512,
    maps_batch_size: int = 256,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    all_clusters: bool = False,
) -> ScoreReport:
    """Deletion / insertion AUCs of every method's map of each sample's own cluster, and the
    pointing game, relevance mass and AUROC against ``masks`` when given.

    ``clusters`` (N): each sample's cluster. ``baseline``: ``auto`` = zero for series, a
    blurred copy for images. ``temperature``: of the softmax assignment on the curves;
    ``auto`` = ``spread`` (k-means inertia / N) or, without it, the spread of x's embeddings.
    ``gradceam_temperature``: for ``gradceam_assignment`` maps. ``method_options``: settings
    per method (e.g. ``{"occlusion": {"window": 8}}``). ``all_clusters``: every method computes
    the maps of all K clusters (its one-pass form where it has one) and is scored on each
    sample's own, so ``scores/<method>/map_seconds`` is the time for N samples x K clusters;
    otherwise it is the time for each sample's own cluster. ``scores/<method>/score_seconds``:
    the time of its curves and localisation.

    Example:
        >>> import torch
        >>> from clustercam.explain import score_explanations
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> enc = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3).encoder.eval()
        >>> x = torch.randn(8, 1, 32)
        >>> mu = enc(x[:2]).detach()
        >>> rep = score_explanations(enc, "features", x, torch.tensor([0, 1] * 4), mu,
        ...                          methods=["random", "gradceam_assignment"], steps=4)
        >>> sorted({r["method"] for r in rep.rows}), "scores/random/deletion_auc" in rep.results
        (['gradceam_assignment', 'random'], True)
    """
    check_score_settings(steps, baseline, assignment, temperature)
    clusters = torch.as_tensor(clusters, dtype=torch.long).flatten()
    k = centroids.shape[0]
    if temperature == "auto":
        temperature = spread if spread is not None else typical_temperature(encoder, x, centroids)
        if not temperature > 0:  # a collapsed embedding: every sample on its centroid
            temperature = 1.0
    if baseline == "auto":
        baseline = "zero" if x.dim() == 3 else "blur"
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    loc_rows: list[dict[str, Any]] = []
    curves: dict[str, PerturbationCurves] = {}
    seconds: dict[str, float] = {}
    score_seconds: dict[str, float] = {}
    for name, method in resolve_methods(methods, method_options).items():
        t1 = time.perf_counter()
        m = explanation_maps(encoder, target_layer, x, centroids, clusters, {name: method},
                             seed=seed, temperature=gradceam_temperature, smooth=smooth,
                             batch_size=maps_batch_size, all_clusters=all_clusters)[name]
        seconds[name] = time.perf_counter() - t1
        if all_clusters:
            m = m[torch.arange(len(clusters)), clusters]
        curves[name] = deletion_insertion(
            encoder, x, m, centroids, clusters=clusters, steps=steps, baseline=baseline,
            blur_sigma=blur_sigma, assignment=assignment, temperature=float(temperature),
            alpha=alpha, batch_size=batch_size, seed=seed)
        rows += summarise_curves(name, curves[name], k)
        if masks is not None:
            loc_rows.append({"method": name, **localisation_scores(m, masks)})
        score_seconds[name] = time.perf_counter() - t1 - seconds[name]
        log.info("  %s: maps %.1f s, scores %.1f s", name, seconds[name], score_seconds[name])
    results: dict[str, float] = {}
    for r in rows:
        if r["cluster"] in ("all", "excl_baseline"):
            suffix = "" if r["cluster"] == "all" else "_excl_baseline"
            for key in AUC_KEYS:
                results[f"scores/{r['method']}/{key}{suffix}"] = r[key]
    for r in loc_rows:
        for key in ("pointing_game", "relevance_mass", "auroc"):
            results[f"scores/{r['method']}/{key}"] = r[key]
    for name, s in seconds.items():
        results[f"scores/{name}/map_seconds"] = s
        results[f"scores/{name}/score_seconds"] = score_seconds[name]
    results["scores/all_clusters"] = float(all_clusters)
    results["scores/n_clusters"] = k
    results["scores/n_samples"] = len(x)
    results["scores/temperature"] = float(temperature)
    results["scores/seconds"] = time.perf_counter() - t0
    return ScoreReport(rows, loc_rows, curves, results, float(temperature), baseline, seconds)


def scores_table(report: ScoreReport) -> str:
    """Plain text: the ``all`` and ``excl_baseline`` rows, then localisation if any."""
    lines = [f"{'method':<22} {'samples':<14} {'del AUC':>8} {'ins AUC':>8} {'del hard':>9} "
             f"{'ins hard':>9} {'n':>5}"]
    for r in report.rows:
        if r["cluster"] in ("all", "excl_baseline"):
            lines.append(f"{r['method']:<22} {r['cluster']:<14} {r['deletion_auc']:>8.3f} "
                         f"{r['insertion_auc']:>8.3f} {r['deletion_hard_auc']:>9.3f} "
                         f"{r['insertion_hard_auc']:>9.3f} {r['n_samples']:>5}")
    if report.localisation:
        lines.append(f"{'method':<22} {'pointing':>8} {'rel.mass':>8} {'AUROC':>9}")
        for r in report.localisation:
            lines.append(f"{r['method']:<22} {r['pointing_game']:>8.3f} {r['relevance_mass']:>8.3f} "
                         f"{r['auroc']:>9.3f}")
    return "\n".join(lines)

