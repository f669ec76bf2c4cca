"""Epoch-end clustering + Grad-CeAM + cardinality table, handed to files and loggers.

Validation epochs: gather the evaluated split's embeddings, fit k-means (a DCEC model: its
own centroids), log ``val/nmi``, ``val/ari``, ``val/acc``. Test epoch: ``test/*``, then (rank zero)
:func:`clustercam.explain.explain_clusters` and the outputs contract (``metrics.json``,
``cardinality.csv``, ``cardinality_summary.json``, ``assignments.csv``, ``figures/``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from clustercam import outputs
from clustercam.callbacks.config_names import cluster_explain_settings
from clustercam.callbacks.divergence import check_finite_embeddings
from clustercam.callbacks.gather import (
    eval_inputs,
    gather_split,
    number_of_clusters,
    target_layer_of,
)
from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.callbacks.model_clusters import cluster_split, clustering_results
from clustercam.exceptions import UserError
from clustercam.explain.clustering import KMeansResult, clustering_scores
from clustercam.explain.gradceam import ClusterExplainSettings, explain_clusters
from clustercam.explain.hooks import resolve_layer
from clustercam.explain.plots import explanation_figures
from clustercam.outputs.cluster_files import write_cluster_explanation

log = logging.getLogger(__name__)


class ClusterExplainCallback(Callback):
    """Cluster the evaluated split at epoch end and explain the clusters with Grad-CeAM.

    ``callbacks.cluster_explain`` in the configs. At test, after the module's validation
    logic, (rank zero) :func:`~clustercam.explain.explain_clusters` (channel weights, eq. 9;
    the cardinality table, eq. 12; figures, paper Fig. 7-11) goes to the run folder.

    Args:
        output_dir: the run folder.
        settings: a :class:`~clustercam.explain.ClusterExplainSettings` (Grad-CeAM target,
            cardinality normalisation, compared targets, figure members; default: its defaults).
        n_clusters: the k-means K (None: the datamodule's number of classes).
        n_init: k-means restarts at test time.
        val_n_init: k-means restarts for the per-epoch ``val/nmi``.
        seed: of k-means.
        figures: write the figures and ``heatmaps.npz`` (the members' maps).
        validate: cluster the evaluated split after every validation epoch.
        target_layer: the encoder module to explain, by dotted name (None: the model's).
        **options: fields of the settings (``target``, ``normalise``, ...) on top of
            ``settings``; the old names in ``config_names.OLD_CLUSTER_EXPLAIN_NAMES`` work for one release.

    Raises:
        UserError: an unknown setting or a value out of range (before training).

    Example:
        >>> from clustercam.callbacks.cluster_explain import ClusterExplainCallback
        >>> from clustercam.explain import ClusterExplainSettings
        >>> cb = ClusterExplainCallback("outputs/run", target="paper", n_examples=3, n_clusters=4)
        >>> cb.settings.target, cb.settings.n_examples, cb.n_clusters
        ('paper', 3, 4)
        >>> cb = ClusterExplainCallback("outputs/run", ClusterExplainSettings(compare_targets=["paper"]))
        >>> cb.mode, cb.settings.compare_targets
        ('reference', ('paper',))
    """

    def __init__(
        self,
        output_dir: str | Path,
        settings: ClusterExplainSettings | Mapping[str, Any] | None = None,
        *,
        n_clusters: int | None = None,
        n_init: int = 25,
        val_n_init: int = 5,
        seed: int = 0,
        figures: bool = True,
        validate: bool = True,
        target_layer: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.settings = cluster_explain_settings(settings, **options)
        if n_clusters is not None and n_clusters < 2:
            raise UserError(f"n_clusters must be >= 2 or null, got {n_clusters}")
        if n_init < 1 or val_n_init < 1:
            raise UserError(f"n_init and val_n_init must be >= 1, got {n_init}, {val_n_init}")
        self.target = self.settings.resolved_target
        self.mode = self.target.name
        self.output_dir = Path(output_dir)
        self.n_clusters, self.n_init, self.val_n_init, self.seed = n_clusters, n_init, val_n_init, seed
        self.figures, self.validate, self.target_layer = figures, validate, target_layer
        self._chunks: list[dict[str, Tensor]] = []
        self.results: dict[str, Any] = {}
        # the test epoch's k-means and the dataset indices of its rows (every rank), for
        # other callbacks that reuse the clustering (ExplanationScoresCallback)
        self.kmeans: KMeansResult | None = None
        self.test_index: Tensor | None = None

    # -- before any training step: the settings that depend on the data and the model ---------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the target layer and K against the model and data, before any training step."""
        resolve_layer(pl_module.encoder, self.layer(pl_module))
        k = number_of_clusters(trainer, self.n_clusters)
        dm = trainer.datamodule
        n = len(dm.eval_tensors()[0]) if hasattr(dm, "eval_tensors") else None
        if k is not None and n is not None and k > n:
            raise UserError(
                f"n_clusters = {k} is larger than the {n} samples of the evaluated split: set "
                "callbacks.cluster_explain.n_clusters (or data.max_samples) accordingly")

    def layer(self, pl_module: LightningModule) -> str:
        """The configured target layer, else the model's declared one."""
        return target_layer_of(pl_module, self.target_layer, "cluster_explain")

    # -- collecting -------------------------------------------------------------------------
    def _collect(self, out: Any) -> None:
        if isinstance(out, dict) and "z" in out:
            self._chunks.append({k: out[k] for k in ("z", "y", "idx")})

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start collecting the epoch's embeddings."""
        self._chunks = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        """Keep the batch's embeddings, labels and indices (not during the sanity check)."""
        if self.validate and not trainer.sanity_checking:
            self._collect(outputs_)

    def on_test_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        """Keep the batch's embeddings, labels and indices."""
        self._collect(outputs_)

    def _cluster(self, trainer: Trainer, pl_module: LightningModule, n_init: int
                 ) -> tuple[dict, KMeansResult, dict[str, float]]:
        data = gather_split(trainer, self._chunks)  # collective: every rank takes part
        self._chunks = []
        check_finite_embeddings(data["z"], "embeddings of the evaluated split")  # equal on every rank
        k = number_of_clusters(trainer, self.n_clusters) or int(data["y"].max()) + 1
        km = cluster_split(pl_module, data["z"], k, n_init, self.seed)  # a DCEC model's centroids
        # torchmetrics: each rank scores its share, the metric states are gathered (collective)
        scores = clustering_scores(data["y"], torch.from_numpy(km.labels), trainer.global_rank,
                                   trainer.world_size, pl_module.device)
        return data, km, scores

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """k-means of the gathered split; log ``val/nmi``, ``val/ari`` and ``val/acc``."""
        if not self.validate or trainer.sanity_checking or not self._chunks:
            return
        _, _, scores = self._cluster(trainer, pl_module, self.val_n_init)
        for name, value in scores.items():  # equal on every rank, so the mean over ranks is exact
            pl_module.log(f"val/{name}", value, prog_bar=name == "nmi", sync_dist=True)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """k-means and ``test/*`` scores; on rank zero, explain the clusters and write the outputs."""
        data, km, scores = self._cluster(trainer, pl_module, self.n_init)
        self.kmeans, self.test_index = km, data["idx"]
        for name, value in scores.items():
            pl_module.log(f"test/{name}", value, sync_dist=True)
        if trainer.is_global_zero:
            loss = trainer.callback_metrics.get("test/loss")
            self.results = {**scores, "recon_loss": float(loss) if loss is not None else math.nan,
                            "n_clusters": int(km.centroids.shape[0]), "n_samples": len(data["idx"]),
                            "inertia": km.inertia, "gradceam_mode": self.mode,
                            **clustering_results(pl_module)}
            self._explain(trainer, pl_module, data, km)

    # -- explaining (rank zero) ---------------------------------------------------------------
    def _explain(self, trainer: Trainer, pl_module: LightningModule, data: dict, km: KMeansResult) -> None:
        out, (x, _) = self.output_dir, eval_inputs(trainer, data["idx"])
        clusters = torch.from_numpy(km.labels)
        centroids = torch.from_numpy(km.centroids).float()
        log.info("Grad-CeAM (%s) for %d samples x %d clusters", self.mode, len(x), len(centroids))
        settings = self.settings if self.figures else replace(self.settings, n_examples=None)
        ex = explain_clusters(pl_module.encoder, self.layer(pl_module), x, centroids,
                              clusters=clusters, settings=settings)
        rows = write_cluster_explanation(out, ex, data["idx"], data["y"], clusters, x)
        self.results.update({f"cardinality_{k}": ex.summary[k] for k in ("median", "mean", "min", "max")})
        outputs.write_json(out / outputs.METRICS, self.results, merge=True)
        log_scalars(trainer, {f"test/{k}": v for k, v in self.results.items()})
        self.results["cardinality_rows"] = rows
        log_table(trainer, "test/cardinality", rows)
        if ex.by_mode:
            log_table(trainer, "test/cardinality_by_mode", ex.by_mode)
        if ex.member_maps is not None:
            paths = [outputs.save_figure(fig, out / outputs.FIGURES / f"{name}.png")
                     for name, fig in explanation_figures(x, data["y"], clusters, ex)]
            log_images(trainer, "figures/gradceam", paths, [p.stem for p in paths])
