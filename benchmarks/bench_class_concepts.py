"""Class-level concepts at the paper's size: C = 2048 channels, 8 x 8 maps, batches of 64.

Synthetic post-ReLU activations (Gaussian, clipped at 0: ~half the values zero, every
channel kept) and random per-image partitions into 5 concepts (10 % of the channels
dropped); a GAP + linear head with 11 classes. What is timed (median of ``--repeats``):

- pass 1 per batch: :meth:`CoAssociation.update` with its counting (one class; and the
  batch spread over 11 classes, a class's images counted 64 at a time: per batch over 11
  batches) and :meth:`NMFSample.update`; the pooled numbers the one pass keeps
  (:meth:`PooledActivations.of`);
- end of pass 1, per class: :func:`coassociation_concepts` (average linkage on 2048
  channels) and :func:`nmf_channel_groups` (``nmf_max_images`` x 64 rows x 2048);
- the scores per batch: from the pooled numbers (:meth:`ClassConceptScores.update_pooled`,
  one pass) and from the activations (:meth:`ClassConceptScores.update`, the second pass of
  a head that is not pooling + linear) for the co-association concepts (stability +
  importance + gallery), and the latter with 64 x 64 part masks.

    python -m benchmarks.bench_class_concepts [--quick] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.common import CpuMeter, Section, Table, load_average, main_single, parser
from clustercam.explain.concepts.classes.coassociation import CoAssociation, coassociation_concepts
from clustercam.explain.concepts.classes.nmf import NMFSample, nmf_channel_groups
from clustercam.explain.concepts.classes.pooled import PooledActivations
from clustercam.explain.concepts.classes.scores import ClassConceptScores
from clustercam.explain.concepts.image.ablation import PooledHead


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rows(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(what, cost) rows of the costs listed in the module docstring."""
    torch.set_num_threads(args.threads)
    c, n, b, hw = (256, 5, 16, 8) if args.quick else (2048, 5, 64, 8)
    n_nmf = 20 if args.quick else args.nmf_max_images
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(b, c, hw, hw, generator=gen).clamp_min(0)
    labels = torch.randint(0, n, (b, c), generator=gen)
    labels[torch.rand(b, c, generator=gen) < 0.1] = -1
    head_w = torch.randn(c, 11, generator=gen)

    def head(x):
        return x.mean((2, 3)) @ head_w

    out = []
    one = CoAssociation(c, 1)
    out.append(("pass 1: co-association update and count, batch of one class",
                f"{_median_s(lambda: (one.update(labels, torch.zeros(b)), one.co), args.repeats) * 1e3:.0f} ms"))
    many = CoAssociation(c, 11)
    spread = torch.arange(b) % 11

    def eleven() -> None:
        for _ in range(11):
            many.update(labels, spread)
        many.co  # noqa: B018 - the pending images counted

    out.append(("pass 1: co-association update and count, batch over 11 classes (11 batches, per batch)",
                f"{_median_s(eleven, args.repeats) / 11 * 1e3:.0f} ms"))
    out.append(("co-association memory per class (int32 C x C)", f"{one.co[0].nbytes / 2**20:.0f} MiB"))
    sample = NMFSample(n_nmf, seed=0)
    idx = iter(range(10**9))
    out.append(("pass 1: NMF sample update (one class)",
                f"{_median_s(lambda: sample.update(a, torch.zeros(b), torch.tensor([next(idx) for _ in range(b)])), args.repeats) * 1e3:.0f} ms"))
    # a class's co-association with structure: the batch's own partitions, repeated
    co, pres, n_img = one.co[0], one.presence[0], int(one.images[0])
    t0 = time.perf_counter()
    cc_labels = coassociation_concepts(co, pres, n_img, n)
    out.append((f"end: average linkage on {c} channels, one class", f"{time.perf_counter() - t0:.2f} s"))
    x = torch.randn(n_nmf * hw * hw, c, generator=gen).clamp_min(0)
    t0 = time.perf_counter()
    nmf_channel_groups(x, n, seed=0)
    out.append((f"end: NMF of {n_nmf} images x {hw * hw} positions x {c}, rank {n}",
                f"{time.perf_counter() - t0:.2f} s"))
    out.append((f"NMF sample memory per class ({n_nmf} images, float32)",
                f"{n_nmf * c * hw * hw * 4 / 2**20:.0f} MiB"))
    from clustercam.explain.concepts.classes.coassociation import ClassConcepts

    concepts = ClassConcepts([0], cc_labels[None], n, torch.tensor([n_img]))
    linear = torch.nn.Linear(c, 11)
    with torch.no_grad():
        linear.weight.copy_(head_w.T)
        linear.bias.zero_()
    pooled_head = PooledHead(pool=lambda x: x.mean((2, 3)), linear=linear, checked=True)
    out.append(("pass 1: the pooled numbers of a batch (one pass)",
                f"{_median_s(lambda: PooledActivations.of(pooled_head, a, mean_pool=True), args.repeats) * 1e3:.1f} ms"))
    pooled = PooledActivations.of(pooled_head, a, mean_pool=True)
    one_pass = ClassConceptScores(concepts, gallery_size=6, map_size=(hw, hw))
    out.append(("one pass: scores from the pooled numbers (stability, importance, gallery)",
                f"{_median_s(lambda: one_pass.update_pooled(linear, pooled, labels, torch.zeros(b), torch.arange(b)), args.repeats) * 1e3:.0f} ms"))
    sc = ClassConceptScores(concepts, gallery_size=6)
    out.append(("pass 2: scores update (stability, importance, gallery)",
                f"{_median_s(lambda: sc.update(head, a, labels, torch.zeros(b), torch.arange(b)), args.repeats) * 1e3:.0f} ms"))
    masks = torch.rand(b, 3, 64, 64, generator=gen) < 0.1
    out.append(("pass 2: the same with 64 x 64 part masks",
                f"{_median_s(lambda: sc.update(head, a, labels, torch.zeros(b), torch.arange(b), masks=masks), args.repeats) * 1e3:.0f} ms"))
    out.append(("peak RSS of this process", f"{_peak_mib():.0f} MiB"))
    return out


def run(args: argparse.Namespace) -> Section:
    """The costs as a section of ``make bench`` (1 torch thread unless ``--threads``)."""
    args.repeats = args.repeats or 3
    args.threads = getattr(args, "threads", 1)
    args.nmf_max_images = getattr(args, "nmf_max_images", 200)
    t0, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    threads = torch.get_num_threads()  # rows() sets its own; the sections after this keep theirs
    try:
        measured = [list(r) for r in rows(args)]
    finally:
        torch.set_num_threads(threads)
    table = Table("Class-level concepts: cost per batch and per class",
                  ["what", "cost"], measured,
                  [f"Median of {args.repeats}; {args.threads} torch thread(s); synthetic post-ReLU "
                   "activations (sizes in the intro)."])
    intro = [__doc__.split("\n\n")[0], __doc__.split("\n\n")[1]]
    return Section("Class-level concepts", intro, [table], [], load0, load_average(),
                   time.perf_counter() - t0, args.device, args.quick, meter.others())


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nmf-max-images", type=int, default=200)
    main_single("clustercam benchmark: class-level concepts", run, p.parse_args())
