"""MLflow: tables through MLflow's table API, figures and the run folder's files as artifacts,
tags naming the experiment, dataset, seed and sweep; one MLflow experiment per clustercam
experiment.

The default store is a local SQLite database under the outputs folder (MLflow 3 refuses a
plain ``mlruns/`` folder unless told otherwise); ``logger.mlflow.tracking_uri=http://host:5000``
logs to a server. The run is created here, before the trainer, so that a server that does
not answer is found at once: the run goes on without it, its files in its folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock
from lightning.pytorch.loggers import Logger, MLFlowLogger

from clustercam.callbacks.tracking.base import LoggerAdapter, RunInfo
from clustercam.exceptions import MissingDependencyError

log = logging.getLogger(__name__)
PROBE_SECONDS = 5.0  # how long a tracking server has to answer before the run goes on without it
SQLITE = "sqlite:///"


def local_store(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (made absolute), else None."""
    return Path(uri[len(SQLITE):]).expanduser().resolve() if uri.startswith(SQLITE) else None


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def answers(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """None when the server at ``uri`` answers HTTP at all, else why not."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:  # it answered (401, 404, ...): the API calls will say more
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # another job of the sweep created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


class MLflowAdapter(LoggerAdapter):
    logger_class = MLFlowLogger

    def __init__(self) -> None:
        self._sent: dict[str, set[str]] = {}  # run id -> run-folder files already sent

    def log_table(self, logger: Logger, key: str, columns: list[str],
                  rows: Sequence[Mapping[str, Any]], step: int) -> None:
        data = {c: [r.get(c) for r in rows] for c in columns}
        logger.experiment.log_table(logger.run_id, data=data, artifact_file=f"tables/{key}.json")

    def log_images(self, logger: Logger, key: str, paths: Sequence[Path], captions: Sequence[str],
                   step: int, root: Path) -> None:
        for path in map(Path, paths):
            try:  # where it is in the run folder (figures/cluster_0.png), else under the key
                rel = path.resolve().relative_to(Path(root).resolve())
            except ValueError:
                rel = Path(key, path.name)
            parent = rel.parent.as_posix()
            logger.experiment.log_artifact(logger.run_id, str(path), None if parent == "." else parent)
            self._sent.setdefault(logger.run_id, set()).add(rel.as_posix())

    def prepare(self, node: Any, run: RunInfo) -> bool:
        if importlib.util.find_spec("mlflow") is None:
            raise MissingDependencyError("logger=mlflow needs the mlflow package: pip install 'clustercam[tracking]'")
        uri = str(node.get("tracking_uri") or "")
        db = local_store(uri)
        if db is not None:  # absolute, so that `mlflow ui` finds it from any folder
            db.parent.mkdir(parents=True, exist_ok=True)
            node.tracking_uri = uri = f"{SQLITE}{db}"
            if not node.get("artifact_location"):
                node.artifact_location = str(db.parent / "artifacts")
        elif is_remote(uri) and (why := answers(uri)) is not None:
            log.warning("MLflow tracking server %s does not answer (%s): this run is not logged there; "
                        "its files are in %s", uri, why, run.output_dir)
            return False
        if not node.get("experiment_name"):
            node.experiment_name = run.experiment
        from mlflow import MlflowClient

        try:  # the parallel jobs of a sweep create the local database one at a time
            with FileLock(f"{db}.lock") if db is not None else contextlib.nullcontext():
                self._start(MlflowClient(uri or None), node, run)
        except Exception as exc:  # a store that cannot take the run costs the run nothing
            log.warning("MLflow store %s could not take this run (%s: %s): this run is not logged "
                        "there; its files are in %s", uri, type(exc).__name__, exc, run.output_dir)
            return False
        return True

    def _start(self, client: Any, node: Any, run: RunInfo) -> None:
        """Create the run (or tag the one ``run_id`` names) in the node's experiment."""
        tags = {**run.as_tags(), **{str(k): str(v) for k, v in (node.get("tags") or {}).items()}}
        if node.get("run_id"):  # resuming a run: tag it with this run's values
            for k, v in tags.items():
                client.set_tag(node.run_id, k, v)
            return
        exp = _experiment_id(client, node.experiment_name, node.get("artifact_location"))
        name = node.get("run_name") or run.job or run.output_dir.name
        node.run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id

    def finish(self, node: Any, run: RunInfo, failed: bool = False) -> list[str]:
        from mlflow import MlflowClient

        from clustercam.reporting.folder import run_files

        run_id, uri = node.get("run_id"), str(node.get("tracking_uri") or "")
        if not run_id:
            return []
        client, sent = MlflowClient(uri or None), self._sent.pop(run_id, set())
        for rel in run_files(run.output_dir):
            if rel.as_posix() not in sent:
                parent = rel.parent.as_posix()
                client.log_artifact(run_id, str(run.output_dir / rel), None if parent == "." else parent)
        if client.get_run(run_id).info.status == "RUNNING":  # Lightning never ended it (an early
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")  # error, fast_dev_run)
        if local_store(uri) is not None:
            return [f"MLflow: mlflow ui --backend-store-uri {uri}"]
        exp = client.get_run(run_id).info.experiment_id
        return [f"MLflow: {uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"] if is_remote(uri) \
            else [f"MLflow: run {run_id} in {uri}"]
