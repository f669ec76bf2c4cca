"""Real multiruns: the joblib launcher and an Optuna study (slow: several trainings)."""

import json
import os

import pytest
import yaml

from tests.helpers.run import cli


def _multirun(*overrides):
    return cli("-m", *overrides, timeout=900)


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel(tmp_path):
    _multirun("hydra/launcher=joblib_local", "experiment=cbf", "seed=1,2", "logger=csv",
              "trainer.max_epochs=3", "data.max_samples=40", "callbacks.cluster_explain.figures=false",
              f"hydra.sweep.dir={tmp_path}")
    jobs = [tmp_path / str(j) for j in (0, 1)]
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert [m["n_samples"] for m in metrics] == [40, 40]
    seeds = [yaml.safe_load((j / "config.yaml").read_text())["seed"] for j in jobs]
    assert sorted(seeds) == [1, 2]
    # each job's life: its config.yaml is written first, its metrics.json last; run by two
    # workers at once, the two intervals overlap (one after the other, they would not)
    spans = [(os.stat(j / "config.yaml").st_mtime, os.stat(j / "metrics.json").st_mtime) for j in jobs]
    (s0, e0), (s1, e1) = spans
    assert s0 < e1 and s1 < e0, f"jobs ran one after the other: {spans}"


@pytest.mark.slow
def test_optuna_sweep_optimises_nmi(tmp_path):
    _multirun("hparams_search=trace_optuna", "experiment=cbf", "hydra.sweeper.n_trials=2",
              "hydra.sweeper.sampler.n_startup_trials=1", "trainer.max_epochs=1", "logger=none",
              "data.max_samples=40", "callbacks.cluster_explain.figures=false",
              f"hydra.sweep.dir={tmp_path}")
    trials = sorted(p for p in tmp_path.iterdir() if (p / "metrics.json").is_file())
    assert len(trials) == 2, [p.name for p in tmp_path.iterdir()]
    nmis = [json.loads((t / "metrics.json").read_text())["nmi"] for t in trials]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(nmis), abs=1e-6)
    assert set(best["best_params"]) >= {"model.optimizer.lr", "model.net.embedding_dim"}
