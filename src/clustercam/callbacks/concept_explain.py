"""Concepts (CGAP / CPHA) for every evaluated image, written to files and loggers (SPEC § 5).

Per test (or predict) batch, on every rank: cluster each image's channels for every
configured (method, algorithm, n_concepts), score each concept's importance (one head
call per configuration), and the clustering metrics; for the *detail* configurations also
sub-concepts and the concept maps (at activation resolution, small). At epoch end the
per-image tensors are gathered across ranks (sampler padding dropped) and rank zero
writes ``concepts_per_image.csv``, ``sub_concepts_per_image.csv``,
``concept_metrics.csv``, ``concept_summary.md``, ``metrics.json`` and
``figures/concepts/*.png``, and logs tables, figures and mean scalars.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from clustercam import outputs
from clustercam.callbacks.gather import gather_split
from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.concept_summary import SUMMARY_FILE, overall_means, summary_markdown
from clustercam.explain.concepts import (
    ALGORITHMS,
    BACKENDS,
    METHODS,
    DegenerateClusteringWarning,
    cluster_channels,
    concept_importance,
    concept_metrics,
    normalise_maps,
    raw_concept_maps,
    resize_maps,
    sub_concepts,
)

log = logging.getLogger(__name__)

CONCEPTS = "concepts_per_image.csv"
SUB_CONCEPTS = "sub_concepts_per_image.csv"
CONCEPT_METRICS = "concept_metrics.csv"
CONCEPT_COLUMNS = ("image", "class", "method", "algorithm", "n_concepts", "concept", "channels",
                   "importance", "rank", "index", "class_name", "predicted", "p_target")
SUB_CONCEPT_COLUMNS = ("image", "class", "method", "algorithm", "n_concepts", "concept",
                       "sub_concept", "channels", "importance", "parent_channels",
                       "parent_importance", "index", "class_name")
METRIC_COLUMNS = ("image", "class", "method", "algorithm", "n_concepts", "silhouette",
                  "calinski_harabasz", "davies_bouldin", "seconds", "index", "class_name",
                  "kept_channels", "backend")
TARGETS = ("label", "predicted")
DETAILS = ("first", "all")


def _as_list(value: Any, what: str) -> list:
    if value is None:
        raise ValueError(f"{what} must not be null")
    if isinstance(value, str | int):
        return [value]
    out = list(value)
    if not out:
        raise ValueError(f"{what} must not be empty")
    return out


class ConceptExplainCallback(Callback):
    """Extract, score, draw and summarise concepts at the end of the test / predict loop.

    ``method``, ``algorithm`` and ``n_concepts`` take one value or a list (their product is
    computed). ``sub_concepts``: the maximum number of sub-concepts (0 = none), computed
    with the maps and figures for the *detail* configurations: ``detail="first"`` (the
    first algorithm and n_concepts, every method) or ``"all"``. ``target``: importance
    of the ``label`` class (default, as the paper) or the ``predicted`` one.
    ``max_figures``: images with figures (null = all).
    """

    def __init__(
        self,
        output_dir: str | Path,
        method: str | Sequence[str] = ("cgap", "cpha"),
        algorithm: str | Sequence[str] = "kmeans",
        n_concepts: int | Sequence[int] = 5,
        sub_concepts: int = 3,
        min_sub_channels: int | None = None,
        seed: int = 0,
        n_init: int = 10,
        backend: str = "torch",
        target: str = "label",
        detail: str = "first",
        figures: bool = True,
        max_figures: int | None = None,
        cmap: str = "jet",
        alpha: float = 0.6,
        algorithm_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.methods = [str(m) for m in _as_list(method, "method")]
        self.algorithms = [str(a) for a in _as_list(algorithm, "algorithm")]
        self.n_concepts = [int(n) for n in _as_list(n_concepts, "n_concepts")]
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown concept method {m!r}; choose from {METHODS}")
        for a in self.algorithms:
            if a not in ALGORITHMS:
                raise ValueError(f"unknown clustering algorithm {a!r}; choose from {ALGORITHMS}")
        for n in self.n_concepts:
            if n < 2:
                raise ValueError(f"n_concepts must be >= 2, got {n}")
        if sub_concepts and sub_concepts < 2:
            raise ValueError(f"sub_concepts must be 0 (off) or >= 2, got {sub_concepts}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose from {BACKENDS}")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if detail not in DETAILS:
            raise ValueError(f"detail must be one of {DETAILS}, got {detail!r}")
        self.output_dir = Path(output_dir)
        self.n_sub = int(sub_concepts or 0)
        self.min_sub_channels = min_sub_channels
        self.seed, self.n_init, self.backend = int(seed), int(n_init), backend
        self.target, self.figures, self.max_figures = target, figures, max_figures
        self.cmap, self.alpha = cmap, alpha
        self.algorithm_kwargs = {k: dict(v) for k, v in (algorithm_kwargs or {}).items()}
        self.configs = list(itertools.product(self.methods, self.algorithms, self.n_concepts))
        if detail == "first":
            self.details = [(m, self.algorithms[0], self.n_concepts[0]) for m in self.methods]
        else:
            self.details = list(self.configs)
        self.l_max = max(self.n_concepts)
        self._chunks: list[dict[str, Tensor]] = []
        self.results: dict[str, Any] = {}

    # -- per batch (every rank) ---------------------------------------------------------------
    def _reset(self, *args: Any) -> None:
        self._chunks = []

    on_test_epoch_start = _reset
    on_predict_epoch_start = _reset

    def on_test_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        self._process(pl_module, outputs_)

    def on_predict_batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        self._process(pl_module, outputs_)

    def _process(self, pl_module: LightningModule, out: Any) -> None:
        if not isinstance(out, Mapping) or "activations" not in out:
            raise RuntimeError(
                "ConceptExplainCallback needs test/predict steps that return a dict with "
                "'activations', 'y' and 'idx' (e.g. clustercam.models.classifier_module)"
            )
        if not hasattr(pl_module, "head"):
            raise RuntimeError(f"{type(pl_module).__name__} has no head(activations) -> logits")
        a = out["activations"].detach()
        y, idx = out["y"].detach().long(), out["idx"].detach().long()
        with torch.no_grad():
            logits = out.get("logits")
            logits = pl_module.head(a) if logits is None else logits.detach()
            probs = torch.softmax(logits.double(), -1)
            pred = probs.argmax(-1)
            targets = y if self.target == "label" else pred
            p_target = probs.gather(1, targets[:, None]).squeeze(1)
            chunk = self._concepts(pl_module, a, targets, idx)
        chunk.update({"idx": idx.cpu(), "y": y.cpu(), "pred": pred.cpu(), "p_target": p_target.cpu()})
        self._chunks.append(chunk)

    def _concepts(self, pl_module: LightningModule, a: Tensor, targets: Tensor, idx: Tensor) -> dict[str, Tensor]:
        b, _, h, w = a.shape
        k, lm, s = len(self.configs), self.l_max, max(self.n_sub, 1)
        nd = len(self.details)
        metrics = torch.full((b, k, 4), math.nan, dtype=torch.float64)
        kept = torch.zeros(b, k, dtype=torch.long)
        channels = torch.full((b, k, lm), -1, dtype=torch.long)
        importance = torch.full((b, k, lm), math.nan, dtype=torch.float64)
        maps = torch.zeros(b, nd, lm, h, w, dtype=torch.float32)
        sub_ch = torch.zeros(b, nd, lm, s, dtype=torch.long)
        sub_imp = torch.full((b, nd, lm, s), math.nan, dtype=torch.float64)
        sub_maps = torch.zeros(b, nd, lm, s, h, w, dtype=torch.float32)
        for c, (method, algo, n) in enumerate(self.configs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateClusteringWarning)
                res = cluster_channels(a, method=method, n_concepts=n, algorithm=algo, seed=self.seed,
                                       n_init=self.n_init, backend=self.backend,
                                       algorithm_kwargs=self.algorithm_kwargs.get(algo))
                scores = concept_metrics(res, warn=False)
            for i, reason in enumerate(res.degenerate):
                if reason is not None:
                    log.warning("image %d, %s/%s/n=%d: %s", int(idx[i]), method, algo, n, reason)
            counts = res.counts().cpu()
            channels[:, c, :n] = counts
            kept[:, c] = counts.sum(1)
            imp = concept_importance(pl_module.head, a, res.labels, targets, n)
            importance[:, c, :n] = imp.cpu()
            metrics[:, c] = torch.tensor([[r["silhouette"], r["calinski_harabasz"], r["davies_bouldin"],
                                           r["seconds"]] for r in scores], dtype=torch.float64)
            if (method, algo, n) not in self.details:
                continue
            f = self.details.index((method, algo, n))
            maps[:, f, :n] = raw_concept_maps(a, res.labels, n).float().cpu()
            if not self.n_sub:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateClusteringWarning)
                sub = sub_concepts(a, res.labels, method=method, n_sub=self.n_sub, algorithm=algo,
                                   seed=self.seed, n_init=self.n_init, n_concepts=n,
                                   min_channels=self.min_sub_channels, backend=self.backend,
                                   algorithm_kwargs=self.algorithm_kwargs.get(algo))
            sub_ch[:, f, :n] = sub.counts().cpu()
            si = concept_importance(pl_module.head, a, sub.labels, targets, n * self.n_sub)
            sub_imp[:, f, :n] = si.view(b, n, self.n_sub).cpu()
            sm = raw_concept_maps(a, sub.labels, n * self.n_sub).float().cpu()
            sub_maps[:, f, :n] = sm.view(b, n, self.n_sub, h, w)
        return {"metrics": metrics, "kept": kept, "channels": channels, "importance": importance,
                "maps": maps, "sub_channels": sub_ch, "sub_importance": sub_imp, "sub_maps": sub_maps}

    # -- epoch end ---------------------------------------------------------------------------
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "predict")

    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data = gather_split(trainer, self._chunks)  # collective: every rank calls it
        self._chunks = []
        if not trainer.is_global_zero:
            return
        dm = getattr(trainer, "datamodule", None)
        names = [self._image_name(dm, int(i)) for i in data["idx"]]
        class_names = [self._class_name(dm, int(i), int(t)) for i, t in zip(data["idx"], data["y"])]
        concept_rows, sub_rows, metric_rows = self._rows(data, names, class_names)
        out = self.output_dir
        outputs.write_csv(out / CONCEPTS, concept_rows, CONCEPT_COLUMNS)
        outputs.write_csv(out / SUB_CONCEPTS, sub_rows, SUB_CONCEPT_COLUMNS)
        outputs.write_csv(out / CONCEPT_METRICS, metric_rows, METRIC_COLUMNS)
        outputs.write_text(out / SUMMARY_FILE, summary_markdown(metric_rows, title="Concept clustering"))
        self.results = self._summary(pl_module, data, metric_rows)
        outputs.write_json(out / outputs.METRICS, self.results, merge=True)
        scalars = {f"{stage}/{k}": v for k, v in self.results.items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        log_scalars(trainer, scalars)
        log_table(trainer, f"{stage}/concepts", concept_rows)
        log_table(trainer, f"{stage}/concept_metrics", metric_rows)
        if self.figures:
            paths = self._figures(dm, data, names, class_names)
            log_images(trainer, "figures/concepts", paths, [p.stem for p in paths])
        log.info("Concepts of %d images x %d configurations written to %s",
                 len(names), len(self.configs), out)

    @staticmethod
    def _image_name(dm: Any, i: int) -> str:
        if dm is not None and hasattr(dm, "image_name"):
            return str(dm.image_name(i))
        return f"image_{i:05d}"

    @staticmethod
    def _class_name(dm: Any, i: int, target: int) -> str:
        names = getattr(dm, "class_names", None)
        return str(names[i]) if names is not None and i < len(names) else str(target)

    def _rows(self, data: dict[str, Tensor], names: list[str], class_names: list[str]):
        concept_rows: list[dict[str, Any]] = []
        sub_rows: list[dict[str, Any]] = []
        metric_rows: list[dict[str, Any]] = []
        for i, name in enumerate(names):
            base = {"image": name, "class": int(data["y"][i]), "index": int(data["idx"][i]),
                    "class_name": class_names[i]}
            for c, (method, algo, n) in enumerate(self.configs):
                cfg = {"method": method, "algorithm": algo, "n_concepts": n}
                m = data["metrics"][i, c].tolist()
                metric_rows.append({**base, **cfg, "silhouette": m[0], "calinski_harabasz": m[1],
                                    "davies_bouldin": m[2], "seconds": m[3],
                                    "kept_channels": int(data["kept"][i, c]),
                                    "backend": self.backend if algo == "kmeans" else "sklearn"})
                imp = data["importance"][i, c, :n].tolist()
                order = sorted(range(n), key=lambda j: (math.isnan(imp[j]), -imp[j] if not math.isnan(imp[j]) else 0))
                rank = {j: r for r, j in enumerate(order)}
                for j in range(n):
                    concept_rows.append({**base, **cfg, "concept": j, "channels": int(data["channels"][i, c, j]),
                                         "importance": imp[j], "rank": rank[j],
                                         "predicted": int(data["pred"][i]),
                                         "p_target": float(data["p_target"][i])})
                if not self.n_sub or (method, algo, n) not in self.details:
                    continue
                f = self.details.index((method, algo, n))
                for j in range(n):
                    for q in range(self.n_sub):
                        ch = int(data["sub_channels"][i, f, j, q])
                        if ch == 0:
                            continue
                        sub_rows.append({**base, **cfg, "concept": j, "sub_concept": q, "channels": ch,
                                         "importance": float(data["sub_importance"][i, f, j, q]),
                                         "parent_channels": int(data["channels"][i, c, j]),
                                         "parent_importance": imp[j]})
        return concept_rows, sub_rows, metric_rows

    def _summary(self, pl_module: LightningModule, data: dict[str, Tensor], metric_rows: list[dict]) -> dict[str, Any]:
        describe = getattr(pl_module, "describe", None)
        info = describe() if callable(describe) else {}
        res: dict[str, Any] = {
            "pretrained": bool(info.get("pretrained", getattr(pl_module, "pretrained", False))),
            "weights": info.get("weights", "unknown"),
            "model": info.get("model", type(pl_module).__name__),
            "n_images": int(len(data["idx"])),
            "top1": float((data["pred"] == data["y"]).double().mean()),
            "p_target_mean": float(data["p_target"].mean()),
            "importance_target": self.target,
        }
        if not res["pretrained"]:
            log.warning("These concepts come from a classifier with RANDOM weights (pretrained=false)")
        overall = overall_means(metric_rows)
        per_method: dict[str, list[dict[str, float]]] = {}
        for _, r in overall.iterrows():
            key = f"concepts/{r['method']}_{r['algorithm']}_n{int(r['n_concepts'])}"
            vals = {m: float(r[m]) for m in ("silhouette", "calinski_harabasz", "davies_bouldin", "seconds")}
            res.update({f"{key}/{m}": v for m, v in vals.items()})
            per_method.setdefault(str(r["method"]), []).append(vals)
        for method, rows in per_method.items():  # present in every job of a sweep
            for m in rows[0]:
                res[f"concepts/{method}/{m}"] = float(np.nanmean([v[m] for v in rows])) \
                    if any(math.isfinite(v[m]) for v in rows) else math.nan
        return res

    def _figures(self, dm: Any, data: dict[str, Tensor], names: list[str], class_names: list[str]) -> list[Path]:
        from clustercam.explain.concept_plots import concept_figure, sub_concept_figure

        if dm is None or not hasattr(dm, "display_image"):
            log.warning("no datamodule with display_image(): concept figures skipped")
            return []
        fig_dir = self.output_dir / outputs.FIGURES / "concepts"
        paths: list[Path] = []
        n_img = len(names) if self.max_figures is None else min(len(names), self.max_figures)
        for i in range(n_img):
            image = dm.display_image(int(data["idx"][i]))
            size = tuple(image.shape[-2:])
            for f, (method, algo, n) in enumerate(self.details):
                c = self.configs.index((method, algo, n))
                raw = resize_maps(data["maps"][i, f, :n], size)
                maps = normalise_maps(raw)
                ch = data["channels"][i, c, :n].tolist()
                imp = data["importance"][i, c, :n].tolist()
                title = (f"{names[i]} ({class_names[i]}, p={float(data['p_target'][i]):.3g}) - "
                         f"{method.upper()} {algo} n={n}")
                stem = f"{names[i]}_{method}_{algo}_n{n}"
                fig = concept_figure(image, maps, ch, imp, title=title, cmap=self.cmap, alpha=self.alpha)
                paths.append(outputs.save_figure(fig, fig_dir / f"{stem}.png", dpi=100))
                if not self.n_sub:
                    continue
                sub_raw = resize_maps(data["sub_maps"][i, f, :n], size)  # n x S x H x W
                lo = raw.flatten(-2).amin(-1)[:, None].expand(n, self.n_sub)
                hi = raw.flatten(-2).amax(-1)[:, None].expand(n, self.n_sub)
                sub_maps = normalise_maps(sub_raw, lo, hi)
                fig = sub_concept_figure(image, maps, ch, imp, sub_maps, data["sub_channels"][i, f, :n],
                                         data["sub_importance"][i, f, :n], title=f"{title}: sub-concepts",
                                         cmap=self.cmap, alpha=self.alpha)
                if fig is not None:
                    paths.append(outputs.save_figure(fig, fig_dir / f"{stem}_sub.png", dpi=100))
        return paths
