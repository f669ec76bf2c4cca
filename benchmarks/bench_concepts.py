"""Concepts (CGAP / CPHA, k-means, n_concepts = 5): scikit-learn per image vs clustercam batched.

Activations: the 11 real images of ``/work/shared/data/imagenet-11`` (nf_resnet50's
preprocessing: short side 272 bicubic, centre crop 256, ImageNet mean/std), augmented
to 64 (horizontal flip, corner crops) and passed through timm ``nf_resnet50`` with
**random weights** (no pretrained weights offline), giving 64 x 2048 x 8 x 8. They are
computed once and cached in ``benchmarks/.cache``.

- scikit-learn: per image, the non-zero channels, ``PCA(n_concepts - 1)`` (CGAP) or the
  (row, col) of each channel's first maximum (CPHA), then ``KMeans(n_concepts,
  n_init=10, random_state=0)``.
- clustercam: ``cluster_channels(..., backend="torch")``, the batched path (all images and
  all 10 restarts in one k-means).
- importance: one head call per concept vs ``concept_importance`` (all concepts of the
  batch in one call).

    python -m benchmarks.bench_concepts [--quick] [--device cuda]
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import (
    CACHE,
    CpuMeter,
    Headline,
    Section,
    Table,
    fmt_f,
    fmt_mib,
    fmt_s,
    fmt_x,
    load_average,
    main_single,
    median,
    memory_note,
    parser,
    peak_memory,
    spread,
    time_cases,
)

MODULE = "benchmarks.bench_concepts"
IMAGES = Path("/work/shared/data/imagenet-11")
N_IMAGES, N_IMAGES_QUICK = 64, 16
N_CONCEPTS = 5
N_INIT = 10
# the concepts paper's 11 classes and their ImageNet indices
CLASS_INDEX = {
    "n01440764": 0, "n02102040": 217, "n02325366": 330, "n02979186": 482, "n03000684": 491,
    "n03028079": 497, "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574,
    "n03888257": 701,
}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------
def _augmented_images(n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """n images 3 x 256 x 256 (normalised) with their class index, from the 11 real images.

    nf_resnet50's preprocessing (short side 272 bicubic, centre crop 256, ImageNet mean/std),
    then augmentations in this order (all images for one
    augmentation before the next): centre crop, its flip, the four corner crops of the
    272-short-side image, each other one flipped.
    """
    from PIL import Image
    from torchvision.transforms import functional as TF

    files = sorted(IMAGES.glob("n*/*.JPEG"))
    if not files:
        raise FileNotFoundError(f"no images under {IMAGES}")
    resized = []
    for f in files:
        img = TF.resize(Image.open(f).convert("RGB"), 272,
                        interpolation=TF.InterpolationMode.BICUBIC)
        resized.append(TF.to_tensor(img))
    augs: list[Callable[[torch.Tensor], torch.Tensor]] = [
        lambda t: TF.center_crop(t, 256),
        lambda t: TF.hflip(TF.center_crop(t, 256)),
    ]
    for i, (top, left) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        def corner(t: torch.Tensor, top=top, left=left, flip=i % 2 == 1) -> torch.Tensor:
            h, w = t.shape[-2:]
            out = TF.crop(t, top * (h - 256), left * (w - 256), 256, 256)
            return TF.hflip(out) if flip else out
        augs.append(corner)
    xs, ys, names = [], [], []
    for j, aug in enumerate(augs):
        for f, t in zip(files, resized):
            if len(xs) == n:
                break
            xs.append(TF.normalize(aug(t), MEAN, STD))
            ys.append(CLASS_INDEX[f.parent.name])
            names.append(f"{f.parent.name}/aug{j}")
    if len(xs) < n:
        raise ValueError(f"only {len(xs)} augmented images for n = {n}")
    return torch.stack(xs), torch.tensor(ys), names


def activations(n: int) -> dict[str, Any]:
    """{"acts": n x 2048 x 8 x 8, "targets": n, "head_state": nf_resnet50 head weights}."""
    path = CACHE / f"concepts_nf_resnet50_random_{n}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    import timm

    x, y, _ = _augmented_images(n)
    torch.manual_seed(0)
    model = timm.create_model("nf_resnet50", pretrained=False).eval()
    with torch.no_grad():
        acts = torch.cat([model.forward_features(x[i : i + 8]) for i in range(0, n, 8)])
    data = {"acts": acts.contiguous(), "targets": y,
            "head_state": {k: v.clone() for k, v in model.get_classifier().state_dict().items()}}
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def head_from(state: dict[str, torch.Tensor], device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """nf_resnet50's ``forward_head`` (global average pool + linear 2048 -> 1000)."""
    fc = fc_from(state, device)
    return lambda a: fc(a.mean((2, 3)))


