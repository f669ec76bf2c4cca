"""Real multiruns: the joblib launcher and an Optuna study (slow: several trainings)."""

import json
import os
import subprocess
import sys

import pytest

from tests.test_cli import REPO


def _multirun(*overrides):
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "clustercam.train", "-m", "print_config=false",
                           *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel(tmp_path):
    _multirun("hydra/launcher=joblib_local", "experiment=cbf", "seed=1,2", "logger=csv",
              "trainer.max_epochs=1", "data.max_samples=40", "callbacks.cluster_explain.figures=false",
              f"hydra.sweep.dir={tmp_path}")
    seeds = {json.loads((tmp_path / str(j) / "metrics.json").read_text())["n_samples"] for j in (0, 1)}
    assert seeds == {40}


@pytest.mark.slow
def test_optuna_sweep_optimises_nmi(tmp_path):
    _multirun("hparams_search=trace_optuna", "experiment=cbf", "hydra.sweeper.n_trials=2",
              "hydra.sweeper.sampler.n_startup_trials=1", "trainer.max_epochs=1", "logger=none",
              "data.max_samples=40", "callbacks.cluster_explain.figures=false",
              f"hydra.sweep.dir={tmp_path}")
    best = (tmp_path / "optimization_results.yaml").read_text()
    assert "best_value" in best
