"""Epoch-end clustering + Grad-CeAM + cardinality table, handed to files and loggers.

Validation epochs: gather the evaluated split's embeddings, fit k-means, log ``val/nmi``,
``val/ari``, ``val/acc``. Test epoch: the same as ``test/*``, then (rank zero only)
:func:`clustercam.explain.explain_clusters` and the outputs contract (``metrics.json``,
``cardinality.csv``, ``cardinality_summary.json``, ``assignments.csv``, ``figures/``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from clustercam import outputs
from clustercam.callbacks.gather import (
    eval_inputs,
    gather_split,
    number_of_clusters,
    target_layer_of,
)
from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.explain.clustering import KMeansResult, clustering_scores, fit_kmeans
from clustercam.explain.gradceam import MODES, GradCeAMTarget, explain_clusters, resolve_target
from clustercam.explain.hooks import resolve_layer
from clustercam.explain.plots import explanation_figures

log = logging.getLogger(__name__)


class ClusterExplainCallback(Callback):
    """Cluster the evaluated split at epoch end and explain the clusters with Grad-CeAM.

    ``n_clusters`` defaults to the datamodule's number of classes (set it for unlabelled
    data). ``mode``: a Grad-CeAM target name (``reference`` | ``paper`` | ``assignment``) or
    a :class:`GradCeAMTarget`; ``compare_modes``: more targets for ``cardinality_by_mode.csv``.
    ``target_layer``: the dotted name of the encoder module to explain (null: the model's
    declared ``target_layer``). ``cardinality_normalise``: ``minmax`` | ``raw``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        n_clusters: int | None = None,
        n_init: int = 25,
        val_n_init: int = 5,
        seed: int = 0,
        mode: str | GradCeAMTarget = "reference",
        temperature: float = 1.0,
        smooth: bool = False,
        cardinality_normalise: str = "minmax",
        n_examples: int = 5,
        chunk_size: int = 512,
        figures: bool = True,
        validate: bool = True,
        compare_modes: list[str | GradCeAMTarget] | None = None,
        target_layer: str | None = None,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.target = resolve_target(mode, temperature)
        bad = [m for m in (compare_modes or []) if isinstance(m, str) and m not in MODES]
        if bad:
            raise ValueError(f"unknown Grad-CeAM modes {bad} in compare_modes; choose from {MODES}")
        self.compare = [resolve_target(m, temperature) for m in (compare_modes or [])]
        if n_clusters is not None and n_clusters < 2:
            raise ValueError(f"n_clusters must be >= 2 or null, got {n_clusters}")
        if cardinality_normalise not in ("minmax", "raw"):
            raise ValueError(
                f"cardinality_normalise must be 'minmax' or 'raw', got {cardinality_normalise!r}")
        if n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {n_examples}")
        if n_init < 1 or val_n_init < 1:
            raise ValueError(f"n_init and val_n_init must be >= 1, got {n_init}, {val_n_init}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.output_dir = Path(output_dir)
        self.n_clusters, self.n_init, self.val_n_init, self.seed = n_clusters, n_init, val_n_init, seed
        self.mode, self.temperature, self.smooth = self.target.name, temperature, smooth
        self.cardinality_normalise, self.n_examples = cardinality_normalise, n_examples
        self.chunk_size, self.figures, self.validate = chunk_size, figures, validate
        self.target_layer = target_layer
        self._chunks: list[dict[str, Tensor]] = []
        self.results: dict[str, Any] = {}
        # the test epoch's k-means and the dataset indices of its rows (every rank), for
        # other callbacks that reuse the clustering (ExplanationScoresCallback)
        self.kmeans: KMeansResult | None = None
        self.test_index: Tensor | None = None

    # -- before any training step: the settings that depend on the data and the model ---------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        resolve_layer(pl_module.encoder, self.layer(pl_module))
        k = number_of_clusters(trainer, self.n_clusters)
        dm = trainer.datamodule
        n = len(dm.eval_tensors()[0]) if hasattr(dm, "eval_tensors") else None
        if k is not None and n is not None and k > n:
            raise ValueError(
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
        self._chunks = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        if self.validate and not trainer.sanity_checking:
            self._collect(outputs_)

    def on_test_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        self._collect(outputs_)

    def _cluster(self, trainer: Trainer, pl_module: LightningModule, n_init: int
                 ) -> tuple[dict, KMeansResult, dict[str, float]]:
        data = gather_split(trainer, self._chunks)  # collective: every rank takes part
        self._chunks = []
        k = number_of_clusters(trainer, self.n_clusters) or int(data["y"].max()) + 1
        km = fit_kmeans(data["z"].double().numpy(), k, n_init=n_init, seed=self.seed)
        # torchmetrics: each rank scores its share, the metric states are gathered (collective)
        scores = clustering_scores(data["y"], torch.from_numpy(km.labels), trainer.global_rank,
                                   trainer.world_size, pl_module.device)
        return data, km, scores

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.validate or trainer.sanity_checking or not self._chunks:
            return
        _, _, scores = self._cluster(trainer, pl_module, self.val_n_init)
        for name, value in scores.items():  # equal on every rank, so the mean over ranks is exact
            pl_module.log(f"val/{name}", value, prog_bar=name == "nmi", sync_dist=True)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data, km, scores = self._cluster(trainer, pl_module, self.n_init)
        self.kmeans, self.test_index = km, data["idx"]
        for name, value in scores.items():
            pl_module.log(f"test/{name}", value, sync_dist=True)
        if trainer.is_global_zero:
            loss = trainer.callback_metrics.get("test/loss")
            self.results = {**scores, "recon_loss": float(loss) if loss is not None else math.nan,
                            "n_clusters": int(km.centroids.shape[0]), "n_samples": len(data["idx"]),
                            "inertia": km.inertia, "gradceam_mode": self.mode}
            self._explain(trainer, pl_module, data, km)

    # -- explaining (rank zero) ---------------------------------------------------------------
    def _explain(self, trainer: Trainer, pl_module: LightningModule, data: dict, km: KMeansResult) -> None:
        out, (x, _) = self.output_dir, eval_inputs(trainer, data["idx"])
        labels = torch.from_numpy(km.labels)
        centroids = torch.from_numpy(km.centroids).float()
        log.info("Grad-CeAM (%s) for %d samples x %d clusters", self.mode, len(x), len(centroids))
        ex = explain_clusters(pl_module.encoder, self.layer(pl_module), x, centroids, labels,
                              mode=self.target, normalise=self.cardinality_normalise,
                              compare_modes=self.compare,
                              n_examples=self.n_examples if self.figures else None,
                              smooth=self.smooth, batch_size=self.chunk_size)
        rows = ex.table.rows()
        outputs.write_csv(out / outputs.CARDINALITY, rows, outputs.CARDINALITY_COLUMNS)
        outputs.write_json(out / outputs.CARDINALITY_SUMMARY, ex.summary)
        outputs.write_csv(out / outputs.ASSIGNMENTS,
                          ({"index": int(i), "label": int(t), "cluster": int(c)}
                           for i, t, c in zip(data["idx"], data["y"], labels)),
                          outputs.ASSIGNMENT_COLUMNS)
        self.results.update({f"cardinality_{k}": ex.summary[k] for k in ("median", "mean", "min", "max")})
        outputs.write_json(out / outputs.METRICS, self.results, merge=True)
        log_scalars(trainer, {f"test/{k}": v for k, v in self.results.items()})
        self.results["cardinality_rows"] = rows
        log_table(trainer, "test/cardinality", rows)
        if ex.by_mode:
            outputs.write_csv(out / outputs.CARDINALITY_BY_MODE, ex.by_mode, outputs.CARDINALITY_BY_MODE_COLUMNS)
            log_table(trainer, "test/cardinality_by_mode", ex.by_mode)
        if ex.member_maps is not None:
            maps, sel = ex.member_maps, ex.member_index
            outputs.write_npz(out / outputs.HEATMAPS, index=data["idx"][sel].numpy(),
                              heatmaps=maps.heatmaps.numpy(), raw=maps.raw.numpy(),
                              channel_weights=maps.channel_weights.numpy(), cluster=labels[sel].numpy(),
                              inputs=x[sel].numpy(), label=data["y"][sel].numpy(),
                              sizes=torch.bincount(labels, minlength=len(centroids)).numpy())
            paths = [outputs.save_figure(fig, out / outputs.FIGURES / f"{name}.png")
                     for name, fig in explanation_figures(x, data["y"], labels, ex)]
            log_images(trainer, "figures/gradceam", paths, [p.stem for p in paths])
