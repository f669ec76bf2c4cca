"""Grad-CeAM for all clusters x all samples: clustercam vs a loop over clusters vs captum.

Two encoders in eval mode with random-init weights (the cost of a forward and backward
pass does not depend on the weights' values, so no training is needed):

- the time-series ``ResNetCAE`` (filters 64/128/128) on UCR Trace's test split
  (N = 100, L = 275, K = 4), through ``UCRDataModule(name="Trace")``;
- the MNIST ``ConvAutoencoder`` (the paper's MNIST layers: filters 32/64, kernels 3/5, strides 2/2, GAP,
  m = 10) on N = 10,000 random 28 x 28 images in [0, 1] (the offline MNIST has 5,000
  digits; pixel values do not change the cost), K = 10, and K = 2, 5, 10, 20.

Centroids: k-means on the encoder's embeddings. The compared computations all produce
the same thing (paper mode unless said otherwise): channel weights and maps for every
sample and every cluster.

    python -m benchmarks.bench_gradceam [--quick] [--device cuda]
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

MODULE = "benchmarks.bench_gradceam"
TRACE_K = 4
MNIST_K = 10
SWEEP_K = (2, 5, 10, 20)
MNIST_N = 10_000
MNIST_N_QUICK = 1_000
CHUNK = 512

warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")


@dataclass
class Setup:
    name: str
    encoder: nn.Module
    layer: nn.Module
    x: Tensor
    device: str
    centroids: dict[int, Tensor]


def _centroids(encoder: nn.Module, x: Tensor, ks: tuple[int, ...]) -> dict[int, Tensor]:
    from clustercam.explain.clustering import fit_kmeans

    with torch.no_grad():
        z = encoder(x[:2000]).double().cpu().numpy()
    return {k: torch.as_tensor(fit_kmeans(z, k, n_init=3, seed=0).centroids,
                               dtype=torch.float32, device=x.device) for k in ks}


def trace_setup(device: str, quick: bool) -> Setup:
    from clustercam.data.ucr import UCRDataModule
    from clustercam.models.components.resnet_cae import ResNetCAE

    dm = UCRDataModule(name="Trace")
    x, _ = dm.eval_tensors()
    torch.manual_seed(0)
    net = ResNetCAE(tuple(x.shape[1:])).to(device).eval()
    x = x.to(device)
    enc = net.encoder
    return Setup("Trace", enc, enc.features, x, device, _centroids(enc, x, (TRACE_K,)))


def mnist_setup(device: str, quick: bool, ks: tuple[int, ...] = SWEEP_K) -> Setup:
    from clustercam.models.components.cae import ConvAutoencoder

    torch.manual_seed(0)
    net = ConvAutoencoder((1, 28, 28), filters=(32, 64), kernels=(3, 5), strides=(2, 2),
                          embedding_dim=10, pooling="gap").to(device).eval()
    n = MNIST_N_QUICK if quick else MNIST_N
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=gen).to(device)
    enc = net.encoder
    return Setup("MNIST", enc, enc.features, x, device, _centroids(enc, x, ks))


# ---------------------------------------------------------------------------------------
# the compared computations
# ---------------------------------------------------------------------------------------
def _maps(w: Tensor, acts: Tensor, size: tuple[int, ...], mode: str) -> tuple[Tensor, Tensor]:
    """Per-cluster raw map (sum_k ReLU(w_k) A_k) and its resized, min-max normalised copy."""
    ww = w if mode == "reference" else w.clamp_min(0)
    raw = torch.einsum("nc,ncs->ns", ww, acts.flatten(2)).reshape(acts.shape[0], 1, *acts.shape[2:])
    interp = "linear" if len(size) == 1 else "bilinear"
    heat = F.interpolate(raw, size=size, mode=interp, align_corners=False).flatten(1)
    lo, hi = heat.min(1, keepdim=True).values, heat.max(1, keepdim=True).values
    span = hi - lo
    heat = torch.where(span > 0, (heat - lo) / span.clamp_min(torch.finfo(heat.dtype).tiny), 0.0)
    return raw[:, 0], heat.reshape(acts.shape[0], *size)


def loop_over_clusters(
    encoder: nn.Module, layer: nn.Module, x: Tensor, mu: Tensor, mode: str = "paper"
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward, then one backward per cluster (how Grad-CAM code does many targets).

    Returns channel weights N x K x C, raw maps and heatmaps N x K x ..., like grad_ceam.
    """
    from clustercam.explain.gradceam import resolve_target

    captured: dict[str, Tensor] = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.__setitem__("A", out))
    try:
        with torch.enable_grad():
            z = encoder(x)
    finally:
        handle.remove()
    acts = captured["A"]
    loss = resolve_target(mode).losses(z, mu)
    k = mu.shape[0]
    dims = tuple(range(2, acts.dim()))
    ws, raws, heats = [], [], []
    a = acts.detach()
    for c in range(k):
        (g,) = torch.autograd.grad(loss[:, c].sum(), acts, retain_graph=c < k - 1)
        w = 2 * g.sum(dims) if mode == "reference" else g.mean(dims)
        raw, heat = _maps(w, a, tuple(x.shape[2:]), mode)
        ws.append(w)
        raws.append(raw)
        heats.append(heat)
    return torch.stack(ws, 1), torch.stack(raws, 1), torch.stack(heats, 1)


