"""One logging path: the callbacks' ``log_scalars`` / ``log_table`` / ``log_images`` reach
every logger the trainer has, each through its kind's adapter, and a failing logger costs
the run nothing but a warning."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from PIL import Image

from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.callbacks.tracking import ADAPTERS, adapter_for, adapter_for_target
from clustercam.callbacks.tracking.base import RunInfo, job_name, markdown_table

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ROWS = [{"cluster": 0, "before": 3, "after": 5, "ratio": 5 / 3},
        {"cluster": 1, "before": 0, "after": 2, "ratio": float("nan")}]


def events(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def png(path: Path, h: int, w: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(path)
    return path


def test_tables_figures_and_scalars_reach_tensorboard_under_the_wandb_keys(tmp_path):
    tb = TensorBoardLogger(tmp_path / "tensorboard", name=None, version="v")
    trainer = SimpleNamespace(loggers=[tb, CSVLogger(tmp_path, name="csv")], global_step=7,
                              default_root_dir=str(tmp_path))
    figs = [png(tmp_path / "figures" / "cluster_0.png", 20, 30), png(tmp_path / "figures" / "cluster_1.png", 10, 12)]
    log_scalars(trainer, {"test/nmi": 0.25, "test/mode": "paper", "test/bad": float("nan"), "test/flag": True})
    log_table(trainer, "test/cardinality", ROWS)
    log_images(trainer, "figures/gradceam", figs, [p.stem for p in figs])
    tb.experiment.flush()
    acc = events(tmp_path / "tensorboard" / "v")
    assert [(s.step, s.value) for s in acc.Scalars("test/nmi")] == [(7, 0.25)]
    assert acc.Tags()["scalars"] == ["test/nmi"]  # text, NaN and booleans are no scalars
    assert acc.Tags()["images"] == ["figures/gradceam/cluster_0", "figures/gradceam/cluster_1"]
    image = acc.Images("figures/gradceam/cluster_0")[0]
    assert (image.height, image.width, image.step) == (20, 30, 7)
    text = acc.Tensors("test/cardinality/text_summary")[0].tensor_proto.string_val[0].decode()
    assert text == markdown_table(list(ROWS[0]), ROWS)
    assert text.splitlines()[2:] == ["| 0 | 3 | 5 | 1.66667 |", "| 1 | 0 | 2 | nan |"]


def test_a_failing_logger_is_named_in_a_warning_and_the_others_still_get_everything(tmp_path, caplog):
    class Broken(TensorBoardLogger):
        @property
        def experiment(self):
            raise ConnectionError("dashboard gone")

    good = TensorBoardLogger(tmp_path / "good", name=None, version="v")
    trainer = SimpleNamespace(loggers=[Broken(tmp_path / "bad"), good], global_step=0,
                              default_root_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        log_table(trainer, "test/cardinality", ROWS)
        log_images(trainer, "figures/x", [png(tmp_path / "a.png", 4, 4)])
    good.experiment.flush()
    assert "Broken could not take the table test/cardinality: ConnectionError: dashboard gone" in caplog.text
    assert "Broken could not take the images figures/x" in caplog.text
    acc = events(tmp_path / "good" / "v")
    assert acc.Tags()["images"] == ["figures/x/a"] and acc.Tags()["tensors"] == ["test/cardinality/text_summary"]


def test_every_logger_kind_has_one_adapter_and_csv_none():
    kinds = {type(a).__name__: a for a in ADAPTERS}
    assert set(kinds) == {"WandbAdapter", "TensorBoardAdapter", "MLflowAdapter"}
    assert adapter_for(CSVLogger("/tmp")) is None
    assert adapter_for_target("lightning.pytorch.loggers.csv_logs.CSVLogger") is None
    assert adapter_for_target("lightning.pytorch.loggers.mlflow.MLFlowLogger") is kinds["MLflowAdapter"]
    assert adapter_for_target("lightning.pytorch.loggers.TensorBoardLogger") is kinds["TensorBoardAdapter"]
    assert adapter_for_target("no.such.Logger") is None


def test_a_multirun_job_is_named_by_its_overrides_as_one_folder():
    assert job_name(3, "seed=1,model.lr=0.1") == "3_seed=1,model.lr=0.1"
    assert job_name(0, "data.root=/a/b c,seed=2") == "0_data.root=_a_b_c,seed=2"
    assert job_name(5, "") == "5"
    from omegaconf import OmegaConf

    node = OmegaConf.create({"_target_": "x", "version": None})
    run = RunInfo(output_dir=Path("/tmp/r"), experiment="trace", job="1_seed=2", sweep="s")
    assert adapter_for_target("lightning.pytorch.loggers.TensorBoardLogger").prepare(node, run)
    assert node.version == "1_seed=2"
    assert run.as_tags() == {"experiment": "trace", "sweep": "s", "job": "1_seed=2", "output_dir": "/tmp/r"}


def test_a_job_is_named_by_what_its_sweep_varies(tmp_path):
    from clustercam.callbacks.tracking.base import swept

    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [experiment=trace, 'seed=1,2,3', logger=csv]\n")
    job = ["experiment=trace", "seed=2", "logger=csv", "model.lr=0.1"]  # model.lr: an Optuna trial's
    assert swept(job, tmp_path) == ["seed=2", "model.lr=0.1"]
    assert swept(job, tmp_path / "no_sweep_file") == job
