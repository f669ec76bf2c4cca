"""Reading a finished run folder: its config, metrics, tables and figures, found by suffix.

Nothing here knows a particular callback's file names: a table is any ``*.csv`` or ``*.md``
of the run, a figure any ``*.png`` / ``*.svg`` / ``*.jpg``, grouped into galleries by the
folder they are in (``figures/concepts/``) or a numbered stem (``cluster_3.png``). What every
run folder holds (``config.yaml``, ``metrics.json``) and what is no result of the run (the
loggers' stores, the checkpoints, the report: ``NOT_RESULTS``) are the contract's names
(:mod:`clustercam.outputs`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clustercam.exceptions import UserError
from clustercam.outputs import CONFIG, HYDRA_OVERRIDES, METRICS, NOT_RESULTS

# weights anywhere in a run folder are no result either (left out of the page and of MLflow)
WEIGHTS = (".ckpt", ".safetensors", ".pt", ".pth")
TABLES = (".csv", ".md")
FIGURES = (".png", ".svg", ".jpg", ".jpeg")
MAX_ROWS = 500  # rows shown per table on the page (the whole file is linked)


@dataclass
class Table:
    """A CSV as rows of cells (``MAX_ROWS`` at most), or a Markdown file as its text."""

    path: Path  # relative to the run folder
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    total_rows: int = 0
    markdown: str | None = None


@dataclass
class Figure:
    path: Path  # relative to the run folder
    caption: str


@dataclass
class Gallery:
    title: str
    figures: list[Figure]


@dataclass
class Run:
    """One run folder as the report shows it."""

    folder: Path
    config: dict[str, Any]
    config_text: str
    overrides: list[str]
    metrics: dict[str, Any]  # flattened: nested keys joined with "/"
    tables: list[Table]
    galleries: list[Gallery]

    @property
    def name(self) -> str:
        return self.folder.name

    def headline(self) -> dict[str, Any]:
        """The top-level scalars of ``metrics.json`` (``nmi``, ``acc``, ``top1``, ...)."""
        return {k: v for k, v in self.metrics.items() if "/" not in k}


def is_run(folder: Path) -> bool:
    return (folder / CONFIG).is_file() or (folder / METRICS).is_file()


def natural_key(text: str) -> list[Any]:
    """``cluster_10`` after ``cluster_9``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def run_files(folder: Path) -> Iterator[Path]:
    """The run's result files, relative to ``folder`` (no hidden files, loggers' stores,
    weights or report), in a stable order."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*"), key=lambda p: natural_key(p.as_posix())):
        rel = path.relative_to(folder)
        if (not path.is_file() or rel.parts[0] in NOT_RESULTS or path.suffix in WEIGHTS
                or any(part.startswith(".") for part in rel.parts)):
            continue
        yield rel


def find_runs(folder: Path, depth: int = 3) -> list[Path]:
    """The run folders under a multirun folder (``<sweep>/<job>``, or deeper up to ``depth``)."""
    found: list[Path] = []
    for child in sorted((p for p in Path(folder).iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        if child.name.startswith(".") or child.name in NOT_RESULTS:
            continue
        if is_run(child):
            found.append(child)
        elif depth > 1:
            found += find_runs(child, depth - 1)
    return found


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def read_table(folder: Path, rel: Path) -> Table:
    path = folder / rel
    if rel.suffix == ".md":
        return Table(rel, markdown=path.read_text(errors="replace"))
    with open(path, newline="", errors="replace") as fh:
        reader = csv.reader(fh)
        columns = next(reader, [])
        rows, total = [], 0
        for row in reader:
            total += 1
            if total <= MAX_ROWS:
                rows.append(row)
    return Table(rel, columns, rows, total)


def caption(rel: Path) -> str:
    """A figure's caption: its file name without suffix, underscores as spaces."""
    return rel.stem.replace("_", " ")


def galleries(rels: list[Path]) -> list[Gallery]:
    """Figures grouped: one gallery per sub-folder (``figures/concepts``), and at the top
    of ``figures/`` one per numbered family (``cluster_0``, ``cluster_1``, ...)."""
    groups: dict[str, list[Figure]] = {}
    for rel in rels:
        parent = rel.parent
        if parent.name and parent.parent.name:  # figures/concepts/x.png -> "concepts"
            key = parent.name
        else:
            numbered = re.fullmatch(r"(.+?)_\d+", rel.stem)
            key = numbered.group(1) if numbered else parent.as_posix() if parent.name else "figures"
        groups.setdefault(key, []).append(Figure(rel, caption(rel)))
    def title(key: str, figs: list[Figure]) -> str:
        if key == "figures":
            return "Figures"
        numbered = all(re.fullmatch(rf"{re.escape(key)}_\d+", f.path.stem) for f in figs)
        return f"Per {key.replace('_', ' ')}" if numbered else key.replace("_", " ").capitalize()

    out = [Gallery(title(key, figs), figs) for key, figs in groups.items()]
    return sorted(out, key=lambda g: (g.title == "Figures", natural_key(g.title)))


def read_run(folder: Path) -> Run:
    """Everything the page shows of one run folder.

    Raises:
        UserError: ``folder`` is not a run folder (no ``config.yaml`` nor ``metrics.json``).
    """
    folder = Path(folder)
    if not folder.is_dir() or not is_run(folder):
        raise UserError(f"{folder} is not a clustercam run folder: it has neither {CONFIG} nor {METRICS}")
    text = (folder / CONFIG).read_text() if (folder / CONFIG).is_file() else ""
    config = yaml.safe_load(text) or {} if text else {}
    overrides_file = folder / HYDRA_OVERRIDES
    overrides = yaml.safe_load(overrides_file.read_text()) or [] if overrides_file.is_file() else []
    metrics: dict[str, Any] = {}
    if (folder / METRICS).is_file():
        try:
            metrics = flatten(json.loads((folder / METRICS).read_text()))
        except json.JSONDecodeError as exc:
            raise UserError(f"{folder / METRICS} is not valid JSON: {exc}") from None
    files = list(run_files(folder))
    tables = sorted((read_table(folder, rel) for rel in files if rel.suffix in TABLES),
                    key=lambda t: (t.markdown is None, t.total_rows))  # summaries, then small first
    figures = [rel for rel in files if rel.suffix.lower() in FIGURES]
    return Run(folder, config if isinstance(config, dict) else {}, text, [str(o) for o in overrides],
               metrics, tables, galleries(figures))


def number(value: Any) -> float | None:
    """``value`` as a float when it is a number or a numeric string (bools, text: None)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
