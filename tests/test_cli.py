"""The command line, end to end: every file of the outputs contract, with its columns."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "clustercam.train", "print_config=false", *overrides],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def check_contract(out: Path, k: int, figures: bool = True) -> dict:
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
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assignments = read_csv(out / "assignments.csv")
    assert len(assignments) == metrics["n_samples"]
    return metrics


def test_trace_end_to_end_with_wandb_offline(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("experiment=trace", "trainer.max_epochs=1", f"paths.output_dir={out}", "seed=3")
    metrics = check_contract(out, k=4)
    assert metrics["n_samples"] == 100 and metrics["gradceam_mode"] == "reference"
    assert list((out / "wandb").glob("offline-run-*")), "no offline W&B run"
    # ends by printing where the outputs are and the summary table
    assert str(out) in proc.stdout.replace("\n", "")
    assert "Cluster-cardinality discrimination" in proc.stdout


@pytest.mark.parametrize("logger", ["csv", pytest.param("none", marks=pytest.mark.slow)])
def test_other_loggers_and_overrides(tmp_path, logger):
    out = tmp_path / "run"
    run_cli(
        "experiment=cbf", f"logger={logger}", "trainer.max_epochs=1", "data.max_samples=60",
        "callbacks.cluster_explain.mode=assignment", "callbacks.cluster_explain.n_clusters=4",
        f"paths.output_dir={out}",
    )
    metrics = check_contract(out, k=4)
    assert metrics["gradceam_mode"] == "assignment" and metrics["n_samples"] == 60
    assert (out / "csv").is_dir() == (logger == "csv")


def test_unknown_dataset_fails_with_one_clear_message(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "clustercam.train", "print_config=false", "logger=none",
         "data.name=NoSuchSet", "data.source=package", f"paths.output_dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "'NoSuchSet' is not available" in proc.stderr
    assert (tmp_path / "config.yaml").is_file()  # what was written before the error stays
