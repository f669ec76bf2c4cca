"""The logger configs compose as the lightning-hydra-template's do: one per kind, several
through ``many`` or a list, each building its Lightning logger; the report is on by default."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from lightning.pytorch.loggers import Logger

from clustercam import outputs
from clustercam.runtime.configs import compose


@pytest.mark.parametrize(("choice", "kinds"), [
    ("logger=many", {"csv", "tensorboard", "wandb", "mlflow"}),
    ("logger=[wandb,tensorboard]", {"wandb", "tensorboard"}),
    ("logger=tensorboard", {"tensorboard"}),
    ("logger=mlflow", {"mlflow"}),
])
def test_logger_choices_compose_into_lightning_loggers(tmp_path, choice, kinds):
    cfg = compose([choice, f"paths.root_dir={tmp_path}"], output_dir=tmp_path / "run")
    assert set(cfg.logger) == kinds
    for node in cfg.logger.values():
        assert issubclass(get_class(node._target_), Logger)
    if "tensorboard" in kinds:
        assert cfg.logger.tensorboard.save_dir == f"{tmp_path / 'run'}/{outputs.TENSORBOARD}/"
    if "mlflow" in kinds:  # a local store under the outputs folder, not in the run folder
        assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path}/outputs/{outputs.MLFLOW_STORE}"


def test_the_report_is_written_by_default():
    assert compose([]).report is True


def test_the_loggers_and_checkpoints_write_where_the_contract_says(tmp_path):
    """The report and MLflow leave the loggers' stores out by the contract's names."""
    run = tmp_path / "run"
    cfg = compose(["logger=many", f"paths.root_dir={tmp_path}"], output_dir=run)
    assert (cfg.logger.csv.save_dir, cfg.logger.csv.name) == (str(run), outputs.CSV_LOGS)
    assert cfg.logger.wandb.save_dir == str(run)  # W&B makes its own wandb/ in it
    assert cfg.callbacks.model_checkpoint.dirpath == f"{run}/{outputs.CHECKPOINTS}"
    assert {outputs.CSV_LOGS, outputs.WANDB, outputs.TENSORBOARD, outputs.MLFLOW, outputs.CHECKPOINTS,
            outputs.REPORT} <= outputs.NOT_RESULTS
