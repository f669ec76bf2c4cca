"""Concept fidelity and localisation: cost per image, side by side with the importance's.

Activations: 64 parts images (``clustercam.data.parts``, 64 px; 16 with ``--quick``)
through timm ``resnet18`` with ``output_stride=8`` and **random weights** (what is timed
does not depend on the weights), 512 x 8 x 8 each; CGAP k-means concepts (n = 5).

- importance: ``concept_importance`` (eq. 3; one head call of B x (n + 1) copies of A);
- fidelity: ``concept_fidelity`` with R = 10 random orders and 10 random channel groups
  (2 + 2 (n - 1)(1 + 2 R) = 170 curve points per image), through the model's
  ``pooled_head`` (rows of the linear layer) and through the full head (copies of A, in
  calls of at most 1,024);
- fidelity + partition importances (what a run on part masks computes: 50 more points);
- localisation: ``concept_truth`` of the concepts and the 10 random partitions.

    python -m benchmarks.bench_fidelity [--quick] [--device cuda]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import (
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
    memory_note,
    parser,
    peak_memory,
    spread,
    time_cases,
)

MODULE = "benchmarks.bench_fidelity"
N_IMAGES, N_IMAGES_QUICK = 64, 16
N_CONCEPTS = 5
REPEATS = 10


def setup(options: dict[str, Any]) -> dict[str, Any]:
    """Activations, head, pooled head, labels, targets and importances of the benchmark."""
    import timm

    from clustercam.data.parts import make_parts
    from clustercam.explain.concepts import cluster_channels, concept_importance
    from clustercam.explain.concepts.image.fidelity import PooledHead

    device = options.get("device", "cpu")
    n = N_IMAGES_QUICK if options.get("quick") else N_IMAGES
    x, y, masks, _ = make_parts(n, seed=0)
    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=6, output_stride=8).eval().to(device)
    with torch.no_grad():
        acts = net.forward_features(torch.from_numpy(x).to(device))
    head = net.forward_head
    pooled = PooledHead(pool=lambda a: net.forward_head(a, pre_logits=True), linear=net.get_classifier())
    targets = torch.from_numpy(y).to(device)
    labels = cluster_channels(acts, method="cgap", n_concepts=N_CONCEPTS, algorithm="kmeans", seed=0,
                              n_init=10).labels
    imp = concept_importance(head, acts, labels, targets, n_concepts=N_CONCEPTS)
    return {"acts": acts, "head": head, "pooled": pooled, "targets": targets, "labels": labels,
            "imp": imp, "masks": torch.from_numpy(masks).to(device)}


def cases(d: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    from clustercam.explain.concepts import concept_importance
    from clustercam.explain.concepts.image.fidelity import concept_fidelity
    from clustercam.explain.concepts.image.truth import concept_truth

    a, head, labels, t, imp = d["acts"], d["head"], d["labels"], d["targets"], d["imp"]
    fid = concept_fidelity(head, a, labels, t, imp, repeats=REPEATS, pooled_head=d["pooled"],
                           partition_importance=True)

    return {
        "importance": lambda: concept_importance(head, a, labels, t, n_concepts=N_CONCEPTS),
        "fidelity_pooled": lambda: concept_fidelity(head, a, labels, t, imp, repeats=REPEATS,
                                                    pooled_head=d["pooled"]),
        "fidelity_full": lambda: concept_fidelity(head, a, labels, t, imp, repeats=REPEATS),
        "fidelity_parts": lambda: concept_fidelity(head, a, labels, t, imp, repeats=REPEATS,
                                                   pooled_head=d["pooled"], partition_importance=True),
        "truth": lambda: concept_truth(a, labels, imp, d["masks"], partitions=fid.partitions.to(a.device),
                                       partition_importance=fid.partition_importance.to(a.device)),
    }


def make_case(case: str, options: dict[str, Any]) -> Callable[[], Any]:
    """One of :func:`cases` (for the peak-memory child process)."""
    return cases(setup(options))[case]


LABELS = {
    "importance": f"`concept_importance` (eq. 3): one head call, {N_CONCEPTS + 1} copies of A per image",
    "fidelity_pooled": "`concept_fidelity`, pooled head: one `fc` call of 170 rows per image",
    "fidelity_full": "`concept_fidelity`, full head: 170 copies of A per image, calls of ≤ 1,024",
    "fidelity_parts": "… pooled, + random-partition importances (220 rows per image)",
    "truth": f"`concept_truth`: concepts + {REPEATS} random partitions, maps at 64 × 64",
}


def run(args) -> Section:
    args.repeats = args.repeats or (3 if args.quick else 5)
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    opts = {"device": args.device, "quick": args.quick}
    d = setup(opts)
    n = d["acts"].shape[0]
    fns = cases(d)
    times = time_cases(fns, repeats=args.repeats, warmup=args.warmup, device=args.device)
    med = {k: median(v) for k, v in times.items()}
    from clustercam.explain.concepts.image.fidelity import concept_fidelity

    a, head, labels, t, imp = d["acts"], d["head"], d["labels"], d["targets"], d["imp"]
    fast = concept_fidelity(head, a, labels, t, imp, repeats=REPEATS, pooled_head=d["pooled"])
    full = concept_fidelity(head, a, labels, t, imp, repeats=REPEATS)
    diff = max(float((fast.aucs[o][k] - full.aucs[o][k]).abs().max())
               for o in fast.aucs for k in fast.aucs[o])
    rows = []
    for case, label in LABELS.items():
        mem = math.nan if args.no_memory else peak_memory(MODULE, case, opts)
        rows.append([label, fmt_s(med[case]), spread(times[case]), fmt_s(med[case] / n),
                     fmt_x(med[case] / med["importance"]), fmt_mib(mem)])
    table = Table(
        f"Per batch of {n} images (512 × 8 × 8 activations, CGAP k-means, n = {N_CONCEPTS}, "
        f"R = {REPEATS})",
        ["what", "median (batch)", "min–max", "per image", "÷ importance", "peak memory"], rows,
        [f"The pooled and the full head give the same AUCs (max |difference| {diff:.1e}). "
         "Pooling first is exact for a channel-wise pooling + linear head: zeroing channels "
         "commutes with the pooling."])
    headlines = [Headline(
        f"Concept fidelity (3 orders, R = {REPEATS}) per image ÷ the importance's cost, "
        "pooled head", fmt_x(med["fidelity_pooled"] / med["importance"]), "≤ 1× (informational)",
        None)]
    intro = [
        f"Activations: {n} parts images (64 px) through timm `resnet18`, `output_stride=8`, "
        "random weights, 512 × 8 × 8 each. Fidelity: deletion and insertion curves over whole "
        f"concepts in importance order, {REPEATS} random orders and {REPEATS} random channel "
        "groups of the same sizes (2 + 2 (n − 1)(1 + 2R) masked activations per image).",
        "",
        f"- Median of {args.repeats} interleaved repeats after {args.warmup} warm-up run(s).",
        "- " + memory_note(args.device),
    ]
    return Section("Concept fidelity and localisation", intro, [table], headlines, load0,
                   load_average(), time.perf_counter() - t_start, args.device, args.quick,
                   meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: concept fidelity", run, parser(__doc__.splitlines()[0]).parse_args())
