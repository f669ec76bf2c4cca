"""The evaluated dataset the class concepts read: a resumed run's subset is undone, a
datamodule's own ``Subset`` is not."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from clustercam.callbacks.concept_shards import subset_loader
from clustercam.callbacks.evaluated import class_rows, eval_dataset
from clustercam.exceptions import UserError


def _trainer(loader: DataLoader) -> SimpleNamespace:
    return SimpleNamespace(predicting=False, test_dataloaders=[loader])


def test_a_resumed_loader_reads_the_whole_dataset_and_a_users_subset_stays() -> None:
    full = TensorDataset(torch.arange(10.0), torch.arange(10) % 2, torch.arange(10))
    own = Subset(full, [1, 3, 5, 7])  # the datamodule's evaluated split
    loader = DataLoader(own, batch_size=2)
    assert eval_dataset(_trainer(loader)) is own
    resumed = subset_loader(loader, [2, 3])  # the images a killed run left
    assert len(resumed.dataset) == 2 and eval_dataset(_trainer(resumed)) is own


def test_class_rows_are_the_labels_places_among_the_classes_and_a_stranger_is_an_error() -> None:
    classes = torch.tensor([1, 207, 948])
    assert class_rows(classes, torch.tensor([948, 1, 207, 207])).tolist() == [2, 0, 1, 1]
    for stranger in (5, -1, 1000):
        with pytest.raises(UserError, match=rf"labels \[{stranger}\] are not among"):
            class_rows(classes, torch.tensor([1, stranger]))
