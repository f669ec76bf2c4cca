"""The evaluated split across DDP ranks: per-batch outputs gathered once, without sampler padding.

Also the inputs and the number of clusters, read from the datamodule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import torch
from lightning import Trainer
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts import ConceptBatch

Split = TypeVar("Split", dict[str, Tensor], ConceptBatch)
CHUNK_BYTES = 256 * 2**20  # the most one collective moves onto a device at a time


def _row_slices(v: Tensor, max_bytes: int) -> tuple[Tensor, ...]:
    """``v`` split along its first axis into slices of at most ``max_bytes`` (one row at least)."""
    return (v,) if v.ndim == 0 or len(v) == 0 else v.split(max(1, max_bytes // max(v[0].nbytes, 1)))


def reduce_sum(trainer: Trainer, tensor: Tensor, max_bytes: int = CHUNK_BYTES) -> Tensor:
    """``tensor`` summed over the ranks, in place (and returned), moved to the strategy's
    device a slice of its first axis at a time: a thousand classes' C x C counts (16 GiB at
    C = 2048) never sit on a GPU whole. Every rank must call it (collectives)."""
    for p in _row_slices(tensor, max_bytes):  # each slice's sum written back in place: no second copy
        p.copy_(trainer.strategy.reduce(p.to(trainer.strategy.root_device), reduce_op="sum"))
    return tensor


def _gather_rows(trainer: Trainer, v: Tensor, n_max: int) -> Tensor:
    """Every rank's ``v`` padded to ``n_max`` rows, as (ranks x ``n_max``) rows on the CPU,
    all-gathered a slice (padded on its own) at a time."""
    g, at = torch.empty((trainer.world_size, n_max, *v.shape[1:]), dtype=v.dtype), 0
    for n in (len(p) for p in _row_slices(g[0], CHUNK_BYTES // trainer.world_size)):
        part = torch.cat([v[at: at + n], v.new_zeros((max(0, n - len(v[at: at + n])), *v.shape[1:]))])
        g[:, at: (at := at + n)] = trainer.strategy.all_gather(part.to(trainer.strategy.root_device)).cpu()
    return g.flatten(0, 1)


def gather_split(trainer: Trainer, chunks: Sequence[Split]) -> Split:
    """Concatenate this rank's batch outputs, all-gather them, drop duplicates, sort by index.

    Each chunk is a dict of tensors with the same first dimension, or a
    :class:`~clustercam.explain.concepts.ConceptBatch` (concatenated by
    :meth:`~clustercam.explain.concepts.ConceptBatch.cat`, gathered as its
    :meth:`~clustercam.explain.concepts.ConceptBatch.tensors`), and holds ``idx`` (dataset
    indices). A DistributedSampler pads ranks to equal length by repeating samples; sorting
    by index and keeping one row per index gives exactly the single-process split, in order.
    Every rank must call it (all-gathers under DDP, of at most :data:`CHUNK_BYTES` each).

    Args:
        trainer: the running trainer.
        chunks: this rank's batch outputs.

    Returns:
        The whole split, of the chunks' type, one row per dataset index, sorted by index.

    Raises:
        RuntimeError: no chunks were collected.
    """
    if not chunks:
        raise RuntimeError("no batch outputs were collected: did the loop run any batch?")
    if isinstance(chunks[0], Mapping):
        local = {k: torch.cat([c[k].detach() for c in chunks]) for k in chunks[0]}
        rebuild: Any = dict
    else:
        local = {k: v.detach() for k, v in type(chunks[0]).cat(chunks).tensors().items()}
        rebuild = type(chunks[0]).from_tensors
    rows, n_max, world = None, len(local["idx"]), trainer.world_size  # rows: of the ranks' gathered rows
    if world > 1:  # each tensor gathered (idx first), then only the kept rows copied out of it
        sizes = trainer.strategy.all_gather(torch.tensor([n_max], device=trainer.strategy.root_device)).flatten()
        n_max = int(sizes.max())
        rows = torch.cat([r * n_max + torch.arange(int(n)) for r, n in enumerate(sizes)])  # not the padding
        local = {**local, "idx": _gather_rows(trainer, local["idx"], n_max)[rows]}
    idx = local["idx"].cpu().long()
    order = torch.argsort(idx, stable=True)
    idx_sorted = idx[order]
    keep = torch.ones_like(idx_sorted, dtype=torch.bool)
    keep[1:] = idx_sorted[1:] != idx_sorted[:-1]
    sel = order[keep]
    if rows is not None:
        return rebuild({k: v[sel] if k == "idx" else _gather_rows(trainer, v, n_max)[rows[sel]]
                        for k, v in local.items()})
    return rebuild({k: v.cpu()[sel] for k, v in local.items()})


def keep_lowest(kept: dict[str, Tensor] | None, new: dict[str, Tensor], k: int | None) -> dict[str, Tensor]:
    """The rows of ``kept`` and ``new`` with the ``k`` lowest ``idx`` (None: every row).

    What a rank keeps of per-image tensors needed only for the first ``k`` images of the
    gathered split (``gather_split`` sorts by index): the global first ``k`` are among the
    union of every rank's lowest ``k``, so memory stays at ``k`` rows however large the set.

    Args:
        kept: the rows kept so far (None: none).
        new: a batch's rows, with ``idx``.
        k: how many rows to keep (None: all).

    Returns:
        At most ``k`` rows, of the same keys.

    Example:
        >>> import torch
        >>> from clustercam.callbacks.gather import keep_lowest
        >>> kept = keep_lowest(None, {"idx": torch.tensor([5, 1]), "v": torch.tensor([50, 10])}, 2)
        >>> keep_lowest(kept, {"idx": torch.tensor([3, 0]), "v": torch.tensor([30, 0])}, 2)
        {'idx': tensor([0, 1]), 'v': tensor([ 0, 10])}
    """
    rows = new if kept is None else {key: torch.cat([kept[key], v]) for key, v in new.items()}
    if k is None or len(rows["idx"]) <= k:
        return rows
    sel = torch.argsort(rows["idx"], stable=True)[:k]
    return {key: v[sel] for key, v in rows.items()}


def unpadded(trainer: Trainer, n_seen: int, batch: int, n_dataset: int) -> Tensor:
    """Which of this rank's next samples are real, not the DistributedSampler's padding.

    For running sums that cannot drop duplicates by index afterwards. The test loop's
    sampler is unshuffled: rank r's j-th sample is position r + j * world of the padded
    list, and positions >= ``n_dataset`` repeat the first samples. The predict loop's
    sampler does not repeat.

    Args:
        trainer: the running trainer; ``n_seen``: samples this rank has seen before this batch;
            ``batch``: the batch's size; ``n_dataset``: the dataset's size.

    Returns:
        ``batch`` bools, False for a padding repeat.
    """
    if trainer.world_size == 1 or trainer.predicting:
        return torch.ones(batch, dtype=torch.bool)
    pos = trainer.global_rank + (n_seen + torch.arange(batch)) * trainer.world_size
    return pos < n_dataset


def eval_inputs(trainer: Trainer, idx: Tensor | None) -> tuple[Tensor, Tensor]:
    """Inputs and labels of the evaluated split at some dataset indices.

    Args:
        trainer: the trainer, whose datamodule has ``eval_tensors()``.
        idx: dataset indices (None: all, in order).

    Returns:
        The inputs N x C x ... and the labels N (no copy for the whole split in order).

    Raises:
        RuntimeError: a datamodule without ``eval_tensors()``.
    """
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not hasattr(dm, "eval_tensors"):
        raise RuntimeError(
            "this callback needs a clustercam datamodule (with eval_tensors()) to read the "
            "inputs it explains")
    x, y = dm.eval_tensors()
    if idx is None or (len(idx) == len(x) and torch.equal(idx.cpu(), torch.arange(len(x)))):
        return x, y  # the whole split in order: no copy (8,000 STL-10 images are 885 MB)
    return x[idx], y[idx]


def number_of_clusters(trainer: Trainer, n_clusters: int | None) -> int | None:
    """K: ``n_clusters`` as configured, else the ``trainer``'s datamodule's number of classes;
    None when neither is known."""
    if n_clusters is not None:
        return int(n_clusters)
    dm = getattr(trainer, "datamodule", None)
    return int(dm.num_classes) if dm is not None and hasattr(dm, "num_classes") else None


def target_layer_of(pl_module: Any, configured: str | None, callback: str) -> str:
    """The target layer a callback explains: its own setting, else the model's declared one.

    Args:
        pl_module: the LightningModule (its ``target_layer`` and ``encoder``).
        configured: the callback's ``target_layer`` setting (None: not set).
        callback: the callback's config name, for the message.

    Returns:
        The dotted name of the encoder module.

    Raises:
        UserError: neither names a layer (the message lists the encoder's modules).
    """
    layer = configured or getattr(pl_module, "target_layer", None)
    if not layer:
        encoder = getattr(pl_module, "encoder", None)
        names = [n for n, _ in encoder.named_modules() if n][:20] if encoder is not None else []
        raise UserError(
            f"{type(pl_module).__name__}'s net declares no target_layer: set "
            f"callbacks.{callback}.target_layer=<dotted name of an encoder module>, one of {names}")
    return layer
