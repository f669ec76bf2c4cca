"""Training overhead: one epoch of the time-series CAE through Lightning vs a plain torch loop.

The same ``ResNetCAE`` (filters 64/128/128, m = 10), UCR Trace's train split (100 series,
length 275) through ``UCRDataModule(name="Trace", batch_size=10)``'s train loader
(shuffled, 10 steps an epoch), MSE reconstruction, Adam lr 1e-3:

- Lightning: ``AutoencoderModule`` + ``Trainer(max_epochs=1, logger=False,
  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
  num_sanity_val_steps=0, limit_val_batches=0)``, a new Trainer per timed epoch (what a
  user pays for one epoch: construction + ``fit``);
- plain: ``for x, _, _ in loader: opt.zero_grad(); loss = mse(net(x), x);
  loss.backward(); opt.step()``.

Also the steady state: per-epoch times inside one multi-epoch ``fit`` (a callback reads
the clock at each epoch's start and end) against the same plain epochs.

    python -m benchmarks.bench_training [--quick] [--device cuda]
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

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
    sync,
    time_cases,
)

MODULE = "benchmarks.bench_training"
BATCH = 10
QUICK_SAMPLES = 30

warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def _quiet() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def loader(quick: bool):
    from clustercam.data.ucr import UCRDataModule

    dm = UCRDataModule(name="Trace", batch_size=BATCH, max_samples=QUICK_SAMPLES if quick else None)
    dm.setup("fit")
    return dm.train_dataloader(), tuple(dm.input_shape)


def _net(input_shape: tuple[int, ...], device: str):
    from clustercam.models.components.resnet_cae import ResNetCAE

    torch.manual_seed(0)
    return ResNetCAE(input_shape).to(device)


def _trainer(device: str, max_epochs: int = 1, callbacks: list | None = None):
    from lightning import Trainer

    return Trainer(
        max_epochs=max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0, accelerator="gpu" if device.startswith("cuda") else "cpu",
        devices=1, callbacks=callbacks or [],
    )


class Lightning:
    """A fresh ``Trainer(max_epochs=1).fit`` per epoch on one AutoencoderModule."""

    def __init__(self, device: str, quick: bool) -> None:
        from clustercam.models.autoencoder_module import AutoencoderModule

        _quiet()
        self.loader, shape = loader(quick)
        self.device = device
        self.module = AutoencoderModule(net=_net(shape, device))

    def epoch(self) -> None:
        _trainer(self.device).fit(self.module, train_dataloaders=self.loader)


class Plain:
    """The same model, data, optimiser and batches in a plain torch loop."""

    def __init__(self, device: str, quick: bool) -> None:
        self.loader, shape = loader(quick)
        self.device = device
        self.net = _net(shape, device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def epoch(self) -> torch.Tensor:
        self.net.train()
        total = torch.zeros((), device=self.device)
        for x, _, _ in self.loader:
            x = x.to(self.device, non_blocking=True)
            self.opt.zero_grad()
            loss = F.mse_loss(self.net(x), x)
            loss.backward()
            self.opt.step()
            total += loss.detach()
        return total


def steady_state(device: str, quick: bool, epochs: int) -> tuple[list[float], list[float]]:
    """Per-epoch times inside one ``fit(max_epochs=epochs)`` and of ``epochs`` plain epochs."""
    from lightning import Callback

    class EpochClock(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            sync(device)
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            sync(device)
            self.times.append(time.perf_counter() - self.t0)

    lit, plain = Lightning(device, quick), Plain(device, quick)
    clock = EpochClock()
    plain.epoch()  # warm-up
    _trainer(device, epochs, [clock]).fit(lit.module, train_dataloaders=lit.loader)
    plain_times = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        plain.epoch()
        sync(device)
        plain_times.append(time.perf_counter() - t0)
    return clock.times[1:], plain_times  # the first Lightning epoch is its warm-up


def make_case(case: str, options: dict[str, Any]) -> Callable[[], Any]:
    device, quick = options.get("device", "cpu"), bool(options.get("quick", False))
    runner = Lightning(device, quick) if case == "lightning" else Plain(device, quick)
    return runner.epoch


def run(args) -> Section:
    args.repeats = args.repeats or (3 if args.quick else 7)
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    opts = {"device": args.device, "quick": args.quick}
    lit, plain = Lightning(args.device, args.quick), Plain(args.device, args.quick)
    n_samples = len(plain.loader.dataset)
    times = time_cases({"lightning": lit.epoch, "plain": plain.epoch}, repeats=args.repeats,
                       warmup=args.warmup, device=args.device)
    med = {k: median(v) for k, v in times.items()}
    steady_l, steady_p = steady_state(args.device, args.quick, args.repeats + 1)
    s_l, s_p = median(steady_l), median(steady_p)
    rows = []
    for name, label in (("plain", "plain torch loop"),
                        ("lightning", "Lightning: new Trainer(max_epochs=1) + fit")):
        mem = math.nan if args.no_memory else peak_memory(MODULE, name, opts)
        rows.append([label, fmt_s(med[name]), spread(times[name]),
                     fmt_x(med[name] / med["plain"]), fmt_mib(mem)])
    steps = math.ceil(n_samples / BATCH)
    per_step = (med["lightning"] - med["plain"]) / steps
    t1 = Table(
        f"One epoch, Trace train split ({n_samples} series, batch {BATCH}, {steps} steps)",
        ["how", "median epoch", "min–max", "× plain", "peak memory"], rows,
        [f"Lightning's extra time: {fmt_s(med['lightning'] - med['plain'])} an epoch "
         f"({fmt_s(per_step)} a step if it were all per-step)."])
    t2 = Table(
        f"Steady state: epochs inside one fit(max_epochs={args.repeats + 1}), first epoch "
        "dropped",
        ["how", "median epoch", "min–max", "× plain"],
        [["plain torch loop", fmt_s(s_p), spread(steady_p), fmt_x(1.0)],
         ["Lightning, epochs 2+ of one fit", fmt_s(s_l), spread(steady_l), fmt_x(s_l / s_p)]],
        ["This isolates the per-step cost (hooks, `self.log`, optimizer wrapping) from the "
         "per-fit setup (Trainer construction, strategy/accelerator setup, loops)."])
    ratio = med["lightning"] / med["plain"]
    headlines = [
        Headline(f"Training, one Trace epoch (batch {BATCH}): Lightning ÷ plain torch loop",
                 fmt_x(ratio), "≤ 1.15×", ratio <= 1.15),
        Headline("… steady state (epochs inside one fit) ÷ plain", fmt_x(s_l / s_p), "(info)",
                 None),
    ]
    intro = [
        "The same `ResNetCAE` (random init, seed 0), the same `UCRDataModule(name=\"Trace\", "
        f"batch_size={BATCH})` train loader, MSE + Adam lr 1e-3. *Lightning*: "
        "`AutoencoderModule` + `Trainer(max_epochs=1, logger=False, enable_checkpointing=False, "
        "enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, "
        "limit_val_batches=0)`, a new Trainer for every timed epoch (construction + `fit`), "
        "training the same module on; *plain*: a bare loop over the same loader.",
        "",
        f"- Median of {args.repeats} interleaved epochs after {args.warmup} warm-up epoch(s) each.",
        "- " + memory_note(args.device),
    ]
    return Section("Training overhead: Lightning vs a plain loop", intro, [t1, t2], headlines,
                   load0, load_average(), time.perf_counter() - t_start, args.device, args.quick,
                   meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: training overhead", run,
                parser(__doc__.splitlines()[0]).parse_args())
