"""Reproduce the paper's Table I: a Hydra multirun per dataset x seeds, then one table.

    python -m clustercam.reproduce                      # Trace, Coffee, CBF, MNIST x 3 seeds
    python -m clustercam.reproduce --datasets trace --seeds 1 2 --extra trainer.max_epochs=5
    python -m clustercam.reproduce --aggregate-only     # re-read outputs/reproduction/runs

Every run also scores the three Grad-CeAM targets (``compare_modes``), so the same sweep
fills the README's "Which Grad-CeAM target?" table. Writes ``table1.md`` and
``modes.md`` (and ``.csv``) under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

from clustercam.configs import experiment_names
from clustercam.errors import exit_on_user_error


def root() -> Path:
    """Where data and outputs live: CLUSTERCAM_ROOT, else the working directory."""
    return Path(os.environ.get("CLUSTERCAM_ROOT") or Path.cwd())

# Paper Table I: median / mean / min / max of the cardinality ratio
PAPER = {
    "STL10": (1.1, 1.2, 0.0, 3.1),
    "MNIST": (1.4, 1.4, 0.5, 5.8),
    "Trace": (1.5, 1.7, 1.0, 2.8),
    "Coffee": (1.2, 1.2, 0.0, 2.3),
    "CBF": (1.7, 1.4, 0.8, 1.8),
}
PAPER_NMI = {"Coffee": 0.82}
EXPERIMENTS = {"trace": "Trace", "coffee": "Coffee", "cbf": "CBF", "mnist": "MNIST", "stl10": "STL10"}
STATS = ("median", "mean", "min", "max")
MODES = ("paper", "reference", "assignment")


def stl10_present(root: Path) -> bool:
    return (root / "data" / "stl10_binary" / "test_X.bin").is_file()


def run_sweep(experiment: str, seeds: list[int], runs_dir: Path, extra: list[str], launcher: str) -> float:
    """One Hydra multirun over the seeds of one experiment; returns its wall time in seconds."""
    sweep_dir = runs_dir / experiment
    cmd = [
        sys.executable, "-m", "clustercam.train", "-m", f"experiment={experiment}",
        "seed=" + ",".join(map(str, seeds)), "print_config=false",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=seed${seed}",
        "callbacks.cluster_explain.compare_modes=[paper,reference,assignment]",
        *([f"hydra/launcher={launcher}"] if launcher != "basic" else []), *extra,
    ]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")})
    return time.perf_counter() - start


def _mean_std(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def collect(runs_dir: Path) -> list[dict]:
    """One record per finished run: dataset, seed, metrics, summary, by-mode summaries."""
    records = []
    for metrics_path in sorted(runs_dir.rglob("metrics.json")):
        run = metrics_path.parent
        cfg_path = run / "config.yaml"
        summary_path = run / "cardinality_summary.json"
        if not cfg_path.is_file() or not summary_path.is_file():
            continue
        cfg = yaml.safe_load(cfg_path.read_text())
        data = cfg.get("data", {})
        # UCR configs name their dataset; the image datamodules are named by their class
        name = str(data.get("name") or data.get("_target_", "?").rsplit(".", 1)[-1]
                   .replace("DataModule", ""))
        modes = {}
        by_mode = run / "cardinality_by_mode.csv"
        if by_mode.is_file():
            with open(by_mode) as fh:
                for row in csv.DictReader(fh):
                    modes[row["mode"]] = {k: float(row[k]) if row[k] not in ("", "None") else math.nan
                                          for k in STATS}
        records.append({
            "dataset": name, "seed": cfg.get("seed"), "run": str(run),
            "metrics": json.loads(metrics_path.read_text()),
            "summary": json.loads(summary_path.read_text()), "modes": modes,
        })
    return records


def _num(v) -> float:
    return math.nan if v is None else float(v)


def table1(records: list[dict], timings: dict[str, float]) -> str:
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_ds[r["dataset"]].append(r)
    lines = [
        "| dataset | seeds | NMI | median | mean | min | max | paper (median / mean / min / max) | time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ds in sorted(by_ds, key=lambda d: list(PAPER).index(d) if d in PAPER else 99):
        rs = by_ds[ds]
        cells = [_mean_std([_num(r["summary"].get(k)) for r in rs]) for k in STATS]
        paper = " / ".join(f"{v:.1f}" for v in PAPER[ds]) if ds in PAPER else "n/a"
        nmi = _mean_std([_num(r["metrics"].get("nmi")) for r in rs])
        if ds in PAPER_NMI:
            nmi += f" (paper {PAPER_NMI[ds]})"
        t = next((f"{v / 60:.1f} min" for k, v in timings.items() if EXPERIMENTS.get(k) == ds), "")
        lines.append(f"| {ds} | {len(rs)} | {nmi} | " + " | ".join(cells) + f" | {paper} | {t} |")
    return "\n".join(lines)


def modes_table(records: list[dict]) -> str:
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["modes"]:
            by_ds[r["dataset"]].append(r)
    lines = ["| dataset | target | NMI | median | mean | min | max |", "|---|---|---|---|---|---|---|"]
    for ds in sorted(by_ds):
        rs = by_ds[ds]
        nmi = _mean_std([_num(r["metrics"].get("nmi")) for r in rs])
        for mode in MODES:
            cells = [_mean_std([r["modes"].get(mode, {}).get(k, math.nan) for r in rs]) for k in STATS]
            lines.append(f"| {ds} | {mode} | {nmi} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["trace", "coffee", "cbf", "mnist"],
                   help="experiment names (stl10 is added when data/stl10_binary exists)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--out", type=Path, default=root() / "outputs" / "reproduction")
    p.add_argument("--launcher", default="basic", help="Hydra launcher: basic | joblib | submitit_slurm")
    p.add_argument("--extra", nargs="*", default=["logger=csv"], help="more Hydra overrides")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild the tables")
    args = p.parse_args(argv)

    runs_dir = args.out / "runs"
    timings: dict[str, float] = {}
    timing_file = args.out / "timings.json"
    if not args.aggregate_only:
        datasets = list(args.datasets)
        if "stl10" not in datasets and stl10_present(root()):
            datasets.append("stl10")
        for ds in datasets:
            if ds not in experiment_names():
                print(f"skipping {ds}: no experiment config {ds!r} (have {experiment_names()})",
                      flush=True)
                continue
            timings[ds] = run_sweep(ds, args.seeds, runs_dir, args.extra, args.launcher)
        args.out.mkdir(parents=True, exist_ok=True)
        timing_file.write_text(json.dumps(timings, indent=2))
    elif timing_file.is_file():
        timings = json.loads(timing_file.read_text())
    records = collect(runs_dir)
    if not records:
        raise SystemExit(f"no finished runs under {runs_dir}")
    total = sum(timings.values())
    text = (
        "# Table I reproduction (cluster-cardinality discrimination)\n\n"
        f"Runs: {len(records)} under `{runs_dir}`; total wall time {total / 60:.1f} min; "
        f"generated {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores.\n\n"
        "Ratios are mean ± std over seeds of each run's median / mean / min / max over clusters "
        "(Grad-CeAM `reference` target unless the runs set another).\n\n"
        + table1(records, timings)
        + "\n\n## Which Grad-CeAM target?\n\n" + modes_table(records) + "\n"
    )
    (args.out / "table1.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
