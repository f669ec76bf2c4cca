"""``logger=mlflow``: the default local SQLite store (fast, the adapter on its own), and real
runs (slow) against the default store and against a real ``mlflow server`` started on
127.0.0.1, read back with ``MlflowClient``: params, metrics with steps, artifacts, tags."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from clustercam import outputs
from clustercam.callbacks.loggers import log_images, log_scalars, log_table
from clustercam.callbacks.tracking import RunInfo, adapter_for_target
from tests.tracking.helpers import TINY, run_main

mlflow = pytest.importorskip("mlflow")
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

TARGET = "lightning.pytorch.loggers.mlflow.MLFlowLogger"


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of the run, recursively."""
    out: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def test_the_local_store_gets_the_run_its_tags_tables_figures_and_files(tmp_path):
    """The default config's store (SQLite under the outputs folder), made absolute."""
    from clustercam.runtime.configs import compose

    cfg = compose(["logger=mlflow", f"paths.root_dir={tmp_path}"], output_dir=tmp_path / "run")
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{tmp_path}/outputs/{outputs.MLFLOW_STORE}"
    node, out = cfg.logger.mlflow, tmp_path / "run"
    node.tracking_uri = node.tracking_uri.replace(str(tmp_path), os.path.relpath(tmp_path))  # relative
    run = RunInfo(output_dir=out, experiment="trace", dataset="ucr/Trace", seed=3, tags=("a", "b"))
    adapter = adapter_for_target(TARGET)
    assert adapter.prepare(node, run)
    assert node.tracking_uri == f"sqlite:///{tmp_path.resolve()}/outputs/{outputs.MLFLOW_STORE}"
    assert node.experiment_name == "trace" and node.run_id
    logger = MLFlowLogger(**{k: v for k, v in OmegaConf.to_container(node).items() if k != "_target_"})
    fig = out / "figures" / "cluster_0.png"
    fig.parent.mkdir(parents=True)
    fig.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)  # MLflow stores the bytes, never decodes them
    (out / "metrics.json").write_text('{"nmi": 0.5}')
    (out / outputs.CHECKPOINTS).mkdir()
    (out / outputs.CHECKPOINTS / "last.ckpt").write_bytes(b"weights")
    trainer = SimpleNamespace(loggers=[logger], global_step=4, default_root_dir=str(out))
    log_scalars(trainer, {"test/nmi": 0.5})
    log_table(trainer, "test/cardinality", [{"cluster": 0, "ratio": 1.5}, {"cluster": 1, "ratio": float("nan")}])
    log_images(trainer, "figures/gradceam", [fig], ["cluster_0"])
    lines = adapter.finish(node, run)
    assert lines == [f"MLflow: mlflow ui --backend-store-uri {node.tracking_uri}"]

    client = MlflowClient(node.tracking_uri)
    got = client.get_run(node.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    assert {k: got.data.tags[k] for k in ("experiment", "dataset", "seed", "tags")} == {
        "experiment": "trace", "dataset": "ucr/Trace", "seed": "3", "tags": "a,b"}
    assert [(m.step, m.value) for m in client.get_metric_history(node.run_id, "test/nmi")] == [(4, 0.5)]
    assert client.get_experiment(got.info.experiment_id).name == "trace"
    assert artifacts(client, node.run_id) == {"figures/cluster_0.png", "metrics.json",
                                               "tables/test/cardinality.json"}  # no checkpoint
    table = json.loads(Path(client.download_artifacts(node.run_id, "tables/test/cardinality.json", str(tmp_path))).read_text())
    assert table["columns"] == ["cluster", "ratio"] and [r[0] for r in table["data"]] == [0, 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path, timeout: float = 120) -> Iterator[str]:
    """A real tracking server on 127.0.0.1 (SQLite and artifacts in ``folder``), stopped on exit
    even when the test fails."""
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        pytest.skip("no mlflow command")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server ended: {(folder / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow server did not answer in {timeout} s") from None
                time.sleep(0.5)
        yield uri
    finally:  # the server's own group (it starts worker processes of its own)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def check_run(client: MlflowClient, out: Path, experiment: str) -> None:
    """The run of ``out`` in ``experiment``: params, metrics with steps, artifacts, tags."""
    exp = client.get_experiment_by_name(experiment)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.params["seed"] == "42" and run.data.params["data/name"] == "Trace"
    history = client.get_metric_history(run.info.run_id, "test/nmi")
    assert history and history[-1].value == pytest.approx(metrics["nmi"], abs=1e-6) and history[-1].step > 0
    assert {k: run.data.tags[k] for k in ("experiment", "dataset", "seed")} == {
        "experiment": experiment, "dataset": "ucr/Trace", "seed": "42"}
    assert run.data.tags["output_dir"] == str(out.resolve())
    names = artifacts(client, run.info.run_id)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    expected = {f for f in files if not f.startswith(("checkpoints/", "report/", ".hydra/"))}
    assert expected <= names, expected - names
    assert {"config.yaml", "metrics.json", "cardinality.csv", "tables/test/cardinality.json"} <= names
    assert not any(n.endswith(".ckpt") for n in names)


@pytest.mark.slow
def test_a_run_against_a_real_mlflow_server(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with mlflow_server(tmp_path) as uri:
        run_main(monkeypatch, out, *TINY, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
        check_run(MlflowClient(uri), out, "trace")
        assert f"MLflow: {uri}/#/experiments/" in capsys.readouterr().out
    assert list((tmp_path / "artifacts").rglob("config.yaml"))  # the server stored the files


@pytest.mark.slow
def test_a_run_against_the_default_local_store(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    run_main(monkeypatch, out, *TINY, "logger=mlflow", f"paths.root_dir={tmp_path}")
    uri = f"sqlite:///{tmp_path.resolve()}/outputs/{outputs.MLFLOW_STORE}"
    assert f"MLflow: mlflow ui --backend-store-uri {uri}" in capsys.readouterr().out
    check_run(MlflowClient(uri), out, "trace")
