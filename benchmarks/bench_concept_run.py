"""The default concepts run per image, side by side with the backbone's forward_features.

Images: a folder of real photos, crops of the 11 ``/work/shared/data/imagenet-11`` images
(random box of 50-100 % of the sides, aspect 3/4-4/3, half of them flipped; JPEG quality
90), written once to ``benchmarks/.cache/photos-N`` and read through
``ImageNetSubsetDataModule`` (resize 272 bicubic, centre crop 256, ImageNet mean/std).
Model: timm ``nf_resnet50`` with random weights (``ClassifierModule(pretrained=False)``,
seed 0), 2048 x 8 x 8 activations.

- *backbone*: ``model.features(x)`` for every batch of 16 (``forward_features``; on CUDA
  under bf16 autocast, channels_last).
- *concepts run*: the same, then ``run_concepts(model.head, a, y, settings=ConceptSettings(),
  logits=logits)`` per batch: the default run (CGAP + CPHA, k-means, 5 concepts, n_init 10,
  sub-concepts, importance, metrics; fidelity where the pipeline has it), no figures.
- ratio = (backbone + concepts) ÷ backbone per image, both clocked per batch within the same
  repeat of the run, median over repeats (the marginal cost of one more image; decoding
  the JPEGs is left out of both and measured separately by the trainer rows).
- per step: the pipeline's functions wrapped with clocks (CUDA synchronised around them).
- figures: ``concept_figure`` / ``sub_concept_figure`` + ``outputs.save_figure`` (dpi 100)
  on the run's first images, as the callback draws them.
- trainer: ``python -m clustercam.train experiment=concepts_imagenet`` on folders of 16 and
  64 photos (figures off): wall time, and the slope per image; peak RSS of whole runs over
  folders of 1,000 and 10,000 photos (the 10,000-photo run and a second 1,000-photo run
  use timm ``test_resnet`` (96 x 8 x 8 at 256 px) to stay within minutes on 2 cores: the
  per-image results the run keeps do not depend on the channel count).

    python -m benchmarks.bench_concept_run [--quick] [--device cuda] [--no-memory]
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    CACHE,
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
    spread,
    sync,
    time_cases,
)

IMAGES = Path("/work/shared/data/imagenet-11")
N_IMAGES, N_IMAGES_QUICK = 64, 16
BATCH = 16
MODEL = "nf_resnet50.ra2_in1k"
STEPS = {  # pipeline function -> what it computes
    "cluster_channels": "clustering (PCA + batched k-means, n_init 10)",
    "concept_metrics": "clustering metrics (silhouette, CHI, DBI)",
    "sub_concepts": "sub-concepts (3 per concept)",
    "concept_importance": "importance + sub-concept importance",
    "concept_fidelity": "fidelity (deletion / insertion curves)",
    "raw_concept_maps": "concept maps (sums at 8 x 8)",
}


# ---------------------------------------------------------------------------------------
# the photos
# ---------------------------------------------------------------------------------------
def photo_folder(n: int, root: Path = CACHE, source: Path | str | None = None) -> Path:
    """``root/photos-n/<synset>/<name>_<j>.JPEG``: n crops of the photos of ``source``
    (``<synset>/*.JPEG``; default: the 11 shared photos), cached (another source: its own
    ``photos-n-<hash>`` folder)."""
    import hashlib

    from PIL import Image, ImageOps

    source = IMAGES if source is None else Path(source)
    tag = "" if source == IMAGES else "-" + hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:8]
    out = root / f"photos-{n}{tag}"
    if out.is_dir() and sum(1 for _ in out.glob("*/*.JPEG")) == n:
        return out
    files = sorted(source.glob("n*/*.JPEG"))
    if not files:
        raise FileNotFoundError(f"no images under {source}")
    rng = np.random.default_rng(0)
    sources = []
    for f in files:
        with Image.open(f) as im:
            sources.append((f, im.convert("RGB")))
    for j in range(n):
        f, im = sources[j % len(sources)]
        w, h = im.size
        scale, aspect = rng.uniform(0.5, 1.0), math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = max(32, min(w, round(w * scale * math.sqrt(aspect))))
        ch = max(32, min(h, round(h * scale / math.sqrt(aspect))))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        path = out / f.parent.name / f"{f.stem}_{j:05d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, quality=90)
    return out


def load_photos(folder: Path, device: str) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], Any]:
    """The folder's batches of 16 (x, y) on ``device``, decoded once, and the datamodule."""
    from clustercam.data.imagenet_subset import ImageNetSubsetDataModule

    dm = ImageNetSubsetDataModule(folder, model_name=MODEL, batch_size=BATCH)
    batches = [(x.to(device), y.to(device)) for x, y, _ in dm.test_dataloader()]
    return batches, dm


