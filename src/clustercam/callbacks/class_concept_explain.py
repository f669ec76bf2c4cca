"""Class-level concepts inside the concept callback: gathers, calls and files.

:class:`ClassConceptOutputs` takes each test (or predict) batch's activations and per-image
concept labels from :func:`~clustercam.explain.concepts.run_concepts` (pass 1 of
:class:`~clustercam.explain.concepts.classes.passes.ClassConceptRun`: co-association
counts, NMF sample, the labels as int8 and, for a pooling + linear head, each image's
pooled activations). At epoch end, on every rank, it sums the counts over DDP ranks,
finds the class concepts once and scores them from what pass 1 kept (one pass; another
head: a second walk over the evaluated dataloader); the scores are gathered and rank
zero writes the class-concept files of the outputs contract (rows, rows against the parts,
channel ids, galleries drawn by the concept callback, whose maps one pass recomputes for the
gallery images alone) and logs them. ``resume=true``: replays the done batches.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import LightningModule, Trainer
from torch import Tensor

from clustercam import outputs
from clustercam.callbacks import evaluated, memory
from clustercam.callbacks.concept_figures import FigureSet, class_gallery_set
from clustercam.callbacks.evaluated import batches_again, concept_batch, eval_classes, eval_loader
from clustercam.callbacks.gather import gather_split, reduce_sum, unpadded
from clustercam.callbacks.loggers import log_table
from clustercam.callbacks.progress import log_progress
from clustercam.exceptions import UserError
from clustercam.explain.concepts.classes.coassociation import ClassConceptSettings
from clustercam.explain.concepts.classes.memory import check_class_concept_memory
from clustercam.explain.concepts.classes.passes import ClassConceptRun, pooled_head_or_none
from clustercam.explain.concepts.image.settings import ConceptSettings
from clustercam.explain.concepts.parallel import cpu_workers
from clustercam.explain.concepts.vocabulary import ConceptConfig
from clustercam.outputs.concept_markdown import class_markdown
from clustercam.outputs.concept_results import class_results
from clustercam.outputs.concept_tables import class_run_rows, class_run_truth_rows


class ClassConceptOutputs:
    """Class concepts of the concept callback's configurations (one per method: the first
    algorithm and ``n_concepts``), computed where ``enabled``.

    Args:
        settings: the concept callback's :class:`ConceptSettings`.
        class_settings: what the class level computes (None: the defaults of
            :class:`~clustercam.explain.concepts.classes.coassociation.ClassConceptSettings`
            with the concept ``seed``); checked even when disabled.
        output_dir: the run folder; ``enabled``: compute them at all (checked against the free memory).
        figures: draw the galleries; ``class_figures``: of the first groups only (classes in
            order, then all images; None: every group); ``cmap``, ``alpha``: their heat-map overlay.
    """

    def __init__(self, settings: ConceptSettings, class_settings: ClassConceptSettings | None,
                 output_dir: str | Path, *, enabled: bool = False, figures: bool = True,
                 class_figures: int | None = None, cmap: str = "jet", alpha: float = 0.6) -> None:
        if class_settings is None:
            class_settings = ClassConceptSettings(seed=settings.seed)
        if not isinstance(class_settings, ClassConceptSettings):
            raise UserError(f"class_settings must be a ClassConceptSettings, got {type(class_settings).__name__}")
        if class_figures is not None and (isinstance(class_figures, bool) or int(class_figures) < 0):
            raise UserError(f"class_figures must be >= 0 or null (= every class), got {class_figures!r}")
        self.class_settings, self.class_figures = class_settings, class_figures
        self.settings, self.output_dir, self.enabled = settings, Path(output_dir), bool(enabled)
        self.figures, self.style = figures, {"cmap": cmap, "alpha": alpha}
        self.configs = [ConceptConfig(m, settings.algorithms[0], settings.n_list[0]) for m in settings.methods]
        self.store: Any = None  # the concept callback's ShardStore (resume=true: the batches done)
        self.reset()

    def reset(self) -> None:
        self.run: ClassConceptRun | None = None
        self._seen, self._restored, self.seconds = 0, 0, {"observe": 0.0}  # seconds: metrics.json
        self.recomputed = 0  # images whose activations the galleries' maps took again (one pass)
        self.gallery_figures: FigureSet | None = None  # their figure jobs, drawn in the concept callback's pool

    def observe(self, trainer: Trainer, activations: Tensor, concept_labels: Mapping, y: Tensor, idx: Tensor,
                *, pl_module: LightningModule | None = None, pred: Tensor | None = None,
                masks: Tensor | None = None) -> None:
        """Pass 1, every rank: a batch's activations and per-configuration B x C concept
        labels; with the model (its ``head`` and ``pooled_head``), its predicted classes
        ``pred`` (for ``target: pred``) and the part ``masks`` of data that has them, the
        class concepts are scored from this pass alone where the head allows it."""
        if not self.enabled:
            return
        a, t0 = activations.detach(), time.perf_counter()
        if self.run is None:
            self._classes, self._names, sizes = eval_classes(trainer)
            pooled = None if pl_module is None else pooled_head_or_none(
                pl_module.head, getattr(pl_module, "pooled_head", None), a)
            check_class_concept_memory(self.class_settings, self.configs, a, sizes, memory.least_available_memory(trainer),
                                       pooled=pooled is not None, masks=masks is not None, processes=trainer.world_size,
                                       local_processes=trainer.num_devices, prefix="callbacks.concepts.",
                                       workers=max(1, cpu_workers(torch.device("cpu"))),
                                       signed=memory.signed_on_any_rank(trainer, a))
            self.run = ClassConceptRun(self.class_settings, self.configs, a.shape[1], len(self._classes),
                                       map_size=a.shape[-2:], pooled_head=pooled)
            if self.store is not None and self.store.found and trainer.is_global_zero:  # a killed run's shards
                self.run.replay(self.store.class_states())
                self._restored = len(self.run.batches)
        keep = unpadded(trainer, self._seen, len(y), len(eval_loader(trainer).dataset))
        self._seen += len(y)
        parts, t = {c: concept_labels[c] for c in self.configs}, None if self.settings.target == "label" else pred
        self.run.observe(a, parts, evaluated.class_rows(self._classes, y), idx, keep,
                         targets=(y if t is None else t).long(), masks=masks)
        self.seconds["observe"] += time.perf_counter() - t0

    def batch_state(self) -> dict[str, Tensor] | None:
        """What pass 1 kept of the last batch, for its shard (None when off)."""
        return self.run.batch_state() if self.enabled and self.run is not None else None

    def finish(self, trainer: Trainer, pl_module: LightningModule) -> tuple[dict[str, float], str]:
        """Every rank (collectives): class concepts, their scores, files on rank zero; returns the
        ``metrics.json`` entries and a section of the concept summary (empty elsewhere)."""
        run, ddp, strategy = self.run, trainer.world_size > 1, trainer.strategy
        if not self.enabled or run is None:
            return {}, ""
        t0 = time.perf_counter()
        if ddp:
            run.load_counts_state({k: reduce_sum(trainer, v) for k, v in run.counts_state().items()})
            if run.sample is not None:
                run.load_sample_state(gather_split(trainer, [run.sample_state()]))
        run.finalise(self._names, log_progress("class concepts: clusterings and NMF fits") if trainer.is_global_zero else None)
        if ddp:  # one clustering for all ranks, whatever their BLAS does
            run.load_concepts_state(strategy.broadcast(run.concepts_state(), src=0))
        t1 = time.perf_counter()
        if run.one_pass:  # the scores from the numbers pass 1 kept
            run.score_observed()
        else:
            self._second_pass(trainer, pl_module)
        if ddp:
            gathered = {k: strategy.all_gather(v.to(strategy.root_device)).cpu() for k, v in run.scores_state().items()}
            run.load_scores_states([{k: v[r] for k, v in gathered.items()} for r in range(trainer.world_size)])
        run.batches, t2 = [], time.perf_counter()
        if not trainer.is_global_zero:
            return {}, ""
        results, markdown = self._write(trainer, pl_module, run)
        self.seconds.update(finalise=t1 - t0, score=t2 - t1, write=time.perf_counter() - t2)
        return {**results, "class_concepts/passes": 1 if run.one_pass else 2,
                "class_concepts/gallery_images_recomputed": self.recomputed,
                **{f"class_concepts/seconds/{k}": v for k, v in self.seconds.items()}}, markdown

    def _second_pass(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The scores where the head is not pooling + linear: the evaluated images again."""
        dm, s = getattr(trainer, "datamodule", None), self.settings
        masks = dm.eval_part_masks() if hasattr(dm, "eval_part_masks") else None
        # the batches pass 1 saw, in order (fewer than the loader's under limit_test_batches / fast_dev_run);
        again = (batches_again(trainer)(ob.index.tolist()) for ob in self.run.batches[: self._restored])  # by index
        trim = memory.BatchTrim()
        for seen, batch in zip(self.run.batches, itertools.chain(again, eval_loader(trainer))):
            x, y, idx = trainer.strategy.batch_to_device(batch)[:3]
            if not torch.equal(idx.long().cpu(), seen.index):
                raise RuntimeError("class concepts: the second pass over the evaluated dataloader met "
                                   "other images than the first (a shuffled or random sampler?)")
            a, head, logits = concept_batch(pl_module, x)
            t = y.long() if s.target == "label" else logits.argmax(-1)
            m = None if masks is None else masks[idx.long().cpu()].to(a.device)
            self.run.score(head, a, {c: v.long() for c, v in seen.partitions.items()},
                           evaluated.class_rows(self._classes, y), idx.long(), t, m, seen.keep)
            trim()

    def _original(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The class column as the dataset's labels (the run counts the classes 0.. in order)."""
        return [{**r, "class": int(self._classes[r["class"]]) if r["class"] >= 0 else r["class"]} for r in rows]

    def _write(self, trainer: Trainer, pl_module: LightningModule, run: ClassConceptRun) -> tuple[dict[str, float], str]:
        out, names = self.output_dir, self._names
        rows, truth = self._original(class_run_rows(run, names)), self._original(class_run_truth_rows(run))
        outputs.write_csv(out / outputs.CLASS_CONCEPTS, rows, outputs.CLASS_CONCEPT_COLUMNS)
        if truth:
            outputs.write_csv(out / outputs.CLASS_CONCEPTS_TRUTH, truth, outputs.CLASS_CONCEPTS_TRUTH_COLUMNS)
        arrays = {"classes": np.array([int(self._classes[g]) if g >= 0 else g
                                       for g in run.concepts[self.configs[0]]["coassociation"][0].groups])}
        for cfg in self.configs:
            for src in ("coassociation", "nmf"):
                if src in run.concepts[cfg]:
                    labels = run.concepts[cfg][src][0].labels
                    arrays[outputs.class_channels_member(cfg, src)] = labels.numpy().astype(np.int16)
        outputs.write_npz(out / outputs.CLASS_CONCEPT_CHANNELS, **arrays)
        stage = "predict" if trainer.predicting else "test"
        log_table(trainer, f"{stage}/{Path(outputs.CLASS_CONCEPTS).stem}", rows)
        log_table(trainer, f"{stage}/{Path(outputs.CLASS_CONCEPTS_TRUTH).stem}", truth)
        dm = getattr(trainer, "datamodule", None)
        if self.figures and hasattr(dm, "display_image"):
            shown = run.concepts[self.configs[0]]["coassociation"][0].groups[: self.class_figures]
            if run.one_pass:  # the maps of the gallery images only
                t0 = time.perf_counter()
                batch = getattr(eval_loader(trainer), "batch_size", None) or 16
                self.recomputed = run.fill_gallery_maps(evaluated.images_again(trainer, pl_module), shown, batch)
                self.seconds["gallery_maps"] = time.perf_counter() - t0
            galleries = [g for g in run.galleries(names) if g.group in set(shown)]
            self.gallery_figures = class_gallery_set(galleries, dm, names, self.configs, out, **self.style)
        return class_results(rows, truth), class_markdown(rows, truth)
