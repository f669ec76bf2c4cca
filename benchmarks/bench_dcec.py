"""DCEC training overhead: one clustering epoch in Lightning vs a plain torch loop.

The same ``ResNetCAE`` (random init, seed 0) with a clustering layer initialised by
k-means, on UCR Trace's train split (100 series, batch 10, 10 steps an epoch), IDEC loss
``L_rec + 0.1 KL(P || Q)``, Adam lr 1e-3. Each epoch starts with a target update (q of the
whole training split in eval mode, P, the changed-label share), as ``update_interval: null``
does:

- Lightning: ``DCECModule`` + ``Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
  limit_val_batches=0)``, a new Trainer per timed epoch (its labels are cleared first so
  the tol stop cannot skip an epoch);
- plain: the target update, then ``for x, _, idx in loader: q = layer(encoder(x)); loss =
  mse(decoder(z), x) + 0.1 kl(P[idx], q); backward; step``.

    python -m benchmarks.bench_dcec [--quick] [--device cuda]
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.bench_training import BATCH, _quiet, _trainer, loader
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

MODULE = "benchmarks.bench_dcec"
K = 4

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")


def _net(shape: tuple[int, ...]):
    from clustercam.models.components.resnet_cae import ResNetCAE

    torch.manual_seed(0)
    return ResNetCAE(shape)


def _initialise(net, x: torch.Tensor) -> None:
    """k-means centroids for the clustering layer of a DeepClusteringNet (the init phase)."""
    from clustercam.explain.clustering import fit_kmeans
    from clustercam.explain.hooks import embed

    km = fit_kmeans(embed(net.encoder, x).double().numpy(), K, n_init=5, seed=0)
    net.clustering.initialise(torch.from_numpy(km.centroids).float())


class Lightning:
    """A fresh ``Trainer(max_epochs=1).fit`` per epoch on one initialised DCECModule."""

    def __init__(self, device: str, quick: bool) -> None:
        from clustercam.models.dcec_module import DCECModule

        _quiet()
        self.loader, shape = loader(quick)
        self.device = device
        self.module = DCECModule(net=_net(shape), n_clusters=K).to(device)
        _initialise(self.module.net, self.loader.dataset.x)

    def epoch(self) -> None:
        self.module.labels = None  # the tol stop must not skip the timed epoch
        _trainer(self.device).fit(self.module, train_dataloaders=self.loader)


class Plain:
    """The same steps, target update included, in a plain torch loop."""

    def __init__(self, device: str, quick: bool) -> None:
        self.loader, shape = loader(quick)
        self.device = device
        from clustercam.models.components.dcec import DeepClusteringNet

        self.net = DeepClusteringNet(_net(shape), K).to(device)
        _initialise(self.net, self.loader.dataset.x)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.labels: torch.Tensor | None = None

    def epoch(self) -> torch.Tensor:
        from clustercam.explain.assignments import kl_divergence, target_distribution
        from clustercam.explain.hooks import embed

        with torch.no_grad():
            q = self.net.clustering(embed(self.net.encoder, self.loader.dataset.x)).cpu()
        p = target_distribution(q)
        labels = q.argmax(1)
        if self.labels is not None:
            self.changed = float((labels != self.labels).double().mean())
        self.labels = labels
        self.net.train()
        total = torch.zeros((), device=self.device)
        for x, _, idx in self.loader:
            x = x.to(self.device, non_blocking=True)
            self.opt.zero_grad()
            z = self.net.encoder(x)
            loss = F.mse_loss(self.net.decoder(z), x) + 0.1 * kl_divergence(
                p[idx].to(z), self.net.clustering(z))
            loss.backward()
            self.opt.step()
            total += loss.detach()
        return total


def make_case(case: str, options: dict[str, Any]):
    device, quick = options.get("device", "cpu"), bool(options.get("quick", False))
    runner = Lightning(device, quick) if case == "lightning" else Plain(device, quick)
    return runner.epoch


def run(args) -> Section:
    args.repeats = args.repeats or (3 if args.quick else 7)
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    opts = {"device": args.device, "quick": args.quick}
    lit, plain = Lightning(args.device, args.quick), Plain(args.device, args.quick)
    n = len(plain.loader.dataset)
    times = time_cases({"lightning": lit.epoch, "plain": plain.epoch}, repeats=args.repeats,
                       warmup=args.warmup, device=args.device)
    med = {k: median(v) for k, v in times.items()}
    rows = []
    for name, label in (("plain", "plain torch loop (target update + steps)"),
                        ("lightning", "Lightning: DCECModule, new Trainer(max_epochs=1) + fit")):
        mem = math.nan if args.no_memory else peak_memory(MODULE, name, opts)
        rows.append([label, fmt_s(med[name]), spread(times[name]), fmt_x(med[name] / med["plain"]),
                     fmt_mib(mem)])
    steps = math.ceil(n / BATCH)
    extra = med["lightning"] - med["plain"]
    table = Table(f"One clustering epoch, Trace train split ({n} series, batch {BATCH}, {steps} steps, "
                  f"K = {K})", ["how", "median epoch", "min–max", "× plain", "peak memory"], rows,
                  [f"Lightning's extra time: {'-' if extra < 0 else ''}{fmt_s(abs(extra))} an epoch."])
    ratio = med["lightning"] / med["plain"]
    headlines = [Headline(f"DCEC training, one Trace clustering epoch (batch {BATCH}): Lightning ÷ "
                          "plain torch loop", fmt_x(ratio), "≤ 1.15×", ratio <= 1.15)]
    intro = [*"\n\n".join(__doc__.split("\n\n")[:3]).splitlines(), "",
             f"- Median of {args.repeats} interleaved epochs after {args.warmup} warm-up epoch(s) each.",
             "- " + memory_note(args.device)]
    return Section("DCEC training overhead: Lightning vs a plain loop", intro, [table], headlines,
                   load0, load_average(), time.perf_counter() - t_start, args.device, args.quick,
                   meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: DCEC training overhead", run,
                parser(__doc__.splitlines()[0]).parse_args())