def make_model(device: str, name: str = MODEL) -> Any:
    from clustercam.models.classifier_module import ClassifierModule

    torch.manual_seed(0)
    return ClassifierModule(name, pretrained=False).to(device).eval()


def concept_call(model: Any, settings: Any = None) -> Callable[[torch.Tensor, torch.Tensor], Any]:
    """``run_concepts`` with ``settings`` (default: the default ``ConceptSettings``), as the
    callback calls it (its pooled head where this pipeline version takes one)."""
    from clustercam.explain.concepts import ConceptSettings, run_concepts

    settings = ConceptSettings() if settings is None else settings
    params = inspect.signature(run_concepts).parameters
    extra = {}
    if "pooled_head" in params and getattr(model, "pooled_head", None) is not None:
        extra["pooled_head"] = model.pooled_head

    def call(a: torch.Tensor, y: torch.Tensor) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run_concepts(model.head, a, y, settings=settings, logits=model.head(a), **extra)
    return call


# ---------------------------------------------------------------------------------------
# in-process: backbone vs the concepts run, per step
# ---------------------------------------------------------------------------------------
def side_by_side(batches, model, device: str, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each repeat: ``backbone`` alone, the ``run`` (backbone + concepts per
    batch), and within each run its two parts, ``run/backbone`` and ``run/concepts`` (the
    concepts clocked per batch around ``run_concepts``): the ratio of a repeat is
    ``run / run/backbone``, both parts under the same load, which a difference of two
    separately timed totals is not."""
    run = concept_call(model)
    parts: list[tuple[float, float]] = []

    def backbone() -> None:
        with torch.no_grad():
            for x, _ in batches:
                model.features(x)

    def concepts() -> None:
        t_bb = t_c = 0.0
        with torch.no_grad():
            for x, y in batches:
                t0 = time.perf_counter()
                a = model.features(x)
                sync(device)
                t1 = time.perf_counter()
                run(a, y)
                sync(device)
                t_bb, t_c = t_bb + t1 - t0, t_c + time.perf_counter() - t1
        parts.append((t_bb, t_c))

    times = time_cases({"backbone": backbone, "run": concepts}, repeats=repeats, warmup=warmup,
                       device=device)
    timed = parts[-repeats:]  # the warm-up runs come first
    times["run/backbone"] = [b for b, _ in timed]
    times["run/concepts"] = [c for _, c in timed]
    return times


def step_times(batches, model, device: str, repeats: int = 3) -> dict[tuple[str, str], float]:
    """Seconds per image of each pipeline step, by method (median of ``repeats`` passes),
    in a serial run: the pipeline's CPU threads (``run_stages``) would overlap the clocks."""
    import clustercam.explain.concepts.image.batch as pipeline
    import clustercam.explain.concepts.image.kmeans as kmeans

    names = [n for n in STEPS if hasattr(pipeline, n)]
    saved = {n: getattr(pipeline, n) for n in names}
    serial = [m for m in (pipeline, kmeans) if hasattr(m, "cpu_workers")]  # the threads' switch
    workers = {m: m.cpu_workers for m in serial}
    state = {"method": "cgap"}
    clock: dict[tuple[str, str], float] = {}

    def timed(name: str, fn: Callable) -> Callable:
        def inner(*a, **k):
            if name == "cluster_channels":
                state["method"] = k.get("method", "cgap")
            sync(device)
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync(device)
                key = (name, state["method"])
                clock[key] = clock.get(key, 0.0) + time.perf_counter() - t
        return inner

    run = concept_call(model)
    n = sum(len(x) for x, _ in batches)
    passes: list[dict[tuple[str, str], float]] = []
    try:
        for name in names:
            setattr(pipeline, name, timed(name, saved[name]))
        for m in serial:
            m.cpu_workers = lambda _device: 0
        for _ in range(repeats):
            clock.clear()
            with torch.no_grad():
                for x, y in batches:
                    a = model.features(x)
                    sync(device)
                    t = time.perf_counter()
                    run(a, y)
                    sync(device)
                    clock[("total", "")] = clock.get(("total", ""), 0.0) + time.perf_counter() - t
            steps_sum = sum(v for k, v in clock.items() if k != ("total", ""))
            clock[("rest", "")] = clock[("total", "")] - steps_sum  # of this pass, not of medians
            passes.append(dict(clock))
    finally:
        for name, fn in saved.items():
            setattr(pipeline, name, fn)
        for m, fn in workers.items():
            m.cpu_workers = fn
    keys = sorted({k for p in passes for k in p})
    return {k: median([p.get(k, 0.0) for p in passes]) / n for k in keys}


def sklearn_parity(batches, model) -> tuple[float, int]:
    """The largest difference between the pipeline's silhouette / CHI / DBI and
    scikit-learn's on every image and method (absolute for scores up to 1 in magnitude,
    relative beyond: CHI is in the 1000s), and how many (image, method) pairs were compared."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    from clustercam.explain.concepts import cluster_channels, concept_metrics

    worst, count = 0.0, 0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, _ in batches:
            a = model.features(x)
            for method in ("cgap", "cpha"):
                res = cluster_channels(a, method=method, n_concepts=5)
                got = concept_metrics(res, warn=False)
                for i, row in enumerate(got):
                    keep = (res.labels[i] >= 0).cpu().numpy()
                    pts, lab = res.space[i].cpu().numpy()[keep], res.labels[i].cpu().numpy()[keep]
                    if len(set(lab.tolist())) < 2:
                        continue
                    ref = (silhouette_score(pts, lab), calinski_harabasz_score(pts, lab),
                           davies_bouldin_score(pts, lab))
                    for name, r in zip(("silhouette", "calinski_harabasz", "davies_bouldin"), ref):
                        worst = max(worst, abs(row[name] - r) / max(1.0, abs(r)))
                    count += 1
    return worst, count


WRITER = ("all, as the callback writes them (`callbacks.concept_figures`: one forked process per core, "
          "each through an `outputs.FigureWriter`), total ÷ figures")


def figure_times(batches, model, dm, n_images: int = 4) -> dict[str, list[float]]:
    """Seconds of each figure (build + save at dpi 100), the callback's way, per kind."""
    from clustercam import outputs
    from clustercam.explain.concepts.image.batch import figure_maps
    from clustercam.explain.plots.concepts import concept_figure, sub_concept_figure

    x, y = batches[0]
    with torch.no_grad():
        data = concept_call(model)(model.features(x), y)
    s = __import__("clustercam.explain.concepts", fromlist=["ConceptSettings"]).ConceptSettings()
    times: dict[str, list[float]] = {"concept": [], "sub-concept": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2):  # the first pass warms up fonts and caches
            for i in range(min(n_images, len(x))):
                image = dm.display_image(i)
                for f, (method, _, n) in enumerate(s.details):
                    c = s.configs.index(s.details[f])
                    ch, imp = data.channels[i, c, :n].tolist(), data.importance[i, c, :n].tolist()
                    t0 = time.perf_counter()
                    maps, sub_maps = figure_maps(data, i, f, n, tuple(image.shape[-2:]))
                    fig = concept_figure(image, maps, ch, imp, title=f"image {i} - {method.upper()}")
                    outputs.save_figure(fig, Path(tmp) / f"{i}_{method}.png", dpi=100)
                    t1 = time.perf_counter()
                    fig = sub_concept_figure(image, maps, ch, imp, sub_maps, data.sub_channels[i, f, :n],
                                             data.sub_importance[i, f, :n], title="sub")
                    if fig is not None:
                        outputs.save_figure(fig, Path(tmp) / f"{i}_{method}_sub.png", dpi=100)
                    t2 = time.perf_counter()
                    if rep:
                        times["concept"].append(t1 - t0)
                        if fig is not None:
                            times["sub-concept"].append(t2 - t1)
        # the callback's way: its own figure function (one job per image on every core, each
        # process's PNG encoding in a worker thread while its next figure is drawn)
        from clustercam.callbacks.concept_figures import concept_figures

        k = min(n_images, len(x))
        t0 = time.perf_counter()
        paths = concept_figures(s, dm, data.replace(idx=torch.arange(len(x))), [f"image{i}" for i in range(k)],
                                ["class"] * k, Path(tmp) / "run", k)
        times[WRITER] = [(time.perf_counter() - t0) / max(len(paths), 1)] * len(paths)  # one total, per figure
    return times


# ---------------------------------------------------------------------------------------
# the trainer: wall time and peak RSS of whole runs
# ---------------------------------------------------------------------------------------
PROFILE = "test-profile.txt"  # Lightning's SimpleProfiler report of the test loop, in the run folder


def profile_totals(path: Path) -> dict[str, float]:
    """Total seconds per action of a SimpleProfiler report (``| action | mean | calls | total | % |``
    rows), e.g. ``[Strategy]SingleDeviceStrategy.test_step``: the model's steps in the run."""
    totals = {}
    for line in Path(path).read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 5 and cells[1] not in ("Action", "Total"):
            try:
                totals[cells[1]] = float(cells[4])
            except ValueError:
                continue
    return totals


def trainer_run(folder: Path, device: str, *overrides: str, metrics: dict | None = None,
                env_extra: dict | None = None, profile: bool = False) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of ``python -m clustercam.train experiment=concepts_imagenet``
    over ``folder`` in a fresh process (no logger); ``metrics`` (a dict) receives the run's
    ``metrics.json`` and its CPU seconds (``process/cpu_seconds``, user + system, every
    thread); ``env_extra``: more environment variables for the run. ``profile``: the run
    also has Lightning's SimpleProfiler (a clock read around each hook and step), whose
    totals go to ``metrics`` as ``profile/<action>`` seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MPLBACKEND": "Agg",
           "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    with tempfile.TemporaryDirectory() as out:
        profiler = ["+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler",
                    f"+trainer.profiler.dirpath={out}", "+trainer.profiler.filename=profile"] if profile else []
        cmd = [sys.executable, "-m", "clustercam.train", "print_config=false",
               "experiment=concepts_imagenet", "model.pretrained=false", "logger=none",
               f"data.data_dir={folder}", f"paths.output_dir={out}", f"hydra.run.dir={out}",
               f"trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}", *profiler, *overrides]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read() if proc.stderr else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.stderr.write(f"trainer run failed ({' '.join(overrides)}):\n{err[-3000:]}\n")
            return math.nan, math.nan
        if metrics is not None and (Path(out) / "metrics.json").is_file():
            metrics.update(json.loads((Path(out) / "metrics.json").read_text()))
            metrics["process/cpu_seconds"] = usage.ru_utime + usage.ru_stime
        if metrics is not None and profile and (Path(out) / PROFILE).is_file():
            metrics.update({f"profile/{k}": v for k, v in profile_totals(Path(out) / PROFILE).items()})
    return wall, usage.ru_maxrss / 1024


def trainer_rows(device: str, quick: bool, memory: bool) -> tuple[list[list[str]], list[list[str]], float]:
    """Rows of the trainer table (16 / 64 photos and the slope) and of the memory table."""
    small, large = (8, 16) if quick else (16, 64)
    runs = {}
    for n in (small, large):
        runs[n] = trainer_run(photo_folder(n), device, "callbacks.concepts.figures=false")
    slope = (runs[large][0] - runs[small][0]) / (large - small)
    rows = [[f"{n} photos", fmt_s(runs[n][0]), fmt_s(runs[n][0] / n), fmt_mib(runs[n][1])] for n in runs]
    rows.append([f"slope {small} → {large}: the marginal cost of one photo", "", fmt_s(slope), ""])
    mem_rows = []
    if memory:
        plan = [(50, MODEL), (50, "test_resnet")] if quick else \
            [(1000, MODEL), (1000, "test_resnet"), (10000, "test_resnet")]
        for n, name in plan:
            extra = [] if name == MODEL else [f"model.name={name}", f"data.model_name={MODEL}"]
            wall, rss = trainer_run(photo_folder(n), device, *extra)
            mem_rows.append([f"{n:,}", f"`{name}`", fmt_s(wall), fmt_s(wall / n), fmt_mib(rss)])
    return rows, mem_rows, slope


# ---------------------------------------------------------------------------------------
# the section
# ---------------------------------------------------------------------------------------
def run(args) -> Section:
    args.repeats = args.repeats or 5
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    device = args.device
    n = N_IMAGES_QUICK if args.quick else N_IMAGES
    batches, dm = load_photos(photo_folder(n), device)
    model = make_model(device)
    tables: list[Table] = []
    headlines: list[Headline] = []

    times = side_by_side(batches, model, device, args.repeats, args.warmup)
    med = {k: median(v) / n for k, v in times.items()}
    ratios = [(b + c) / b for b, c in zip(times["run/backbone"], times["run/concepts"])]
    ratio = median(ratios)
    rows = [["backbone `forward_features` alone", fmt_s(med["backbone"]),
             spread([t / n for t in times["backbone"]]), f"{1 / med['backbone']:.1f}", "1.00×"],
            ["backbone + default concepts run", fmt_s(med["run"]), spread([t / n for t in times["run"]]),
             f"{1 / med['run']:.1f}", fmt_x(med["run"] / med["backbone"])],
            ["… of which the backbone", fmt_s(med["run/backbone"]),
             spread([t / n for t in times["run/backbone"]]), "", "1.00×"],
            ["… of which the concepts", fmt_s(med["run/concepts"]),
             spread([t / n for t in times["run/concepts"]]), "",
             f"+{med['run/concepts'] / med['run/backbone']:.2f}"],
            ["**ratio**: (backbone + concepts) ÷ backbone within each repeat", "",
             f"{min(ratios):.2f}×–{max(ratios):.2f}×", "", fmt_x(ratio)]]
    tables.append(Table(f"The default concepts run on {n} photos (batches of {BATCH}), per image",
                        ["what", "median per image", "min–max", "images/s", "× backbone"], rows,
                        [f"Median of {args.repeats} interleaved repeats after {args.warmup} warm-up "
                         "run(s) over all batches. The headline ratio is the median over repeats "
                         "of each run's own backbone and concepts times (clocked per batch): both "
                         "under the same load. The run's total ÷ the backbone alone (second row) "
                         "divides two separately timed totals, so the machine's drift between "
                         "them lands in the ratio (±0.1× on this 2-core VM)."]))
    headlines.append(Headline(
        f"Concepts run (CGAP + CPHA, k-means, 5 concepts, sub-concepts, importance, metrics, "
        f"fidelity; no figures), {n} photos, nf_resnet50 256 px, {device}: (backbone "
        "`forward_features` + concepts) ÷ backbone, per repeat, median", fmt_x(ratio), "≤ 1.3×",
        ratio <= 1.3))

    steps = step_times(batches, model, device)
    total = steps.pop(("total", ""), math.nan)
    rest = steps.pop(("rest", ""), math.nan)
    step_rows = []
    for name, label in STEPS.items():
        cells = [steps.get((name, m)) for m in ("cgap", "cpha")]
        if all(c is None for c in cells):
            continue
        step_rows.append([label, *[fmt_s(c) if c is not None else "–" for c in cells],
                          fmt_s(sum(c or 0 for c in cells))])
    step_rows.append(["rest (softmax, copies to CPU, bookkeeping)", "", "", fmt_s(rest)])
    step_rows.append(["**concepts total** (backbone excluded)", "", "", fmt_s(total)])
    step_rows.append(["backbone `forward_features`", "", "", fmt_s(med["backbone"])])
    tables.append(Table("Per step, per image (pipeline functions wrapped with clocks)",
                        ["step", "CGAP", "CPHA", "both"], step_rows,
                        ["Median of 3 passes over the same batches, the steps one after the "
                         "other (the run above overlaps them in its CPU threads, so its concepts "
                         "time is below this total); images/s of a step = 1 ÷ its time."]))

    worst, count = sklearn_parity(batches, model)
    tables[-1].notes.append(f"Silhouette, Calinski-Harabasz and Davies-Bouldin against scikit-learn's on the "
                            f"same points, every image and method ({count} pairs): largest difference "
                            f"{worst:.1e} (absolute up to 1, relative beyond).")
    headlines.append(Headline("Clustering metrics vs scikit-learn on every image: largest difference",
                              f"{worst:.1e}", "≤ 1e-6", worst <= 1e-6))

    figs = figure_times(batches, model, dm)
    fig_rows = [[kind, fmt_s(median(v)), spread(v), str(len(v))] for kind, v in figs.items() if v]
    tables.append(Table("Figures (build + save at dpi 100, 256 px photos; one at a time with "
                        "`outputs.save_figure`, and all through the callback's writer)",
                        ["figure", "median", "min–max", "figures"], fig_rows))
    worst = max((median(v) for k, v in figs.items() if v and k != WRITER), default=math.nan)
    headlines.append(Headline("Concept figures, one at a time: seconds per figure (slower kind, median)",
                              fmt_s(worst), "≤ 0.2 s", worst <= 0.2))
    if figs.get(WRITER):
        per = figs[WRITER][0]
        headlines.append(Headline("Concept figures as the callback writes them (every core, PNG "
                                  "encoding beside the drawing): seconds per figure", fmt_s(per), "≤ 0.2 s",
                                  per <= 0.2))

    rows, mem_rows, slope = trainer_rows(device, args.quick, not args.no_memory)
    tables.append(Table("Whole runs: `python -m clustercam.train experiment=concepts_imagenet` "
                        "(random weights, figures off, no logger)",
                        ["folder", "wall time", "per photo", "peak RSS"], rows,
                        ["Includes the interpreter and model start, JPEG decoding, Lightning and "
                         "the output files; the slope between the two folders is the cost of "
                         "one more photo."]))
    if mem_rows:
        tables.append(Table("Peak memory of whole runs over large folders (default settings: "
                            "figures of the first 20 images, no logger)",
                            ["photos", "model", "wall time", "per photo", "peak RSS"], mem_rows,
                            ["Peak RSS: `ru_maxrss` of the run's process (`os.wait4`). `test_resnet` "
                             "(timm's 96-channel test network, 8 x 8 maps at 256 px) stands in for "
                             "nf_resnet50 where a run would take too long on this machine: what a "
                             "run keeps per image (concept counts, importances, maps at 8 x 8, table "
                             "rows) does not depend on the channel count."]))
    intro = [line for line in __doc__.split("\n\n")[1:3]]
    return Section("Concepts run vs the backbone", intro, tables, headlines, load0, load_average(),
                   time.perf_counter() - t_start, device, args.quick, meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: concepts run vs backbone", run,
                parser(__doc__.splitlines()[0]).parse_args())
