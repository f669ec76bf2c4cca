"""The evaluated dataset the class concepts read: a resumed run's subset is undone, a
datamodule's own ``Subset`` is not."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from clustercam.callbacks.concept_shards import subset_loader
from clustercam.callbacks.evaluated import eval_dataset


def _trainer(loader: DataLoader) -> SimpleNamespace:
    return SimpleNamespace(predicting=False, test_dataloaders=[loader])


def test_a_resumed_loader_reads_the_whole_dataset_and_a_users_subset_stays() -> None:
    full = TensorDataset(torch.arange(10.0), torch.arange(10) % 2, torch.arange(10))
    own = Subset(full, [1, 3, 5, 7])  # the datamodule's evaluated split
    loader = DataLoader(own, batch_size=2)
    assert eval_dataset(_trainer(loader)) is own
    resumed = subset_loader(loader, [2, 3])  # the images a killed run left
    assert len(resumed.dataset) == 2 and eval_dataset(_trainer(resumed)) is own