def fc_from(state: dict[str, torch.Tensor], device: str) -> torch.nn.Linear:
    fc = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    fc.load_state_dict(state)
    return fc.to(device).eval()


# ---------------------------------------------------------------------------------------
# the compared pipelines
# ---------------------------------------------------------------------------------------
def sklearn_per_image(
    acts: torch.Tensor, method: str, threads: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image: (clustered space, labels) of its non-zero channels.

    ``threads``: limit BLAS/OpenMP threads (threadpoolctl) — on small per-image problems one
    thread is often faster than the default, whose parallel regions cost more than they save.
    """
    if threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(threads):
            return sklearn_per_image(acts, method)
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    a = acts.detach().cpu().double().numpy()
    out = []
    for img in a:
        flat = img.reshape(img.shape[0], -1)
        kept = flat[(flat != 0).any(1)]
        if method == "cgap":
            z = PCA(n_components=N_CONCEPTS - 1, random_state=0).fit_transform(kept)
        else:
            pos = kept.argmax(1)
            z = np.stack([pos // img.shape[-1], pos % img.shape[-1]], 1).astype(np.float64)
        lab = KMeans(n_clusters=N_CONCEPTS, n_init=N_INIT, random_state=0).fit_predict(z)
        out.append((z, lab))
    return out


def torch_batched(acts: torch.Tensor, method: str, threads: int | None = None):
    from clustercam.explain.concepts import cluster_channels

    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return torch_batched(acts, method)
        finally:
            torch.set_num_threads(before)
    return cluster_channels(acts, method=method, n_concepts=N_CONCEPTS, algorithm="kmeans",
                            seed=0, n_init=N_INIT, backend="torch")


def importance_per_concept(head, acts: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
                           n: int) -> torch.Tensor:
    """The same importances with one head call for the originals and one per concept."""
    with torch.no_grad():
        t = targets.view(-1, 1)
        p_t = torch.softmax(head(acts).double(), -1).gather(1, t)[:, 0]
        cols = []
        for concept in range(n):
            keep = (labels != concept).to(acts.dtype)[..., None, None]
            p_l = torch.softmax(head(acts * keep).double(), -1).gather(1, t)[:, 0]
            cols.append((p_t - p_l) / p_t * 100)
        imp = torch.stack(cols, 1)
        counts = torch.stack([(labels == c).sum(1) for c in range(n)], 1)
        return imp.masked_fill(counts == 0, float("nan"))


def importance_pool_first(fc_head, acts: torch.Tensor, labels: torch.Tensor,
                          targets: torch.Tensor, n: int) -> torch.Tensor:
    """NOT in clustercam (a proposal): for a head that starts with global average pooling,
    zeroing a concept's channels commutes with the pooling, so ablate the B x C pooled
    features (B x n x C) instead of B x n x C x H x W copies of A. Same importances."""
    with torch.no_grad():
        pooled = acts.mean((2, 3))  # B x C
        keep = (labels.unsqueeze(1) != torch.arange(n, device=labels.device)[None, :, None])
        stacked = torch.cat([pooled, (pooled.unsqueeze(1) * keep.to(pooled.dtype)).flatten(0, 1)])
        probs = torch.softmax(fc_head(stacked).double(), -1)
        b, t = acts.shape[0], targets.view(-1, 1)
        p_t = probs[:b].gather(1, t)[:, 0]
        p_l = probs[b:].view(b, n, -1).gather(2, t[:, :, None].expand(b, n, 1))[..., 0]
        imp = (p_t[:, None] - p_l) / p_t[:, None] * 100
        counts = torch.stack([(labels == c).sum(1) for c in range(n)], 1)
        return imp.masked_fill(counts == 0, float("nan"))


def _data(options: dict[str, Any]):
    device = options.get("device", "cpu")
    n = N_IMAGES_QUICK if options.get("quick") else N_IMAGES
    d = activations(n)
    return d["acts"].to(device), d["targets"].to(device), head_from(d["head_state"], device)


def make_case(case: str, options: dict[str, Any]) -> Callable[[], Any]:
    """``cgap/sklearn``, ``cpha/torch``, ``importance/loop``, ``importance/batched``."""
    from clustercam.explain.concepts import concept_importance

    acts, targets, head = _data(options)
    fc = fc_from(activations(acts.shape[0])["head_state"], options.get("device", "cpu"))
    what, how = case.split("/")
    if what in ("cgap", "cpha"):
        if how == "sklearn":
            return lambda: sklearn_per_image(acts, what)
        if how == "sklearn1":
            return lambda: sklearn_per_image(acts, what, threads=1)
        if how == "torch1":
            return lambda: torch_batched(acts, what, threads=1)
        return lambda: torch_batched(acts, what)
    labels = torch_batched(acts, "cgap").labels
    if how == "loop":
        return lambda: importance_per_concept(head, acts, labels, targets, N_CONCEPTS)
    if how == "poolfirst":
        return lambda: importance_pool_first(fc, acts, labels, targets, N_CONCEPTS)
    return lambda: concept_importance(head, acts, labels, targets, n_concepts=N_CONCEPTS)


# ---------------------------------------------------------------------------------------
# where the batched path spends its time
# ---------------------------------------------------------------------------------------
PHASES = {
    "check_activations": "input checks (finite values)",
    "kept_channels": "non-zero channels",
    "_raw_features": "features (flatten / argmax)",
    "_n_distinct": "degenerate-image check: `torch.unique(rows, dim=0)` per image",
    "batched_pca": "batched PCA (covariance + `eigh`)",
    "_kmeans_pp": "k-means++ seeding (all images × restarts)",
    "_lloyd_step": "Lloyd iterations",
}


def breakdown(acts: torch.Tensor, method: str, repeats: int = 3) -> tuple[float, dict[str, tuple[float, int]]]:
    """Wall time of ``cluster_channels(backend="torch")`` by phase (median run of ``repeats``).

    Wraps the module's internal functions with clocks for the measurement, then restores them.
    """
    from clustercam.explain.concepts.image import extract, kmeans

    names = [*PHASES, "batched_kmeans"]
    # each internal function is patched in the module that calls it
    owners = {n: [m for m in (extract, kmeans) if hasattr(m, n)] for n in names}
    saved = {n: getattr(owners[n][0], n) for n in names}
    clock: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable) -> Callable:
        def inner(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                clock.setdefault(name, []).append(time.perf_counter() - t)
        return inner

    runs = []
    try:
        for n in names:
            for m in owners[n]:
                setattr(m, n, timed(n, saved[n]))
        torch_batched(acts, method)
        for _ in range(repeats):
            clock.clear()
            t0 = time.perf_counter()
            torch_batched(acts, method)
            total = time.perf_counter() - t0
            runs.append((total, {n: (sum(v), len(v)) for n, v in clock.items()}))
    finally:
        for n, fn in saved.items():
            for m in owners[n]:
                setattr(m, n, fn)
    runs.sort(key=lambda r: r[0])
    return runs[len(runs) // 2]


def top_ops(acts: torch.Tensor, method: str, rows: int = 6) -> list[tuple[str, str, float, int]]:
    """torch.profiler's top operators (self CPU time) of the batched k-means call."""
    from torch.profiler import ProfilerActivity, profile

    from clustercam.explain.concepts import batched_kmeans, batched_pca, kept_channels
    from clustercam.explain.concepts.image.extract import _raw_features

    mask = kept_channels(acts)
    raw = _raw_features(acts, method, torch.float64)
    z = (batched_pca(raw, mask, N_CONCEPTS - 1) if method == "cgap" else raw).float()
    batched_kmeans(z, mask, N_CONCEPTS, n_init=N_INIT, seed=0)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        batched_kmeans(z, mask, N_CONCEPTS, n_init=N_INIT, seed=0)
    agg: dict[str, list[float]] = {}
    for e in prof.key_averages(group_by_input_shape=True):
        if not e.key.startswith("aten::"):
            continue
        shapes = str(e.input_shapes[:2]) if e.input_shapes else ""
        key = f"{e.key} {shapes}"
        a = agg.setdefault(key, [0.0, 0])
        a[0] += e.self_cpu_time_total / 1e6
        a[1] += e.count
    best = sorted(agg.items(), key=lambda kv: -kv[1][0])[:rows]
    return [(k.split(" ", 1)[0], k.split(" ", 1)[1], v[0], int(v[1])) for k, v in best]


# ---------------------------------------------------------------------------------------
# quality
# ---------------------------------------------------------------------------------------
def quality(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    from clustercam.explain.concepts import clustering_quality

    rows = [clustering_quality(z, lab, warn=False) for z, lab in pairs]
    return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}


def torch_pairs(result) -> list[tuple[np.ndarray, np.ndarray]]:
    labels = result.labels.cpu()
    return [(f, labels[i][labels[i] >= 0].numpy()) for i, f in enumerate(result.features)]


def run(args) -> Section:
    args.repeats = args.repeats or (3 if args.quick else 5)
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    opts = {"device": args.device, "quick": args.quick}
    t_act = time.perf_counter()
    acts, targets, head = _data(opts)
    t_act = time.perf_counter() - t_act
    n = acts.shape[0]
    kept = (acts != 0).flatten(2).any(2).sum(1).float()
    tables: list[Table] = []
    headlines: list[Headline] = []

    rows = []
    for method in ("cgap", "cpha"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            times = time_cases({"sklearn": lambda m=method: sklearn_per_image(acts, m),
                                "sklearn1": lambda m=method: sklearn_per_image(acts, m, 1),
                                "torch": lambda m=method: torch_batched(acts, m),
                                "torch1": lambda m=method: torch_batched(acts, m, 1)},
                               repeats=args.repeats, warmup=args.warmup, device=args.device)
            q_sk = quality(sklearn_per_image(acts, method))
            q_t = quality(torch_pairs(torch_batched(acts, method)))
        med = {k: median(v) for k, v in times.items()}
        best_sk = min(med["sklearn"], med["sklearn1"])
        speed = best_sk / med["torch"]
        for how, label, q in (
            ("sklearn", "scikit-learn PCA + KMeans per image, default threads", q_sk),
            ("sklearn1", "… the same, 1 thread (threadpoolctl)", q_sk),
            ("torch", "clustercam batched torch", q_t),
            ("torch1", "… the same, 1 thread (`torch.set_num_threads(1)`)", q_t),
        ):
            mem = math.nan if args.no_memory else peak_memory(MODULE, f"{method}/{how}", opts)
            rows.append([method.upper(), label, fmt_s(med[how]), spread(times[how]),
                         f"{n / med[how]:.1f}", fmt_x(best_sk / med[how]),
                         fmt_f(q["silhouette"]), fmt_f(q["calinski_harabasz"], 1),
                         fmt_f(q["davies_bouldin"]), fmt_mib(mem)])
        d_ss = q_t["silhouette"] - q_sk["silhouette"]
        headlines.append(Headline(
            f"Concepts {method.upper()} k-means, {n} images: clustercam images/s ÷ the faster "
            f"scikit-learn per-image run (silhouette {q_t['silhouette']:.3f} vs "
            f"{q_sk['silhouette']:.3f})",
            fmt_x(speed), "≥ 50×, silhouette within 0.02",
            speed >= 50 and abs(d_ss) <= 0.02))
    tables.append(Table(
        f"Clustering the channels of {n} images ({tuple(acts.shape[1:])}), k-means, "
        f"n_concepts = {N_CONCEPTS}, n_init = {N_INIT}",
        ["method", "pipeline", "median (all images)", "min–max", "images/s",
         "× the faster scikit-learn",
         "mean silhouette", "mean CHI", "mean DBI", "peak memory"], rows,
        [f"Non-zero channels per image: {kept.min():.0f}–{kept.max():.0f} of {acts.shape[1]} "
         f"(mean {kept.mean():.0f}). Metrics: mean over images of scikit-learn's scores on the "
         "clustered space (PCA scores for CGAP, (row, col) for CPHA), not timed."]))

    # where the time goes (CGAP, the slower method)
    total, phases = breakdown(acts, "cgap")
    km_total = phases.get("batched_kmeans", (0.0, 0))[0]
    br = []
    accounted = 0.0
    for name, label in PHASES.items():
        sec, calls = phases.get(name, (0.0, 0))
        if name in ("_kmeans_pp", "_lloyd_step"):
            label = "  └ " + label
        else:
            accounted += sec
        br.append([label, fmt_s(sec), str(calls), f"{sec / total:.0%}"])
    inner = sum(phases.get(n, (0.0, 0))[0] for n in ("_kmeans_pp", "_lloyd_step"))
    br.insert(len(br) - 2, ["batched k-means (total)", fmt_s(km_total), "1",
                            f"{km_total / total:.0%}"])
    br.append(["  └ rest of k-means: restarts setup, convergence checks, working-set "
               "compaction, final assignment", fmt_s(km_total - inner), "", f"{(km_total - inner) / total:.0%}"])
    rest = total - accounted - km_total
    br.append(["rest: relabel by size, per-image features to numpy, per-image "
               "`torch.unique` check of the concepts found", fmt_s(rest), "", f"{rest / total:.0%}"])
    br.append(["**total** `cluster_channels(backend=\"torch\")`", fmt_s(total), "", "100%"])
    ops = top_ops(acts, "cgap")
    op_rows = [[f"`{name}`", shapes, fmt_s(sec), str(calls), f"{sec / km_total:.0%}"]
               for name, shapes, sec, calls in ops]
    tables.append(Table(
        f"Where the batched torch path spends its time (CGAP, {n} images, "
        f"{torch.get_num_threads()} torch threads)",
        ["phase", "time", "calls", "share"], br,
        ["Measured by wrapping the module's internal functions with clocks (median of 3 runs); "
         "`_lloyd_step` calls are summed over iterations (the loop runs until the slowest of "
         f"the {n} × {N_INIT} problems converges)."]))
    tables.append(Table(
        "Top operators inside the batched k-means (torch.profiler, self CPU time)",
        ["operator", "input shapes", "self time", "calls", "share of k-means"], op_rows,
        ["Shapes: Q = images × restarts problems, K = concepts, N = channels, d = dimensions. "
         "[Q, K, N] is the assignment score (`baddbmm`, then `min` over K for values and "
         "indices); [Q, N, d] the points (sums by `scatter_add_`); [Q, N] labels and masks "
         "(convergence checks, working-set compaction by indexing)."]))

    # importance
    labels = torch_batched(acts, "cgap").labels
    from clustercam.explain.concepts import concept_importance

    fc = fc_from(activations(n)["head_state"], args.device)
    times = time_cases({
        "loop": lambda: importance_per_concept(head, acts, labels, targets, N_CONCEPTS),
        "batched": lambda: concept_importance(head, acts, labels, targets, n_concepts=N_CONCEPTS),
        "poolfirst": lambda: importance_pool_first(fc, acts, labels, targets, N_CONCEPTS),
    }, repeats=args.repeats, warmup=args.warmup, device=args.device)
    a = importance_per_concept(head, acts, labels, targets, N_CONCEPTS)
    diff = 0.0
    for other in (concept_importance(head, acts, labels, targets, n_concepts=N_CONCEPTS),
                  importance_pool_first(fc, acts, labels, targets, N_CONCEPTS)):
        both = torch.isfinite(a) & torch.isfinite(other)
        if bool(both.any()):
            diff = max(diff, float((a[both] - other[both]).abs().max()))
    med = {k: median(v) for k, v in times.items()}
    imp_rows = []
    for how, label in (("loop", f"one head call per concept ({N_CONCEPTS + 1} calls of {n})"),
                       ("batched", f"`concept_importance`: one call of {n * (N_CONCEPTS + 1)}"),
                       ("poolfirst", "*proposal, not in clustercam*: pool first, ablate the "
                        "pooled features, one `fc` call")):
        mem = math.nan if args.no_memory else peak_memory(MODULE, f"importance/{how}", opts)
        imp_rows.append([label, fmt_s(med[how]), spread(times[how]),
                         fmt_x(med["loop"] / med[how]), fmt_mib(mem)])
    tables.append(Table(
        f"Importance of the CGAP concepts ({n} images × {N_CONCEPTS} concepts, head = "
        "nf_resnet50 `forward_head`: average pool + linear 2048 → 1000)",
        ["how", "median", "min–max", "loop ÷ this", "peak memory"], imp_rows,
        [f"All three give the same importances (max |difference| {diff:.1e} percentage "
         "points). `concept_importance` stacks B × n_concepts ablated copies of A "
         f"({n} × {N_CONCEPTS} × {acts.shape[1]} × {acts.shape[2]} × {acts.shape[3]} floats) "
         "before the one head call; with a pooling head that copy is most of the cost on "
         "CPU, and pooling first (zeroing channels commutes with global average pooling) "
         "avoids it."]))
    headlines.append(Headline(
        f"Concept importance, {n} images × {N_CONCEPTS} concepts: per-concept head calls ÷ one "
        "batched call", fmt_x(med["loop"] / med["batched"]), "(informational)", None))

    intro = [
        f"Activations: the 11 real images of `imagenet-11` (nf_resnet50's preprocessing) "
        f"augmented to {n} (flips, corner crops) through timm `nf_resnet50` with **random "
        "weights** (no pretrained weights offline), 2048 × 8 × 8 each; computed once "
        f"({t_act:.0f} s, cached in `benchmarks/.cache`). Random weights change which concepts "
        "appear, not the sizes the clustering works on.",
        "",
        "- *scikit-learn per image*: for each image, its non-zero channels, `PCA(n_concepts − 1)` "
        "(CGAP) or the (row, col) of each channel's first maximum (CPHA), then "
        f"`KMeans({N_CONCEPTS}, n_init={N_INIT}, random_state=0)` — the pipeline of the "
        "paper's code.",
        "- *clustercam batched torch*: `cluster_channels(acts, method, n_concepts=5, "
        "algorithm=\"kmeans\", n_init=10, backend=\"torch\")` — the public call, with its input "
        "checks, degenerate-image handling and returned features.",
        f"- Median of {args.repeats} interleaved repeats after {args.warmup} warm-up run(s); "
        "images/s = images ÷ median.",
        "- " + memory_note(args.device),
    ]
    return Section("Concepts: CGAP / CPHA with k-means", intro, tables, headlines, load0,
                   load_average(), time.perf_counter() - t_start, args.device, args.quick,
                   meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: concepts", run, parser(__doc__.splitlines()[0]).parse_args())
