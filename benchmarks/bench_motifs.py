"""The motifs run (``experiment=concepts_motifs``) as a user runs it: wall time split into
training and explaining.

Runs ``python -m clustercam.train experiment=concepts_motifs`` (the FCN trained on 6,000
motif series for 6 epochs, then concepts of the 600 test series scored against the motif
masks, class concepts on, figures off) in a fresh process, and splits its wall time by the
timestamps of the run's own log: set-up (interpreter, data generation, model) until the
evaluated split is loaded; training (fit, its validation epochs included) until the trained
weights are written; explaining (the test loop: activations, concepts, fidelity, truth
scores, painting out, class concepts, files) until the concept tables are written.
``--quick``: 600 training series, 2 epochs, 60 test series (a smoke run, not a result).

    python -m benchmarks.bench_motifs [--quick]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.common import (
    ROOT,
    CpuMeter,
    Headline,
    Section,
    Table,
    fmt_s,
    load_average,
    main_single,
    parser,
)

QUICK = ("data.n_train=600", "data.n_test=60", "trainer.max_epochs=2")
MARKS = {  # phase end -> a message of the run's log that closes it
    "set-up": re.compile(r"SyntheticMotifs test split"),
    "training": re.compile(r"Trained \S+ weights written"),
    "explaining": re.compile(r"Concepts of \d+ images"),
}
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def phase_seconds(log: str, start: float) -> dict[str, float]:
    """Seconds of each phase of :data:`MARKS` from a run's log text (``start``: the process's
    start, epoch seconds); NaN for a phase whose closing message is missing."""
    ends: dict[str, float] = {}
    for line in log.splitlines():
        stamp = STAMP.match(line)
        for phase, mark in MARKS.items():
            if stamp and phase not in ends and mark.search(line):
                ends[phase] = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    out, last = {}, start
    for phase in MARKS:
        out[phase] = ends[phase] - last if phase in ends else float("nan")
        last = ends.get(phase, last)
    return out


def motifs_run(*overrides: str) -> tuple[float, dict[str, float], dict]:
    """(wall seconds, seconds per phase, metrics.json) of one run in a fresh process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MPLBACKEND": "Agg",
           "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "clustercam.train", "print_config=false", "experiment=concepts_motifs",
               "logger=none", "callbacks.concepts.figures=false", f"hydra.run.dir={out}", *overrides]
        t0, start = time.perf_counter(), time.time()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(f"motifs run failed:\n{proc.stderr[-3000:]}\n")
            return float("nan"), {p: float("nan") for p in MARKS}, {}
        log = "".join(p.read_text() for p in Path(out).glob("*.log"))
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    return wall, phase_seconds(log, start), metrics


def run(args) -> Section:
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    wall, phases, metrics = motifs_run(*(QUICK if args.quick else ()))
    load1 = load_average()
    acc = metrics.get("top1", float("nan"))
    rows = [[phase, fmt_s(s), f"{100 * s / wall:.0f} %"] for phase, s in phases.items()]
    rows.append(["whole run", fmt_s(wall), "100 %"])
    notes = [f"Test accuracy {100 * acc:.1f} %; 1-minute load average {load0:.2f} before, {load1:.2f} after."]
    headlines = [
        Headline("Motifs run (FCN, 6,000 series × 6 epochs, concepts of 600): training", fmt_s(phases["training"]),
                 "–", None),
        Headline("… explaining (concepts, fidelity, truth, painting out, class concepts)",
                 fmt_s(phases["explaining"]), "–", None),
    ]
    intro = [line for line in __doc__.split("\n\n")[1:2]]
    return Section("The motifs run: training vs explaining", intro,
                   [Table("Wall time of `experiment=concepts_motifs` by phase", ["phase", "seconds", "share"], rows,
                          notes)],
                   headlines, load0, load1, time.perf_counter() - t_start, args.device, args.quick, meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: the motifs run", run, parser(__doc__.splitlines()[0]).parse_args())
