"""Score the cluster heatmaps at the end of testing: deletion / insertion, and localisation.

For every method (a scattered random map, random blobs, the plain activation map,
Grad-CeAM ``paper``, ``reference``, ``assignment``) and every sample of the evaluated
split, the map of the
sample's own cluster is scored by deletion and insertion (``clustercam.explain.scores``);
when the datamodule knows where the signal is (``eval_masks()``, e.g. ``data=synthetic_cbf``)
the maps are also scored against the masks. Writes to the run directory:

- ``explanation_scores.csv``: method, cluster (``0..K-1``, ``all``, ``excl_baseline``),
  deletion_auc, insertion_auc, n_samples, deletion_hard_auc, insertion_hard_auc,
  baseline_share. ``excl_baseline`` leaves out the samples whose all-baseline input
  stays in their cluster (their curves cannot fall, whatever the map; on Trace the zero
  series lands in the cluster of half the test set), ``baseline_share`` is their share;
- ``localisation_scores.csv`` (only with masks): method, pointing_game, relevance_mass,
  auroc, n_samples, mask_fraction (the chance level of the first two);
- ``figures/deletion_insertion.png``: the mean curves per method;
- ``metrics.json`` (merged): ``scores/<method>/<score>`` for the ``all`` rows and
  ``scores/<method>/<score>_excl_baseline``,

and hands the tables and the figure to the loggers. It reuses the k-means of the
``ClusterExplainCallback`` when one is configured (same clusters as the Grad-CeAM
figures and the cardinality table), otherwise it gathers the embeddings and fits its
own. It runs in ``on_test_end``, after every callback's ``on_test_epoch_end``, so the
order of the callbacks does not matter; the work is on rank zero.

Switch it on with either of::

    python -m clustercam.train experiment=trace callbacks=default_with_scores
    python -m clustercam.train experiment=trace 'callbacks=[default,scores]'

(``experiment=synthetic_cbf`` and ``experiment=synthetic_shapes`` switch it on
themselves.) Settings: ``callbacks.explanation_scores.steps=20``,
``...max_samples=300`` (a seeded subset for big test sets), ``...baseline=mean``.
Cost: 2 x steps encoder passes per sample and method, batched; on 2 idle CPU cores the
ResNet CAE encodes about 75 (Trace, length 275) to 230 (CBF, 128) series a second, so
Trace (100 series, 6 methods, 10 steps) takes about 2 minutes and CBF's 900 series about
8 (``max_samples=300``: under 3); the MNIST CAE is far cheaper per image.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from clustercam import outputs
from clustercam.callbacks.cluster_explain import ClusterExplainCallback
from clustercam.callbacks.gather import gather_split
from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.clustering import fit_kmeans
from clustercam.explain.scores import (
    ASSIGNMENTS,
    BASELINES,
    METHODS,
    PerturbationCurves,
    deletion_insertion,
    explanation_maps,
    localisation_scores,
    mean_curves,
    spread_temperature,
    summarise_curves,
)

log = logging.getLogger(__name__)

SCORES = "explanation_scores.csv"
SCORES_COLUMNS = (
    "method", "cluster", "deletion_auc", "insertion_auc", "n_samples",
    "deletion_hard_auc", "insertion_hard_auc", "baseline_share",
)
LOCALISATION = "localisation_scores.csv"
LOCALISATION_COLUMNS = (
    "method", "pointing_game", "relevance_mass", "auroc", "n_samples", "mask_fraction",
)
FIGURE = "deletion_insertion.png"


class ExplanationScoresCallback(Callback):
    """Deletion / insertion AUCs for every method, and localisation scores when masks exist.

    ``methods``: any of ``random``, ``activation``, ``gradceam_paper``,
    ``gradceam_reference``, ``gradceam_assignment``. ``steps``: points on each curve
    minus one. ``baseline``: ``auto`` (zero for series, a blurred copy for images),
    ``zero``, ``mean``, ``blur`` or a number. ``assignment``: ``softmax`` (of
    -squared distance / ``temperature``) or ``student_t`` (DEC, with ``alpha``).
    ``temperature``: ``auto`` = the mean squared distance of a sample to its centroid
    (k-means inertia / N): the embedding's scale is arbitrary, and with T = 1 the soft
    assignment is uniform on a collapsed embedding and a 0/1 step (the hard curve again)
    on a spread-out one. ``gradceam_temperature``: for the ``gradceam_assignment`` maps
    (null: the ``ClusterExplainCallback``'s, else 1, as the Grad-CeAM figures).
    ``max_samples``: score a seeded random subset (null: all). ``n_clusters``/``n_init``
    only matter without a ``ClusterExplainCallback``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        methods: Sequence[str] = METHODS,
        steps: int = 10,
        baseline: str | float = "auto",
        blur_sigma: float | None = None,
        assignment: str = "softmax",
        temperature: float | str = "auto",
        alpha: float = 1.0,
        gradceam_temperature: float | None = None,
        max_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 512,
        maps_batch_size: int = 256,
        smooth: bool = False,
        n_clusters: int | None = None,
        n_init: int = 25,
        localisation: bool = True,
        figures: bool = True,
    ) -> None:
        super().__init__()
        methods = list(methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if isinstance(baseline, str) and baseline not in (*BASELINES, "auto"):
            raise ValueError(f"baseline must be 'auto', one of {BASELINES} or a number, got {baseline!r}")
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
        if temperature != "auto" and not (isinstance(temperature, int | float) and temperature > 0):
            raise ValueError(f"temperature must be 'auto' or > 0, got {temperature!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if gradceam_temperature is not None and not gradceam_temperature > 0:
            raise ValueError(f"gradceam_temperature must be > 0 or null, got {gradceam_temperature}")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or null, got {max_samples}")
        if n_clusters is not None and n_clusters < 2:
            raise ValueError(f"n_clusters must be >= 2 or null, got {n_clusters}")
        self.output_dir = Path(output_dir)
        self.methods = methods
        self.steps = steps
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.assignment = assignment
        self.temperature = temperature
        self.alpha = alpha
        self.gradceam_temperature = gradceam_temperature
        self.max_samples = max_samples
        self.seed = seed
        self.batch_size = batch_size
        self.maps_batch_size = maps_batch_size
        self.smooth = smooth
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.localisation = localisation
        self.figures = figures
        self._chunks: list[dict[str, Tensor]] = []
        self._own: dict[str, Tensor] | None = None
        self.results: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.localisation_rows: list[dict[str, Any]] = []

    # -- the clustering: ClusterExplainCallback's, or our own ----------------------------
    @staticmethod
    def _explainer(trainer: Trainer) -> ClusterExplainCallback | None:
        for cb in trainer.callbacks:
            if isinstance(cb, ClusterExplainCallback):
                return cb
        return None

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._chunks, self._own = [], None

    def on_test_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        if self._explainer(trainer) is None and isinstance(outputs_, dict) and "z" in outputs_:
            self._chunks.append({k: outputs_[k] for k in ("z", "y", "idx")})

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._explainer(trainer) is None:  # collective: every rank takes part
            self._own = gather_split(trainer, self._chunks)
        self._chunks = []

    def _clustering(self, trainer: Trainer) -> tuple[Tensor, Tensor, Tensor, float]:
        """(dataset indices, cluster of each, centroids K x m, mean squared distance of a
        sample to its centroid)."""
        ce = self._explainer(trainer)
        if ce is not None:
            if ce.kmeans is None or ce.test_index is None:
                raise RuntimeError("ClusterExplainCallback has no test clustering to reuse")
            km, idx = ce.kmeans, ce.test_index
        else:
            if self._own is None:
                raise RuntimeError("no test embeddings were collected: did the test loop run?")
            data = self._own
            k = self.n_clusters
            if k is None:
                dm = getattr(trainer, "datamodule", None)
                k = int(dm.num_classes) if dm is not None and hasattr(dm, "num_classes") else int(data["y"].max()) + 1
            km = fit_kmeans(data["z"].double().numpy(), k, n_init=self.n_init, seed=self.seed)
            idx = data["idx"]
        return (idx.long().cpu(), torch.from_numpy(km.labels).long(),
                torch.from_numpy(km.centroids).float(), km.inertia / max(len(idx), 1))

    # -- scoring (rank zero) -----------------------------------------------------------------
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "eval_tensors"):
            raise RuntimeError("ExplanationScoresCallback needs a clustercam datamodule (eval_tensors())")
        idx, labels, centroids, spread = self._clustering(trainer)
        ce = self._explainer(trainer)
        gradceam_t = self.gradceam_temperature
        if gradceam_t is None:
            gradceam_t = ce.temperature if ce is not None else 1.0
        x_all, _ = dm.eval_tensors()
        masks_all = dm.eval_masks() if self.localisation and hasattr(dm, "eval_masks") else None
        if self.max_samples is not None and len(idx) > self.max_samples:
            gen = torch.Generator().manual_seed(self.seed)
            keep = torch.randperm(len(idx), generator=gen)[: self.max_samples].sort().values
            idx, labels = idx[keep], labels[keep]
        x = x_all[idx]
        masks = None if masks_all is None else masks_all[idx]
        self.score(pl_module.encoder, pl_module.target_layer, x, labels, centroids, masks,
                   trainer, spread=spread, gradceam_temperature=gradceam_t)

    def score(
        self,
        encoder: torch.nn.Module,
        target_layer: torch.nn.Module | str,
        x: Tensor,
        labels: Tensor,
        centroids: Tensor,
        masks: Tensor | None = None,
        trainer: Trainer | None = None,
        spread: float | None = None,
        gradceam_temperature: float = 1.0,
    ) -> dict[str, Any]:
        """Compute, write and log every score for samples ``x`` of clusters ``labels``.

        ``spread``: the mean squared distance of a sample to its centroid (k-means inertia
        / N), the softmax temperature when ``temperature`` is ``auto``; None: computed
        from ``x``'s embeddings.
        """
        k = centroids.shape[0]
        temperature = self.temperature
        if temperature == "auto":
            temperature = spread if spread is not None else typical_temperature(encoder, x, centroids)
            if not temperature > 0:
                temperature = 1.0
        baseline = self.baseline
        if baseline == "auto":
            baseline = "zero" if x.dim() == 3 else "blur"
        t0 = time.perf_counter()
        log.info("explanation scores: %d samples x %d methods, %d steps, baseline %s, "
                 "%s temperature %.4g", len(x), len(self.methods), self.steps, baseline,
                 self.assignment, temperature)
        maps = explanation_maps(encoder, target_layer, x, centroids, labels, self.methods,
                                seed=self.seed, temperature=gradceam_temperature,
                                smooth=self.smooth, batch_size=self.maps_batch_size)
        curves: dict[str, PerturbationCurves] = {}
        rows: list[dict[str, Any]] = []
        loc_rows: list[dict[str, Any]] = []
        for method, m in maps.items():
            t1 = time.perf_counter()
            curves[method] = deletion_insertion(
                encoder, x, m, centroids, clusters=labels, steps=self.steps, baseline=baseline,
                blur_sigma=self.blur_sigma, assignment=self.assignment,
                temperature=temperature, alpha=self.alpha, batch_size=self.batch_size,
                seed=self.seed,
            )
            rows += summarise_curves(method, curves[method], k)
            if masks is not None:
                loc_rows.append({"method": method, **localisation_scores(m, masks)})
            log.info("  %s: %.1f s", method, time.perf_counter() - t1)
        out = self.output_dir
        outputs.write_csv(out / SCORES, rows, SCORES_COLUMNS)
        if loc_rows:
            outputs.write_csv(out / LOCALISATION, loc_rows, LOCALISATION_COLUMNS)
        results: dict[str, Any] = {}
        for r in rows:
            if r["cluster"] in ("all", "excl_baseline"):
                suffix = "" if r["cluster"] == "all" else "_excl_baseline"
                for key in ("deletion_auc", "insertion_auc", "deletion_hard_auc", "insertion_hard_auc"):
                    results[f"scores/{r['method']}/{key}{suffix}"] = r[key]
        for r in loc_rows:
            for key in ("pointing_game", "relevance_mass", "auroc"):
                results[f"scores/{r['method']}/{key}"] = r[key]
        results["scores/n_samples"] = len(x)
        results["scores/temperature"] = float(temperature)
        results["scores/seconds"] = time.perf_counter() - t0
        outputs.write_json(out / outputs.METRICS, results, merge=True)
        self.results, self.rows, self.localisation_rows = results, rows, loc_rows
        log.info("explanation scores done in %.1f s:\n%s", results["scores/seconds"], scores_table(rows, loc_rows))
        if trainer is not None:
            log_scalars(trainer, {f"test/{key}": v for key, v in results.items()
                                  if isinstance(v, int | float) and math.isfinite(v)})
            log_table(trainer, "test/explanation_scores", rows)
            if loc_rows:
                log_table(trainer, "test/localisation_scores", loc_rows)
        if self.figures:
            informative = any(bool(c.informative.any()) for c in curves.values())
            fig = curves_figure(mean_curves(curves, informative_only=informative), self.assignment,
                                "samples whose all-baseline input leaves their cluster"
                                if informative else "all samples")
            path = outputs.save_figure(fig, out / outputs.FIGURES / FIGURE)
            if trainer is not None:
                log_images(trainer, "figures/explanation_scores", [path], [path.stem])
        return results


def typical_temperature(encoder: torch.nn.Module, x: Tensor, centroids: Tensor) -> float:
    """``spread_temperature`` of ``x``'s embeddings (when no k-means inertia is at hand)."""
    from clustercam.explain._layers import eval_mode, module_device

    device = module_device(encoder, x.device)
    with eval_mode(encoder), torch.no_grad():
        z = torch.cat([encoder(x[i : i + 512].to(device)).cpu() for i in range(0, len(x), 512)])
    return spread_temperature(z, centroids)


def curves_figure(
    means: Mapping[str, Mapping[str, np.ndarray]], assignment: str = "softmax", over: str = ""
):
    """Mean deletion and insertion curves per method (soft assignment on top, hard below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, sharey="row")
    panels = [("deletion", 0, 0), ("insertion", 0, 1), ("deletion_hard", 1, 0), ("insertion_hard", 1, 1)]
    for key, row, col in panels:
        ax = axes[row, col]
        for method, c in means.items():
            f, v = c["fractions"], c[key]
            auc = float(np.sum((v[1:] + v[:-1]) / 2 * np.diff(f)))
            ax.plot(f, v, marker="o", markersize=3, label=f"{method} (AUC {auc:.3f})")
        kind = "deletion" if key.startswith("deletion") else "insertion"
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} is better)", fontsize=10)
        ax.set_xlabel(f"fraction of positions {'removed' if kind == 'deletion' else 'inserted'}")
        if col == 0:
            ax.set_ylabel(f"soft assignment to own cluster ({assignment})" if row == 0
                          else "share still in own cluster (hard)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Deletion / insertion: mean curves per method" + (f"\n({over})" if over else ""),
                 fontsize=11)
    fig.tight_layout()
    return fig


def scores_table(rows: Sequence[Mapping[str, Any]], loc_rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text summary: the ``all`` and ``excl_baseline`` rows, and localisation if any."""
    lines = [f"{'method':<22} {'samples':<14} {'del AUC':>8} {'ins AUC':>8} {'del hard':>9} "
             f"{'ins hard':>9} {'n':>5}"]
    for r in rows:
        if r["cluster"] in ("all", "excl_baseline"):
            lines.append(f"{r['method']:<22} {r['cluster']:<14} {r['deletion_auc']:>8.3f} "
                         f"{r['insertion_auc']:>8.3f} {r['deletion_hard_auc']:>9.3f} "
                         f"{r['insertion_hard_auc']:>9.3f} {r['n_samples']:>5}")
    if loc_rows:
        lines.append(f"{'method':<22} {'pointing':>8} {'rel.mass':>8} {'AUROC':>9}")
        for r in loc_rows:
            lines.append(f"{r['method']:<22} {r['pointing_game']:>8.3f} {r['relevance_mass']:>8.3f} "
                         f"{r['auroc']:>9.3f}")
    return "\n".join(lines)
