"""CLAM for all clusters x all samples: batched vs a per-cluster, per-channel loop vs Grad-CeAM.

CLAM (Score-CAM on the Student-t soft assignment) needs C masked forward passes per sample,
whatever K. Compared, side by side in one process, on the same encoder, inputs and centroids:

- *floor*: one forward pass of the batch without autograd; CLAM cannot do better than C of
  them (``C × floor``);
- *clustercam clam*: :func:`clustercam.explain.clam`, the masked inputs of several samples
  and channels batched ``batch_size`` (128, the default) per forward, all K clusters from the
  same passes;
- *naive loop*: for each cluster, for each channel, mask every sample and run the batch
  forward, keeping q of that cluster (K x C forwards of the batch: what a Score-CAM written
  for one class at a time costs when called once per cluster);
- *Grad-CeAM*: :func:`clustercam.explain.grad_ceam` (``reference`` mode), all K clusters.

Encoders in eval mode with random-init weights (the cost does not depend on the weights):
the time-series ``ResNetCAE`` (64/128/128, C = 128) on UCR Trace's test split (N = 100,
L = 275, K = 4) and the MNIST ``ConvAutoencoder`` (32/64, C = 64) on N = 1,000 random
28 x 28 images (K = 10). Centroids: k-means on the embeddings.

    python -m benchmarks.bench_clam [--quick] [--device cuda]
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.bench_gradceam import Setup, _centroids
from benchmarks.bench_peers import trace_setup
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

MODULE = "benchmarks.bench_clam"
TRACE_K, MNIST_K = 4, 10
MNIST_N, MNIST_N_QUICK, TRACE_N_QUICK = 1000, 100, 30
BATCH = 128
LABELS = {"floor": "floor: one forward of the batch, no autograd",
          "clam": f"clustercam clam (batch_size={BATCH})",
          "naive": "naive loop: per cluster, per channel, a forward of the batch",
          "gradceam": "Grad-CeAM reference (all K)"}

warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")


def mnist_setup(device: str, quick: bool) -> Setup:
    from clustercam.models.components.cae import ConvAutoencoder

    torch.manual_seed(0)
    enc = ConvAutoencoder((1, 28, 28), filters=(32, 64), kernels=(3, 5), strides=(2, 2),
                          embedding_dim=10, pooling="gap").encoder.to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(MNIST_N_QUICK if quick else MNIST_N, 1, 28, 28, generator=gen).to(device)
    return Setup("MNIST", enc, enc.features, x, device, _centroids(enc, x, (MNIST_K,)))


def _trace(device: str, quick: bool) -> Setup:
    s = trace_setup(device, quick)
    return s if not quick else Setup(s.name, s.encoder, s.layer, s.x[:TRACE_N_QUICK], s.device, s.centroids)


def naive_clam(encoder: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """The naive way: one cluster at a time, one channel at a time, the whole batch per forward."""
    from clustercam.explain.assignments import student_t_assignment
    from clustercam.explain.clam import clam_masks
    from clustercam.explain.hooks import forward_with_layer
    from clustercam.explain.maps import input_maps

    with torch.no_grad():
        _, acts = forward_with_layer(encoder, layer, x)
        n, c = acts.shape[:2]
        maps = []
        for k in range(mu.shape[0]):
            s = torch.empty(n, c, device=x.device)
            for j in range(c):
                h = clam_masks(acts[:, j : j + 1], x.shape[2:])  # n x 1 x spatial
                s[:, j] = student_t_assignment(encoder(x * h), mu)[:, k]
            w = torch.softmax(s, 1)
            maps.append(torch.einsum("nc,nc...->n...", w, acts).clamp_min(0))
        return input_maps(torch.stack(maps, 1), tuple(x.shape[2:]))


def cases(setup: Setup, k: int) -> dict[str, Callable[[], Any]]:
    from clustercam.explain import clam, grad_ceam

    enc, x, mu = setup.encoder, setup.x, setup.centroids[k]

    def floor() -> torch.Tensor:
        with torch.no_grad():
            return enc(x)

    return {"floor": floor,
            "clam": lambda: clam(enc, setup.layer, x, mu, batch_size=BATCH),
            "naive": lambda: naive_clam(enc, setup.layer, x, mu),
            "gradceam": lambda: grad_ceam(enc, setup.layer, x, mu, target="reference")}


def make_case(case: str, options: dict[str, Any]) -> Callable[[], Any]:
    dataset, name = case.split("/")
    device, quick = options.get("device", "cpu"), bool(options.get("quick", False))
    setup = _trace(device, quick) if dataset == "trace" else mnist_setup(device, quick)
    return cases(setup, TRACE_K if dataset == "trace" else MNIST_K)[name]


def _table(setup: Setup, dataset: str, k: int, args, opts) -> tuple[Table, dict[str, float], int]:
    every = cases(setup, k)
    fast = {n: every[n] for n in ("floor", "clam", "gradceam")}
    times = time_cases(fast, repeats=args.repeats, warmup=args.warmup, device=args.device)
    # the naive loop is K times CLAM: one timed run, no warm-up (CLAM's warm-up warmed the kernels)
    times["naive"] = time_cases({"naive": every["naive"]}, repeats=1, warmup=0, device=args.device)["naive"]
    med = {n: median(t) for n, t in times.items()}
    with torch.no_grad():
        c = setup.encoder.features(setup.x[:1]).shape[1]
    n = len(setup.x)
    rows = []
    for name in ("floor", "clam", "naive", "gradceam"):
        mem = math.nan if args.no_memory or name == "naive" else peak_memory(MODULE, f"{dataset}/{name}", opts)
        rows.append([LABELS[name], fmt_s(med[name]), spread(times[name]), fmt_s(med[name] / n),
                     fmt_x(med[name] / (c * med["floor"])), fmt_x(med[name] / med["clam"]), fmt_mib(mem)])
    title = (f"{setup.name}: N = {n}, K = {k}, C = {c} channels, input {tuple(setup.x.shape[1:])}; "
             "maps of all samples x all clusters")
    notes = ["`per sample`: median ÷ N (all K clusters of one sample). `÷ (C × floor)`: the cost in "
             "forward passes of the batch, over the C passes CLAM needs. `÷ clam`: how many times "
             "the batched CLAM's time. Peak memory: not measured for the naive loop (a per-channel "
             "batch, smaller than CLAM's)."]
    return Table(title, ["computation", "median", "min–max", "per sample", "÷ (C × floor)", "÷ clam",
                         "peak memory"], rows, notes), med, c


def run(args) -> Section:
    args.repeats = args.repeats or (1 if args.quick else 3)
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    opts = {"device": args.device, "quick": args.quick}
    t_trace, med_t, c_t = _table(_trace(args.device, args.quick), "trace", TRACE_K, args, opts)
    t_mnist, med_m, c_m = _table(mnist_setup(args.device, args.quick), "mnist", MNIST_K, args, opts)
    headlines = []
    for name, med, c, k in (("Trace", med_t, c_t, TRACE_K), ("MNIST", med_m, c_m, MNIST_K)):
        ratio = med["clam"] / (c * med["floor"])
        speed = med["naive"] / med["clam"]
        headlines += [
            Headline(f"CLAM {name} (C={c}, K={k}): batched clam ÷ C forward passes of the batch",
                     fmt_x(ratio), "≤ 1.5×", ratio <= 1.5),
            Headline(f"CLAM {name}: per-cluster, per-channel loop ÷ batched clam", fmt_x(speed),
                     f"≥ K = {k}×", speed >= k),
        ]
    g = med_t["clam"] / med_t["gradceam"]
    headlines.append(Headline(f"CLAM Trace (C={c_t}): clam ÷ Grad-CeAM reference", fmt_x(g), "≥ 30×", g >= 30))
    intro = [*"\n\n".join(__doc__.split("\n\n")[:4]).splitlines(), "", memory_note(args.device),
             f"Times are medians of {args.repeats} interleaved repeat(s) after {args.warmup} warm-up "
             "run(s) per case; the naive loop runs once."]
    return Section("CLAM: batched masked forwards vs the naive loop vs Grad-CeAM", intro,
                   [t_trace, t_mnist], headlines, load0, load_average(), time.perf_counter() - t_start,
                   args.device, args.quick, meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: CLAM", run, parser(__doc__.splitlines()[0]).parse_args())
