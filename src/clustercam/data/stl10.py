"""STL-10 through torchvision: 5,000 train / 8,000 test labelled 96 x 96 colour images.

The files live at ``<data_dir>/stl10_binary/`` in the official binary layout
(``train_X.bin``, ``train_y.bin``, ``test_X.bin``, ``test_y.bin``; ``class_names.txt``
optional): images as uint8, 3 x 96 x 96 each, stored column-major; labels 1..10 in the
file, 0..9 here. Reading goes through ``torchvision.datasets.STL10``. Its integrity check
wants the md5 of every official file, including the 2.6 GB ``unlabeled_X.bin`` that no
labelled split reads; ``verify_md5: false`` (the default) only requires the two files of
the requested split, so a copy without the unlabeled images, or tiny files written by a
test, load too. With ``verify_md5: true`` torchvision's full check applies.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from clustercam.data.base import ClusterDataModule
from clustercam.data.ucr import DatasetUnavailableError
from clustercam.exceptions import UserError

log = logging.getLogger(__name__)

SPLIT_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"


def stl10_files_present(data_dir: str | Path, split: str) -> bool:
    folder = Path(data_dir).expanduser() / "stl10_binary"
    return all((folder / f).is_file() for f in SPLIT_FILES[split])


def unavailable_message(data_dir: str | Path, split: str, reason: str) -> str:
    folder = Path(data_dir).expanduser() / "stl10_binary"
    return (
        f"STL-10 {split} split is not available ({reason}). Provide it in one of these ways:\n"
        f"  1. put the official binary files {', '.join(SPLIT_FILES[split])} (from "
        f"{URL}) in {folder}/ (or set data.data_dir=<folder holding stl10_binary/>);\n"
        f"  2. go online and keep data.download=true so torchvision downloads and extracts "
        f"the 2.5 GB archive there."
    )


def _stl10_class(verify_md5: bool) -> type:
    """torchvision's STL10, with an integrity check limited to the requested split's files."""
    from torchvision.datasets import STL10

    if verify_md5:
        return STL10

    class _SplitFilesSTL10(STL10):
        def _check_integrity(self) -> bool:
            split = "test" if self.split == "test" else "train"
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, f)) for f in SPLIT_FILES[split])

    return _SplitFilesSTL10


def load_stl10(
    data_dir: str | Path, split: str, download: bool = True, verify_md5: bool = False
) -> tuple[Tensor, Tensor]:
    """(uint8 N x 3 x 96 x 96, labels 0..9) of the train or test split."""
    if split not in SPLIT_FILES:
        raise UserError(f"split must be one of {tuple(SPLIT_FILES)}, got {split!r}")
    root = Path(data_dir).expanduser()
    if not download and not stl10_files_present(root, split):
        raise DatasetUnavailableError(unavailable_message(root, split, "files missing, download off"))
    cls = _stl10_class(verify_md5)
    try:
        ds = cls(str(root), split=split, download=download)
    except (RuntimeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        reason = f"download failed: {first}" if download else first
        raise DatasetUnavailableError(unavailable_message(root, split, reason)) from None
    except ValueError as err:  # a file whose size is not a whole number of 3 x 96 x 96 images
        raise UserError(f"STL-10 files under {root / 'stl10_binary'} are malformed: {err}") from None
    images = torch.from_numpy(ds.data).contiguous()  # torchvision already undid column-major
    labels = torch.from_numpy(ds.labels.astype("int64"))
    if len(images) != len(labels):
        raise UserError(
            f"STL-10 {split} split: {len(images)} images but {len(labels)} labels under "
            f"{root / 'stl10_binary'}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        bad = sorted({(int(v) + 1) % 256 for v in labels[(labels < 0) | (labels > 9)].tolist()})
        raise UserError(
            f"STL-10 {split} labels must be 1..10 in {SPLIT_FILES[split][1]}, found {bad[:5]}"
        )
    return images, labels


class STL10DataModule(ClusterDataModule):
    """STL-10 (``data=stl10``) as N x 3 x 96 x 96 floats in [0, 1], labels 0..9 (airplane ... truck).

    Args:
        data_dir: the folder holding ``stl10_binary/{train,test}_{X,y}.bin`` (the official
            binary layout).
        download: download the 2.5 GB archive when the files are missing (online only).
        verify_md5: torchvision's md5 check of every official file (needs
            ``unlabeled_X.bin`` too); False: only the requested split's two files must exist.
        **kwargs (Any): the keys every clustercam datamodule takes
            (:class:`~clustercam.data.base.ClusterDataModule`: ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``eval_split``, ``max_samples``,
            ``pin_memory``).

    Raises:
        DatasetUnavailableError: a split that is not on disk and cannot be downloaded (one
            message saying how to provide it).
    """

    name = "STL10"

    def __init__(
        self, data_dir: str = "data", download: bool = True, verify_md5: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = data_dir
        self.download = download
        self.verify_md5 = verify_md5

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """Images N x 3 x 96 x 96 in [0, 1] and labels 0..9 of one split."""
        images, labels = load_stl10(self.data_dir, split, self.download, self.verify_md5)
        return images.float().div_(255.0), labels
