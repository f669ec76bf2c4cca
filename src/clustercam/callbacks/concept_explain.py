"""Concepts (CGAP / CPHA) for every evaluated image, handed to files and loggers.

Per batch, on every rank, :func:`clustercam.explain.concepts.run_concepts` (each batch also to
disk for ``resume=true``: :mod:`.concept_shards`); at epoch end the gathered
:class:`~clustercam.explain.concepts.ConceptBatch` es go to the outputs contract's files and the
loggers on rank zero (class-level: :mod:`.class_concept_explain`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer

from clustercam import outputs
from clustercam.callbacks.class_concept_explain import ClassConceptOutputs
from clustercam.callbacks.concept_figures import concept_figure_set, draw_figure_sets
from clustercam.callbacks.concept_shards import open_shards
from clustercam.callbacks.gather import gather_split, keep_lowest
from clustercam.callbacks.loggers import log_scalars, log_table
from clustercam.callbacks.memory import BatchTrim
from clustercam.exceptions import UserError
from clustercam.explain.concepts import ConceptBatch, ConceptSettings, run_concepts
from clustercam.explain.concepts.classes.coassociation import ClassConceptSettings
from clustercam.explain.concepts.image.batch import degenerate_messages
from clustercam.explain.concepts.image.truth import paint_out_drops
from clustercam.explain.concepts.vocabulary import PAINT_COLUMNS
from clustercam.outputs.concept_markdown import summary_markdown, validation_markdown
from clustercam.outputs.concept_results import concept_results, validation_results
from clustercam.outputs.concept_tables import concept_tables, validation_tables

log = logging.getLogger(__name__)


class ConceptExplainCallback(Callback):
    """Extract, score, draw and summarise concepts at the end of the test / predict loop.

    Args:
        output_dir: the run folder.
        settings: what to compute, a :class:`~clustercam.explain.concepts.ConceptSettings`
            (a notebook's); or give its fields as keyword ``options`` instead.
        figures: draw the concept figures; ``max_figures``: of the first images only (None: all);
            ``cmap``, ``alpha``: the heat-map overlay.
        class_concepts: also the class-level concepts
            (:class:`~clustercam.callbacks.class_concept_explain.ClassConceptOutputs`) with
            ``class_settings`` (default: :class:`ClassConceptSettings` with this ``seed``);
            ``class_figures``: galleries of the first classes only (None: all).
        resume: skip the images a killed run left in its shards (:mod:`.concept_shards`).
        layer: the classifier's module (dotted name; None: its final features) whose output is
            clustered; set on the model when the run starts (a bad name fails before training).
        layout: how that output is read (``auto``, ``nchw``, ``nhwc``, ``tokens``, ``ncl``).
        **options: the fields of :class:`ConceptSettings` when ``settings`` is not given, and
            the class-level ones (``min_presence``, ``n_class``, ``gallery_size``,
            ``nmf_max_images``, ``nmf_tol``, ``scope``, ``class_random``: :class:`ClassConceptSettings`'
            ``n_random``) when ``class_settings`` is not given; the config passes them flat
            (``callbacks.concepts.n_concepts=7``).

    Raises:
        UserError: for a bad setting, both ``settings`` and options, or a negative ``max_figures``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        settings: ConceptSettings | None = None,
        *,
        figures: bool = True,
        max_figures: int | None = None,
        cmap: str = "jet",
        alpha: float = 0.6,
        class_concepts: bool = False,
        class_settings: ClassConceptSettings | None = None,
        class_figures: int | None = None,
        resume: bool = False,
        layer: str | None = None,
        layout: str = "auto",
        **options: Any,
    ) -> None:
        super().__init__()
        class_flat = ClassConceptSettings.pop_flat_options(options)
        self.settings = ConceptSettings.from_options(settings, **options)
        class_settings = ClassConceptSettings.from_flat(class_settings, class_flat, seed=self.settings.seed)
        if max_figures is not None and max_figures < 0:
            raise UserError(f"max_figures must be >= 0 or null, got {max_figures}")
        self.output_dir, self.layer, self.layout = Path(output_dir), layer or None, layout
        self.figures, self.max_figures, self.cmap, self.alpha = figures, max_figures, cmap, alpha
        self.classes = ClassConceptOutputs(self.settings, class_settings, output_dir, enabled=class_concepts,
                                           figures=figures, class_figures=class_figures, cmap=cmap, alpha=alpha)
        self.resume, self._store = bool(resume), None  # the ShardStore of the test / predict loop
        self._chunks: list[ConceptBatch] = []
        self._trim = BatchTrim()  # freed heap handed back between batches (reset each epoch)
        self._maps: dict[str, Any] | None = None  # the maps of the figure images only
        self.results: dict[str, Any] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Set the concept layer, check n_concepts against its channels (before training), open the shards."""
        if self.layer is not None or self.layout != "auto":
            if not hasattr(pl_module, "set_concept_layer"):
                raise UserError(f"callbacks.concepts.layer needs a classifier_module model, not {type(pl_module).__name__}")
            pl_module.set_concept_layer(self.layer, self.layout)
        if shape := getattr(pl_module, "feature_shape", None):  # C x positions of the layer, where known
            self.settings.check_channels(shape[0], pl_module.describe_layer())
        key = {"settings": self.settings, "figures": self.figures, "max_figures": self.max_figures, "layer": self.layer,
               "layout": self.layout, "classes": self.classes.enabled and self.classes.class_settings}  # shards' key
        self._store = self.classes.store = open_shards(trainer, pl_module, stage, self.output_dir, key, self.resume)

    # -- per batch (every rank) --------------------------------------------------------------
    def _reset(self, *args: Any) -> None:
        self._chunks, self._maps, self._trim = [], None, BatchTrim()
        self.classes.reset()

    on_test_epoch_start = on_predict_epoch_start = _reset

    def _batch_end(self, trainer, pl_module, outputs_, batch, batch_idx, dataloader_idx=0):
        self._process(trainer, pl_module, outputs_, batch)

    on_test_batch_end = on_predict_batch_end = _batch_end

    def _process(self, trainer: Trainer, pl_module: LightningModule, out: Any, batch: Any) -> None:
        if not isinstance(out, Mapping) or "activations" not in out or not hasattr(pl_module, "head"):
            raise RuntimeError("ConceptExplainCallback needs a model with head(activations) -> logits whose test/predict "
                               "steps return a dict with 'activations', 'y' and 'idx' (clustercam.models.classifier_module)")
        y, idx = out["y"].detach().long(), out["idx"].detach().long()
        dm = getattr(trainer, "datamodule", None)
        masks = dm.eval_part_masks()[idx.cpu()].to(y.device) if hasattr(dm, "eval_part_masks") else None
        head = pl_module.concept_head(batch[0], out) if "layer_output" in out else pl_module.head  # the batch's
        chunk = run_concepts(head, out["activations"], y, settings=self.settings, logits=out.get("logits"),
                             pooled_head=getattr(pl_module, "pooled_head", None), part_masks=masks)
        for line in degenerate_messages(self.settings, chunk, idx):
            log.warning(line)
        self.classes.observe(trainer, out["activations"], chunk.concept_labels, y, idx, pl_module=pl_module,
                             pred=chunk.pred, masks=masks)
        paint_out = None
        if masks is not None:  # the input-space check: p_t without part A / B / distractor
            t = y if self.settings.target == "label" else chunk.pred
            drops = paint_out_drops(pl_module, batch[0], dm.eval_backgrounds()[idx.cpu()], masks, t)
            paint_out = dict(zip(PAINT_COLUMNS, drops.unbind(1)))
        kept = keep_lowest(None, {"idx": idx.cpu(), "maps": chunk.maps, "sub_maps": chunk.sub_maps},
                           self.max_figures) if self.figures else None  # of the figure images only
        self._maps = keep_lowest(self._maps, kept, self.max_figures) if self.figures else None
        self._chunks.append(chunk.replace(maps=None, sub_maps=None, degenerate=None, concept_labels=None,
                                          idx=idx.cpu(), paint_out=paint_out))
        _ = self._store and self._store.write(self._chunks[-1], kept, self.classes.batch_state())  # resume=true
        self._trim()  # else the heap's gaps grow ~0.75 MB per image (see callbacks.memory)

    # -- epoch end ---------------------------------------------------------------------------
    def _epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish(trainer, pl_module, "predict" if trainer.predicting else "test")

    on_test_epoch_end = on_predict_epoch_end = _epoch_end

    def _finish(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data, self._chunks = gather_split(trainer, self._chunks), []  # collective: every rank calls it
        if self.figures:  # collective too; the first rows of both are the same images
            maps, self._maps = gather_split(trainer, [self._maps]), None
            data = data.replace(maps=maps["maps"][: self.max_figures], sub_maps=maps["sub_maps"][: self.max_figures])
        class_results, class_md = self.classes.finish(trainer, pl_module)  # collective too
        if not trainer.is_global_zero:
            return
        data = self._store.merged(data, maps if self.figures else None, self.max_figures) if self._store else data
        dm = getattr(trainer, "datamodule", None)
        idx = [int(i) for i in data.idx]
        names = [str(dm.image_name(i)) if hasattr(dm, "image_name") else f"image_{i:05d}" for i in idx]
        known = getattr(dm, "class_names", None) or []
        class_names = [str(known[i]) if i < len(known) else str(int(t)) for i, t in zip(idx, data.y)]
        tables = concept_tables(self.settings, data, names, class_names)
        out, configs = self.output_dir, self.settings.configs
        outputs.write_csv(out / outputs.CONCEPTS, tables.concepts, outputs.CONCEPT_COLUMNS)
        outputs.write_csv(out / outputs.SUB_CONCEPTS, tables.sub_concepts, outputs.SUB_CONCEPT_COLUMNS)
        outputs.write_csv(out / outputs.CONCEPT_METRICS, tables.metrics, outputs.CONCEPT_METRIC_COLUMNS)
        checks = validation_tables(configs, data, names)  # fidelity, truth
        for name, (rows, columns) in checks.items():
            outputs.write_csv(out / name, rows, columns)
        outputs.write_text(out / outputs.CONCEPT_SUMMARY, summary_markdown(tables.metrics, title="Concept clustering")
                           + "\n" + validation_markdown(configs, data) + class_md)
        info = pl_module.describe() if callable(getattr(pl_module, "describe", None)) else {}
        self.results = {"pretrained": bool(info.get("pretrained", False)), "weights": info.get("weights", "unknown"),
                        "model": info.get("model", type(pl_module).__name__), "classifier": info,
                        "importance_target": self.settings.target,
                        **concept_results(data, tables.metrics),
                        **validation_results(configs, data), **class_results}
        if not self.results["pretrained"]:
            log.warning("These concepts come from a classifier with RANDOM weights (pretrained=false)")
        outputs.write_json(out / outputs.METRICS, self.results, merge=True)
        log_scalars(trainer, {f"{stage}/{k}": v for k, v in self.results.items()})
        log_table(trainer, f"{stage}/concepts", tables.concepts)
        log_table(trainer, f"{stage}/concept_metrics", tables.metrics)
        for name, (rows, _) in checks.items():
            log_table(trainer, f"{stage}/{Path(name).stem}", rows)
        if self.figures:  # the images' (and fidelity's) figures and the class galleries, in one pool
            figures = concept_figure_set(self.settings, dm, data, names, class_names, self.output_dir,
                                         self.max_figures, cmap=self.cmap, alpha=self.alpha)
            galleries, self.classes.gallery_figures, t0 = self.classes.gallery_figures, None, time.perf_counter()
            draw_figure_sets(trainer, [figures, galleries])
            outputs.write_json(out / outputs.METRICS, {"concepts/seconds/figures": time.perf_counter() - t0}, merge=True)
        log.info("Concepts of %d images x %d configurations written to %s", len(names), len(configs), out)
