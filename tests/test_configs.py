"""Every experiment, debug, launcher and sweeper config composes, and every experiment's
datamodule, model and callbacks instantiate (the lightning-hydra-template's habit)."""

import hydra.utils
import pytest
from lightning import Callback, LightningDataModule, LightningModule

from clustercam.exceptions import UserError
from clustercam.runtime.configs import compose, experiment_names
from clustercam.runtime.instantiate import instantiate_callbacks
from tests.helpers import synset_folder
from tests.helpers.run import train

EXPERIMENTS = experiment_names()
DEBUGS = ["default", "fdr", "limit", "overfit", "profiler"]
# what an offline machine without the STL-10 files or pretrained weights needs
OFFLINE = {"concepts_imagenet": ["data.data_dir=<images>", "model.pretrained=false"]}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_instantiate(experiment, tmp_path):
    offline = [o.replace("<images>", str(synset_folder(tmp_path / "images")))
               for o in OFFLINE.get(experiment, [])]
    cfg = compose([f"experiment={experiment}", f"paths.output_dir={tmp_path}", *offline])
    assert cfg.data._target_.startswith("clustercam.data.")
    assert cfg.model._target_.startswith("clustercam.models.")
    if "cluster_explain" in (cfg.get("callbacks") or {}):  # Grad-CeAM needs gradients in test
        assert cfg.trainer.inference_mode is False
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, LightningDataModule)
    extra = {"input_shape": [1, 64]} if "input_shape" in cfg.model else {}
    if extra and experiment.removesuffix("_dcec") in ("mnist", "synthetic_shapes", "stl10"):
        extra = {"input_shape": [3 if experiment == "stl10" else 1, 32, 32]}
    if "n_clusters" in cfg.model and cfg.model.n_clusters is None:  # deep clustering: K (train.py)
        extra["n_clusters"] = 3
    if extra and experiment in ("concepts_parts", "concepts_parts_vit", "concepts_mnist"):  # trained, 64 px
        extra = {"input_shape": [1 if experiment == "concepts_mnist" else 3, 64, 64]}
    if cfg.model.get("num_classes", 0) is None and cfg.model._target_.endswith("TrainableClassifierModule"):
        extra["num_classes"] = 3  # a classifier trained in the run: the data's classes (train.py)
    model = hydra.utils.instantiate(cfg.model, **extra)
    assert isinstance(model, LightningModule)
    callbacks = instantiate_callbacks(cfg.callbacks)
    assert callbacks and all(isinstance(c, Callback) for c in callbacks)
    assert all(str(getattr(c, "output_dir", tmp_path)) == str(tmp_path) for c in callbacks)


@pytest.mark.parametrize("debug", DEBUGS)
def test_debug_configs_compose(debug):
    cfg = compose(["experiment=trace", f"debug={debug}"])
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu"
    assert "wandb" not in (cfg.get("logger") or {})
    if debug == "fdr":
        assert cfg.trainer.fast_dev_run is True
    if debug == "overfit":
        assert cfg.trainer.overfit_batches == 3


def test_debug_fdr_runs_in_seconds(tmp_path):
    out = tmp_path / "run"
    metrics = train(["experiment=trace", "debug=fdr", "model.net.filters=[8,8,8]"], out)
    assert "test/nmi" in metrics and (out / "cardinality.csv").is_file()


def test_reference_is_the_default_target():
    cfg = compose(["experiment=trace"])
    assert cfg.callbacks.cluster_explain.target == "reference"
    cfg = compose(["experiment=trace", "callbacks.cluster_explain.target=assignment"])
    assert cfg.callbacks.cluster_explain.target == "assignment"
    cfg = compose(["experiment=trace", "callbacks.cluster_explain.mode=assignment",  # the old names
                   "callbacks.cluster_explain.compare_modes=[paper,reference,assignment]"])
    with pytest.warns(DeprecationWarning, match="callbacks.cluster_explain: mode= is renamed target="):
        cb = hydra.utils.instantiate(cfg.callbacks.cluster_explain)
    assert cb.settings.target == "assignment"
    assert cb.settings.compare_targets == ("paper", "reference", "assignment")


def test_joblib_launcher():
    cfg = compose(["hydra/launcher=joblib_local"])
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert cfg.hydra.launcher.n_jobs == 2


def test_slurm_launcher_composes_with_ddp():
    cfg = compose(["hydra/launcher=slurm", "trainer=ddp", "hydra.launcher.partition=gpu",
                   "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4",
                   "trainer.devices=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 4
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 4


def test_optuna_sweep_targets_nmi():
    cfg = compose(["hparams_search=trace_optuna", "experiment=trace"])
    assert cfg.optimized_metric == "test/nmi"
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize"
    assert "model.optimizer.lr" in sweeper.params


def test_main_returns_the_optimised_metric():
    from clustercam.train import metric_value

    assert metric_value({"test/nmi": 0.5, "test/ari": 0.2}, "test/nmi") == 0.5
    assert metric_value({"test/nmi": 0.5}, None) is None
    with pytest.raises(UserError, match="'val/nmi' was not computed"):
        metric_value({"test/nmi": 0.5}, "val/nmi")
