"""The command line, end to end: the default experiment's outputs contract, the printout, and
one clear message for a missing dataset. Other end-to-end runs call the training function
in-process (tests/helpers/run.py)."""

import os
import platform
import subprocess
import sys

import pytest

from tests.helpers.run import check_contract, cli, train


def test_trace_end_to_end_with_wandb_offline(tmp_path):
    out = tmp_path / "run"
    proc = cli("experiment=trace", "trainer.max_epochs=1", f"paths.output_dir={out}", "seed=3")
    metrics = check_contract(out, k=4)
    assert metrics["n_samples"] == 100 and metrics["gradceam_mode"] == "reference"
    assert list((out / "wandb").glob("offline-run-*")), "no offline W&B run"
    # ends by printing where the outputs are and the summary table
    assert str(out) in proc.stdout.replace("\n", "")
    assert "Cluster-cardinality discrimination" in proc.stdout


@pytest.mark.parametrize("logger", ["csv", "none"])
def test_other_loggers_and_overrides(tmp_path, logger):
    out = tmp_path / "run"
    train(["experiment=cbf", f"logger={logger}", "trainer.max_epochs=1", "data.max_samples=60",
           "callbacks.cluster_explain.mode=assignment", "callbacks.cluster_explain.n_clusters=4",
           "model.net.filters=[8,16]"], out)
    metrics = check_contract(out, k=4)
    assert metrics["gradceam_mode"] == "assignment" and metrics["n_samples"] == 60
    assert (out / "csv").is_dir() == (logger == "csv")


def test_a_rerun_into_the_same_folder_writes_a_fresh_metrics_json(tmp_path):
    out = tmp_path / "run"
    common = ["experiment=synthetic_cbf", "logger=none", "trainer.max_epochs=1", "data.max_samples=30",
              "model.net.filters=[4,4]", "callbacks.cluster_explain.figures=false"]
    train([*common, "callbacks.explanation_scores.steps=2",
           "callbacks.explanation_scores.methods=[random]"], out)
    first = (out / "metrics.json").read_text()
    assert "scores/random/deletion_auc" in first
    train([*common, "callbacks=default"], out)  # no scores callback this time
    second = (out / "metrics.json").read_text()
    assert "scores/" not in second and '"nmi"' in second


def test_unknown_dataset_fails_with_one_clear_message(tmp_path):
    proc = cli("logger=none", "data.name=NoSuchSet", "data.source=package",
               f"paths.output_dir={tmp_path}", check=False, timeout=120)
    assert proc.returncode != 0
    assert "'NoSuchSet' is not available" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (tmp_path / "config.yaml").is_file()  # what was written before the error stays


_FAULTS = """
import resource, statistics, sys
if sys.argv[1] == "cli":
    import clustercam.train  # noqa: F401  (sets the allocator up, as `python -m clustercam.train`)
import torch
x = torch.ones(16 * 2**20)  # 64 MiB: 16,384 pages of 4 KiB; freed below, when x is replaced
faults = []
for _ in range(8):
    x = None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults))
"""
_ALLOCATOR_ENV = ("THP_MEM_ALLOC_ENABLE", "CLUSTERCAM_KEEP_FREED_MEMORY", "MALLOC_MMAP_MAX_",
                  "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def _faults_per_tensor(how: str, **setting: str) -> float:
    """Page faults of a 64 MiB tensor allocated after another was freed (median of 8), in a fresh
    interpreter (``cli``: after importing the CLI module) with the allocator variables of
    ``setting`` and no other."""
    env = {k: v for k, v in os.environ.items() if k not in _ALLOCATOR_ENV} | setting
    out = subprocess.run([sys.executable, "-c", _FAULTS, how], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def test_the_cli_gives_torch_huge_pages_before_its_first_tensor_unless_the_user_said_no():
    """torch reads THP_MEM_ALLOC_ENABLE once, at the first tensor: importing the CLI module
    must set it before. Where the kernel gives no huge pages (the variable set by hand
    changes nothing) the property cannot show: skipped. glibc keeping freed blocks is off
    here (it would hide the faults: the next test)."""
    off = {"CLUSTERCAM_KEEP_FREED_MEMORY": "0"}
    plain = _faults_per_tensor("plain", **off)
    by_hand = _faults_per_tensor("plain", THP_MEM_ALLOC_ENABLE="1", **off)
    if by_hand > plain / 4:
        pytest.skip(f"no transparent huge pages here ({by_hand:.0f} vs {plain:.0f} faults a 64 MiB tensor)")
    assert plain > 8000  # 4 KiB pages: one fault a page of a fresh 64 MiB mapping, or nearly
    assert _faults_per_tensor("cli", **off) < plain / 4
    assert _faults_per_tensor("cli", THP_MEM_ALLOC_ENABLE="0", **off) > plain / 2  # the user's own setting wins


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_cli_reuses_freed_blocks_unless_the_user_said_no():
    """With glibc's defaults a freed 64 MiB tensor goes back to the kernel and the next one
    faults all its pages in again; the CLI keeps freed blocks for reuse (no fault), unless
    CLUSTERCAM_KEEP_FREED_MEMORY=0 or the user tunes glibc's malloc. Huge pages are off
    here, so that every fault is a 4 KiB page."""
    thp_off = {"THP_MEM_ALLOC_ENABLE": "0"}
    plain = _faults_per_tensor("plain", **thp_off)
    assert plain > 8000
    assert _faults_per_tensor("cli", **thp_off) < 100
    assert _faults_per_tensor("cli", CLUSTERCAM_KEEP_FREED_MEMORY="0", **thp_off) > plain / 2
    assert _faults_per_tensor("cli", MALLOC_TRIM_THRESHOLD_="131072", **thp_off) > plain / 2  # glibc's own: theirs
