"""What each concept setting costs, and what it changes: the settings a user would turn to
make a run faster, measured against the defaults.

- *per image*: ``run_concepts`` as the callback calls it (``bench_concept_run.concept_call``'s
  arguments) on the activations of 64 photo crops (``bench_concept_run``'s photos,
  random-weight ``nf_resnet50`` at 256 px, batches of 16), one pass over the batches per
  variant of ``ConceptSettings``, the variants and the backbone's ``forward_features``
  interleaved, median over the repeats; no figures.
- *restarts*: ``cluster_channels`` with ``n_init`` 10 / 3 / 1 and seeds 0, 1, 2 on the same
  activations: how far the partitions move between seeds (adjusted Rand index of every
  image's two partitions, mean over images and seed pairs), against ``n_init`` 10 with the
  same seed, and the k-means objective (inertia in the clustered space) ÷ ``n_init`` 10's.
- *class concepts*: ``python -m clustercam.train experiment=concepts_imagenet`` (figures
  off) over 11 and 110 photos per variant: their end-of-run ``finalise`` seconds
  (``metrics.json``), the part of the class concepts that grows with the folder until the
  NMF samples are full (``nmf_max_images`` images a class, and as many for the whole
  dataset with ``scope: both``), and the runs' marginal wall time of a photo (median of 2
  runs a folder and setting, interleaved) ÷ the backbone's, timed alone in a fresh process with the
  CLI's allocator, also for a few settings together.

    python -m benchmarks.bench_concept_settings [--quick] [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import itertools
import time
import warnings
from typing import Any

import numpy as np
import torch

from benchmarks.bench_concept_run import (
    BATCH,
    concept_call,
    load_photos,
    make_model,
    photo_folder,
    trainer_run,
)
from benchmarks.common import (
    CpuMeter,
    Headline,
    Section,
    Table,
    fmt_s,
    fmt_x,
    load_average,
    main_single,
    median,
    parser,
    spread,
    time_cases,
)

VARIANTS: dict[str, dict[str, Any]] = {  # ConceptSettings fields -> the per-image table's rows
    "defaults": {},
    "`n_init=3`": {"n_init": 3},
    "`n_init=1`": {"n_init": 1},
    "`sub_concepts=0`": {"sub_concepts": 0},
    "`fidelity=false`": {"fidelity": False},
    "`control_repeats=5`": {"control_repeats": 5},
    "`method=cgap`": {"method": "cgap"},
    "`method=cpha`": {"method": "cpha"},
}
CLASS_VARIANTS: dict[str, list[str]] = {  # CLI overrides -> the class-concept table's rows
    "defaults": [],
    "`scope=class` (no all-images group)": ["callbacks.concepts.scope=class"],
    "`nmf_max_images=50`": ["callbacks.concepts.nmf_max_images=50"],
    "`nmf_max_images=0` (no NMF baseline)": ["callbacks.concepts.nmf_max_images=0"],
    "`class_concepts=false`": ["callbacks.concepts.class_concepts=false"],
    "`n_init=3 nmf_max_images=0`": ["callbacks.concepts.n_init=3", "callbacks.concepts.nmf_max_images=0"],
    "`n_init=3 class_concepts=false`": ["callbacks.concepts.n_init=3", "callbacks.concepts.class_concepts=false"],
}
RESTARTS = (10, 3, 1)
SEEDS = (0, 1, 2)


def inertia(space: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per image, the k-means objective of a partition: squared distances of the kept rows
    (``labels >= 0``) of ``space`` (B x C x d) to their cluster's mean, summed."""
    x = space.double()
    k = int(labels.max()) + 1
    onehot = torch.nn.functional.one_hot(labels.clamp_min(0), k).double() * (labels >= 0).unsqueeze(-1)
    means = (onehot.transpose(1, 2) @ x) / onehot.sum(1).clamp_min(1).unsqueeze(-1)  # B x K x d
    own = torch.gather(means, 1, labels.clamp_min(0).unsqueeze(-1).expand_as(x))
    return (((x - own) ** 2).sum(-1) * (labels >= 0)).sum(1).numpy()


