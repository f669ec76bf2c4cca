"""Reproduce both papers: Table I with the papers' model selection, and their figures.

    clustercam-reproduce                            # Trace, Coffee, CBF, MNIST x 10 seeds + a concept run
    clustercam-reproduce --quick --out /tmp/repro   # every file on tiny settings, in minutes
    clustercam-reproduce --datasets trace --seeds 1 2 --extra trainer.max_epochs=5
    clustercam-reproduce --aggregate-only           # re-read <out>/runs: tables and figures again

One Hydra multirun per Grad-CeAM dataset over the seeds (every run also scores the three
Grad-CeAM targets), one concept run, then under ``--out`` (names: :mod:`clustercam.outputs.contract`):
``table1.md`` (mean ± std over seeds, the best / worst NMI, Table I of the high and the low
model, the per-target table),
``figures/*.png`` in the papers' layouts and ``figures/captions.md`` (which run and seed
each figure comes from).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from clustercam import outputs
from clustercam.exceptions import UserError
from clustercam.runtime.configs import experiment_names
from clustercam.runtime.errors import exit_on_user_error
from clustercam.runtime.status import unfinished_report
from clustercam.studies import figures as paper_figures
from clustercam.studies.records import GRADCEAM_TARGETS, RunRecord, by_dataset, collect, high_low
from clustercam.studies.tables import modes_table, table1, table1_selected

EXPERIMENTS = {"trace": "Trace", "coffee": "Coffee", "cbf": "CBF", "mnist": "MNIST", "stl10": "STL10"}
DATASETS = ("trace", "coffee", "cbf", "mnist")
# tiny settings for --quick: the same files, in minutes
QUICK = {"*": ["trainer.max_epochs=1", "data.max_samples=40", "callbacks.cluster_explain.n_init=2"],
         "mnist": ["data.max_samples=200"]}
CONCEPT_STUDY_ALGORITHMS = "[kmeans,agglomerative,birch,gmm]"  # the concept run's algorithms (Fig. 2)


def root() -> Path:
    """Where data and outputs live: CLUSTERCAM_ROOT, else the working directory."""
    return Path(os.environ.get("CLUSTERCAM_ROOT") or Path.cwd())


def stl10_present(folder: Path) -> bool:
    return (folder / "data" / "stl10_binary" / "test_X.bin").is_file()


def run_sweep(experiment: str, seeds: list[int], runs_dir: Path, extra: list[str], launcher: str) -> float:
    """One Hydra multirun over the seeds of one experiment; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "clustercam.train", "-m", f"experiment={experiment}",
           "seed=" + ",".join(map(str, seeds)), "print_config=false",
           f"hydra.sweep.dir={runs_dir / experiment}", "hydra.sweep.subdir=seed${seed}",
           f"callbacks.cluster_explain.compare_modes=[{','.join(GRADCEAM_TARGETS)}]",
           *([f"hydra/launcher={launcher}"] if launcher != "basic" else []), *extra]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")})
    return time.perf_counter() - start


def run_concept_study(out: Path, extra: list[str]) -> tuple[Path, str]:
    """The concept run of the concept figures: its folder and where its weights came from."""
    run = out / outputs.CONCEPT_STUDY_RUN
    cmd = [sys.executable, "-m", "clustercam.train", "print_config=false", f"paths.output_dir={run}",
           f"hydra.run.dir={run}", f"callbacks.concepts.algorithm={CONCEPT_STUDY_ALGORITHMS}", *extra]
    print("+", " ".join(cmd), flush=True)
    # it runs alone after the sweeps, so it gets every core (the sweeps' jobs run one thread each)
    threads = str(os.cpu_count() or 1)
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    subprocess.run(cmd, check=True, env=env)
    return run, concept_source(run)


def concept_source(run: Path) -> str:
    info = json.loads((run / outputs.METRICS).read_text()) if (run / outputs.METRICS).is_file() else {}
    weights = str(info.get("weights", ""))
    if not info.get("pretrained", False):
        weights = "random weights"
    elif weights.startswith("trained:"):  # trained by this run: the file's name, not its absolute path
        weights = f"trained here ({Path(weights.removeprefix('trained:')).name})"
    else:
        weights = f"weights {weights}"
    return f"{info.get('model', '?')}, {weights}"


