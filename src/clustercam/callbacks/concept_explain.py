"""Concepts (CGAP / CPHA) for every evaluated image, handed to files and loggers.

Per test (or predict) batch, on every rank: :func:`clustercam.explain.concepts.run_concepts`
(with the model's ``pooled_head``, and the part masks and painting-out check of a datamodule
that has them, e.g. ``data=synthetic_parts``). At epoch end the per-image tensors are
gathered across ranks (sampler padding dropped) and rank zero writes the concept CSVs
(``concept_fidelity.csv``, ``concept_truth.csv`` with part masks), ``concept_summary.md``,
``metrics.json`` and figures, and logs tables, figures and mean scalars (class-level: below).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from torch import Tensor

from clustercam import outputs
from clustercam.callbacks.class_concept_explain import ClassConceptOutputs
from clustercam.callbacks.concept_figures import concept_figures
from clustercam.callbacks.gather import gather_split, keep_lowest
from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.callbacks.memory import release_freed_memory
from clustercam.explain.concepts import validation
from clustercam.explain.concepts.image.batch import (
    CONCEPT_COLUMNS,
    METRIC_COLUMNS,
    SUB_CONCEPT_COLUMNS,
    ConceptSettings,
    concept_results,
    concept_tables,
    degenerate_messages,
    run_concepts,
)
from clustercam.explain.concepts.image.truth import paint_out_drops
from clustercam.explain.concepts.summary import SUMMARY_FILE, summary_markdown

log = logging.getLogger(__name__)

CONCEPTS = "concepts_per_image.csv"
SUB_CONCEPTS = "sub_concepts_per_image.csv"
CONCEPT_METRICS = "concept_metrics.csv"


class ConceptExplainCallback(Callback):
    """Extract, score, draw and summarise concepts at the end of the test / predict loop.

    The concept settings are :class:`~clustercam.explain.concepts.ConceptSettings`
    (``method``, ``algorithm`` and ``n_concepts`` take one value or a list; their product is
    computed). ``fidelity``: concept deletion / insertion curves; ``control_repeats``: draws
    of each random control. ``max_figures``: images with figures (null = all).
    ``class_concepts`` (+ ``class_options``): :class:`~clustercam.callbacks.class_concept_explain.ClassConceptOutputs`.
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
        figures: bool = True, max_figures: int | None = None,
        cmap: str = "jet", alpha: float = 0.6,
        algorithm_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        fidelity: bool = True,
        control_repeats: int = 10,
        class_concepts: bool = False, **class_options: Any,
    ) -> None:
        super().__init__()
        self.settings = ConceptSettings(method, algorithm, n_concepts, sub_concepts, min_sub_channels,
                                        seed, n_init, backend, target, detail, algorithm_kwargs,
                                        fidelity, control_repeats)
        if max_figures is not None and max_figures < 0:
            raise ValueError(f"max_figures must be >= 0 or null, got {max_figures}")
        self.output_dir = Path(output_dir)
        self.figures, self.max_figures, self.cmap, self.alpha = figures, max_figures, cmap, alpha
        self.classes = ClassConceptOutputs(self.settings, output_dir, class_concepts, figures, cmap, alpha, **class_options)
        self._chunks: list[dict[str, Tensor]] = []
        self._maps: dict[str, Tensor] | None = None  # the maps of the figure images only
        self.results: dict[str, Any] = {}

    # -- per batch (every rank) ---------------------------------------------------------------
    def _reset(self, *args: Any) -> None:
        self._chunks, self._maps = [], None
        self.classes.reset()

    on_test_epoch_start = on_predict_epoch_start = _reset

    def _batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        self._process(trainer, pl_module, outputs_, batch)

    on_test_batch_end = on_predict_batch_end = _batch_end

    def _process(self, trainer: Trainer, pl_module: LightningModule, out: Any, batch: Any) -> None:
        if not isinstance(out, Mapping) or "activations" not in out:
            raise RuntimeError(
                "ConceptExplainCallback needs test/predict steps that return a dict with "
                "'activations', 'y' and 'idx' (e.g. clustercam.models.classifier_module)")
        if not hasattr(pl_module, "head"):
            raise RuntimeError(f"{type(pl_module).__name__} has no head(activations) -> logits")
        y, idx = out["y"].detach().long(), out["idx"].detach().long()
        dm = getattr(trainer, "datamodule", None)
        masks = dm.eval_part_masks()[idx.cpu()].to(y.device) if hasattr(dm, "eval_part_masks") else None
        chunk = run_concepts(self.settings, pl_module.head, out["activations"], y, out.get("logits"),
                             getattr(pl_module, "pooled_head", None), masks)
        for line in degenerate_messages(self.settings, chunk, idx):
            log.warning(line)
        chunk.pop("degenerate", None)
        self.classes.observe(trainer, out["activations"], chunk.pop("labels"), y, idx)
        if masks is not None:  # the input-space check: p_t without part A / B / distractor
            t = y if self.settings.target == "label" else chunk["pred"]
            chunk["paint_out"] = paint_out_drops(pl_module, batch[0], dm.eval_backgrounds()[idx.cpu()], masks, t)
        maps = {k: chunk.pop(k) for k in ("maps", "sub_maps")}  # kept for the figure images only
        if self.figures:
            self._maps = keep_lowest(self._maps, {"idx": idx.cpu(), **maps}, self.max_figures)
        self._chunks.append({**chunk, "idx": idx.cpu(), "y": y.cpu()})
        release_freed_memory()  # else the heap grows ~0.75 MB per image (see callbacks.memory)

    # -- epoch end ---------------------------------------------------------------------------
    def _epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "predict" if trainer.predicting else "test")

    on_test_epoch_end = on_predict_epoch_end = _epoch_end

    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data, self._chunks = gather_split(trainer, self._chunks), []  # collective: every rank calls it
        if self.figures:  # collective too; the first rows of both are the same images
            maps, self._maps = gather_split(trainer, [self._maps]), None
            data.update({k: maps[k][: self.max_figures] for k in ("maps", "sub_maps")})  # None: all
        class_results, class_md = self.classes.finish(trainer, pl_module)  # collective too
        if not trainer.is_global_zero:
            return
        dm = getattr(trainer, "datamodule", None)
        idx = [int(i) for i in data["idx"]]
        names = [str(dm.image_name(i)) if hasattr(dm, "image_name") else f"image_{i:05d}" for i in idx]
        known = getattr(dm, "class_names", None) or []
        class_names = [str(known[i]) if i < len(known) else str(int(t)) for i, t in zip(idx, data["y"])]
        tables = concept_tables(self.settings, data, names, class_names)
        out = self.output_dir
        outputs.write_csv(out / CONCEPTS, tables.concepts, CONCEPT_COLUMNS)
        outputs.write_csv(out / SUB_CONCEPTS, tables.sub_concepts, SUB_CONCEPT_COLUMNS)
        outputs.write_csv(out / CONCEPT_METRICS, tables.metrics, METRIC_COLUMNS)
        configs = self.settings.configs
        checks = validation.validation_tables(configs, data, names)  # fidelity, truth
        for name, (rows, columns) in checks.items():
            outputs.write_csv(out / name, rows, columns)
        outputs.write_text(out / SUMMARY_FILE, summary_markdown(tables.metrics, title="Concept clustering")
                           + "\n" + validation.validation_markdown(configs, data) + class_md)
        info = pl_module.describe() if callable(getattr(pl_module, "describe", None)) else {}
        self.results = {"pretrained": bool(info.get("pretrained", False)), "weights": info.get("weights", "unknown"),
                        "model": info.get("model", type(pl_module).__name__), "classifier": info,
                        "importance_target": self.settings.target,
                        **concept_results(data, tables.metrics),
                        **validation.validation_results(configs, data), **class_results}
        if not self.results["pretrained"]:
            log.warning("These concepts come from a classifier with RANDOM weights (pretrained=false)")
        outputs.write_json(out / outputs.METRICS, self.results, merge=True)
        log_scalars(trainer, {f"{stage}/{k}": v for k, v in self.results.items()})
        log_table(trainer, f"{stage}/concepts", tables.concepts)
        log_table(trainer, f"{stage}/concept_metrics", tables.metrics)
        for name, (rows, _) in checks.items():
            log_table(trainer, f"{stage}/{Path(name).stem}", rows)
        if self.figures:
            paths = concept_figures(self.settings, dm, data, names, class_names, self.output_dir,
                                    self.max_figures, cmap=self.cmap, alpha=self.alpha)
            if "fidelity_curves" in data:
                from clustercam.explain.plots.fidelity import fidelity_figure

                fig = fidelity_figure(configs, data["fidelity_curves"])
                paths.append(outputs.save_figure(fig, out / outputs.FIGURES / "concept_fidelity.png"))
            log_images(trainer, "figures/concepts", paths, [p.stem for p in paths])
        log.info("Concepts of %d images x %d configurations written to %s", len(names), len(configs), out)
