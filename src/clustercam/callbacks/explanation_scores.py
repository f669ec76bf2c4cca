"""Score the cluster maps at the end of testing: deletion / insertion, and localisation.

It reuses the k-means of the ``ClusterExplainCallback`` when one is configured (the same
clusters as the Grad-CeAM figures and the cardinality table), otherwise it gathers the
embeddings and fits its own; it runs in ``on_test_end`` (after every callback's
``on_test_epoch_end``, so their order does not matter), on rank zero. Cost: 2 x steps encoder
passes per sample and method (Trace, 100 series, 6 methods, 10 steps: ~2 min on 2 CPU cores).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from clustercam import outputs
from clustercam.callbacks.cluster_explain import ClusterExplainCallback
from clustercam.callbacks.gather import (
    eval_inputs,
    gather_split,
    number_of_clusters,
    target_layer_of,
)
from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.callbacks.model_clusters import cluster_split
from clustercam.exceptions import UserError
from clustercam.explain.hooks import resolve_layer
from clustercam.explain.plots.scores import report_curves_figure
from clustercam.explain.scores import (
    ScoreReport,
    ScoreSettings,
    score_explanations,
    scores_table,
)
from clustercam.explain.settings import with_options
from clustercam.outputs.score_files import write_score_report

log = logging.getLogger(__name__)



class ExplanationScoresCallback(Callback):
    """Deletion / insertion AUCs for every map method, and localisation scores when masks exist.

    ``callbacks.explanation_scores`` (``callbacks=default_with_scores``):
    :func:`~clustercam.explain.score_explanations` on the test clustering, written to
    ``explanation_scores.csv``, ``localisation_scores.csv`` and ``metrics.json``.

    Args:
        output_dir: the run folder.
        settings: a :class:`~clustercam.explain.ScoreSettings` (the scoring options; default:
            its defaults).
        max_samples: score a seeded random subset of the evaluated split (None: all of it).
        n_clusters: the k-means K without a ``ClusterExplainCallback`` (None: the classes).
        n_init: k-means restarts without a ``ClusterExplainCallback``.
        localisation: score against ``eval_masks()`` when the datamodule has them.
        figures: write ``figures/deletion_insertion.png``.
        target_layer: the encoder module whose maps are scored (None: the
            ClusterExplainCallback's, else the model's).
        **options: fields of :class:`~clustercam.explain.ScoreSettings` (``methods``, ``steps``,
            ``baseline``, ...; what ``conf/callbacks/scores.yaml`` lists), on top of ``settings``.

    Raises:
        UserError: an unknown setting, method or value (before training).

    Example:
        >>> from clustercam.callbacks.explanation_scores import ExplanationScoresCallback
        >>> from clustercam.explain import ScoreSettings
        >>> cb = ExplanationScoresCallback("outputs/run", methods=["random", "gradceam_paper"],
        ...                                steps=4, max_samples=100)
        >>> cb.methods, cb.settings.steps
        (['random', 'gradceam_paper'], 4)
        >>> ExplanationScoresCallback("outputs/run", ScoreSettings(methods=["neon"])).methods
        ['neon']
    """

    def __init__(
        self,
        output_dir: str | Path,
        settings: ScoreSettings | Mapping[str, Any] | None = None,
        *,
        max_samples: int | None = None,
        n_clusters: int | None = None,
        n_init: int = 25,
        localisation: bool = True,
        figures: bool = True,
        target_layer: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.settings = with_options(ScoreSettings, settings, options, "callbacks.explanation_scores")
        self.methods = list(self.settings.resolved_methods())
        if max_samples is not None and max_samples < 1:
            raise UserError(f"max_samples must be >= 1 or null, got {max_samples}")
        self.output_dir = Path(output_dir)
        self.max_samples, self.seed = max_samples, self.settings.seed
        self.n_clusters, self.n_init, self.localisation, self.figures = n_clusters, n_init, localisation, figures
        self.target_layer = target_layer
        self._chunks: list[dict[str, Tensor]] = []
        self._own: dict[str, Tensor] | None = None
        self.results: dict[str, Any] = {}
        self.report: ScoreReport | None = None

    @staticmethod
    def _explainer(trainer: Trainer) -> ClusterExplainCallback | None:
        return next((cb for cb in trainer.callbacks if isinstance(cb, ClusterExplainCallback)), None)

    def _layer(self, trainer: Trainer, pl_module: LightningModule) -> str:
        ce = self._explainer(trainer)
        if self.target_layer or ce is None:
            return target_layer_of(pl_module, self.target_layer, "explanation_scores")
        return ce.layer(pl_module)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the target layer against the model, before any training step."""
        resolve_layer(pl_module.encoder, self._layer(trainer, pl_module))

    # -- the clustering: ClusterExplainCallback's, or our own ----------------------------
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start collecting the test embeddings (used without a ClusterExplainCallback)."""
        self._chunks, self._own = [], None

    def on_test_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        """Keep the batch's embeddings, labels and indices when there is no ClusterExplainCallback."""
        if self._explainer(trainer) is None and isinstance(outputs_, dict) and "z" in outputs_:
            self._chunks.append({k: outputs_[k] for k in ("z", "y", "idx")})

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Gather the collected embeddings across ranks (a collective)."""
        if self._explainer(trainer) is None:  # collective: every rank takes part
            self._own = gather_split(trainer, self._chunks)
        self._chunks = []

    def _clustering(self, trainer: Trainer, pl_module: LightningModule) -> tuple[Tensor, Tensor, Tensor, float]:
        """(dataset indices, cluster of each, centroids K x m, k-means inertia / N)."""
        ce = self._explainer(trainer)
        if ce is not None:
            if ce.kmeans is None or ce.test_index is None:
                raise RuntimeError("ClusterExplainCallback has no test clustering to reuse")
            km, idx = ce.kmeans, ce.test_index
        else:
            if self._own is None:
                raise RuntimeError("no test embeddings were collected: did the test loop run?")
            idx = self._own["idx"]
            k = number_of_clusters(trainer, self.n_clusters) or int(self._own["y"].max()) + 1
            km = cluster_split(pl_module, self._own["z"], k, self.n_init, self.seed)
        return (idx.long().cpu(), torch.from_numpy(km.labels).long(),
                torch.from_numpy(km.centroids).float(), km.inertia / max(len(idx), 1))

    # -- scoring (rank zero) -----------------------------------------------------------------
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """On rank zero: score the maps of the test clustering and write the outputs."""
        if not trainer.is_global_zero:
            return
        idx, clusters, centroids, spread = self._clustering(trainer, pl_module)
        ce = self._explainer(trainer)
        settings = self.settings
        if settings.gradceam_temperature is None:  # the Grad-CeAM figures' temperature, else 1
            settings = replace(settings, gradceam_temperature=ce.settings.temperature if ce is not None else 1.0)
        if self.max_samples is not None and len(idx) > self.max_samples:
            gen = torch.Generator().manual_seed(self.seed)
            keep = torch.randperm(len(idx), generator=gen)[: self.max_samples].sort().values
            idx, clusters = idx[keep], clusters[keep]
        x, _ = eval_inputs(trainer, idx)
        dm = trainer.datamodule
        masks = dm.eval_masks()[idx] if self.localisation and hasattr(dm, "eval_masks") else None
        log.info("explanation scores: %d samples x %d methods", len(x), len(self.methods))
        report = score_explanations(pl_module.encoder, self._layer(trainer, pl_module), x, centroids,
                                    clusters=clusters, masks=masks, spread=spread, settings=settings)
        self.write(report, trainer)

    def write(self, report: ScoreReport, trainer: Trainer | None = None) -> None:
        """Write one report: the CSV files, ``metrics.json``, the loggers and the figure.

        Args:
            report: what :func:`~clustercam.explain.score_explanations` returned.
            trainer: for the loggers (None: files only).
        """
        out = self.output_dir
        write_score_report(out, report)
        self.results, self.report = report.results, report
        log.info("explanation scores done in %.1f s:\n%s", report.results["scores/seconds"],
                 scores_table(report))
        if trainer is not None:
            log_scalars(trainer, {f"test/{k}": v for k, v in report.results.items()})
            log_table(trainer, "test/explanation_scores", report.rows)
            if report.localisation:
                log_table(trainer, "test/localisation_scores", report.localisation)
        if self.figures:
            fig = report_curves_figure(report.curves, self.settings.assignment)
            path = outputs.save_figure(fig, out / outputs.EXPLANATION_SCORES_FIGURE)
            if trainer is not None:
                log_images(trainer, "figures/explanation_scores", [path], [path.stem])