def draw_figures(records: list[RunRecord], concept_run: Path | None, fig_dir: Path) -> list[str]:
    """Every paper figure the runs allow, saved under ``fig_dir``; returns the caption lines."""
    groups, captions = by_dataset(records), []

    def save(name: str, made) -> None:
        fig, caption = made
        outputs.save_figure(fig, fig_dir / f"{name}.png")
        captions.append(f"- `{name}.png`: {caption}")

    if "MNIST" in groups:
        save("gradceam_fig07_mnist", paper_figures.cluster_members(high_low(groups["MNIST"])[0]))
    if "STL10" in groups:
        save("gradceam_fig08_stl10", paper_figures.cluster_members(high_low(groups["STL10"])[0], paper="Fig. 8"))
    if "Trace" in groups:
        save("gradceam_fig09_trace", paper_figures.smoothed_members(high_low(groups["Trace"])[0]))
    if "Coffee" in groups:
        save("gradceam_fig10_coffee_high_low", paper_figures.high_low_models(*high_low(groups["Coffee"])))
    if "CBF" in groups:
        save("gradceam_fig11_cbf_grid", paper_figures.sample_cluster_grid(high_low(groups["CBF"])[0]))
    if concept_run is not None:
        source = concept_source(concept_run)
        save("concepts_fig02_boxplots", paper_figures.concept_boxplots(concept_run, source))
        save("concepts_fig05_subconcepts", paper_figures.concept_subconcepts(concept_run, source))
        save("concepts_fig06_cgap_vs_cpha", paper_figures.concept_cgap_vs_cpha(concept_run, source))
    return captions


def report(records: list[RunRecord], timings: dict[str, float], total: float) -> str:
    return ("# Reproduction: Table I (cluster-cardinality discrimination) and the papers' model selection\n\n"
            f"Runs: {len(records)}; total wall time {total / 60:.1f} min; generated "
            f"{time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores.\n\n"
            "Ratios: mean ± std over seeds of each run's median / mean / min / max over clusters "
            "(Grad-CeAM `reference` target unless the runs set another). *best / worst*: the NMI of the "
            "high and the low model (the paper reports its best run, Fig. 10 the two).\n\n"
            + table1(records, timings) + "\n\n## Table I of the high and the low model\n\n"
            + table1_selected(records) + "\n\n## Which Grad-CeAM target?\n\n" + modes_table(records) + "\n")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS),
                   help="experiment names (stl10 is added when data/stl10_binary exists)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(1, 11)))
    p.add_argument("--out", type=Path, default=None, help="default: <root>/outputs/reproduction")
    p.add_argument("--launcher", default="basic", help="Hydra launcher: basic | joblib_local | slurm")
    p.add_argument("--extra", nargs="*", default=["logger=csv"], help="more Hydra overrides for every run")
    p.add_argument("--concepts", nargs="*", default=None,
                   help="overrides of the concept run (default: experiment=concepts_parts; none: skip it)")
    p.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch, small subsets: every file in minutes")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild tables and figures")
    args = p.parse_args(argv)
    out = args.out or root() / "outputs" / "reproduction"
    runs_dir, timing_file = out / outputs.STUDY_RUNS, out / outputs.TIMINGS
    seeds = args.seeds[:2] if args.quick else args.seeds
    concepts = default_concepts(args.quick) if args.concepts is None else args.concepts
    timings: dict[str, float] = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    if not args.aggregate_only:
        datasets = list(args.datasets) + (["stl10"] if "stl10" not in args.datasets and stl10_present(root()) else [])
        for ds in datasets:
            if ds not in experiment_names():
                raise UserError(f"unknown experiment {ds!r} in --datasets; have {experiment_names()}")
            extra = [*args.extra, *(QUICK["*"] + QUICK.get(ds, []) if args.quick else [])]
            timings[EXPERIMENTS.get(ds, ds)] = run_sweep(ds, seeds, runs_dir, extra, args.launcher)
        if concepts:
            t0 = time.perf_counter()
            run_concept_study(out, [*args.extra, *concepts])
            timings["concepts"] = time.perf_counter() - t0
        outputs.write_json(timing_file, timings)
    records = collect(runs_dir)
    if not records:
        raise UserError(f"no finished Grad-CeAM runs under {runs_dir}")
    concept_run = out / outputs.CONCEPT_STUDY_RUN
    concept_run = concept_run if (concept_run / outputs.CONCEPT_METRICS).is_file() else None
    text = report(records, timings, sum(timings.values()))
    missing = unfinished_report(runs_dir)  # failed / diverged / unfinished jobs, named
    text += f"\n{missing}" if missing else ""
    outputs.write_text(out / outputs.TABLE1, text)
    captions = draw_figures(records, concept_run, out / outputs.STUDY_FIGURES)
    outputs.write_text(out / outputs.CAPTIONS, "# Figures\n\n" + "\n".join(captions) + "\n")
    print(text)
    print(f"figures: {out / outputs.STUDY_FIGURES}")


def default_concepts(quick: bool) -> list[str]:
    """The concept run: the parts classifier trained here when that experiment exists."""
    exp = "concepts_parts" if "concepts_parts" in experiment_names() else None
    if exp is None:
        return []
    return [f"experiment={exp}", *(["debug=fdr"] if quick else [])]
