"""Deep clustering (DCEC) against autoencoder + k-means: the clustering, and how well each
family's clusters are explained by Grad-CeAM, CLAM and the peers.

    python -m clustercam.studies.deep_clustering --datasets trace synthetic_shapes mnist --seeds 1 2 3
    python -m clustercam.studies.deep_clustering --datasets trace --seeds 1 2 --epochs 10 --clustering-epochs 10
    python -m clustercam.studies.deep_clustering --aggregate-only --out outputs/deep_clustering

Per dataset, two Hydra multiruns over the seeds (``clustercam.train -m``, joblib launcher):

1. the autoencoder experiment (``trace``, ``synthetic_shapes``, ``mnist``) for ``--epochs``
   epochs: k-means after training (the paper's setting);
2. the DCEC experiment (``<dataset>_dcec``) started from each seed's autoencoder checkpoint
   (``model.pretrained``, ``model.pretrain_epochs=0``) for at most ``--clustering-epochs``:
   k-means initialisation on the training split, then the clustering phase (tol stop).

Both families share the pretrained autoencoder, so the DCEC run's ``pretrain_*`` scores are
the k-means of the family it is compared with (fit on the training split instead of the
evaluated one). Every run is scored with ``callbacks=peers_clam``: the baselines, Grad-CeAM's
four targets (paper, reference, assignment, Student-t), CLAM, NEON and the captum peers, all
K clusters timed, and the cardinality table of the four targets. ``<out>/deep_clustering.md``
(and ``.csv``): the NMI before / after, the cardinality over seeds for both families, the
scores per family and the Grad-CeAM vs CLAM verdicts.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from clustercam import outputs
from clustercam.exceptions import UserError
from clustercam.runtime.errors import exit_on_user_error
from clustercam.studies.compare import (
    AUC_COLUMNS,
    COMMON,
    LOCALISATION,
    PER_DATASET,
    comparison_rows,
    mean_std,
    methods_of,
    runs_metric,
    score_table,
)
from clustercam.studies.records import RunRecord, collect
from clustercam.studies.reproduce import root, run_sweep

DATASETS = ("trace", "synthetic_shapes", "mnist")
FAMILIES = ("AE + k-means", "DCEC")
TARGETS = ("paper", "reference", "assignment", "student_t")
STUDENT_T = "{_target_:clustercam.explain.gradceam.targets.student_t_target,alpha:1.0}"
METHODS = ("random", "random_smooth", "activation", "gradceam_paper", "gradceam_reference",
           "gradceam_assignment", "gradceam_student_t", "clam", "neon", "integrated_gradients",
           "occlusion", "gradient_shap")
WITH_OPTIONS = ("clam", "neon", "integrated_gradients", "occlusion", "gradient_shap")


def run_overrides(dataset: str, methods: Sequence[str] = METHODS) -> list[str]:
    """Every run's settings: the comparison's (``clustercam.studies.compare``), with CLAM and
    the Student-t target (alpha 1, the DCEC default) added, restricted to ``methods``."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UserError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    dropped = [m for m in WITH_OPTIONS if m not in methods]
    names = [STUDENT_T if m == "gradceam_student_t" else m for m in methods]
    keep = [o for o in (*COMMON[1:], *PER_DATASET.get(dataset, [])) if not any(f".{m}." in o for m in dropped)]
    return ["callbacks=peers_clam", *keep,
            f"callbacks.cluster_explain.compare_targets=[paper,reference,assignment,{STUDENT_T}]",
            f"callbacks.explanation_scores.methods=[{','.join(names)}]",
            *(f"~callbacks.explanation_scores.method_options.{m}" for m in dropped)]


# what the literature reports for DCEC (Guo et al., ICONIP 2017; MNIST-full: 70,000 digits)
LITERATURE = {"MNIST": "DCEC, MNIST-full (70,000 digits): NMI 0.885, ACC 0.889"}
GRADCEAM = ("gradceam_paper", "gradceam_reference", "gradceam_assignment", "gradceam_student_t")
VERDICT = (*AUC_COLUMNS, *LOCALISATION)


def family(run: RunRecord) -> str:
    """DCEC runs report their clustering model in metrics.json; autoencoder runs do not."""
    return "DCEC" if "clustering_model" in run.metrics else "AE + k-means"


