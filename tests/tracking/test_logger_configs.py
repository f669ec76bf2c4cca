"""The logger configs compose as the lightning-hydra-template's do: one per kind, several
through ``many`` or a list, each building its Lightning logger; the report is on by default."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from lightning.pytorch.loggers import Logger

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
        assert cfg.logger.tensorboard.save_dir == f"{tmp_path / 'run'}/tensorboard/"
    if "mlflow" in kinds:  # a local store under the outputs folder, not in the run folder
        assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path}/outputs/mlflow/mlflow.db"


def test_the_report_is_written_by_default():
    assert compose([]).report is True
