"""Every experiment, launcher and sweeper config composes (no SLURM or GPU needed)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

CONF = str(Path(__file__).resolve().parents[1] / "conf")
EXPERIMENTS = sorted(p.stem for p in Path(CONF, "experiment").glob("*.yaml"))


def _compose(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment):
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.data._target_.startswith("clustercam.data.")
    assert cfg.model._target_.startswith("clustercam.models.")
    if "cluster_explain" in (cfg.get("callbacks") or {}):  # Grad-CeAM needs gradients in test
        assert cfg.trainer.inference_mode is False


def test_reference_is_the_default_target():
    cfg = _compose(["experiment=trace"])
    assert cfg.callbacks.cluster_explain.mode == "reference"
    cfg = _compose(["experiment=trace", "callbacks.cluster_explain.mode=assignment"])
    assert cfg.callbacks.cluster_explain.mode == "assignment"


def test_joblib_launcher():
    cfg = _compose(["hydra/launcher=joblib_local"])
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert cfg.hydra.launcher.n_jobs == 2


def test_slurm_launcher_composes_with_ddp():
    cfg = _compose(["hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.partition=gpu",
                    "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4",
                    "trainer.devices=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 4
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 4


def test_optuna_sweep_targets_nmi():
    cfg = _compose(["hparams_search=trace_optuna", "experiment=trace"])
    assert cfg.optimized_metric == "test/nmi"
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize"
    assert "model.optimizer.lr" in sweeper.params


def test_main_returns_the_optimised_metric():
    from clustercam.train import metric_value

    assert metric_value({"test/nmi": 0.5, "test/ari": 0.2}, "test/nmi") == 0.5
    assert metric_value({"test/nmi": 0.5}, None) is None
    with pytest.raises(KeyError, match="'val/nmi' was not computed"):
        metric_value({"test/nmi": 0.5}, "val/nmi")