def _ari(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Adjusted Rand index of each image's two partitions of its kept channels."""
    from sklearn.metrics import adjusted_rand_score

    return np.array([adjusted_rand_score(x[x >= 0].numpy(), y[x >= 0].numpy()) for x, y in zip(a, b)])


def restart_rows(acts: torch.Tensor) -> tuple[list[list[str]], dict[str, float]]:
    """The restarts table (per method and n_init) and CPHA's mean inertia ratio at n_init 3."""
    from clustercam.explain.concepts.image.extract import cluster_channels

    rows, found = [], {}
    for method in ("cgap", "cpha"):
        runs = {}
        for n_init, seed in itertools.product(RESTARTS, SEEDS):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cl = cluster_channels(acts, method=method, n_init=n_init, seed=seed)
            labels = cl.labels.cpu()
            runs[(n_init, seed)] = (labels, inertia(cl.space.cpu(), labels))
        for n_init in RESTARTS:
            between = np.concatenate([_ari(runs[(n_init, s)][0], runs[(n_init, t)][0])
                                      for s, t in itertools.combinations(SEEDS, 2)])
            same = np.concatenate([_ari(runs[(n_init, s)][0], runs[(RESTARTS[0], s)][0]) for s in SEEDS])
            ratio = np.concatenate([runs[(n_init, s)][1] / runs[(RESTARTS[0], s)][1] for s in SEEDS])
            found[f"{method}/{n_init}"] = float(ratio.mean())
            rows.append([method.upper(), str(n_init), f"{between.mean():.3f}", f"{(between == 1).mean():.0%}",
                         f"{same.mean():.3f}", f"{(same == 1).mean():.0%}", f"{ratio.mean():.4f}",
                         f"{ratio.max():.3f}"])
    return rows, found


def class_rows(device: str, sizes: tuple[int, int], source: str | None, repeats: int) -> list[list[str]]:
    """The class-concept table: per variant, the median over ``repeats`` (variants
    interleaved) of the finalise seconds and of the wall time at each folder size; the
    marginal wall time of a photo ÷ the backbone's, timed alone in a fresh process with the
    CLI's allocator (``bench_end_to_end.backbone_fresh``) before and after the runs."""
    from benchmarks.bench_end_to_end import backbone_fresh

    small, large = sizes
    folder = photo_folder(large, source=source)
    backbone = backbone_fresh(folder, large, device, 3)[0]
    fin: dict[tuple[str, int], list[float]] = {}
    wall: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for name, overrides in CLASS_VARIANTS.items():
            for n in sizes:
                metrics: dict[str, Any] = {}
                w, _ = trainer_run(photo_folder(n, source=source), device, "callbacks.concepts.figures=false",
                                   *overrides, metrics=metrics)
                wall.setdefault((name, n), []).append(w)
                fin.setdefault((name, n), []).append(
                    next((v for k, v in metrics.items() if k.endswith("/seconds/finalise")), float("nan")))
    backbone += backbone_fresh(folder, large, device, 3)[0]
    per_photo = median(backbone)
    rows = []
    for name in CLASS_VARIANTS:
        f_small, f_large = median(fin[(name, small)]), median(fin[(name, large)])
        run_per = (median(wall[(name, large)]) - median(wall[(name, small)])) / (large - small)
        rows.append([name, fmt_s(f_small), fmt_s(f_large), fmt_s((f_large - f_small) / (large - small)),
                     fmt_s(run_per), fmt_x(run_per / per_photo)])
    rows.append(["backbone `forward_features` alone (fresh process, the CLI's allocator)", "", "", "",
                 fmt_s(per_photo), "1.00×"])
    return rows


def run(args) -> Section:
    args.repeats = args.repeats or 3
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    from clustercam.explain.concepts import ConceptSettings

    n = 16 if args.quick else 64
    batches, _ = load_photos(photo_folder(n, source=args.photos), args.device)
    model = make_model(args.device)
    with torch.no_grad():
        acts = [(model.features(x), y) for x, y in batches]

    def concepts(settings: ConceptSettings) -> Any:
        run_one = concept_call(model, settings)

        def call() -> None:
            with torch.no_grad():
                for a, y in acts:
                    run_one(a, y)
        return call

    def backbone() -> None:
        with torch.no_grad():
            for x, _ in batches:
                model.features(x)

    cases = {name: concepts(ConceptSettings(**kw)) for name, kw in VARIANTS.items()}
    times = time_cases({**cases, "backbone": backbone}, repeats=args.repeats, warmup=args.warmup,
                       device=args.device)
    per = {k: median(v) / n for k, v in times.items()}
    base, bb = per["defaults"], per["backbone"]
    rows = [[name, fmt_s(per[name]), spread([t / n for t in times[name]]), fmt_x(per[name] / base),
             fmt_s(base - per[name]) if kw else "–"] for name, kw in VARIANTS.items()]
    rows.append(["backbone `forward_features` (for scale)", fmt_s(bb), spread([t / n for t in times["backbone"]]),
                 "", ""])
    tables = [Table(f"The per-image concept steps under other settings ({n} photos, batches of {BATCH})",
                    ["setting (`callbacks.concepts.…`)", "per image", "min–max", "÷ defaults",
                     "saved per image"], rows,
                    [f"Median of {args.repeats} interleaved passes over the same activations after "
                     f"{args.warmup} warm-up pass(es), on {args.device} with torch's threads. The "
                     "backbone runs in this process with the allocator's defaults; the CLI's setting "
                     "makes it faster (see the end-to-end section), the concept steps hardly."])]

    restarts, found = restart_rows(torch.cat([a for a, _ in acts]))
    tables.append(Table(f"k-means restarts and the partitions they find ({n} photos, seeds {SEEDS})",
                        ["method", "n_init", "ARI between seeds (mean)", "identical between seeds",
                         f"ARI vs n_init {RESTARTS[0]}, same seed", f"identical vs n_init {RESTARTS[0]}",
                         f"inertia ÷ n_init {RESTARTS[0]}'s (mean)", "… worst image"], restarts,
                        ["ARI: adjusted Rand index of an image's two partitions of its kept channels "
                         "(1 = the same concepts). Inertia: the k-means objective in the clustered space "
                         "(CGAP's PCA scores, CPHA's (row, col) positions); fewer restarts find worse "
                         "optima, and partitions that move more from seed to seed."]))

    sizes = (11, 33) if args.quick else (11, 110)
    tables.append(Table(f"Class concepts and whole runs under other settings: the CLI run, {sizes[0]} and {sizes[1]} photos",
                        ["setting (`callbacks.concepts.…`)", f"finalise, {sizes[0]} photos",
                         f"finalise, {sizes[1]} photos", "finalise per photo (slope)", "run per photo (slope)",
                         "run ÷ backbone"],
                        class_rows(args.device, sizes, args.photos, 1 if args.quick else 2),
                        ["finalise: the end-of-run clustering of each class's co-association and the NMF "
                         "baseline's fits (threads side by side); what it adds per photo stops growing "
                         f"once the NMF samples are full. Median of {1 if args.quick else 2} "
                         "run(s) per folder and setting, the settings interleaved: ±5-10 ms a photo on this machine "
                         "(the end-to-end section measures the defaults with more). Backbone: median of 6 timings, "
                         "half before and half after the runs."]))

    headlines = [
        Headline("Per-image concept steps with `n_init=3` ÷ the default `n_init=10`, in one process",
                 fmt_x(per["`n_init=3`"] / base), "(informational)", None),
        Headline("… the k-means objective (inertia) it reaches ÷ n_init 10's, CPHA / CGAP, mean over images and seeds",
                 f"{found['cpha/3']:.3f} / {found['cgap/3']:.4f}", "(informational)", None)]
    intro = __doc__.split("\n\n")[1:2]
    return Section("What the concept settings cost", intro, tables, headlines, load0, load_average(),
                   time.perf_counter() - t_start, args.device, args.quick, meter.others())


def main(argv: list[str] | None = None) -> None:
    main_single("clustercam benchmark: what the concept settings cost", run,
                parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    main()
