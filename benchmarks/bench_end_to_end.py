"""The default concepts experiment end to end, as a user runs it, against the backbone.

Runs: ``python -m clustercam.train experiment=concepts_imagenet model.pretrained=false
logger=none`` (random-weight ``nf_resnet50`` at 256 px, 2048 x 8 x 8 activations) in a
fresh process over two folders of crops of the photos of ``--photos`` (the 11 shared photos)
(``bench_concept_run.photo_folder``: 11 and 110 photos, 1 and 10 per class). The marginal
cost of one photo is the difference of the two runs' wall times over the difference of
their sizes: the interpreter, model and Lightning start-up, the clustering of each class's
co-association (a cost per class) cancel; JPEG decoding, the concepts, the class concepts
(NMF samples of up to ``nmf_max_images`` images a class included) and the files do not.
Backbone: ``forward_features`` alone on the same preprocessed photos (the 110-photo
folder, batches of 16 as in the run), in a fresh process with the allocator set up as the
CLI sets up the runs' (``clustercam.runtime.allocator``: torch's huge pages, glibc keeping
freed blocks for the next batch, unless the environment says otherwise; with torch's and
glibc's defaults a third of a CPU forward's time is page faults), timed before and after the
runs, and once more with those defaults (a plain script) for comparison; ratio = the run's
marginal cost per photo ÷ the backbone's per photo with the runs' setting. The
runs also have Lightning's SimpleProfiler: their marginal cost ÷ the marginal seconds of
their own ``test_step`` (the same forward, inside the same runs) cancels the machine's drift
between the runs and the backbone's timings.

Cases, each over both folders: the default (class concepts on) with figures off; class
concepts off, figures off; the default with its figures (the concept figures of the first
20 images and the class galleries): what the figures add is its wall time minus the
figures-off run's at the same folder size; the bare run, without the concept callback
(``~callbacks.concepts``): the loop, decoding and forward of a run, which cost more than the
backbone timed alone, so that a case ÷ the bare run is what the concepts add.

    python -m benchmarks.bench_end_to_end [--quick] [--repeats 2] [--photos FOLDER] [--sizes 11,110]
    python -m benchmarks.bench_end_to_end --memory 1000,2000,10000:test_resnet [--links /tmp/x]
    python -m benchmarks.bench_end_to_end --kept

``--photos``: the folder of ``<synset>/*.JPEG`` photos to crop (default: the 11 shared
photos, ``/work/shared/data/imagenet-11``); the package itself reads no fixed folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from benchmarks.bench_concept_run import (
    IMAGES,
    MODEL,
    load_photos,
    make_model,
    photo_folder,
    trainer_run,
)
from benchmarks.common import (
    ROOT,
    CpuMeter,
    Headline,
    Section,
    Table,
    fmt_mib,
    fmt_s,
    fmt_x,
    load_average,
    main_single,
    median,
    parser,
)

SIZES, SIZES_QUICK = (11, 110), (11, 33)
CASES = {  # name -> overrides of the default experiment
    "default, figures off (class concepts on)": ["callbacks.concepts.figures=false"],
    "class concepts off, figures off": ["callbacks.concepts.figures=false", "callbacks.concepts.class_concepts=false"],
    "default, with its figures": [],
    "no concepts (`~callbacks.concepts`: the bare run)": ["~callbacks.concepts"],
}
DEFAULT, NO_CLASSES, FIGURES, BARE = CASES
CLASS_STEPS = ("observe", "finalise", "score", "gallery_maps", "write")


def backbone_per_photo(folder: Path, n: int, device: str, repeats: int = 3) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (every thread of this process) per photo of ``forward_features``
    over the ``n`` photos of ``folder``, ``repeats`` times each."""
    batches, _ = load_photos(folder, device)
    model = make_model(device)
    wall, cpu = [], []
    with torch.no_grad():
        model.features(batches[0][0])  # warm-up
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            for x, _ in batches:
                model.features(x)
            wall.append((time.perf_counter() - t0) / n)
            cpu.append((time.process_time() - c0) / n)
    del model, batches
    return wall, cpu


PLAIN = {"THP_MEM_ALLOC_ENABLE": "0", "CLUSTERCAM_KEEP_FREED_MEMORY": "0"}  # torch's and glibc's defaults


