"""Writing run files: every file is written atomically (temp file + rename).

An error later in a run never truncates what was already written. The names of the files are
the contract's (:mod:`clustercam.outputs.contract`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clustercam.outputs.contract import METRICS


def atomic_write(path: Path, write: Any, mode: str = "w") -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, newline="" if "b" not in mode else None) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def write_json(path: str | Path, data: Mapping[str, Any], merge: bool = False) -> Path:
    """Write ``data`` as JSON (NaN becomes null); ``merge`` keeps keys already in the file."""
    path = Path(path)
    payload: dict[str, Any] = {}
    if merge and path.exists():
        payload = json.loads(path.read_text())
    payload.update(_jsonable(dict(data)))
    return atomic_write(path, lambda fh: json.dump(payload, fh, indent=2, sort_keys=True))


def start_run(output_dir: str | Path) -> Path:
    """Begin a run in ``output_dir``: drop a ``metrics.json`` left by an earlier run there, so
    the callbacks' merged writes hold this run's keys only."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).unlink(missing_ok=True)
    return out


def write_csv(
    path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """Write rows of dicts as CSV with a header (``columns`` fixes the order)."""
    rows = list(rows)
    cols = list(columns) if columns is not None else list(rows[0]) if rows else []

    def write(fh: Any) -> None:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _jsonable(r.get(k)) for k in cols})

    return atomic_write(Path(path), write)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (markdown, YAML, ...)."""
    return atomic_write(Path(path), lambda fh: fh.write(text))


def write_npz(path: str | Path, **arrays: Any) -> Path:
    """Arrays in one compressed ``.npz`` (e.g. the maps behind the figures)."""
    import numpy as np

    return atomic_write(Path(path), lambda fh: np.savez_compressed(fh, **arrays), mode="wb")


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi), mode="wb")
    finally:
        plt.close(fig)
    return path
