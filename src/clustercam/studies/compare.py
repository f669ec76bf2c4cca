"""One scored comparison of the methods that explain clusters: Grad-CeAM and its peers.

    python -m clustercam.compare                          # Trace, synthetic CBF, shapes, MNIST x seeds 1 2 3
    python -m clustercam.compare --quick --out /tmp/cmp   # every file on tiny settings, in minutes
    python -m clustercam.compare --datasets trace --seeds 1 2 --extra trainer.max_epochs=5
    python -m clustercam.compare --aggregate-only         # re-read <out>/runs: the table again

One Hydra multirun per dataset over the seeds (``clustercam.train -m``, joblib launcher: 2
jobs, one thread each), every run with ``callbacks=peers``: the explanation scores of the
baselines, the three Grad-CeAM targets and the peers (NEON, integrated gradients, occlusion,
gradient SHAP), each method's maps computed for all K clusters and timed, plus the
cardinality table of the three targets. Then ``<out>/explanation_comparison.md`` (and
``.csv``): mean ± std over seeds of every score per method and dataset, the best per column
in bold, the time per method, and the per-target table that says which Grad-CeAM target to use.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from clustercam import outputs
from clustercam.exceptions import UserError
from clustercam.runtime.configs import experiment_names
from clustercam.runtime.errors import exit_on_user_error
from clustercam.runtime.status import unfinished_report
from clustercam.studies.records import GRADCEAM_TARGETS, RunRecord, by_dataset, collect
from clustercam.studies.reproduce import root, run_sweep

DATASETS = ("trace", "synthetic_cbf", "synthetic_shapes", "mnist")
# the explanation methods compared, in the table's order (callbacks=peers scores them all)
COMPARED_METHODS = ("random", "random_smooth", "activation", "gradceam_paper", "gradceam_reference",
                    "gradceam_assignment", "neon", "integrated_gradients", "occlusion", "gradient_shap")
# the settings of the full comparison (stated in the table's caption): every run
COMMON = ["callbacks=peers", "logger=csv", "callbacks.explanation_scores.steps=10",
          "callbacks.explanation_scores.method_options.integrated_gradients.n_steps=16",
          "callbacks.explanation_scores.method_options.gradient_shap.n_samples=8",
          "callbacks.explanation_scores.method_options.gradient_shap.n_baselines=8"]
# per dataset: a seeded subset of the big test sets, and the occlusion windows
PER_DATASET = {
    "trace": ["callbacks.explanation_scores.method_options.occlusion.window=28",
              "callbacks.explanation_scores.method_options.occlusion.stride=14"],
    "synthetic_cbf": ["callbacks.explanation_scores.max_samples=300",
                      "callbacks.explanation_scores.method_options.occlusion.window=13",
                      "callbacks.explanation_scores.method_options.occlusion.stride=7"],
    "synthetic_shapes": ["callbacks.explanation_scores.max_samples=300",
                         "callbacks.explanation_scores.method_options.occlusion.window=4",
                         "callbacks.explanation_scores.method_options.occlusion.stride=4"],
    "mnist": ["callbacks.explanation_scores.max_samples=300",
              "callbacks.explanation_scores.method_options.occlusion.window=4",
              "callbacks.explanation_scores.method_options.occlusion.stride=4"],
}
QUICK = ["trainer.max_epochs=1", "data.max_samples=40", "callbacks.cluster_explain.n_init=2",
         "callbacks.cluster_explain.figures=false", "callbacks.explanation_scores.steps=4",
         "callbacks.explanation_scores.figures=false", "callbacks.explanation_scores.max_samples=20"]

# (metric key suffix, column title, True when higher is better)
AUC_COLUMNS = (("deletion_auc", "deletion ↓", False), ("insertion_auc", "insertion ↑", True),
               ("deletion_hard_auc", "deletion hard ↓", False),
               ("insertion_hard_auc", "insertion hard ↑", True))
LOCALISATION = (("pointing_game", "pointing ↑", True), ("relevance_mass", "rel. mass ↑", True),
                ("auroc", "AUROC ↑", True))
TIME = "map_seconds"


def _values(runs: Sequence[RunRecord], method: str, key: str) -> list[float]:
    vals = [runs_metric(r, f"scores/{method}/{key}") for r in runs]
    return [v for v in vals if math.isfinite(v)]


def runs_metric(run: RunRecord, key: str) -> float:
    v = run.metrics.get(key)
    return math.nan if v is None else float(v)


def _mean(vals: Sequence[float]) -> float:
    return statistics.mean(vals) if vals else math.nan


def mean_std(vals: Sequence[float], digits: int = 3) -> str:
    """``m ± s`` (sample std over seeds), ``m`` for one value, ``n/a`` for none."""
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def methods_of(runs: Sequence[RunRecord]) -> list[str]:
    """The scored methods of the runs, in the comparison's order (others after, sorted)."""
    found = {k.split("/")[1] for r in runs for k in r.metrics
             if k.startswith("scores/") and k.endswith(f"/{TIME}")}
    return [m for m in COMPARED_METHODS if m in found] + sorted(found - set(COMPARED_METHODS))


