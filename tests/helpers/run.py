"""Run clustercam the two ways a user does: the CLI in a subprocess, or ``clustercam.train.run``
in this process (faster: no interpreter start, no imports; used wherever no subprocess is
needed: everything but the CLI itself, DDP and kill/resume)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import REPO

OFFLINE = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true",
           "MPLBACKEND": "Agg"}


def cli(*args: str, cwd: Path = REPO, timeout: int = 300, check: bool = True,
        module: str = "clustercam.train", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m <module> print_config=false <args>`` offline; raises with the output on failure."""
    full_env = {**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1", **(env or {})}
    flags, rest = [], list(args)
    if module == "clustercam.train":  # Hydra: flags (-m, --config-dir=...) before the overrides
        flags = [a for a in args if a.startswith("-")]
        rest = [a for a in args if not a.startswith("-")]
        if not any(a.startswith("print_config=") for a in rest):
            rest.insert(0, "print_config=false")
    proc = subprocess.run([sys.executable, "-m", module, *flags, *rest], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train(overrides: list[str], output_dir: Path) -> dict[str, Any]:
    """``clustercam.train.run`` on the composed config, outputs in ``output_dir`` (no W&B unless
    asked); returns the run's metrics."""
    import torch

    from clustercam.runtime.configs import compose
    from clustercam.train import run

    cfg = compose(["print_config=false", *overrides], output_dir=output_dir)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return run(cfg)
    finally:  # trainer.deterministic=true would otherwise stay on for the next tests
        torch.use_deterministic_algorithms(deterministic)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def check_contract(out: Path, k: int, figures: bool = True, checkpoint: bool = True) -> dict:
    """Every file of the Grad-CeAM outputs contract, with its columns (docs/guide/outputs.md)."""
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("nmi", "ari", "acc", "recon_loss"):
        assert isinstance(metrics[key], float), key
    assert 0 <= metrics["nmi"] <= 1 and 0 <= metrics["acc"] <= 1
    rows = read_csv(out / "cardinality.csv")
    assert list(rows[0]) == ["cluster", "before", "after", "ratio"]
    assert [int(r["cluster"]) for r in rows] == list(range(k))
    assert sum(int(r["before"]) for r in rows) == metrics["n_samples"]
    summary = json.loads((out / "cardinality_summary.json").read_text())
    assert {"median", "mean", "min", "max"} <= set(summary)
    assert summary["min"] <= summary["median"] <= summary["max"]
    if figures:
        pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
        assert "sample_all_clusters.png" in pngs
        assert sum(f.startswith("cluster_") for f in pngs) >= 1
    assert (out / "config.yaml").is_file()
    if checkpoint:
        assert (out / "checkpoints" / "last.ckpt").is_file()
    assignments = read_csv(out / "assignments.csv")
    assert len(assignments) == metrics["n_samples"]
    return metrics
