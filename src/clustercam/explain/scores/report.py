"""The scoring pipeline, as one function a notebook can call.

For a clustered set of samples: every map method's deletion / insertion curves and, with
masks, its localisation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.explain.assignments import nearest, spread_temperature
from clustercam.explain.deprecation import reordered_parameters
from clustercam.explain.hooks import embed
from clustercam.explain.scores.curves import (
    PerturbationCurves,
    deletion_insertion,
    summarise_curves,
)
from clustercam.explain.scores.localisation import localisation_scores
from clustercam.explain.scores.methods import explanation_maps
from clustercam.explain.scores.settings import ScoreSettings
from clustercam.explain.settings import with_options

log = logging.getLogger(__name__)

SCORES_COLUMNS = ("method", "cluster", "deletion_auc", "insertion_auc", "n_samples",
                  "deletion_hard_auc", "insertion_hard_auc", "baseline_share")
"""The columns of :attr:`ScoreReport.rows` (``explanation_scores.csv``)."""
LOCALISATION_COLUMNS = ("method", "pointing_game", "relevance_mass", "auroc", "n_samples",
                        "mask_fraction")
"""The columns of :attr:`ScoreReport.localisation` (``localisation_scores.csv``)."""
AUC_KEYS = ("deletion_auc", "insertion_auc", "deletion_hard_auc", "insertion_hard_auc")


@dataclass
class ScoreReport:
    """What :func:`score_explanations` measured.

    Attributes:
        rows: per method, one row per cluster, one ``all`` and one ``excl_baseline`` row
            (the columns :data:`SCORES_COLUMNS`; :func:`summarise_curves`).
        localisation: one row per method (the columns :data:`LOCALISATION_COLUMNS`); empty
            without masks.
        curves: per method, the :class:`PerturbationCurves` of every sample.
        results: flat ``scores/<method>/<score>`` numbers (and the run's settings under
            ``scores/``), for ``metrics.json`` and the loggers.
        temperature: the softmax temperature the curves used.
        baseline: the baseline the curves used (``auto`` resolved).
        seconds: per method, the time of its maps.

    Example:
        >>> import torch
        >>> from clustercam.explain import score_explanations
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> x = torch.randn(6, 1, 16)
        >>> rep = score_explanations(enc, "1", x, enc(x[:2]).detach(), methods=["random"], steps=4)
        >>> [r["cluster"] for r in rep.rows][-2:], rep.baseline, tuple(rep.curves["random"].deletion.shape)
        (['all', 'excl_baseline'], 'zero', (6, 5))
    """

    rows: list[dict[str, Any]]
    localisation: list[dict[str, Any]]
    curves: dict[str, PerturbationCurves]
    results: dict[str, float]
    temperature: float
    baseline: str | float
    seconds: dict[str, float] = field(default_factory=dict)


def typical_temperature(encoder: nn.Module, x: Tensor, centroids: Tensor, batch_size: int = 512) -> float:
    """:func:`~clustercam.explain.assignments.spread_temperature` of x's embeddings.

    The softmax temperature of ``temperature="auto"`` when no k-means inertia is at hand.

    Args:
        encoder: maps x to embeddings N x m.
        x: N x C x L or N x C x H x W.
        centroids: K x m.
        batch_size: samples per encoder call.

    Returns:
        The mean squared distance of the embeddings to their nearest centroid.
    """
    return spread_temperature(embed(encoder, x, batch_size), centroids)


@reordered_parameters("encoder", "target_layer", "x", "clusters", "centroids", "masks", "methods", "steps",
                      "baseline", "blur_sigma", "assignment", "temperature", "alpha", "spread",
                      "gradceam_temperature", "seed", "smooth", "batch_size", "maps_batch_size",
                      "method_options", "all_clusters",
                      when=lambda args, kwargs: len(args) > 4 or (len(args) == 4 and "centroids" in kwargs))
def score_explanations(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    *,
    clusters: Tensor | None = None,
    masks: Tensor | None = None,
    spread: float | None = None,
    settings: ScoreSettings | Mapping[str, Any] | None = None,
    **options: Any,
) -> ScoreReport:
    """Score every method's map of each sample's own cluster: deletion / insertion, localisation.

    The deletion and insertion AUCs (:func:`deletion_insertion`), and the pointing game,
    relevance mass and AUROC against ``masks`` when given (:func:`localisation_scores`).
    ``scores/<method>/map_seconds`` is the time of a method's maps (N samples x K clusters with
    ``all_clusters``, else each sample's own cluster), ``scores/<method>/score_seconds`` the
    time of its curves and localisation.

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: the module (or its dotted name) the layer methods explain.
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        clusters: each sample's cluster (N); None: its nearest centroid.
        masks: ground-truth masks N x spatial for the localisation scores (None: none).
        spread: the k-means inertia / N, the softmax temperature of ``temperature="auto"``
            (None: the spread of x's embeddings).
        settings: a :class:`ScoreSettings` (default: its defaults).
        **options: fields of :class:`ScoreSettings` (``methods``, ``steps``, ``baseline``,
            ``temperature``, ``method_options``, ``all_clusters``, ...), on top of ``settings``.

    Returns:
        A :class:`ScoreReport`: rows per method and cluster, localisation rows, the curves
        and flat ``scores/<method>/<score>`` results.

    Raises:
        UserError: an unknown option, method or value (see :class:`ScoreSettings`).

    Example:
        >>> import torch
        >>> from clustercam.explain import ScoreSettings, score_explanations
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> enc = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3).encoder.eval()
        >>> x = torch.randn(8, 1, 32)
        >>> mu = enc(x[:2]).detach()
        >>> settings = ScoreSettings(methods=["random", "gradceam_assignment"], steps=4)
        >>> rep = score_explanations(enc, "features", x, mu, clusters=torch.tensor([0, 1] * 4),
        ...                          settings=settings)
        >>> sorted({r["method"] for r in rep.rows}), "scores/random/deletion_auc" in rep.results
        (['gradceam_assignment', 'random'], True)
    """
    s = with_options(ScoreSettings, settings, options, "score_explanations()")
    k = centroids.shape[0]
    clusters = (nearest(embed(encoder, x, s.batch_size), centroids) if clusters is None
                else torch.as_tensor(clusters, dtype=torch.long).flatten())
    temperature = s.temperature
    if temperature == "auto":
        temperature = spread if spread is not None else typical_temperature(encoder, x, centroids)
        if not temperature > 0:  # a collapsed embedding: every sample on its centroid
            temperature = 1.0
    baseline = s.baseline
    if baseline == "auto":
        baseline = "zero" if x.dim() == 3 else "blur"
    gradceam_temperature = 1.0 if s.gradceam_temperature is None else s.gradceam_temperature
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    loc_rows: list[dict[str, Any]] = []
    curves: dict[str, PerturbationCurves] = {}
    seconds: dict[str, float] = {}
    score_seconds: dict[str, float] = {}
    for name, method in s.resolved_methods().items():
        t1 = time.perf_counter()
        m = explanation_maps(encoder, target_layer, x, centroids, clusters=clusters,
                             methods={name: method}, seed=s.seed,
                             gradceam_temperature=gradceam_temperature, smooth=s.smooth,
                             batch_size=s.maps_batch_size, all_clusters=s.all_clusters)[name]
        seconds[name] = time.perf_counter() - t1
        if s.all_clusters:
            m = m[torch.arange(len(clusters)), clusters]
        curves[name] = deletion_insertion(
            encoder, x, m, centroids, clusters=clusters, steps=s.steps, baseline=baseline,
            blur_sigma=s.blur_sigma, assignment=s.assignment, temperature=float(temperature),
            alpha=s.alpha, batch_size=s.batch_size, seed=s.seed)
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
    for name, sec in seconds.items():
        results[f"scores/{name}/map_seconds"] = sec
        results[f"scores/{name}/score_seconds"] = score_seconds[name]
    results["scores/all_clusters"] = float(s.all_clusters)
    results["scores/n_clusters"] = k
    results["scores/n_samples"] = len(x)
    results["scores/temperature"] = float(temperature)
    results["scores/seconds"] = time.perf_counter() - t0
    return ScoreReport(rows, loc_rows, curves, results, float(temperature), baseline, seconds)


def scores_table(report: ScoreReport) -> str:
    """A report as plain text, for the log: the ``all`` and ``excl_baseline`` rows, then localisation.

    Args:
        report: what :func:`score_explanations` returned.

    Returns:
        A fixed-width table, one line per row.
    """
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

