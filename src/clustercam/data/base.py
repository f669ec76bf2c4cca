"""One datamodule interface for series and images.

A subclass implements ``load_split(split) -> (x, y)`` (float inputs N x C x ..., integer
labels 0..K-1) and sets ``name``; everything else (index tracking for DDP gathering,
loaders, shapes, class count) lives here, so a new dataset is a config plus one method.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from clustercam.exceptions import UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


class IndexedDataset(Dataset):
    """(x, y, index) triples: the index lets epoch-end callbacks undo a DistributedSampler.

    Args:
        x: N x C x ... inputs.
        y: N labels.

    Raises:
        UserError: x and y of different lengths.
    """

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if len(x) != len(y):
            raise UserError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.x[i], self.y[i], i


def check_finite(x: Tensor, what: str) -> None:
    """Check that a split holds no NaN or infinite values.

    Args:
        x: N x C x ... inputs.
        what: the split's name, for the message.

    Raises:
        UserError: NaN or infinite values (the first samples named).
    """
    if not torch.isfinite(x).all():
        rows = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()
        raise UserError(
            f"{what} contains NaN or infinite values in {len(rows)} samples "
            f"(first indices {rows[:5].tolist()}); clean or impute the data first"
        )


class ClusterDataModule(LightningDataModule):
    """Base datamodule: a train split to fit the autoencoder, an evaluated split to cluster.

    A subclass implements :meth:`load_split` and sets ``name``; batches are
    ``(x, y, index)``, and ``input_shape`` and ``num_classes`` come from the data. The
    arguments are the ``data.*`` config keys every dataset shares.

    Args:
        batch_size: training batch size (>= 1).
        eval_batch_size: batch size of the evaluated split (None: ``max(batch_size, 256)``).
        num_workers: DataLoader worker processes.
        eval_split: ``test`` (default, as the authors' code) or ``train``: what validation,
            testing, k-means and the explanations use.
        max_samples: cap on each split (quick runs, tests; None: all).
        pin_memory: the DataLoaders' ``pin_memory``.

    Raises:
        UserError: a batch_size or max_samples < 1, an unknown eval_split.

    Example:
        >>> import torch
        >>> from clustercam.data.base import ClusterDataModule
        >>> class Noise(ClusterDataModule):  # a new dataset: a name and load_split
        ...     name = "noise"
        ...     def load_split(self, split):
        ...         gen = torch.Generator().manual_seed(int(split == "test"))
        ...         return torch.randn(20, 1, 32, generator=gen), torch.arange(20) % 2
        >>> dm = Noise(batch_size=8)
        >>> dm.setup()
        >>> dm.input_shape, dm.num_classes, len(dm.train_dataloader())
        ((1, 32), 2, 3)
        >>> x, y, idx = next(iter(dm.val_dataloader()))  # the evaluated split, in order
        >>> tuple(x.shape), idx[:3].tolist()
        ((20, 1, 32), [0, 1, 2])
    """

    name: str = "dataset"

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        eval_split: str = "test",
        max_samples: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if eval_split not in SPLITS:
            raise UserError(f"eval_split must be one of {SPLITS}, got {eval_split!r}")
        if max_samples is not None and max_samples < 1:
            raise UserError(f"max_samples must be >= 1 or null, got {max_samples}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.num_workers = num_workers
        self.eval_split = eval_split
        self.max_samples = max_samples
        self.pin_memory = pin_memory
        self._splits: dict[str, IndexedDataset] = {}

    # -- to implement -------------------------------------------------------------------
    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """What a subclass implements: the inputs and labels of one split.

        Args:
            split: ``train`` or ``test``.

        Returns:
            Float inputs N x C x ... and integer labels 0..K-1 (N).
        """
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------
    def split(self, split: str) -> IndexedDataset:
        """The (cached) dataset of one split."""
        if split not in self._splits:
            x, y = self.load_split(split)
            x = torch.as_tensor(x, dtype=torch.float32)
            y = torch.as_tensor(y, dtype=torch.long)
            if self.max_samples is not None:
                x, y = x[: self.max_samples], y[: self.max_samples]
            check_finite(x, f"{self.name} {split} split")
            self._splits[split] = IndexedDataset(x, y)
            log.info("%s %s split: %d samples of shape %s", self.name, split, len(x), tuple(x.shape[1:]))
        return self._splits[split]

    def setup(self, stage: str | None = None) -> None:
        """Load (and check) the train and evaluated splits."""
        self.data_train = self.split("train")
        self.data_eval = self.split(self.eval_split)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input's shape without the batch axis, (C, L) or (C, H, W)."""
        return tuple(self.split("train").x.shape[1:])

    @property
    def num_classes(self) -> int:
        """The number of classes: the largest label in either split + 1."""
        ys = torch.cat([self.split(s).y for s in {"train", self.eval_split}])
        return int(ys.max()) + 1

    def eval_tensors(self) -> tuple[Tensor, Tensor]:
        """All inputs and labels of the evaluated split, in index order."""
        ds = self.split(self.eval_split)
        return ds.x, ds.y

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """The train split, shuffled, in ``batch_size`` batches."""
        return self._loader(self.split("train"), self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The evaluated split, in order, in ``eval_batch_size`` batches."""
        return self._loader(self.split(self.eval_split), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The evaluated split (as :meth:`val_dataloader`)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The evaluated split (as :meth:`val_dataloader`)."""
        return self.val_dataloader()

    def describe(self) -> dict[str, Any]:
        """The dataset's name, input shape and class count, for the run's records."""
        return {"dataset": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes}