def describe_allocator(setting: dict[str, bool]) -> str:
    """``huge pages on, freed blocks kept`` and the like, from ``configure_process()``'s answer."""
    return (f"huge pages {'on' if setting.get('huge_pages') else 'off'}, freed blocks "
            f"{'kept' if setting.get('keep_freed_memory') else 'returned'}")


def backbone_fresh(folder: Path, n: int, device: str, repeats: int, env_extra: dict[str, str] | None = None,
                   threads: int | None = None) -> tuple[list[float], list[float], dict[str, bool]]:
    """:func:`backbone_per_photo` in a fresh process whose allocator is set up as the CLI sets
    its own (``clustercam.runtime.allocator.configure_process``, from the environment plus
    ``env_extra``; torch reads its part at a process's first tensor: one process cannot time
    two settings). Also returns which settings were on."""
    code = ("from clustercam.runtime.allocator import configure_process; a = configure_process(); "
            "import json, sys, torch; from pathlib import Path; "
            "from benchmarks.bench_end_to_end import backbone_per_photo as b; "
            "t = int(sys.argv[5]); t and torch.set_num_threads(t); "
            "print(json.dumps([*b(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])), a]))")
    env = {**os.environ, **(env_extra or {}), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(n), device, str(repeats), str(threads or 0)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall, cpu, setting = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, cpu, setting


STEP = "profile/[Strategy]SingleDeviceStrategy.test_step"  # the model's steps, SimpleProfiler's total
OWN_NOTE = ("÷ the run's own model steps: per repeat, the slope of the wall time ÷ the slope of "
            "the runs' `test_step` seconds (Lightning's SimpleProfiler): the backbone as it ran "
            "inside the same two runs, so a change of the machine's pace between the backbone's "
            "own timings and the runs cancels. `test_step` is `forward_features` plus the "
            "pooled head, the same forward as the backbone row.")


def own_backbone_ratios(walls: dict, metrics: dict, name: str, small: int, large: int) -> list[float]:
    """Per repeat: the marginal wall time of a photo ÷ the marginal seconds of its model step,
    both from the same two runs (see :data:`OWN_NOTE`); NaN where a run has no profile."""
    out = []
    for r, (ws, wl) in enumerate(zip(walls[(name, small)], walls[(name, large)])):
        ss, sl = (metrics[(name, n)][r].get(STEP, float("nan")) for n in (small, large))
        out.append((wl - ws) / (sl - ss))
    return out


def run(args) -> Section:
    args.repeats = args.repeats or 2
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    small, large = SIZES_QUICK if args.quick else SIZES
    if getattr(args, "sizes", None):
        small, large = (int(v) for v in args.sizes.split(","))
    folders = {n: photo_folder(n, source=getattr(args, "photos", None)) for n in (small, large)}
    loads = [load_average()]
    jobs, threads = max(1, getattr(args, "jobs", 1) or 1), getattr(args, "threads", None)
    bb_repeats = 1 if jobs > 1 or threads else 3
    setting: dict[str, bool] = {}  # the runs' allocator, as the backbone's fresh processes report it
    plain: dict[str, bool] = {}  # and with torch's and glibc's defaults asked for

    def backbones() -> tuple[list[float], list[float], list[float]]:  # as the runs, torch's and glibc's defaults
        w, c, got = backbone_fresh(folders[large], large, args.device, bb_repeats, None, threads)
        w_plain, _, got_plain = backbone_fresh(folders[large], large, args.device, bb_repeats, PLAIN, threads)
        setting.update(got)
        plain.update(got_plain)
        return w, c, w_plain

    bb, bb_cpu, bb_other = backbones()
    walls: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    rss: dict[tuple[str, int], float] = {}
    metrics: dict[tuple[str, int], list[dict]] = {}  # every repeat's metrics.json, in repeat order
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None
    by_cpu = jobs > 1 or bool(threads)
    plan = []
    for r in range(args.repeats):
        for n in (small, large):
            names = list(CASES)
            shift = r % len(names)
            plan += [(name, n) for name in names[shift:] + names[:shift]]  # interleaved, the first rotating

    def one(case: tuple[str, int]) -> tuple[str, int, float, float, dict]:
        m: dict = {}
        wall, peak = trainer_run(folders[case[1]], args.device, *CASES[case[0]], metrics=m, env_extra=env,
                                 profile=True)
        return case[0], case[1], wall, peak, m

    with ThreadPoolExecutor(jobs) as pool:  # jobs > 1: runs side by side (CPU seconds only)
        for name, n, wall, peak, m in pool.map(one, plan):
            walls.setdefault((name, n), []).append(wall)
            cpus.setdefault((name, n), []).append(m.get("process/cpu_seconds", float("nan")))
            rss[(name, n)] = max(rss.get((name, n), 0.0), peak)
            metrics.setdefault((name, n), []).append(m)
            loads.append(load_average())
    more, more_cpu, more_other = backbones()
    bb, bb_cpu, bb_other = bb + more, bb_cpu + more_cpu, bb_other + more_other
    per_bb, per_bb_cpu, per_other = median(bb), median(bb_cpu), median(bb_other)

    def wall(name: str, n: int) -> float:
        return median(walls[(name, n)])

    rows, marginal, marginal_cpu, own = [], {}, {}, {}
    for name in CASES:
        marginal[name] = (wall(name, large) - wall(name, small)) / (large - small)
        marginal_cpu[name] = (median(cpus[(name, large)]) - median(cpus[(name, small)])) / (large - small)
        own[name] = own_backbone_ratios(walls, metrics, name, small, large)
    for name in CASES:
        rows.append([name, fmt_s(wall(name, small)), fmt_s(wall(name, large)), fmt_s(marginal[name]),
                     fmt_x(marginal[name] / per_bb), f"{fmt_x(median(own[name]))} ({fmt_x(min(own[name]))}–"
                     f"{fmt_x(max(own[name]))})", fmt_x(marginal[name] / marginal[BARE]), fmt_s(marginal_cpu[name]),
                     fmt_x(marginal_cpu[name] / per_bb_cpu), fmt_mib(rss[(name, large)])])
    rows.append([f"backbone `forward_features` alone (a fresh process, {large} photos, the runs' allocator: "
                 f"{describe_allocator(setting)})", "", "", fmt_s(per_bb), "1.00×", "", "", fmt_s(per_bb_cpu), "1.00×", ""])
    rows.append(["… the same with torch's and glibc's defaults (a plain script: "
                 f"{describe_allocator(plain)})", "", "", fmt_s(per_other), fmt_x(per_other / per_bb), "", "", "", "", ""])
    tables = [Table(f"Whole runs over {small} and {large} photos: the marginal cost of a photo",
                    ["case", f"{small} photos", f"{large} photos", "per photo (slope)", "÷ backbone",
                     "÷ the run's own model steps (median, range)", "÷ the bare run", "CPU s per photo (slope)",
                     "CPU ÷ backbone CPU", f"peak RSS ({large})"], rows,
                    [f"Wall times: median of {args.repeats} run(s) per case and folder, the cases "
                     f"interleaved; backbone: median of {len(bb)} timings ({fmt_s(min(bb))}–"
                     f"{fmt_s(max(bb))} per photo), before and after the runs, each in a fresh process "
                     "with the allocator set up as the CLI sets up the runs' (`clustercam.runtime.allocator`: "
                     f"{describe_allocator(setting)}, unless the environment says otherwise) and, for the "
                     "row below it, with torch's and glibc's defaults. 1-minute load "
                     f"average during the runs: {min(loads):.2f}–{max(loads):.2f}. CPU seconds (user + "
                     "system of every thread: the runs' from `wait4`, the backbone's from "
                     "`time.process_time`) move less with other processes' load than wall times, "
                     "but count a second core's work as more time: "
                     + (f"here the runs had {threads or 'default'} thread(s) and ran {jobs} side by side, "
                        "so the CPU-second ratio is the headline." if by_cpu else
                        "the wall-time ratio is the headline. "
                        + OWN_NOTE) + " ÷ the bare run: the marginal wall time ÷ that of the same CLI run "
                    "without the concept callback (Lightning's loop, decoding and the forward as a run "
                    "does them, which cost more than the backbone timed alone): what the concepts add."])]

    def cpu(name: str, n: int) -> float:
        return median(cpus[(name, n)])

    def stage(n: int) -> float:  # the figure stage, timed inside the figures-on runs (metrics.json)
        timed = [m["concepts/seconds/figures"] for m in metrics.get((FIGURES, n), []) if "concepts/seconds/figures" in m]
        return median(timed) if timed else float("nan")

    fig_rows = [[f"{n} photos", fmt_s(wall(FIGURES, n)), fmt_s(wall(DEFAULT, n)),
                 fmt_s(wall(FIGURES, n) - wall(DEFAULT, n)), fmt_s(cpu(FIGURES, n) - cpu(DEFAULT, n)),
                 fmt_s(stage(n))] for n in (small, large)]
    tables.append(Table("What the default figures add (concept figures of the first 20 images, class "
                        "galleries)", ["folder", "figures on", "figures off", "added (wall)", "added (CPU s)",
                                       "figure stage (in the run)"], fig_rows,
                        ["figure stage: `concepts/seconds/figures` of the figures-on runs' metrics.json "
                         "(median), the drawing of every figure timed inside the run; the difference of two "
                         "whole runs moves by several seconds on a shared machine."]))
    steps = []
    for n in (small, large):
        m = metrics.get((DEFAULT, n), [{}])[-1]  # the last repeat's
        steps.append([f"{n} photos", *[fmt_s(m.get(f"class_concepts/seconds/{k}", float("nan")))
                                       for k in CLASS_STEPS], str(m.get("class_concepts/passes", "–"))])
    tables.append(Table("The class concepts' steps in the default runs (figures off), from metrics.json",
                        ["folder", *CLASS_STEPS, "passes over the data"], steps,
                        ["observe: the co-association counts, NMF sample and pooled numbers of pass 1; "
                         "finalise: the clustering of each class's co-association and the NMF; score: "
                         "from the pooled numbers (one pass) or the second pass; gallery_maps: the "
                         "gallery images' activations again (figures on only)."]))
    if by_cpu:
        ratio, ratio_off = marginal_cpu[DEFAULT] / per_bb_cpu, marginal_cpu[NO_CLASSES] / per_bb_cpu
        added = max(cpu(FIGURES, n) - cpu(DEFAULT, n) for n in (small, large))
    else:
        ratio, ratio_off = marginal[DEFAULT] / per_bb, marginal[NO_CLASSES] / per_bb
        added = max(stage(n) for n in (small, large))  # timed inside the run: whole runs' noise is seconds
    what = f"CPU seconds ({threads or 'default'} thread(s))" if by_cpu else "seconds"
    headlines = [
        Headline(f"Default concepts experiment end to end (class concepts on, figures off), CLI, "
                 f"{small} → {large} photos, nf_resnet50 256 px, {args.device}: marginal {what} per photo ÷ "
                 "the backbone's", fmt_x(ratio), "≤ 1.4×", ratio <= 1.4),
        Headline("… the same with class concepts off", fmt_x(ratio_off), "≤ 1.3×", ratio_off <= 1.3),
        *([] if by_cpu else [
            Headline("… the default, against each run's own model steps (median of the repeats; "
                     "drift-free)", fmt_x(median(own[DEFAULT])), "≤ 1.4×", median(own[DEFAULT]) <= 1.4),
            Headline("… class concepts off, the same way", fmt_x(median(own[NO_CLASSES])), "≤ 1.3×",
                     median(own[NO_CLASSES]) <= 1.3)]),
        *([] if by_cpu else [
            Headline("… the default ÷ the same run without the concept callback (the bare run: what the "
                     "concepts add)", fmt_x(marginal[DEFAULT] / marginal[BARE]), "(informational)", None),
            Headline("… the default ÷ the backbone alone in a plain script (torch's and glibc's allocator "
                     f"defaults; the runs had {describe_allocator(setting)})", fmt_x(marginal[DEFAULT] / per_other),
                     "(informational)", None)]),
        Headline(f"… what the default figures add to a run (the larger of the two folders; {what}"
                 + ("" if by_cpu else ": the figure stage timed inside the run") + ")", fmt_s(added),
                 "≤ 10 s", added <= 10),
    ]
    intro = [line for line in __doc__.split("\n\n")[1:3]]
    return Section("Concepts experiment end to end (the CLI) vs the backbone", intro, tables, headlines, load0,
                   load_average(), time.perf_counter() - t_start, args.device, args.quick, meter.others())


def linked_folder(n: int, source: Path, root: Path) -> Path:
    """``root/linked-n/<synset>/<name>_<j>.JPEG``: n symbolic links to the photos of
    ``source``, repeated (no copies: 10,000 photos cost no disk)."""
    files = sorted(source.glob("n*/*.JPEG"))
    if not files:
        raise FileNotFoundError(f"no images under {source}")
    out = root / f"linked-{n}"
    if out.is_dir() and sum(1 for _ in out.glob("*/*.JPEG")) == n:
        return out
    for j in range(n):
        f = files[j % len(files)]
        link = out / f.parent.name / f"{f.stem}_{j:05d}.JPEG"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(f.resolve())
    return out


def memory(plan: list[tuple[int, str, list[str]]], source: Path, root: Path, device: str) -> None:
    """Peak RSS of the default experiment (figures and class concepts on) over folders of
    ``n`` links to the photos of ``source``, model by model, with more overrides; prints a
    markdown row a run."""
    print("| photos | model | overrides | wall time | per photo | peak RSS | passes | load (1 min) |", flush=True)
    for n, name, more in plan:
        folder = linked_folder(n, source, root)
        extra = [*([] if name == MODEL else [f"model.name={name}", f"data.model_name={MODEL}"]), *more]
        m: dict = {}
        load0 = load_average()
        wall, rss = trainer_run(folder, device, *extra, metrics=m)
        print(f"| {n:,} | `{name}` | {' '.join(more) or '–'} | {fmt_s(wall)} | {fmt_s(wall / n)} | {fmt_mib(rss)} | "
              f"{m.get('class_concepts/passes', '–')} | {load0:.2f}–{load_average():.2f} |", flush=True)


def kept_per_image(n_channels: int = 2048, batches: int = 20, batch: int = 16) -> dict[str, float]:
    """Bytes a ``ClassConceptRun`` keeps per observed image for the scores (the storages of
    every tensor in its ``batches``: a view into a larger tensor counts in full), without and
    with a pooled head: the two passes' labels, and the one pass's labels + pooled rows."""
    from clustercam.explain.concepts.classes.coassociation import ClassConceptSettings
    from clustercam.explain.concepts.classes.passes import ClassConceptRun
    from clustercam.explain.concepts.image.ablation import PooledHead

    torch.manual_seed(0)
    configs, k = [("cgap", "kmeans", 5), ("cpha", "kmeans", 5)], 11
    pool = PooledHead(pool=lambda a: torch.nn.functional.adaptive_avg_pool2d(a, 1).flatten(1),
                      linear=torch.nn.Linear(n_channels, 1000), checked=True)
    out = {}
    for name, head in (("two passes", None), ("one pass", pool)):
        run = ClassConceptRun(ClassConceptSettings(n_random=0, nmf_max_images=0), configs, n_channels, k,
                              pooled_head=head)
        for b in range(batches):
            y = torch.randint(0, k, (batch,))
            run.observe(torch.rand(batch, n_channels, 8, 8), {c: torch.randint(-1, 5, (batch, n_channels))
                                                              for c in configs},
                        y, torch.arange(b * batch, (b + 1) * batch), targets=y)
        seen, total = set(), 0
        for ob in run.batches:
            pooled = ob.pooled
            extra = [] if pooled is None else [pooled.pooled, pooled.sums, pooled.regions, pooled.present]
            for t in [ob.index, ob.keep, ob.classes, ob.targets, *ob.partitions.values(), *extra]:
                if t is not None and t.untyped_storage().data_ptr() not in seen:
                    seen.add(t.untyped_storage().data_ptr())
                    total += t.untyped_storage().nbytes()
        out[name] = total / (batches * batch)
    return out


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--memory", default=None,
                   help="instead of the timings: peak RSS runs, e.g. 1000,2000 or 10000:test_resnet "
                        "or 1000::callbacks.concepts.nmf_max_images=10 (N[:model[:override...]], "
                        "default model nf_resnet50), over folders of links under --links")
    p.add_argument("--links", default="/tmp/clustercam-linked", help="where the folders of links go")
    p.add_argument("--threads", type=int, default=None,
                   help="torch / OpenMP threads of the backbone and of every run (e.g. 1 on a shared "
                        "machine, where CPU seconds of one thread are what stays comparable)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs side by side (> 1: their wall times mean nothing, read the CPU seconds)")
    p.add_argument("--sizes", default=None,
                   help="the two folder sizes, e.g. 220,440 (default 11,110; past 200 photos the "
                        "dataset-wide NMF sample is full and stops growing)")
    p.add_argument("--kept", action="store_true",
                   help="instead of the timings: bytes the class concepts keep per image, one pass vs two")
    args = p.parse_args()
    if args.kept:
        print(kept_per_image())
    elif args.memory:
        plan = [(int(f[0]), (f[1:2] or [""])[0] or MODEL, f[2:])
                for f in (item.split(":") for item in args.memory.split(","))]
        memory(plan, Path(args.photos or IMAGES), Path(args.links), args.device)
    else:
        main_single("clustercam benchmark: the concepts experiment end to end", run, args)
