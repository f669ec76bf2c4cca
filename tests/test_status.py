"""status.json says how every run ended (finished / failed / diverged / interrupted, or still
``running`` after a kill), and the aggregations list the runs that did not finish."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from clustercam import outputs
from clustercam.runtime.status import (
    is_finished,
    read_status,
    run_states,
    unfinished_report,
    write_status,
)
from clustercam.studies.concept_summary import write_summary
from clustercam.studies.records import collect
from tests.helpers import REPO
from tests.helpers.run import OFFLINE
from tests.test_reproduce import _fake_run


def test_status_entries_are_written_atomically_and_keep_the_start(tmp_path):
    write_status(tmp_path, "running")
    start = read_status(tmp_path)
    assert start["status"] == "running" and start["pid"] == os.getpid() and start["message"] is None
    write_status(tmp_path, "failed", "the reason", step=3)
    end = read_status(tmp_path)
    assert end["status"] == "failed" and end["message"] == "the reason" and end["step"] == 3
    assert end["started"] == start["started"] and end["pid"] == start["pid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [outputs.STATUS]  # no temp file left
    with pytest.raises(ValueError, match="status must be one of"):
        write_status(tmp_path, "done")
    assert not is_finished(tmp_path) and is_finished(tmp_path / "no_status_file")


@pytest.mark.slow
def test_sigterm_ends_a_run_as_interrupted_and_keeps_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["experiment=trace", "logger=none", "trainer.max_epochs=200", "data.max_samples=40",
            "callbacks.cluster_explain.figures=false", f"paths.output_dir={out}"]
    log = open(tmp_path / "console.txt", "w")  # a file, not a pipe that could fill up
    proc = subprocess.Popen([sys.executable, "-m", "clustercam.train", "print_config=false", *args],
                            cwd=REPO, env={**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1"},
                            stdout=log, stderr=subprocess.STDOUT)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be stopped"
    assert read_status(out)["status"] == "running"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    log.close()
    err = (tmp_path / "console.txt").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "interrupted (SIGTERM)" in err
    status = read_status(out)
    assert status["status"] == "interrupted" and status["message"] == "SIGTERM received"
    assert json.loads((out / "metrics.json").read_text()) == {"status": "interrupted"}
    assert torch.load(last, weights_only=False)["epoch"] < 199  # what was saved stays readable


def _mark(run, status, message=None, **extra):
    write_status(run, "running")
    if status != "running":
        write_status(run, status, message)
    if extra:
        entry = read_status(run)
        (run / outputs.STATUS).write_text(json.dumps({**entry, **extra}))


def test_aggregations_leave_out_and_list_the_runs_that_did_not_finish(tmp_path):
    ok = _fake_run(tmp_path, "Trace", 1, 0.6, 1.0)
    failed = _fake_run(tmp_path, "Trace", 2, 0.9, 2.0)
    killed = _fake_run(tmp_path, "Trace", 3, 0.1, 2.0)
    legacy = _fake_run(tmp_path, "Trace", 4, 0.7, 1.0)  # written before status.json existed
    _mark(ok, "finished")
    _mark(failed, "failed", "CUDA out of memory")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _mark(killed, "running", pid=dead.pid)  # its process is gone: killed
    assert [r.run for r in collect(tmp_path)] == [ok, legacy]  # never averaged in
    assert [run for run, _ in run_states(tmp_path)] == [ok, failed, killed]
    report = unfinished_report(tmp_path)
    assert "2 of 3 runs did not finish (1 failed, 1 killed)" in report
    assert f"- `{failed}`: failed: CUDA out of memory" in report
    assert f"- `{killed}`: killed" in report
    _mark(failed, "finished")
    _mark(killed, "finished")
    assert unfinished_report(tmp_path) == ""


def test_the_concept_summary_lists_runs_that_did_not_finish(tmp_path):
    cols = ["image", "class", "method", "algorithm", "n_concepts", "silhouette",
            "calinski_harabasz", "davies_bouldin", "kept_channels", "seconds"]
    for job, status in (("0", "finished"), ("1", "diverged"), ("2", "running")):
        run = tmp_path / job
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"seed": int(job)}))
        row = ["img0", 0, "cgap", "kmeans", 5, 0.1 * (int(job) + 1), 10.0, 1.0, 100, 0.1]
        pd.DataFrame([row], columns=cols).to_csv(run / "concept_metrics.csv", index=False)
        _mark(run, status, "training diverged at epoch 1" if status == "diverged" else None,
              host="elsewhere")
    md = write_summary([tmp_path]).read_text()
    assert "(1 runs)" in md  # only the finished run is summarised
    assert "2 of 3 runs did not finish (1 diverged, 1 running or killed)" in md
    assert f"- `{tmp_path / '1'}`: diverged: training diverged at epoch 1" in md