def groups(runs: Sequence[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    out: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in runs:
        out[(r.dataset, family(r))].append(r)
    return dict(sorted(out.items()))


def _vals(runs: Sequence[RunRecord], key: str) -> list[float]:
    return [v for v in (runs_metric(r, key) for r in runs) if math.isfinite(v)]


def nmi_table(grouped: dict[tuple[str, str], list[RunRecord]]) -> str:
    """NMI / ACC of k-means on the autoencoder and of DCEC before (its k-means
    initialisation) and after, per dataset; mean ± std over seeds."""
    lines = ["| dataset | seeds | AE + k-means NMI | DCEC init NMI | DCEC final NMI | Δ NMI | "
             "DCEC init ACC | DCEC final ACC | target updates | literature |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for ds in sorted({d for d, _ in grouped}):
        ae, dc = grouped.get((ds, FAMILIES[0]), []), grouped.get((ds, FAMILIES[1]), [])
        seeds = sorted({r.seed for r in (*ae, *dc) if r.seed is not None})
        delta = [runs_metric(r, "nmi") - runs_metric(r, "pretrain_nmi") for r in dc]
        lines.append(" | ".join([
            f"| {ds}", ", ".join(map(str, seeds)), mean_std(_vals(ae, "nmi")),
            mean_std(_vals(dc, "pretrain_nmi")), mean_std(_vals(dc, "nmi")),
            mean_std([d for d in delta if math.isfinite(d)]), mean_std(_vals(dc, "pretrain_acc")),
            mean_std(_vals(dc, "acc")), mean_std(_vals(dc, "target_updates"), 1),
            LITERATURE.get(ds, "–")]) + " |")
    return "\n".join(lines)


def cardinality_table(grouped: dict[tuple[str, str], list[RunRecord]]) -> str:
    """The paper's Table I idea for both families: per Grad-CeAM target, the cardinality
    ratio's median / mean / min over clusters, each as mean ± std over seeds."""
    lines = ["| dataset | family | target | median | mean | min | runs |",
             "|---|---|---|---:|---:|---:|---:|"]
    for (ds, fam), runs in grouped.items():
        for t in TARGETS:
            stats = [[r.modes[t][s] for r in runs if t in r.modes and math.isfinite(r.modes[t][s])]
                     for s in ("median", "mean", "min")]
            if any(stats):
                lines.append(f"| {ds} | {fam} | {t} | " + " | ".join(mean_std(v, 2) for v in stats)
                             + f" | {sum(t in r.modes for r in runs)} |")
    return "\n".join(lines)


def _mean(runs: Sequence[RunRecord], method: str, key: str) -> float:
    vals = _vals(runs, f"scores/{method}/{key}")
    return statistics.mean(vals) if vals else math.nan


def clam_verdicts(grouped: dict[tuple[str, str], list[RunRecord]]) -> str:
    """Per dataset and family, each score: CLAM against the best Grad-CeAM target (means over
    seeds), who wins, and the time of the maps."""
    lines = ["| dataset | family | score | CLAM | best Grad-CeAM | target | better |",
             "|---|---|---|---:|---:|---|---|"]
    for (ds, fam), runs in grouped.items():
        for key, title, higher in VERDICT:
            key = key if key.startswith(("pointing", "relevance", "auroc")) else key + "_excl_baseline"
            clam = _mean(runs, "clam", key)
            cands = {m: _mean(runs, m, key) for m in GRADCEAM}
            cands = {m: v for m, v in cands.items() if math.isfinite(v)}
            if not math.isfinite(clam) or not cands:
                continue
            best = (max if higher else min)(cands, key=cands.__getitem__)
            wins = (cands[best] > clam) if higher else (cands[best] < clam)
            tie = round(cands[best], 3) == round(clam, 3)
            lines.append(f"| {ds} | {fam} | {title} | {clam:.3f} | {cands[best]:.3f} | "
                         f"{best.removeprefix('gradceam_')} | {'tie' if tie else 'Grad-CeAM' if wins else 'CLAM'} |")
        t_clam, t_g = _mean(runs, "clam", "map_seconds"), _mean(runs, "gradceam_reference", "map_seconds")
        if math.isfinite(t_clam) and math.isfinite(t_g) and t_g > 0:
            lines.append(f"| {ds} | {fam} | time of the maps (s) | {t_clam:.2f} | {t_g:.2f} | reference | "
                         f"Grad-CeAM ({t_clam / t_g:.0f}× faster) |")
    return "\n".join(lines)


def report(runs: Sequence[RunRecord], settings: str = "") -> str:
    """The study's markdown (a pure function of the finished runs' metrics)."""
    grouped = groups(runs)
    parts = ["# Deep clustering (DCEC) vs autoencoder + k-means: clustering and explanations", "",
             "Mean ± std over seeds. DCEC runs start from the same seed's autoencoder, so "
             "`DCEC init` is k-means on the autoencoder of the `AE + k-means` column (fit on the "
             "training split; the AE column fits the evaluated split)."]
    if settings:
        parts += ["", settings]
    parts += ["", "## Clustering: NMI before / after DCEC", "", nmi_table(grouped),
              "", "## Cluster-cardinality discrimination per Grad-CeAM target (paper eq. 12, Table I)",
              "", "Ratio of cluster sizes after / before amplifying each sample's channels by its "
              "weights; > 1 means the explained channels pull samples into the cluster.", "",
              cardinality_table(grouped),
              "", "## Grad-CeAM vs CLAM", "", "Per score, CLAM against the best of Grad-CeAM's four "
              "targets (samples whose all-baseline input leaves their cluster; localisation on the "
              "synthetic masks).", "", clam_verdicts(grouped)]
    for (ds, fam), group in grouped.items():
        if not methods_of(group):
            continue
        cols = [*((k + "_excl_baseline", t, h) for k, t, h in AUC_COLUMNS), *LOCALISATION]
        parts += ["", f"## {ds}: {fam}", "", f"{len(group)} runs, seeds "
                  f"{', '.join(str(r.seed) for r in group)}; NMI {mean_std(_vals(group, 'nmi'), 2)}.", "",
                  score_table(group, cols)]
    return "\n".join(parts) + "\n"


def settings_text(datasets: Sequence[str], seeds: Sequence[int], epochs: int, clustering: int,
                  methods: Sequence[str], extra: Sequence[str]) -> str:
    return (f"Settings (`python -m clustercam.studies.deep_clustering`): datasets {', '.join(datasets)}; "
            f"seeds {', '.join(map(str, seeds))}; autoencoder {epochs} epochs, DCEC at most "
            f"{clustering} clustering epochs from it; every run (here for Trace) "
            f"`{' '.join(run_overrides('trace', methods))}`"
            + (f"; extra `{' '.join(extra)}`" if extra else "") + ".")


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=50, help="autoencoder epochs (the DCEC pretraining)")
    p.add_argument("--clustering-epochs", type=int, default=50, help="at most this many DCEC epochs")
    p.add_argument("--out", type=Path, default=None, help="default: <root>/outputs/deep_clustering")
    p.add_argument("--launcher", default="joblib_local", help="Hydra launcher: joblib_local | basic | slurm")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="the scored map methods")
    p.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides for every run")
    p.add_argument("--aggregate-only", action="store_true", help="only rebuild the report from the runs")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.clustering_epochs < 1:
        raise UserError(f"--epochs and --clustering-epochs must be >= 1, got {args.epochs}, "
                         f"{args.clustering_epochs}")
    out = args.out or root() / "outputs" / "deep_clustering"
    runs_dir = out / outputs.STUDY_RUNS
    if not args.aggregate_only:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 jobs on 2 cores, one thread each
        timings = {}
        for ds in args.datasets:
            common = [*run_overrides(ds, args.methods), *args.extra]
            timings[ds] = run_sweep(ds, args.seeds, runs_dir, [*common, f"trainer.max_epochs={args.epochs}"],
                                    args.launcher)
            ckpt = f"{runs_dir / ds}/seed${{seed}}/checkpoints/last.ckpt"
            timings[f"{ds}_dcec"] = run_sweep(
                f"{ds}_dcec", args.seeds, runs_dir,
                [*common, f"model.pretrained={ckpt}", "model.pretrain_epochs=0",
                 f"trainer.max_epochs={args.clustering_epochs}"], args.launcher)
        outputs.write_json(out / outputs.TIMINGS, timings, merge=True)
    runs = collect(runs_dir)
    if not runs:
        raise UserError(f"no finished runs under {runs_dir}")
    text = report(runs, settings_text(args.datasets, args.seeds, args.epochs, args.clustering_epochs,
                                      args.methods, args.extra))
    outputs.write_text(out / outputs.DEEP_CLUSTERING, text)
    rows = [{**row, "family": fam} for (_, fam), group in groups(runs).items()
            for row in comparison_rows(group)]
    outputs.write_csv(out / outputs.DEEP_CLUSTERING_TABLE, rows, outputs.DEEP_CLUSTERING_COLUMNS)
    print(text)
    print(f"wrote {out / outputs.DEEP_CLUSTERING} ({len(runs)} runs, {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