def score_table(runs: Sequence[RunRecord], columns: Sequence[tuple[str, str, bool]],
                suffix: str = "", time_column: bool = True) -> str:
    """Markdown: one row per method, mean ± std over the runs of each column (``key + suffix``),
    the best mean per column in bold (all that tie at the shown precision); the time column
    (``map_seconds``, N samples x K clusters) is not a score and is not bolded."""
    methods = methods_of(runs)
    cols = [c for c in columns if any(_values(runs, m, c[0] + suffix) for m in methods)]
    head = ["method", *(c[1] for c in cols)] + (["time (s)"] if time_column else [])
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    best = {}
    for key, _, higher in cols:
        means = [round(_mean(_values(runs, m, key + suffix)), 3) for m in methods]
        finite = [v for v in means if math.isfinite(v)]
        best[key] = (max if higher else min)(finite) if finite else math.nan
    for m in methods:
        cells = [m]
        for key, _, _ in cols:
            vals = _values(runs, m, key + suffix)
            text = mean_std(vals)
            cells.append(f"**{text}**" if vals and round(_mean(vals), 3) == best[key] else text)
        if time_column:
            cells.append(mean_std(_values(runs, m, TIME), 2))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(groups: dict[str, list[RunRecord]]) -> str:
    """Markdown: per dataset and Grad-CeAM target, the cardinality ratio (median / mean over
    clusters, paper eq. 12) beside the faithfulness and localisation scores of its maps."""
    lines = ["| dataset | target | cardinality median | cardinality mean | deletion ↓ | insertion ↑ "
             "| AUROC ↑ | pointing ↑ |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for ds, runs in groups.items():
        for t in GRADCEAM_TARGETS:
            card = [mean_std([r.modes[t][s] for r in runs if t in r.modes and math.isfinite(r.modes[t][s])], 2)
                    for s in ("median", "mean")]
            m = f"gradceam_{t}"
            cells = [mean_std(_values(runs, m, k)) for k in ("deletion_auc_excl_baseline",
                     "insertion_auc_excl_baseline", "auroc", "pointing_game")]
            lines.append(f"| {ds} | {t} | " + " | ".join(card + cells) + " |")
    return "\n".join(lines)


def _caption(ds: str, runs: Sequence[RunRecord]) -> str:
    nmi = mean_std([r.nmi for r in runs if math.isfinite(r.nmi)], 2)
    n = {int(runs_metric(r, "scores/n_samples")) for r in runs if math.isfinite(runs_metric(r, "scores/n_samples"))}
    k = {int(runs_metric(r, "scores/n_clusters")) for r in runs if math.isfinite(runs_metric(r, "scores/n_clusters"))}
    seeds = sorted(r.seed for r in runs if r.seed is not None)
    all_k = all(runs_metric(r, "scores/all_clusters") == 1.0 for r in runs)
    return (f"{len(runs)} runs (seeds {', '.join(map(str, seeds))}), NMI {nmi}; {'/'.join(map(str, sorted(n)))} "
            f"scored samples, K = {'/'.join(map(str, sorted(k)))}; time: the maps of "
            f"{'all K clusters' if all_k else 'each sample’s own cluster'} for all scored samples.")


def comparison_markdown(runs: Sequence[RunRecord], settings: str = "") -> str:
    """The comparison report from finished runs (a pure function of their metrics): per
    dataset the scores on the samples whose all-baseline input leaves their cluster
    (localisation where masks exist) and on all samples, then the Grad-CeAM targets."""
    groups = by_dataset(list(runs))
    parts = ["# Explaining clusters: Grad-CeAM and its peers, scored", "",
             "Mean ± std over seeds; best mean per column in bold (deletion: lower is better, "
             "everything else higher). Deletion / insertion: area under the soft-assignment "
             "(and hard-assignment) curve of each sample's own cluster as its most relevant "
             "positions are removed / restored; localisation against the ground-truth masks "
             "(synthetic sets only). Time: seconds to compute the maps, not bolded."]
    if settings:
        parts += ["", settings]
    for ds, group in groups.items():
        parts += ["", f"## {ds}", "", _caption(ds, group), "",
                  "Samples whose all-baseline input leaves their cluster (`excl_baseline`):", "",
                  score_table(group, AUC_COLUMNS, "_excl_baseline") if not any(
                      _values(group, m, "pointing_game") for m in methods_of(group))
                  else score_table(group, [*((k + "_excl_baseline", t, h) for k, t, h in AUC_COLUMNS),
                                           *LOCALISATION]),
                  "", "All samples:", "", score_table(group, AUC_COLUMNS, time_column=False)]
    parts += ["", "## Which Grad-CeAM target?", "", targets_table(groups)]
    return "\n".join(parts) + "\n"


def comparison_rows(runs: Sequence[RunRecord]) -> list[dict]:
    """Long format for the CSV (:data:`~clustercam.outputs.contract.COMPARISON_COLUMNS`):
    dataset, method, score, mean, std, n (seeds)."""
    rows = []
    for ds, group in by_dataset(list(runs)).items():
        keys = sorted({k.split("/", 2)[2] for r in group for k in r.metrics
                       if k.startswith("scores/") and k.count("/") == 2})
        for m in methods_of(group):
            for key in keys:
                vals = _values(group, m, key)
                if vals:
                    rows.append({"dataset": ds, "method": m, "score": key, "mean": _mean(vals),
                                 "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)})
    return rows


def settings_text(datasets: Sequence[str], seeds: Sequence[int], quick: bool) -> str:
    lines = [f"Settings (`python -m clustercam.compare{' --quick' if quick else ''}`): seeds "
             f"{', '.join(map(str, seeds))}; every run: `{' '.join(COMMON)}`"]
    lines += [f"; {ds}: `{' '.join(PER_DATASET.get(ds, []))}`" for ds in datasets if PER_DATASET.get(ds)]
    if quick:
        lines.append(f"; --quick: `{' '.join(QUICK)}`")
    return "".join(lines) + "."


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), help="experiment names")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--out", type=Path, default=None, help="default: <root>/outputs/comparison")
    p.add_argument("--runs", type=Path, default=None, help="the run folders (default: <out>/runs)")
    p.add_argument("--launcher", default="joblib_local", help="Hydra launcher: joblib_local | basic | slurm")
    p.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run")
    p.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch, tiny subsets: every file in minutes")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild the report from the runs")
    args = p.parse_args(argv)
    out = args.out or root() / "outputs" / "comparison"
    runs_dir = args.runs or out / outputs.STUDY_RUNS
    seeds = args.seeds[:2] if args.quick else args.seeds
    if not args.aggregate_only:
        unknown = [ds for ds in args.datasets if ds not in experiment_names()]
        if unknown:
            raise UserError(f"unknown experiments {unknown} in --datasets; have {experiment_names()}")
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 jobs on 2 cores, one thread each
        timings = {}
        for ds in args.datasets:
            extra = [*COMMON, *PER_DATASET.get(ds, []), *(QUICK if args.quick else []), *args.extra]
            timings[ds] = run_sweep(ds, seeds, runs_dir, extra, args.launcher)
        outputs.write_json(out / outputs.TIMINGS, timings, merge=True)
    runs = [r for r in collect(runs_dir) if methods_of([r])]
    if not runs:
        raise UserError(f"no finished scored runs under {runs_dir}")
    text = comparison_markdown(runs, settings_text(args.datasets, seeds, args.quick))
    missing = unfinished_report(runs_dir)  # failed / diverged / unfinished jobs, named
    text += f"\n{missing}" if missing else ""
    outputs.write_text(out / outputs.COMPARISON, text)
    outputs.write_csv(out / outputs.COMPARISON_TABLE, comparison_rows(runs), outputs.COMPARISON_COLUMNS)
    print(text)
    print(f"wrote {out / outputs.COMPARISON} ({len(runs)} runs, {time.strftime('%Y-%m-%d')})")