def captum_per_cluster(encoder: nn.Module, layer: nn.Module, mu: Tensor, mode: str = "paper"):
    """captum's LayerGradCam on the per-cluster losses, one ``attribute`` call per cluster."""
    from captum.attr import LayerGradCam

    from clustercam.explain.gradceam import resolve_target

    lgc = LayerGradCam(lambda inp: resolve_target(mode).losses(encoder(inp), mu), layer)

    def run(x: Tensor) -> list[Tensor]:
        return [lgc.attribute(x, target=c) for c in range(mu.shape[0])]

    return lgc, run


def floor(encoder: nn.Module, x: Tensor, chunk: int | None = None) -> None:
    """One forward pass of the batch through the encoder with autograd on (graph freed)."""
    step = chunk or len(x)
    with torch.enable_grad():
        for s in range(0, len(x), step):
            z = encoder(x[s : s + step])
            del z


def variants(setup: Setup, k: int, which: tuple[str, ...], mode: str = "paper") -> dict[str, Callable[[], Any]]:
    from clustercam.explain.gradceam import grad_ceam

    enc, layer, x, mu = setup.encoder, setup.layer, setup.x, setup.centroids[k]
    out: dict[str, Callable[[], Any]] = {}
    for name in which:
        if name == "floor":
            out[name] = lambda: floor(enc, x)
        elif name == "floor512":
            out[name] = lambda: floor(enc, x, CHUNK)
        elif name == "loop":
            out[name] = lambda: loop_over_clusters(enc, layer, x, mu, mode)
        elif name == "captum":
            _, run = captum_per_cluster(enc, layer, mu, mode)
            out[name] = lambda run=run: run(x)
        elif name == "gc512":
            out[name] = lambda: grad_ceam(enc, layer, x, mu, target=mode, batch_size=CHUNK)
        elif name == "gcNone":
            out[name] = lambda: grad_ceam(enc, layer, x, mu, target=mode, batch_size=None)
        elif name in ("gc512_reference", "gc512_assignment"):
            m = name.split("_")[1]
            out[name] = lambda m=m: grad_ceam(enc, layer, x, mu, target=m, batch_size=CHUNK)
        else:
            raise ValueError(f"unknown variant {name!r}")
    return out


LABELS = {
    "floor": "floor: one forward pass, autograd on",
    "floor512": "floor, forward in chunks of 512",
    "loop": "loop over clusters, one backward each",
    "captum": "captum LayerGradCam, one call per cluster",
    "gc512": "clustercam grad_ceam (batch_size=512)",
    "gcNone": "clustercam grad_ceam (batch_size=None)",
    "gc512_reference": "grad_ceam, reference mode (default), 512",
    "gc512_assignment": "grad_ceam, assignment mode, 512",
}


def make_case(case: str, options: dict[str, Any]) -> Callable[[], Any]:
    """``dataset/variant/K`` -> a thunk (for the peak-memory subprocess)."""
    dataset, variant, k = case.split("/")
    k = int(k)
    device, quick = options.get("device", "cpu"), bool(options.get("quick", False))
    setup = trace_setup(device, quick) if dataset == "trace" else mnist_setup(device, quick, (k,))
    return variants(setup, k, (variant,))[variant]


