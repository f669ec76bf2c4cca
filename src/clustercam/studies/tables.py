"""Table I of the Grad-CeAM paper (cluster-cardinality discrimination, eq. 12) from runs:
mean ± std over seeds, and the table of the *high* model (the best NMI), as the paper
reports it; plus the per-target table ("Which Grad-CeAM target?")."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from clustercam.outputs import CARDINALITY_STATS
from clustercam.studies.records import GRADCEAM_TARGETS, RunRecord, by_dataset, high_low

# Paper Table I: median / mean / min / max of the cardinality ratio
PAPER = {
    "STL10": (1.1, 1.2, 0.0, 3.1),
    "MNIST": (1.4, 1.4, 0.5, 5.8),
    "Trace": (1.5, 1.7, 1.0, 2.8),
    "Coffee": (1.2, 1.2, 0.0, 2.3),
    "CBF": (1.7, 1.4, 0.8, 1.8),
}
PAPER_NMI = {"Coffee": 0.82}


def mean_std(values: list[float]) -> str:
    """``m ± s`` (sample std) of the finite values, ``n/a`` if none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _order(datasets) -> list[str]:
    return sorted(datasets, key=lambda d: (list(PAPER).index(d) if d in PAPER else 99, d))


def _paper(ds: str) -> str:
    return " / ".join(f"{v:.1f}" for v in PAPER[ds]) if ds in PAPER else "n/a"


def table1(records: list[RunRecord], timings: Mapping[str, float]) -> str:
    """Mean ± std over seeds of each run's median / mean / min / max, the NMI spread
    (best / worst run) and the wall time of the dataset's sweep."""
    lines = ["| dataset | seeds | NMI | NMI best / worst | median | mean | min | max | paper (median / mean / min / max) | time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups = by_dataset(records)
    for ds in _order(groups):
        rs = groups[ds]
        high, low = high_low(rs)
        cells = [mean_std([_num(r.summary.get(k)) for r in rs]) for k in CARDINALITY_STATS]
        nmi = mean_std([r.nmi for r in rs]) + (f" (paper {PAPER_NMI[ds]})" if ds in PAPER_NMI else "")
        t = timings.get(ds)
        lines.append(f"| {ds} | {len(rs)} | {nmi} | {high.nmi:.2f} / {low.nmi:.2f} | " + " | ".join(cells)
                     + f" | {_paper(ds)} | {'' if t is None else f'{t / 60:.1f} min'} |")
    return "\n".join(lines)


def table1_selected(records: list[RunRecord]) -> str:
    """Table I of the high and the low model of each dataset (the paper reports its best run)."""
    lines = ["| dataset | model | seed | NMI | median | mean | min | max | paper (median / mean / min / max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups = by_dataset(records)
    for ds in _order(groups):
        for name, r in zip(("high", "low"), high_low(groups[ds])):
            cells = [f"{_num(r.summary.get(k)):.2f}" for k in CARDINALITY_STATS]
            lines.append(f"| {ds} | {name} | {r.seed} | {r.nmi:.2f} | " + " | ".join(cells) + f" | {_paper(ds)} |")
    return "\n".join(lines)


def modes_table(records: list[RunRecord]) -> str:
    """Per dataset and Grad-CeAM target, mean ± std over seeds of the cardinality summary."""
    lines = ["| dataset | target | NMI | median | mean | min | max |", "|---|---|---|---|---|---|---|"]
    groups = by_dataset([r for r in records if r.modes])
    for ds in _order(groups):
        rs = groups[ds]
        nmi = mean_std([r.nmi for r in rs])
        for mode in GRADCEAM_TARGETS:
            cells = [mean_std([r.modes.get(mode, {}).get(k, math.nan) for r in rs]) for k in CARDINALITY_STATS]
            lines.append(f"| {ds} | {mode} | {nmi} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
