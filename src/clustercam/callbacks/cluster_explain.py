"""Epoch-end clustering + Grad-CeAM + cardinality table, written to files and loggers.

Validation epochs: gather the evaluated split's embeddings, fit k-means, log
``val/nmi``, ``val/ari``, ``val/acc``. Test epoch: the same as ``test/*``, then (rank
zero only) Grad-CeAM for every sample and cluster, the cardinality table, figures, and
the outputs contract (``metrics.json``, ``cardinality.csv``, ``cardinality_summary.json``,
``assignments.csv``, ``figures/``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from clustercam import outputs
from clustercam.callbacks.gather import gather_split
from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.clustering import KMeansResult, clustering_scores, fit_kmeans
from clustercam.explain.cardinality import cardinality
from clustercam.explain.gradceam import MODES, grad_ceam
from clustercam.explain.plots import cluster_members_figure, sample_all_clusters_figure

log = logging.getLogger(__name__)


class ClusterExplainCallback(Callback):
    """Cluster the evaluated split at epoch end and explain the clusters with Grad-CeAM.

    ``n_clusters`` defaults to the datamodule's number of classes (set it for unlabelled
    data). ``mode``: Grad-CeAM target (``reference`` | ``paper`` | ``assignment``).
    ``cardinality_normalise``: ``minmax`` (per sample over channels to [0, 2]) or ``raw``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        n_clusters: int | None = None,
        n_init: int = 25,
        val_n_init: int = 5,
        seed: int = 0,
        mode: str = "reference",
        temperature: float = 1.0,
        smooth: bool = False,
        cardinality_normalise: str = "minmax",
        n_examples: int = 5,
        chunk_size: int = 512,
        figures: bool = True,
        validate: bool = True,
        compare_modes: list[str] | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown Grad-CeAM mode {mode!r}; choose one of {MODES}")
        if n_clusters is not None and n_clusters < 2:
            raise ValueError(f"n_clusters must be >= 2 or null, got {n_clusters}")
        if cardinality_normalise not in ("minmax", "raw"):
            raise ValueError(
                f"cardinality_normalise must be 'minmax' or 'raw', got {cardinality_normalise!r}"
            )
        bad = [m for m in (compare_modes or []) if m not in MODES]
        if bad:
            raise ValueError(f"unknown Grad-CeAM modes {bad} in compare_modes; choose from {MODES}")
        if n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {n_examples}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.output_dir = Path(output_dir)
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.val_n_init = val_n_init
        self.seed = seed
        self.mode = mode
        self.temperature = temperature
        self.smooth = smooth
        self.cardinality_normalise = cardinality_normalise
        self.n_examples = n_examples
        self.chunk_size = chunk_size
        self.figures = figures
        self.validate = validate
        self.compare_modes = list(compare_modes or [])
        self._chunks: list[dict[str, Tensor]] = []
        self.results: dict[str, Any] = {}
        # the test epoch's k-means and the dataset indices of its rows (every rank), for
        # other callbacks that reuse the clustering (ExplanationScoresCallback)
        self.kmeans: KMeansResult | None = None
        self.test_index: Tensor | None = None

    # -- collecting ---------------------------------------------------------------------
    def _collect(self, outputs_: Any) -> None:
        if isinstance(outputs_, dict) and "z" in outputs_:
            self._chunks.append({k: outputs_[k] for k in ("z", "y", "idx")})

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._chunks = []

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._chunks = []

    def on_validation_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        if self.validate and not trainer.sanity_checking:
            self._collect(outputs_)

    def on_test_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        self._collect(outputs_)

    # -- clustering -----------------------------------------------------------------------
    def _k(self, trainer: Trainer, y: Tensor) -> int:
        if self.n_clusters is not None:
            return self.n_clusters
        dm = getattr(trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "num_classes"):
            return int(dm.num_classes)
        return int(y.max()) + 1

    def _cluster(self, trainer: Trainer, split: str, n_init: int) -> tuple[dict, KMeansResult, dict[str, float]]:
        data = gather_split(trainer, self._chunks)
        self._chunks = []
        z = data["z"].double().numpy()
        km = fit_kmeans(z, self._k(trainer, data["y"]), n_init=n_init, seed=self.seed)
        scores = clustering_scores(data["y"].numpy(), km.labels)
        return data, km, scores

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.validate or trainer.sanity_checking or not self._chunks:
            return
        _, _, scores = self._cluster(trainer, "val", self.val_n_init)
        for name, value in scores.items():  # identical on every rank: no sync needed
            pl_module.log(f"val/{name}", value, prog_bar=name == "nmi")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        data, km, scores = self._cluster(trainer, "test", self.n_init)
        self.kmeans, self.test_index = km, data["idx"]
        for name, value in scores.items():
            pl_module.log(f"test/{name}", value)
        if trainer.is_global_zero:
            loss = trainer.callback_metrics.get("test/loss")
            self.results = {
                **scores,
                "recon_loss": float(loss) if loss is not None else math.nan,
                "n_clusters": int(km.centroids.shape[0]),
                "n_samples": int(len(data["idx"])),
                "inertia": km.inertia,
                "gradceam_mode": self.mode,
            }
            self._explain(trainer, pl_module, data, km)

    # -- explaining (rank zero) -------------------------------------------------------------
    def _inputs(self, trainer: Trainer, idx: Tensor) -> Tensor:
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "eval_tensors"):
            raise RuntimeError(
                "ClusterExplainCallback needs a clustercam datamodule (with eval_tensors()) "
                "to read the inputs it explains"
            )
        x, _ = dm.eval_tensors()
        if len(idx) == len(x) and torch.equal(idx.cpu(), torch.arange(len(x))):
            return x  # the whole split in order: no copy (8,000 STL-10 images are 885 MB)
        return x[idx]

    def _explain(self, trainer: Trainer, pl_module: LightningModule, data: dict, km: KMeansResult) -> None:
        out = self.output_dir
        x = self._inputs(trainer, data["idx"])
        y = data["y"]
        labels = torch.from_numpy(km.labels)
        centroids = torch.from_numpy(km.centroids).float()
        encoder, layer = pl_module.encoder, pl_module.target_layer
        k = centroids.shape[0]
        log.info("Grad-CeAM (%s mode) for %d samples x %d clusters", self.mode, len(x), k)
        res = grad_ceam(encoder, layer, x, centroids, mode=self.mode, temperature=self.temperature,
                        batch_size=self.chunk_size, return_maps=False)
        card = cardinality(encoder, layer, x, centroids, res.channel_weights,
                           normalise=self.cardinality_normalise, batch_size=self.chunk_size)
        summary = {**card.summary(), "mode": self.mode, "normalise": self.cardinality_normalise}
        rows = card.rows()
        outputs.write_csv(out / outputs.CARDINALITY, rows, outputs.CARDINALITY_COLUMNS)
        outputs.write_json(out / outputs.CARDINALITY_SUMMARY, summary)
        outputs.write_csv(
            out / "assignments.csv",
            ({"index": int(i), "label": int(t), "cluster": int(c)}
             for i, t, c in zip(data["idx"], y, labels)),
            ["index", "label", "cluster"],
        )
        metrics = {**self.results, **{f"cardinality_{k_}": v for k_, v in summary.items()
                                       if k_ in ("median", "mean", "min", "max")}}
        outputs.write_json(out / outputs.METRICS, metrics, merge=True)
        self.results.update(metrics)
        self.results["cardinality_rows"] = rows
        log_scalars(trainer, {f"test/{k_}": v for k_, v in metrics.items()
                              if isinstance(v, int | float) and not isinstance(v, bool)})
        log_table(trainer, "test/cardinality", rows)
        if self.compare_modes:
            by_mode = self._compare_modes(encoder, layer, x, centroids, {self.mode: summary})
            outputs.write_csv(out / "cardinality_by_mode.csv", by_mode,
                              ["mode", "median", "mean", "min", "max", "empty_clusters"])
            log_table(trainer, "test/cardinality_by_mode", by_mode)
        if self.figures:
            paths = self._figures(x, y, labels, centroids, res.embeddings, encoder, layer)
            log_images(trainer, "figures/gradceam", paths, [p.stem for p in paths])

    def _compare_modes(self, encoder, layer, x, centroids, done: dict) -> list[dict[str, Any]]:
        """The cardinality summary for each Grad-CeAM target (README "Which Grad-CeAM target?")."""
        rows = []
        for mode in dict.fromkeys([self.mode, *self.compare_modes]):
            if mode not in done:
                res = grad_ceam(encoder, layer, x, centroids, mode=mode, temperature=self.temperature,
                                batch_size=self.chunk_size, return_maps=False)
                card = cardinality(encoder, layer, x, centroids, res.channel_weights,
                                   normalise=self.cardinality_normalise, batch_size=self.chunk_size)
                done[mode] = card.summary()
            rows.append({"mode": mode, **{k: done[mode][k] for k in
                                          ("median", "mean", "min", "max", "empty_clusters")}})
        return rows

    def _figures(self, x, y, labels, centroids, z, encoder, layer) -> list[Path]:
        fig_dir = self.output_dir / outputs.FIGURES
        k = centroids.shape[0]
        sizes = torch.bincount(labels, minlength=k)
        dist = torch.cdist(z.double(), centroids.double())
        chosen: list[Tensor] = []
        for c in range(k):
            members = (labels == c).nonzero().flatten()
            order = members[dist[members, c].argsort()]
            chosen.append(order[: self.n_examples])
        sel = torch.cat(chosen)
        if len(sel) == 0:
            return []
        maps = grad_ceam(encoder, layer, x[sel], centroids, mode=self.mode,
                         temperature=self.temperature, batch_size=self.chunk_size,
                         smooth=self.smooth)
        outputs.write_npz(
            fig_dir / "heatmaps.npz",
            index=sel.numpy(), heatmaps=maps.heatmaps.numpy(), raw=maps.raw.numpy(),
            channel_weights=maps.channel_weights.numpy(), cluster=labels[sel].numpy(),
        )
        paths: list[Path] = []
        start = 0
        for c in range(k):
            n_c = len(chosen[c])
            if n_c == 0:
                log.warning("cluster %d is empty: no member figure", c)
                continue
            rows = slice(start, start + n_c)
            members_y = y[sel[rows]]
            majority = int(torch.mode(y[labels == c]).values)
            fig = cluster_members_figure(
                x[sel[rows]], maps.heatmaps[rows, c], c, int(sizes[c]),
                labels=members_y.tolist(), majority=majority, mode=self.mode,
            )
            paths.append(outputs.save_figure(fig, fig_dir / f"cluster_{c}.png"))
            start += n_c
        first = 0  # the sample nearest its own centroid in the first non-empty cluster
        fig = sample_all_clusters_figure(
            x[sel[first]], maps.heatmaps[first], sizes.tolist(), int(labels[sel[first]]),
            label=int(y[sel[first]]), raw_max=maps.raw[first].flatten(1).amax(1).tolist(),
            mode=self.mode,
        )
        paths.append(outputs.save_figure(fig, fig_dir / "sample_all_clusters.png"))
        return paths


def summary_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """Plain-text cardinality table for the end-of-run printout."""
    lines = [f"{'cluster':>7} {'before':>7} {'after':>7} {'ratio':>7}"]
    for r in rows:
        ratio = r["ratio"]
        lines.append(f"{r['cluster']:>7} {r['before']:>7} {r['after']:>7} "
                     f"{'nan' if ratio is None or not np.isfinite(ratio) else f'{ratio:.2f}':>7}")
    lines.append("median {median:.2f}  mean {mean:.2f}  min {min:.2f}  max {max:.2f}".format(
        **{k: summary.get(k, math.nan) for k in ("median", "mean", "min", "max")}))
    return "\n".join(lines)