# ---------------------------------------------------------------------------------------
# captum agreement
# ---------------------------------------------------------------------------------------
def captum_agreement(setup: Setup, k: int, n: int) -> list[list[str]]:
    """Compare captum's LayerGradCam with grad_ceam in paper mode on the first n samples.

    captum: W = spatial mean of dL_c/dA (``compute_layer_gradients_and_eval``, the function
    LayerGradCam calls) and ``attribute(relu_attributions=False)`` = sum_k W_k A_k.
    ours: ``channel_weights`` (before any ReLU) and ``raw`` = sum_k ReLU(W_k) A_k.
    """
    from captum._utils.gradient import compute_layer_gradients_and_eval

    from clustercam.explain.gradceam import grad_ceam, resolve_target

    enc, layer, mu = setup.encoder, setup.layer, setup.centroids[k]
    x = setup.x[:n]
    res = grad_ceam(enc, layer, x, mu, target="paper", batch_size=None)
    lgc, _ = captum_per_cluster(enc, layer, mu, "paper")
    fwd = lambda inp: resolve_target("paper").losses(enc(inp), mu)  # noqa: E731
    err_w = err_map = err_raw = 0.0
    neg = 0.0
    for c in range(k):
        grads, evals = compute_layer_gradients_and_eval(fwd, layer, (x,), c)
        g, a = grads[0].detach().cpu(), evals[0].detach().cpu()
        w_captum = g.mean(tuple(range(2, g.dim())))  # N x C
        w_ours = res.channel_weights[:, c]
        err_w = max(err_w, _rel(w_ours, w_captum))
        attr = lgc.attribute(x, target=c, relu_attributions=False).detach().cpu()[:, 0]
        unrelu = torch.einsum("nc,ncs->ns", w_ours, a.flatten(2)).reshape(attr.shape)
        err_map = max(err_map, _rel(unrelu, attr))
        relu_map = torch.einsum("nc,ncs->ns", w_captum.clamp_min(0), a.flatten(2))
        err_raw = max(err_raw, _rel(res.raw[:, c].reshape(relu_map.shape), relu_map))
        neg += float((w_captum < 0).double().mean())
    neg /= k
    return [
        [f"{setup.name}, first {len(x)} samples, K = {k}", "channel weights W_c,k (before ReLU) vs "
         "captum's spatial mean of dL_c/dA", f"{err_w:.1e}"],
        ["", "Σ_k W_c,k A_k from our weights vs captum `attribute(target=c, "
         "relu_attributions=False)`", f"{err_map:.1e}"],
        ["", "our `raw` map vs Σ_k ReLU(W_k) A_k from captum's weights "
         f"({neg:.0%} of captum's weights are negative)", f"{err_raw:.1e}"],
    ]


