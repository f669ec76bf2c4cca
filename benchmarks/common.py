"""Shared benchmark helpers: timing, peak memory, machine description, markdown tables.

Timing (:func:`time_cases`): every case is warmed up, then the cases are run round-robin
(the starting case rotates each round) so that a change of machine load during the run
hits every case alike; the reported figure is the median of the repeats. On CUDA the
device is synchronised before the clock is read.

Peak memory (:func:`peak_memory`): ``tracemalloc`` does not see torch's allocations, so
each case runs in a fresh Python process (``python -m benchmarks.common peak MODULE CASE
OPTIONS``) that builds the case, runs it once (warm-up: one-time caches, lazy imports),
drops the result, and then measures one more call:

- CPU: the increase of the process's resident set size during the call, i.e. the peak
  RSS (``VmHWM``, reset just before the call through ``/proc/self/clear_refs``) minus the
  RSS just before it. glibc is told to serve every allocation of 128 KiB or more with its
  own ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so that freed tensor memory leaves the RSS and
  is not silently reused; the figure therefore counts every large tensor alive at the
  worst moment of the call, the returned result included, and not the inputs, the model
  or the interpreter, which exist before the call. Where ``clear_refs`` is not writable
  the delta of ``getrusage(RUSAGE_SELF).ru_maxrss`` is used (a lower bound).
- CUDA: ``torch.cuda.max_memory_allocated`` during the call minus the memory allocated
  before it.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import gc
import importlib
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"


# ---------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------
def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run, minutes)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per case")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per case")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", default=None, help="also write the markdown section to this file")
    p.add_argument("--photos", default=None,
                   help="folder of <synset>/*.JPEG photos the photo benchmarks crop (default: "
                        "/work/shared/data/imagenet-11)")
    return p


def check_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine")
    return device


# ---------------------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return math.nan


class CpuMeter:
    """How many cores *other* processes kept busy, on average, between start and now.

    All CPUs' busy time from ``/proc/stat`` minus this process's own CPU time (and its
    finished children's), over the wall time. The 1-minute load average counts the
    benchmark itself (it runs 2 torch threads), this does not.
    """

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float:
        try:
            vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        except (OSError, ValueError, IndexError):
            return math.nan
        user, nice, system, _idle, _iowait, irq, softirq, steal = vals
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def others(self) -> float:
        wall = time.perf_counter() - self.t0
        if wall <= 0:
            return math.nan
        return max(0.0, (self._busy() - self.busy0) - (self._own() - self.own0)) / wall


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "captum", "sklearn", "lightning", "timm", "numpy"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is just reported
            out[name] = "not installed"
    return out


def machine_info(device: str = "cpu") -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "versions": versions(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _run_once(fn: Callable[[], object], device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    dt = time.perf_counter() - t0
    del out
    gc.collect()
    return dt


def time_cases(
    cases: dict[str, Callable[[], object]],
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
) -> dict[str, list[float]]:
    """Wall times (seconds) of each case: ``warmup`` untimed runs, then ``repeats`` rounds.

    Rounds are interleaved (case A, B, C, then B, C, A, ...), so slow drifts of the
    machine's load spread over all cases instead of biasing the one that ran last.
    """
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            _run_once(cases[name], device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_run_once(cases[name], device))
    return times


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def spread(xs: Sequence[float]) -> str:
    """``min-max`` of the repeats, to show how noisy a row is."""
    return f"{fmt_s(min(xs))}–{fmt_s(max(xs))}" if xs else "–"


# ---------------------------------------------------------------------------------------
# peak memory, one fresh process per case
# ---------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _measure_in_child(module: str, case: str, options: dict[str, Any]) -> dict[str, Any]:
    import torch

    mod = importlib.import_module(module)
    fn = mod.make_case(case, options)
    device = options.get("device", "cpu")
    out = fn()  # warm-up
    sync(device)
    del out
    _trim()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        return {"peak_mib": peak / 2**20, "method": "cuda max_memory_allocated"}
    base_kib = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        method = "VmHWM - VmRSS"
    except OSError:
        method = "ru_maxrss delta (lower bound)"
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fn()
    if method == "VmHWM - VmRSS":
        peak_kib = (_status_kib("VmHWM") or 0) - (base_kib or 0)
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_max
    del out
    return {"peak_mib": max(peak_kib, 0) / 1024, "method": method}


def peak_memory(module: str, case: str, options: dict[str, Any], timeout: float = 1800) -> float:
    """Peak extra memory (MiB) of one call of ``module.make_case(case, options)()``.

    Runs in a fresh interpreter; NaN (and a message on stderr) if that process fails.
    """
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    env["PYTHONWARNINGS"] = "ignore"
    cmd = [sys.executable, "-m", "benchmarks.common", "peak", module, case, json.dumps(options)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("PEAK "):
            return float(json.loads(line[5:])["peak_mib"])
    sys.stderr.write(f"peak memory of {module}:{case} failed:\n{proc.stderr[-2000:]}\n")
    return math.nan


def memory_note(device: str) -> str:
    if device.startswith("cuda"):
        return ("Peak memory: `torch.cuda.max_memory_allocated` during one call minus the "
                "memory allocated before it, in a fresh process per case, after a warm-up call.")
    return ("Peak memory: increase of the resident set size during one call (peak RSS, "
            "reset through `/proc/self/clear_refs`, minus the RSS just before the call), in a "
            "fresh process per case after one warm-up call; glibc serves allocations of "
            "≥ 128 KiB with `mmap` there so freed tensors leave the RSS. It counts every "
            "tensor alive at the worst moment of the call, the returned result included, "
            "and not the inputs, model or interpreter that exist before the call.")


# ---------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------
def fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_x(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "–"
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.0f}×" if ratio >= 100 else f"{ratio:.1f}×"


def fmt_mib(mib: float | None) -> str:
    if mib is None or not math.isfinite(mib):
        return "–"
    return f"{mib:.0f} MiB" if mib >= 10 else f"{mib:.1f} MiB"


def fmt_f(v: float, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines.append("")
            lines += self.notes
        return "\n".join(lines)


@dataclass
class Headline:
    what: str
    measured: str
    target: str
    met: bool | None  # None: informational

    def row(self) -> list[str]:
        met = "–" if self.met is None else ("yes" if self.met else "**no**")
        return [self.what, self.measured, self.target, met]


@dataclass
class Section:
    title: str
    intro: list[str]
    tables: list[Table]
    headlines: list[Headline]
    load_before: float
    load_after: float
    seconds: float
    device: str
    quick: bool
    others: float = math.nan  # cores kept busy by other processes, on average
    date: str = field(default_factory=lambda: _dt.datetime.now().astimezone().strftime(
        "%Y-%m-%d %H:%M %Z"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Section:
        d = json.loads(text)
        d["tables"] = [Table(**t) for t in d["tables"]]
        d["headlines"] = [Headline(**h) for h in d["headlines"]]
        return cls(**d)

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        lines += self.intro
        lines += ["", f"*Measured {self.date} on device {self.device}"
                  f"{', --quick sizes' if self.quick else ''}; "
                  f"1-minute load average {self.load_before:.2f} before, {self.load_after:.2f} "
                  f"after (the benchmark's own threads included); other processes kept "
                  f"{self.others:.2f} cores busy on average; this section took "
                  f"{self.seconds:.0f} s.*", ""]
        for t in self.tables:
            lines += [t.markdown(), ""]
        return "\n".join(lines)


def headline_table(headlines: Sequence[Headline]) -> str:
    t = Table("Headline ratios", ["benchmark", "measured", "target", "met"],
              [h.row() for h in headlines])
    return t.markdown()


def machine_markdown(info: dict[str, Any]) -> str:
    v = info["versions"]
    lines = [
        f"- Machine: {info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch "
        f"threads){', GPU ' + info['gpu'] if 'gpu' in info else ''}; {info['platform']}",
        "- Versions: " + ", ".join(f"{k} {v[k]}" for k in
                                   ("python", "torch", "captum", "sklearn", "lightning",
                                    "timm", "numpy")),
        f"- Date: {info['date']}",
    ]
    return "\n".join(lines)


def main_single(title: str, run: Callable[[argparse.Namespace], Section], args: argparse.Namespace) -> None:
    """Entry point of one ``bench_*`` module run alone: print (and optionally write) it."""
    check_device(args.device)
    section = run(args)
    info = machine_info(args.device)
    text = "\n".join([f"# {title}", "", machine_markdown(info), "",
                      headline_table(section.headlines), "", section.markdown()])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "peak":
        import warnings

        warnings.filterwarnings("ignore")
        result = _measure_in_child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
        print("PEAK " + json.dumps(result), flush=True)
    else:
        raise SystemExit("usage: python -m benchmarks.common peak MODULE CASE OPTIONS_JSON")
