"""Explaining every sample for every cluster: Grad-CeAM beside its peers, side by side.

The maps of all N samples x all K clusters, as the comparison (``python -m clustercam.compare``)
computes them, through :func:`clustercam.explain.scores.methods.all_cluster_maps`:

- Grad-CeAM ``reference`` and ``assignment``: one forward and one batched backward per chunk;
- NEON: one forward and K LRP backward passes per chunk (zennit, ``EpsilonPlusFlat``);
- integrated gradients, occlusion, gradient SHAP (captum): one ``attribute`` call per cluster,
  each with its own passes (steps, windows, samples), at the comparison's settings.

Encoders in eval mode with random-init weights (the cost does not depend on the weights):
the time-series ``ResNetCAE`` (64/128/128) on UCR Trace's test split (N = 100, L = 275, K = 4)
and the MNIST ``ConvAutoencoder`` (32/64, GAP, m = 10) on N = 500 random 28 x 28 images (K = 10).

    python -m benchmarks.bench_peers [--quick] [--device cuda]
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.bench_gradceam import Setup, _centroids
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

MODULE = "benchmarks.bench_peers"
TRACE_K, MNIST_K = 4, 10
MNIST_N, MNIST_N_QUICK, TRACE_N_QUICK = 500, 100, 30
CHUNK = 256
METHODS = ("gradceam_reference", "gradceam_assignment", "neon", "integrated_gradients",
           "occlusion", "gradient_shap")
# the comparison's settings (clustercam.studies.compare.COMMON / PER_DATASET)
OPTIONS = {"integrated_gradients": {"n_steps": 16},
           "gradient_shap": {"n_samples": 8, "n_baselines": 8}}
OCCLUSION = {"trace": {"window": 28, "stride": 14}, "mnist": {"window": 4, "stride": 4}}
LABELS = {"gradceam_reference": "Grad-CeAM reference (default)",
          "gradceam_assignment": "Grad-CeAM assignment",
          "neon": "NEON (zennit LRP, one backward per cluster)",
          "integrated_gradients": "integrated gradients (16 steps, per cluster)",
          "occlusion": "occlusion (per cluster)",
          "gradient_shap": "gradient SHAP (8 samples, 8 references, per cluster)"}

warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")


def trace_setup(device: str, quick: bool) -> Setup:
    from clustercam.data.ucr import UCRDataModule
    from clustercam.models.components.resnet_cae import ResNetCAE

    x, _ = UCRDataModule(name="Trace").eval_tensors()
    x = x[:TRACE_N_QUICK] if quick else x
    torch.manual_seed(0)
    enc = ResNetCAE(tuple(x.shape[1:])).encoder.to(device).eval()
    x = x.to(device)
    return Setup("Trace", enc, enc.features, x, device, _centroids(enc, x, (TRACE_K,)))


def mnist_setup(device: str, quick: bool) -> Setup:
    from clustercam.models.components.cae import ConvAutoencoder

    torch.manual_seed(0)
    enc = ConvAutoencoder((1, 28, 28), filters=(32, 64), kernels=(3, 5), strides=(2, 2),
                          embedding_dim=10, pooling="gap").encoder.to(device).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(MNIST_N_QUICK if quick else MNIST_N, 1, 28, 28, generator=gen).to(device)
    return Setup("MNIST", enc, enc.features, x, device, _centroids(enc, x, (MNIST_K,)))


def cases(setup: Setup, dataset: str, k: int, which=METHODS) -> dict[str, Callable[[], Any]]:
    """One thunk per method: its maps of every sample for every cluster."""
    from clustercam.explain.scores.methods import MapRequest, all_cluster_maps, resolve_methods

    mu = setup.centroids[k]
    with torch.no_grad():
        own = torch.cdist(setup.encoder(setup.x), mu).argmin(1).cpu()
    opts = {**OPTIONS, "occlusion": OCCLUSION[dataset]}
    methods = resolve_methods(list(which), {m: o for m, o in opts.items() if m in which})
    req = MapRequest(setup.encoder, setup.layer, setup.x, mu, own, batch_size=CHUNK)
    return {m: (lambda fn=fn: all_cluster_maps(fn, req)) for m, fn in methods.items()}


def make_case(case: str, options: dict[str, Any]) -> Callable[[], Any]:
    """``dataset/method`` -> a thunk (for the peak-memory subprocess)."""
    dataset, method = case.split("/")
    device, quick = options.get("device", "cpu"), bool(options.get("quick", False))
    setup = trace_setup(device, quick) if dataset == "trace" else mnist_setup(device, quick)
    return cases(setup, dataset, TRACE_K if dataset == "trace" else MNIST_K, (method,))[method]


def _table(setup: Setup, dataset: str, k: int, args, opts) -> tuple[Table, dict[str, float]]:
    times = time_cases(cases(setup, dataset, k), repeats=args.repeats, warmup=args.warmup,
                       device=args.device)
    med = {m: median(t) for m, t in times.items()}
    ref = med["gradceam_reference"]
    rows = []
    for m in METHODS:
        mem = math.nan if args.no_memory else peak_memory(MODULE, f"{dataset}/{m}", opts)
        rows.append([LABELS[m], fmt_s(med[m]), spread(times[m]), fmt_s(med[m] / (len(setup.x) * k)),
                     fmt_x(med[m] / ref), fmt_mib(mem)])
    occ = OCCLUSION[dataset]
    title = (f"{setup.name}: N = {len(setup.x)}, K = {k}, input {tuple(setup.x.shape[1:])}; maps of "
             f"all samples x all clusters")
    notes = [f"Occlusion windows {occ['window']}, stride {occ['stride']} (per spatial axis), the "
             "baseline as the deletion curves' (zero for series, a blurred copy for images). "
             "`this ÷ Grad-CeAM`: how many times the Grad-CeAM reference maps' time a method takes."]
    return Table(title, ["method", "median", "min–max", "per map", "this ÷ Grad-CeAM", "peak memory"],
                 rows, notes), med


def run(args) -> Section:
    args.repeats = args.repeats or (1 if args.quick else 3)
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    opts = {"device": args.device, "quick": args.quick}
    trace = trace_setup(args.device, args.quick)
    t_trace, med_t = _table(trace, "trace", TRACE_K, args, opts)
    mnist = mnist_setup(args.device, args.quick)
    t_mnist, med_m = _table(mnist, "mnist", MNIST_K, args, opts)
    headlines = []
    for name, med in (("Trace", med_t), ("MNIST", med_m)):
        ref = med["gradceam_reference"]
        for m in ("neon", "integrated_gradients", "occlusion", "gradient_shap"):
            headlines.append(Headline(f"Peers {name}: {m} ÷ Grad-CeAM reference (all samples × all "
                                      "clusters)", fmt_x(med[m] / ref), "(informational)", None))
    intro = [__doc__.split("\n\n")[0], "", memory_note(args.device),
             "Times are medians of the repeats (each repeat computes every map once); "
             f"{args.repeats} repeat(s) after {args.warmup} warm-up run(s) per case."]
    return Section("Peers: time per method, all samples × all clusters", intro, [t_trace, t_mnist],
                   headlines, load0, load_average(), time.perf_counter() - t_start, args.device,
                   args.quick, meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: peers", run, parser(__doc__.splitlines()[0]).parse_args())
