"""Resumable concept runs: the per-image results on disk as batches finish.

Each finished test / predict batch of :class:`~clustercam.callbacks.concept_explain.ConceptExplainCallback`
becomes one shard (``shards/rank<r>_i<first index>.pt``: the batch's
:meth:`~clustercam.explain.concepts.ConceptBatch.tensors`, the figure maps it keeps and what
the class concepts' pass 1 kept: ``ClassConceptRun.batch_state``), and the rank's manifest
(``shards/manifest_rank<r>.json``) lists the shards with their dataset indices and a key of
what produced them (the concept settings, the image list, the weights).
Both are written atomically, shard first, so a run killed at any moment (SIGTERM, SIGKILL)
leaves a manifest that names complete shards only. ``resume=true`` reads the manifests,
evaluates only the images they do not list (:func:`subset_loader`, keeping the dataset
indices), merges old and new rows by index (:func:`by_index`) and gives the class concepts
the old batches' states to replay (:meth:`ShardStore.class_states`): the same rows, in the
same order, and the same class concepts as one uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from clustercam import outputs
from clustercam.exceptions import UserError
from clustercam.explain.concepts import ConceptBatch

log = logging.getLogger(__name__)


def run_key(settings: Any, images: Sequence[str], weights: Any, **extra: Any) -> str:
    """A hash of what decides the per-image results: the settings (a dataclass), the image
    list in order, the weights' description, and ``extra`` (e.g. how many figures)."""
    fields = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else settings
    text = json.dumps({"settings": fields, "images": list(images), "weights": weights, **extra},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def by_index(batch: ConceptBatch) -> ConceptBatch:
    """The rows of ``batch`` sorted by ``idx``, one row per index (a repeat is dropped)."""
    return ConceptBatch.from_tensors(_sorted(batch.tensors()))


def _sorted(rows: dict[str, Tensor]) -> dict[str, Tensor]:
    order = torch.argsort(rows["idx"], stable=True)
    idx = rows["idx"][order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    return {k: v[order[keep]] for k, v in rows.items()}


def merge_maps(parts: Sequence[dict[str, Tensor] | None], k: int | None) -> dict[str, Tensor] | None:
    """The figure maps of several sources (dicts with ``idx``), sorted by index, the first ``k``."""
    parts = [p for p in parts if p is not None and len(p["idx"])]
    if not parts:
        return None
    rows = _sorted({key: torch.cat([p[key] for p in parts]) for key in parts[0]})
    return {key: v[:k] for key, v in rows.items()}


class ResumedSubset(Subset):
    """The images a resumed run evaluates (a progress bar names the others: :mod:`.progress`)."""


def subset_loader(loader: DataLoader, indices: Sequence[int]) -> DataLoader:
    """``loader`` over the dataset positions ``indices`` only (the dataset still returns its
    own index with every sample), with the same batch size, workers and collate function."""
    return DataLoader(ResumedSubset(loader.dataset, list(indices)), batch_size=loader.batch_size, shuffle=False,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, persistent_workers=loader.num_workers > 0)


class ShardStore:
    """The shards and manifests of one run folder, as one rank sees them.

    Args:
        output_dir: the run folder (shards go to its :data:`~clustercam.outputs.SHARDS`).
        rank: this process's global rank.
        key: :func:`run_key` of this run.
    """

    def __init__(self, output_dir: str | Path, rank: int, key: str) -> None:
        self.folder = Path(output_dir) / outputs.SHARDS
        self.rank, self.key = rank, key
        self.found: dict[str, list[int]] = {}  # every rank's finished shards: file -> indices
        self._mine: dict[str, list[int]] = {}  # what this rank's manifest lists

    def clear(self) -> None:
        """Start afresh: drop this rank's shards of an earlier run in this folder (each rank its
        own: another rank may already be writing its first shard)."""
        if self.folder.is_dir():
            own = self.folder / outputs.SHARD_MANIFEST.format(rank=self.rank)
            for f in [*self.folder.glob(f"rank{self.rank}_i*.pt"), own]:
                f.unlink(missing_ok=True)

    def read(self) -> set[int]:
        """Read every rank's manifest; the dataset indices already finished.

        Raises:
            UserError: when a manifest was written with other settings, images or weights.
        """
        for path in sorted(self.folder.glob(outputs.SHARD_MANIFEST.format(rank="*"))):
            entry = json.loads(path.read_text())
            if entry.get("key") != self.key:
                raise UserError(
                    f"resume=true: {path} was written with other concept settings, images or weights "
                    f"(key {entry.get('key')}, this run {self.key}); use the same settings or resume=false")
            self.found.update({name: list(idx) for name, idx in entry["shards"].items()})
            if path.name == outputs.SHARD_MANIFEST.format(rank=self.rank):
                self._mine = dict(entry["shards"])
        return {i for idx in self.found.values() for i in idx}

    def write(self, chunk: ConceptBatch, maps: dict[str, Tensor] | None,
              classes: dict[str, Tensor] | None = None) -> Path:
        """One finished batch (``classes``: the class concepts' state of it, or None): its
        shard, then this rank's manifest naming it."""
        idx = [int(i) for i in chunk.idx]
        name = f"rank{self.rank}_i{min(idx):08d}.pt"
        payload = {"tensors": chunk.tensors(), "maps": maps, "classes": classes}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path = outputs.atomic_write(self.folder / name, lambda fh: fh.write(buffer.getvalue()), mode="wb")
        self._mine[name] = idx
        outputs.write_json(self.folder / outputs.SHARD_MANIFEST.format(rank=self.rank),
                           {"key": self.key, "shards": self._mine})
        return path

    def load(self, names: Sequence[str]) -> tuple[list[ConceptBatch], list[dict[str, Tensor] | None]]:
        """The batches and figure maps of the shards ``names``."""
        chunks, maps = [], []
        for name in names:
            payload = torch.load(self.folder / name, weights_only=True)
            chunks.append(ConceptBatch.from_tensors(payload["tensors"]))
            maps.append(payload["maps"])
        return chunks, maps

    def class_states(self) -> list[dict[str, Tensor]]:
        """The class concepts' states of the earlier run's batches, by first index."""
        names = sorted(self.found, key=lambda name: min(self.found[name], default=-1))
        states = [torch.load(self.folder / name, weights_only=True).get("classes") for name in names]
        if any(st is None for st in states):
            raise UserError(f"resume=true: the shards in {self.folder} have no class concepts' state")
        return states

    def merged(self, data: ConceptBatch, maps: dict[str, Tensor] | None, k: int | None) -> ConceptBatch:
        """``data`` (this run's gathered rows, ``maps`` its figure maps or None) with the rows
        and maps of the earlier run's shards, by index: one uninterrupted run's batch."""
        if not self.found:
            return data
        old, old_maps = self.load(sorted(self.found))
        data = by_index(ConceptBatch.cat([data.replace(maps=None, sub_maps=None), *old]))
        if maps is None:
            return data
        maps = merge_maps([maps, *old_maps], k)
        return data.replace(maps=maps["maps"], sub_maps=maps["sub_maps"])


def open_shards(trainer: Any, pl_module: Any, stage: Any, output_dir: Path, key: dict[str, Any],
                resume: bool) -> ShardStore | None:
    """The shard store of a test / predict loop (None for another stage); without ``resume``
    an earlier run's shards are dropped, with it the datamodule's loader of that stage is
    replaced by one over the unfinished images only. ``key``: what the shards depend on.

    Raises:
        UserError: with ``resume``, for shards of other settings (class concepts' included),
            images or weights.
    """
    stage = str(getattr(stage, "value", stage))  # Lightning passes a TrainerFn
    if stage not in ("test", "predict"):
        return None
    dm, hook = getattr(trainer, "datamodule", None), f"{stage}_dataloader"
    loader = getattr(dm, hook)() if dm is not None else None
    n = len(loader.dataset) if isinstance(getattr(loader, "dataset", None), Sized) else 0
    names = [str(dm.image_name(i)) for i in range(n)] if hasattr(dm, "image_name") else [str(n)]
    info = pl_module.describe() if callable(getattr(pl_module, "describe", None)) else {}
    store = ShardStore(output_dir, trainer.global_rank, run_key(key.pop("settings"), names, info, **key))
    if not resume:
        store.clear()
        return store
    done = store.read()
    todo = [i for i in range(n) if i not in done]
    if not todo and n:  # all done (killed while writing the files): redo the last shard's
        todo = sorted(store.found.pop(max(store.found, key=lambda name: max(store.found[name]))))
    log.info("resume: %d of %d images already done (%s), evaluating the other %d",
             n - len(todo), n, store.folder, len(todo))
    if trainer.is_global_zero:
        outputs.write_json(Path(output_dir) / outputs.STATUS, {"resumed_images": n - len(todo)}, merge=True)
    if len(todo) < n:
        subset = subset_loader(loader, todo)
        setattr(dm, hook, lambda: subset)  # Lightning asks the datamodule after the setup hooks
    return store
