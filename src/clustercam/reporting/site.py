"""A run or a multirun folder as a static web site, rendered by Jinja2.

The site is ``<folder>/report/``: ``index.html`` with its style and few lines of script
inline, the tables in the page, and the figures copied under ``report/files/``, so the
folder alone can be zipped and sent and opens from the file system with no server and no
network. Only figures are copied: a copy of a table (``concept_metrics.csv``) would be
found twice by the studies that collect a multirun's tables by name. Each table links its
file in the run folder (``../<table>``).
A multirun's page links each job's own page (``<job>/report/index.html``).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from clustercam.exceptions import MissingFileError, UserError
from clustercam.outputs import CONFIG, METRICS, REPORT, REPORT_FILES, REPORT_INDEX
from clustercam.reporting.folder import Run, find_runs, is_run, number, read_run
from clustercam.runtime.status import DONE, read_status

log = logging.getLogger(__name__)
# inside report/: the page and the folder of the figures it shows (the contract's names)
INDEX = Path(REPORT_INDEX).relative_to(REPORT).as_posix()
FILES = Path(REPORT_FILES).relative_to(REPORT).as_posix()
MAX_JOB_COLUMNS = 12  # metric columns of a multirun's table (the most common scalars)


def fmt(value: Any) -> str:
    """A cell as shown: numbers to 4 significant digits, NaN as ``NaN``, text as it is."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value)):
        return str(value).strip()
    x = number(value)
    if x is None:
        return str(value)
    return "NaN" if math.isnan(x) else f"{x:.4g}"


def sort_value(value: Any) -> str:
    """What a column sorts by: the number when the cell is one, else the text."""
    x = number(value)
    return repr(x) if x is not None and x == x else str(value if value is not None else "")


def render_markdown(text: str) -> Any:
    """A Markdown file (tables, headings) as HTML; raw HTML in it is shown as text."""
    import markdown
    from markupsafe import Markup

    return Markup(markdown.markdown(text.replace("<", "&lt;"), extensions=["tables", "fenced_code"]))


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("clustercam.reporting", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(fmt=fmt, sort_value=sort_value, markdown=render_markdown)
    return env


def _fresh_dir(folder: Path) -> tuple[Path, Path]:
    """A temporary folder beside ``report/`` to build in; swapped in by :func:`_swap`."""
    tmp = folder / f".{REPORT}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp, folder / REPORT


def _swap(tmp: Path, target: Path) -> Path:
    """Replace ``target`` by ``tmp`` (the old page stays until the new one is complete)."""
    old = target.with_name(f".{REPORT}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target / INDEX


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


def write_run_report(folder: str | Path) -> Path:
    """Write ``<folder>/report/index.html`` for one run folder; returns its path.

    Raises:
        UserError: ``folder`` is not a run folder.
    """
    run = read_run(Path(folder))
    tmp, target = _fresh_dir(run.folder)
    try:
        for rel in (f.path for g in run.galleries for f in g.figures):
            dest = tmp / FILES / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run.folder / rel, dest)
        page = environment().get_template("run.html.j2").render(
            run=run, files=FILES, title=run.name, stamp=_stamp(), config=run.config)
        (tmp / INDEX).write_text(page, encoding="utf-8")
        return _swap(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def job_columns(runs: list[Run]) -> list[str]:
    """The multirun table's metric columns: the numeric headline scalars most jobs have."""
    counts = Counter(k for r in runs for k, v in r.headline().items()
                     if number(v) is not None and not isinstance(v, bool))
    return [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:MAX_JOB_COLUMNS]


def write_multirun_report(folder: str | Path, jobs: bool = True) -> Path:
    """Write ``<folder>/report/index.html`` for a multirun folder: a sortable table of every
    job's status and metrics, each linked to the job's page (how many jobs did not finish, by
    status, above it: :mod:`clustercam.runtime.status`); ``jobs`` (re)writes every job's page,
    else only the pages missing. Returns the index's path.

    Raises:
        UserError: ``folder`` holds no run folder.
    """
    folder = Path(folder)
    paths = find_runs(folder) if folder.is_dir() else []
    if not paths:
        raise UserError(f"{folder} is neither a clustercam run folder ({CONFIG} or {METRICS}) "
                        "nor a multirun folder holding run folders")
    runs = []
    for path in paths:
        if jobs or not (path / REPORT_INDEX).is_file():
            write_run_report(path)
        runs.append(read_run(path))
    common = set.intersection(*(set(r.overrides) for r in runs))  # shown once, above the table
    # how each job ended (status.json; older runs have none: finished, as the studies count them)
    states = [str((read_status(r.folder) or {}).get("status", DONE)) for r in runs]
    unfinished = Counter(s for s in states if s != DONE)
    tmp, target = _fresh_dir(folder)
    try:
        page = environment().get_template("multirun.html.j2").render(
            jobs=[(r, r.folder.relative_to(folder).as_posix(),
                   Path("..", r.folder.relative_to(folder), REPORT_INDEX).as_posix(),
                   [o for o in r.overrides if o not in common], state) for r, state in zip(runs, states)],
            unfinished=sorted(unfinished.items()),
            common=[o for o in runs[0].overrides if o in common],
            columns=job_columns(runs), title=folder.name, stamp=_stamp())
        (tmp / INDEX).write_text(page, encoding="utf-8")
        return _swap(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_report(folder: str | Path) -> Path:
    """The page of a run folder, or of a multirun folder and each of its jobs.

    Raises:
        MissingFileError: ``folder`` does not exist.
        UserError: ``folder`` is neither.
    """
    folder = Path(folder)
    if not folder.exists():
        raise MissingFileError(f"{folder} does not exist: give a run folder or a multirun folder")
    if is_run(folder):
        return write_run_report(folder)
    return write_multirun_report(folder)

