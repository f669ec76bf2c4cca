"""A run killed part way resumes from its last checkpoint and still ends with every output."""

import csv
import os
import signal
import subprocess
import sys
import time

import torch

from tests.helpers import REPO
from tests.helpers.run import check_contract
from tests.helpers.run import cli as run_cli


def test_killed_run_resumes_from_last(tmp_path):
    out = tmp_path / "run"
    args = ["experiment=trace", "logger=csv", "trainer.max_epochs=8", "data.max_samples=40",
            "callbacks.cluster_explain.figures=false", f"paths.output_dir={out}"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen([sys.executable, "-m", "clustercam.train", "print_config=false", *args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 900  # generous: a loaded CI machine is slow to the first epoch
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # killed part way through training
    proc.wait()
    assert last.exists(), "no checkpoint after 900 s"
    assert not (out / "metrics.json").exists()
    done = torch.load(last, weights_only=False)["epoch"]
    assert done < 7

    run_cli(*args, "ckpt_path=last")
    check_contract(out, k=4, figures=False)
    # the second run's log starts after the restored epoch: it resumed, not restarted
    with open(out / "csv" / "version_1" / "metrics.csv") as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh) if r.get("train/loss")]
    assert min(epochs) == done + 1 and max(epochs) == 7
    final = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == 8 * 4  # 40 samples / batch 10 = 4 steps an epoch