def _rel(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b| (0 when both are 0)."""
    scale = float(b.abs().max())
    diff = float((a.double() - b.double()).abs().max())
    return diff / scale if scale > 0 else diff


def sanity(setup: Setup, k: int, n: int) -> float:
    """The loop and grad_ceam compute the same heatmaps (max abs difference)."""
    from clustercam.explain.gradceam import grad_ceam

    x = setup.x[:n]
    mu = setup.centroids[k]
    w, raw, heat = loop_over_clusters(setup.encoder, setup.layer, x, mu, "paper")
    res = grad_ceam(setup.encoder, setup.layer, x, mu, target="paper", batch_size=CHUNK)
    return max(_rel(res.channel_weights, w.cpu()), _rel(res.raw, raw.cpu()),
               float((res.heatmaps - heat.cpu()).abs().max()))


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
def _main_table(setup: Setup, k: int, dataset: str, args, opts) -> tuple[Table, dict[str, float]]:
    which = ("floor", "loop", "captum", "gc512", "gcNone", "gc512_reference", "gc512_assignment")
    if dataset == "mnist":
        which = ("floor", "floor512", *which[1:])
    # captum runs alone: its many full-batch passes (GBs of short-lived tensors) would
    # otherwise slow down whichever case follows it in the round-robin
    fast = tuple(n for n in which if n != "captum")
    reps = args.repeats * (3 if dataset == "trace" else 1)  # Trace cases take ~0.2 s
    times = time_cases(variants(setup, k, fast), repeats=reps, warmup=args.warmup,
                       device=args.device)
    times.update(time_cases(variants(setup, k, ("captum",)), repeats=args.repeats,
                            warmup=args.warmup, device=args.device))
    med = {n: median(t) for n, t in times.items()}
    rows = []
    for n in which:
        mem = math.nan if args.no_memory else peak_memory(MODULE, f"{dataset}/{n}/{k}", opts)
        rows.append([LABELS[n], fmt_s(med[n]), spread(times[n]), fmt_x(med[n] / med["floor"]),
                     fmt_x(med["captum"] / med[n]), fmt_mib(mem)])
    n_x = len(setup.x)
    title = (f"{setup.name}: N = {n_x}, K = {k}, input {tuple(setup.x.shape[1:])}, "
             f"target layer output {_layer_shape(setup)}")
    table = Table(title, ["computation (paper mode unless said)", "median", "min–max",
                          "× floor", "captum ÷ this", "peak memory"], rows)
    return table, med


def _layer_shape(setup: Setup) -> tuple[int, ...]:
    shape: list[tuple[int, ...]] = []
    h = setup.layer.register_forward_hook(lambda _m, _i, o: shape.append(tuple(o.shape[1:])))
    with torch.no_grad():
        setup.encoder(setup.x[:1])
    h.remove()
    return shape[0]


def run(args) -> Section:
    args.repeats = args.repeats or (3 if args.quick else 5)
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    opts = {"device": args.device, "quick": args.quick}
    tables: list[Table] = []
    headlines: list[Headline] = []

    trace = trace_setup(args.device, args.quick)
    t_trace, med_t = _main_table(trace, TRACE_K, "trace", args, opts)
    tables.append(t_trace)
    mnist = mnist_setup(args.device, args.quick)
    t_mnist, med_m = _main_table(mnist, MNIST_K, "mnist", args, opts)
    tables.append(t_mnist)

    # K sweep on MNIST
    sweep_rows = []
    gc_by_k: dict[int, float] = {}
    floor_times: list[float] = []
    for k in SWEEP_K:
        times = time_cases(variants(mnist, k, ("floor", "gc512", "loop")), repeats=args.repeats,
                           warmup=args.warmup, device=args.device)
        floor_times += times["floor"]
        f, g, lp = median(times["floor"]), median(times["gc512"]), median(times["loop"])
        gc_by_k[k] = g
        mem = math.nan if args.no_memory else peak_memory(MODULE, f"mnist/gc512/{k}", opts)
        sweep_rows.append([str(k), fmt_s(f), fmt_s(g), fmt_x(g / f), fmt_mib(mem), fmt_s(lp),
                           fmt_x(lp / f)])
    tables.append(Table(
        f"MNIST, cost against K (N = {len(mnist.x)}, paper mode)",
        ["K", "floor", "grad_ceam (512)", "× floor", "grad_ceam peak memory", "loop over clusters",
         "× floor"], sweep_rows,
        [f"grad_ceam at K = {SWEEP_K[-1]} costs {fmt_x(gc_by_k[SWEEP_K[-1]] / gc_by_k[SWEEP_K[0]])} "
         f"its K = {SWEEP_K[0]} time. The floor does not depend on K; it is re-measured next to "
         "each K to show the noise."]))

    # captum agreement + sanity
    agree = captum_agreement(trace, TRACE_K, len(trace.x)) + captum_agreement(
        mnist, MNIST_K, min(500, len(mnist.x)))
    san = max(sanity(trace, TRACE_K, len(trace.x)), sanity(mnist, MNIST_K, min(500, len(mnist.x))))
    tables.append(Table(
        "captum agreement (paper mode)", ["case", "compared", "max |diff| / max |captum|"], agree,
        ["captum's `LayerGradCam` returns ReLU(Σ_k W_k A_k) (with `relu_attributions=True`) or "
         "Σ_k W_k A_k; Grad-CeAM's map is Σ_k ReLU(W_k) A_k (the paper's eq. 10), so the maps are "
         "compared where the two should agree: the weights themselves, the un-ReLU'd map built "
         "from our weights, and our map built from captum's weights.",
         f"The loop over clusters and grad_ceam agree too (max relative difference {san:.1e}), "
         "so the timed variants compute the same maps."]))

    ratio_floor_m = med_m["gc512"] / med_m["floor"]
    ratio_chunked_m = med_m["gc512"] / med_m["floor512"]
    ratio_floor_ref = med_m["gc512_reference"] / med_m["floor"]
    ratio_chunked_ref = med_m["gc512_reference"] / med_m["floor512"]
    ratio_captum_m = med_m["captum"] / med_m["gc512"]
    ratio_floor_t = med_t["gc512"] / med_t["floor"]
    ratio_captum_t = med_t["captum"] / med_t["gc512"]
    growth = gc_by_k[SWEEP_K[-1]] / gc_by_k[SWEEP_K[0]]
    n_m = len(mnist.x)
    headlines += [
        Headline(f"Grad-CeAM MNIST N={n_m} K={MNIST_K}: grad_ceam (512, paper) ÷ floor "
                 "(one forward of the batch, autograd on)", fmt_x(ratio_floor_m), "≤ 1.5×",
                 ratio_floor_m <= 1.5),
        Headline("… ÷ the floor run in the same chunks of 512 (stricter)",
                 fmt_x(ratio_chunked_m), "≤ 1.5×", ratio_chunked_m <= 1.5),
        Headline("… reference mode (the default) ÷ floor", fmt_x(ratio_floor_ref), "≤ 1.5×",
                 ratio_floor_ref <= 1.5),
        Headline("… reference mode ÷ the floor in chunks of 512 (stricter)",
                 fmt_x(ratio_chunked_ref), "≤ 1.5×", ratio_chunked_ref <= 1.5),
        Headline(f"Grad-CeAM MNIST K={MNIST_K}: captum per-cluster ÷ grad_ceam",
                 fmt_x(ratio_captum_m), "≥ 5×", ratio_captum_m >= 5),
        Headline(f"Grad-CeAM MNIST: grad_ceam time at K={SWEEP_K[-1]} ÷ K={SWEEP_K[0]}",
                 fmt_x(growth), "small, not ∝ K", None),
        Headline(f"Grad-CeAM Trace N={len(trace.x)} K={TRACE_K}: grad_ceam ÷ floor",
                 fmt_x(ratio_floor_t), "≤ 1.5×", ratio_floor_t <= 1.5),
        Headline(f"Grad-CeAM Trace K={TRACE_K}: captum per-cluster ÷ grad_ceam "
                 f"(at most ≈ K = {TRACE_K}: captum runs K forwards)",
                 fmt_x(ratio_captum_t), "(5× is set for K = 10)", None),
    ]
    intro = [
        "All clusters × all samples. Encoders in eval mode with **random-init weights** "
        "(timing does not depend on the weights' values); centroids from k-means on their "
        "embeddings. Trace: `UCRDataModule(name=\"Trace\")` test split with the ResNet CAE. "
        f"MNIST: the paper's MNIST `ConvAutoencoder` on **{len(mnist.x):,} random 28×28 images in "
        "[0, 1]** (the offline MNIST has 5,000 digits; values do not change the cost).",
        "",
        "- *floor*: `encoder(x)` once for the whole batch with autograd on — the cost of the "
        "activations every method needs; *loop*: that forward, then one `autograd.grad` per "
        "cluster and the same maps as grad_ceam; *captum*: `LayerGradCam(lambda x: "
        "resolve_target(mode).losses(encoder(x), mu), encoder.features).attribute(x, target=c)` for "
        "each c — a forward and a backward per cluster, and it returns layer-resolution maps "
        "only (no resize, no normalisation), so its time is a lower bound for the same output; "
        "*grad_ceam*: `clustercam.explain.gradceam.grad_ceam` (one forward, one batched "
        "backward per chunk, maps resized to the input and min-max normalised, raw maps, "
        "weights, embeddings).",
        f"- Median of {args.repeats} interleaved repeats ({3 * args.repeats} for Trace's "
        f"fast cases) after {args.warmup} warm-up run(s) per case; captum is timed in its own "
        "group after the others; *× floor* = median ÷ the floor's median.",
        "- " + memory_note(args.device),
    ]
    return Section("Grad-CeAM: all clusters × all samples", intro, tables, headlines, load0,
                   load_average(), time.perf_counter() - t_start, args.device, args.quick,
                   meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: Grad-CeAM", run, parser(__doc__.splitlines()[0]).parse_args())
