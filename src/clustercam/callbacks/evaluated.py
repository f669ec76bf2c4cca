"""The evaluated data of a test / predict loop as the class concepts read it: its
dataloader, its classes, images again by their index (the galleries' maps), and a batch's
activations with its head (the second pass)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning import LightningModule, Trainer
from torch import Tensor

from clustercam.callbacks.concept_shards import ResumedSubset
from clustercam.exceptions import UserError


def eval_loader(trainer: Trainer) -> Any:
    """The dataloader of the running test or predict loop (the first one)."""
    loaders = trainer.predict_dataloaders if trainer.predicting else trainer.test_dataloaders
    return loaders[0] if isinstance(loaders, list | tuple) else loaders


def eval_dataset(trainer: Trainer) -> Any:
    """The evaluated dataset, whole: a resumed run's loader covers the unfinished images only
    (a :class:`ResumedSubset`), but the classes and the images again by index are the
    dataset's. A datamodule's own ``Subset`` is its dataset and stays as it is."""
    ds = eval_loader(trainer).dataset
    return ds.dataset if isinstance(ds, ResumedSubset) else ds


def eval_classes(trainer: Trainer) -> tuple[Tensor, list[str], list[int]]:
    """The classes of the evaluated images (sorted), a name and the number of images of each."""
    ds = eval_dataset(trainer)
    y = getattr(ds, "y", getattr(ds, "targets", None))
    if y is None:
        raise RuntimeError(f"class concepts need the evaluated dataset's labels: {type(ds).__name__} "
                           "has neither .y nor .targets")
    y = torch.as_tensor(y).long().view(-1)
    classes, sizes = y.unique(return_counts=True)
    per_image = getattr(getattr(trainer, "datamodule", None), "class_names", None) or []
    first = [int((y == c).nonzero()[0]) for c in classes]
    names = [str(per_image[i]) if len(per_image) == len(y) else str(int(c)) for i, c in zip(first, classes)]
    return classes, names, sizes.tolist()


def class_rows(classes: Tensor, y: Tensor) -> Tensor:
    """The row of each label ``y`` among the evaluated ``classes`` (sorted: :func:`eval_classes`)."""
    y = y.long().cpu()
    rows = torch.searchsorted(classes, y).clamp(max=max(len(classes) - 1, 0))
    if len(y) and not torch.equal(classes[rows], y):
        raise UserError(f"class concepts: the batch's labels {sorted(set(y[classes[rows] != y].tolist()))} are not "
                        "among the evaluated dataset's (its .y / .targets)")
    return rows


def batches_again(trainer: Trainer) -> Callable[[list[int]], Any]:
    """``indices -> batch`` (on the model's device) of evaluated images, read from the
    evaluated dataset through its loader's collate function."""
    loader, ds = eval_loader(trainer), eval_dataset(trainer)

    def batch_of(index: list[int]) -> Any:
        batch = trainer.strategy.batch_to_device(loader.collate_fn([ds[i] for i in index]))
        if [int(i) for i in batch[2]] != list(index):
            raise RuntimeError(f"class concepts: the evaluated dataset gave images {batch[2].tolist()} "
                               f"for the indices {list(index)}")
        return batch

    return batch_of


def images_again(trainer: Trainer, pl_module: LightningModule) -> Callable[[list[int]], Tensor]:
    """``indices -> activations`` (``pl_module.features``) of evaluated images
    (:func:`batches_again`): a few images, not a pass."""
    batch_of = batches_again(trainer)

    @torch.no_grad()
    def activations_of(index: list[int]) -> Tensor:
        return pl_module.features(batch_of(index)[0])

    return activations_of


def concept_batch(pl_module: LightningModule, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor], Tensor]:
    """(activations, head, logits) of a batch as the concept pipeline reads them: the model's
    ``concept_batch`` (a token or intermediate layer's head is bound to the batch's inputs),
    else ``features`` and ``head``."""
    if callable(getattr(pl_module, "concept_batch", None)):
        return pl_module.concept_batch(x)
    a = pl_module.features(x)
    return a, pl_module.head, pl_module.head(a)
