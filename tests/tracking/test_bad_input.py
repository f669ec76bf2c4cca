"""What a user gets wrong with the loggers: a tracking server that does not answer (one
line, the run goes on and writes every file), and ``logger=mlflow`` without the package
(one line naming the extra to install, before anything runs)."""

from __future__ import annotations

import socket
import sys

import pytest

from clustercam import outputs
from tests.tracking.helpers import run_main

FDR = ["experiment=trace", "debug=fdr", "print_config=false"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_tracking_server_that_does_not_answer_is_one_warning_and_the_files_are_written(
        tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    out, uri = tmp_path / "run", f"http://127.0.0.1:{closed_port()}"
    run_main(monkeypatch, out, *FDR, "logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={uri}")
    printed = capsys.readouterr()
    warnings = [line for line in (printed.out + printed.err).splitlines() if "does not answer" in line]
    assert len(warnings) == 1, warnings  # one line (Hydra's log format around it)
    assert f"[WARNING] - MLflow tracking server {uri} does not answer (" in warnings[0]
    assert warnings[0].endswith(f"this run is not logged there; its files are in {out}")
    for name in ("config.yaml", "metrics.json", "cardinality.csv", outputs.REPORT_INDEX):
        assert (out / name).is_file(), name
    assert "mlflow:" not in (out / "config.yaml").read_text()  # left out of this run
    assert "MLflow:" not in printed.out


def test_logger_mlflow_without_the_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(SystemExit) as exc:
        run_main(monkeypatch, tmp_path / "run", *FDR, "logger=mlflow")
    message = str(exc.value)
    assert message.splitlines()[0] == (
        "error: logger=mlflow needs the mlflow package: pip install 'clustercam[tracking]'")
    assert not (tmp_path / "run" / "metrics.json").exists()  # stopped before the run
