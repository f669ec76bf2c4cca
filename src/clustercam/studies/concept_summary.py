"""Aggregate concept runs into one concept summary (the paper's Tables 1-2).

    python -m clustercam.concept_summary outputs/concepts/multiruns/<date_time>

Reads every concept-metrics file of the outputs contract (``concept_metrics.csv``) under the
given run or multirun directories and writes ``concept_summary.md`` beside them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from clustercam import outputs
from clustercam.exceptions import UserError
from clustercam.outputs.concept_markdown import summary_markdown
from clustercam.runtime.errors import exit_on_user_error
from clustercam.runtime.status import is_finished, unfinished_report


def find_metric_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every concept-metrics file at or under ``paths`` (run or multirun directories) of a
    run that finished (see :func:`clustercam.runtime.status.unfinished_report`)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += [f for f in sorted(p.rglob(outputs.CONCEPT_METRICS)) if is_finished(f.parent)]
        else:
            raise UserError(f"{str(p)!r} does not exist")
    if not files:
        raise UserError(f"no {outputs.CONCEPT_METRICS} under {[str(p) for p in paths]}")
    return files


def collect_runs(paths: Sequence[str | Path]) -> pd.DataFrame:
    """All runs' concept metrics in one frame, with a ``run`` column (the run directory)."""
    frames = []
    for f in find_metric_files(paths):
        df = pd.read_csv(f)
        df["run"] = str(f.parent)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def write_summary(paths: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Aggregate the runs under ``paths`` into one summary (default: the contract's
    ``concept_summary.md`` in the first path if it is a directory)."""
    df = collect_runs(paths)
    first = Path(paths[0])
    out = Path(out) if out else (first if first.is_dir() else first.parent) / outputs.CONCEPT_SUMMARY
    runs = df["run"].nunique()
    text = summary_markdown(df, title=f"Concept clustering ({runs} runs)")
    missing = unfinished_report([p for p in paths if Path(p).is_dir()])
    return outputs.write_text(out, text + ("\n" + missing if missing else ""))


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run or multirun directories (or CSV files)")
    parser.add_argument("-o", "--out", default=None, help=f"output .md (default: <first>/{outputs.CONCEPT_SUMMARY})")
    args = parser.parse_args(argv)
    print(write_summary(args.paths, args.out))
