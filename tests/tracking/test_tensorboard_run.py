"""``logger=tensorboard`` end to end (in-process ``clustercam-train``): the event files hold
the test scalars, every figure as an image and every table as text, read back with
TensorBoard's own event reader; the config as hparams; the run's page written at its end."""

from __future__ import annotations

import json

import pytest
import yaml

from clustercam import outputs
from tests.tracking.helpers import TINY, run_main

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def test_a_tensorboard_run_writes_scalars_images_tables_and_hparams(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    run_main(monkeypatch, out, *TINY, "logger=tensorboard")
    (logdir,) = (out / outputs.TENSORBOARD).iterdir()  # version_0: a single run
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    metrics = json.loads((out / "metrics.json").read_text())
    assert acc.Scalars("test/nmi")[-1].value == pytest.approx(metrics["nmi"], abs=1e-6)
    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert sorted(acc.Tags()["images"]) == [f"figures/gradceam/{f}" for f in figures]
    assert "test/cardinality/text_summary" in acc.Tags()["tensors"]
    table = acc.Tensors("test/cardinality/text_summary")[0].tensor_proto.string_val[0].decode()
    assert table.splitlines()[0] == "| cluster | before | after | ratio |"
    assert len(table.splitlines()) == 2 + metrics["n_clusters"]
    hparams = yaml.safe_load((logdir / "hparams.yaml").read_text())
    assert hparams["seed"] == 42 and hparams["data"]["name"] == "Trace"
    printed = capsys.readouterr().out
    assert f"tensorboard --logdir {out / outputs.TENSORBOARD}" in printed
    # report=true (the default): the run's page, named at the end
    assert (out / outputs.REPORT_INDEX).is_file()
    assert f"Report: {out / outputs.REPORT_INDEX}" in printed
