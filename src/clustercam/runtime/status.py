"""The run's status, always on disk: ``status.json`` in the run folder.

``running`` when a run starts, then ``finished``, ``failed`` (with the one-line reason),
``diverged`` or ``interrupted`` (SIGTERM, Ctrl+C) when it ends; a run that was killed
(SIGKILL, a lost node) stays ``running``. Written atomically on rank zero, so a sweep's
aggregation can tell finished jobs from failed and unfinished ones. ``metrics.json`` gets the
final ``status`` too.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from clustercam import outputs
from clustercam.exceptions import TrainingDivergedError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

STATES = ("running", "finished", "failed", "diverged", "interrupted")
DONE = "finished"


def _rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only  # not at import: studies read status too

    return rank_zero_only.rank == 0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def write_status(run_dir: str | Path, status: str, message: str | None = None,
                 **details: Any) -> Path:
    """Record ``status`` (one of :data:`STATES`) in ``<run_dir>/status.json`` atomically;
    ``running`` starts the file afresh, the others keep its start time and details."""
    if status not in STATES:
        raise ValueError(f"status must be one of {STATES}, got {status!r}")
    path = Path(run_dir) / outputs.STATUS
    entry: dict[str, Any] = {"status": status, "message": message, "updated": _now(), **details}
    if status == "running":
        entry.update(started=entry["updated"], pid=os.getpid(), host=socket.gethostname())
    return outputs.write_json(path, entry, merge=status != "running")


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``status.json`` of a run folder, or None where there is none (or it is unreadable)."""
    path = Path(run_dir) / outputs.STATUS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_skipped_inputs(run_dir: str | Path, datamodule: Any) -> None:
    """``skipped_inputs.csv`` (file, reason) for the inputs the datamodule left out, and their
    count in ``status.json``; when none were skipped, no file (an earlier run's is removed)."""
    if not _rank_zero():
        return
    skipped = list(getattr(datamodule, "skipped_inputs", None) or [])
    path = Path(run_dir) / outputs.SKIPPED_INPUTS
    if not skipped:
        path.unlink(missing_ok=True)
        return
    outputs.write_csv(path, [vars(s) for s in skipped], outputs.SKIPPED_INPUT_COLUMNS)
    outputs.write_json(Path(run_dir) / outputs.STATUS, {"skipped_inputs": len(skipped)}, merge=True)
    log.info("the %d skipped input(s) are listed in %s", len(skipped), path)


def one_line(exc: BaseException) -> str:
    """A failure in one line: the user-error message, else ``Type: first line``."""
    from clustercam.runtime.errors import user_error_message

    message = user_error_message(exc)
    if message is not None:
        return message.removeprefix("error: ").splitlines()[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _Signals:
    """SIGTERM (and SIGINT) raise KeyboardInterrupt, which Lightning shuts down gracefully,
    and are remembered so that the exit that follows is known as an interruption."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name
        raise KeyboardInterrupt(self.received)

    @contextmanager
    def installed(self) -> Iterator[_Signals]:
        main = threading.current_thread() is threading.main_thread()
        if main:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


def _outcome(exc: BaseException, signals: _Signals) -> tuple[str, str, dict[str, Any]]:
    if isinstance(exc, TrainingDivergedError):
        return "diverged", str(exc), dict(getattr(exc, "details", {}) or {})
    # Lightning turns a KeyboardInterrupt into sys.exit(1) after its graceful shutdown
    if signals.received or isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
        return "interrupted", f"{signals.received or 'SIGINT'} received", {}
    if isinstance(exc, SystemExit):
        return "failed", f"exit status {exc.code}", {}
    return "failed", one_line(exc), {}


def track_status(run: F) -> F:
    """Decorate ``run(cfg)``: ``status.json`` says ``running`` from the start and how the run
    ended; SIGTERM ends it like Ctrl+C (Lightning's graceful shutdown) with exit status 143."""

    @functools.wraps(run)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        out = Path(cfg.paths.output_dir)
        rank_zero = _rank_zero()
        if rank_zero:
            write_status(out, "running")
        signals = _Signals()
        try:
            with signals.installed():
                result = run(cfg, *args, **kwargs)
        except BaseException as exc:
            status, message, details = _outcome(exc, signals)
            if rank_zero:
                write_status(out, status, message, **details)
                outputs.write_json(out / outputs.METRICS, {"status": status}, merge=True)
            if status == "interrupted" and signals.received == "SIGTERM":
                log.error("interrupted (SIGTERM): %s says so; ckpt_path=last resumes training",
                          out / outputs.STATUS)
                raise SystemExit(128 + signal.SIGTERM) from None
            raise
        if rank_zero:
            write_status(out, DONE)
            outputs.write_json(out / outputs.METRICS, {"status": DONE}, merge=True)
        return result

    return wrapper  # type: ignore[return-value]


# -- what a sweep's aggregation says about the runs that did not finish ---------------------
def _alive(entry: dict[str, Any]) -> bool | None:
    """Whether the process of a ``running`` entry still runs (None: another host, unknown)."""
    pid = entry.get("pid")
    if not isinstance(pid, int) or entry.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_states(paths: Any) -> list[tuple[Path, dict[str, Any]]]:
    """(run folder, its status.json) for every run at or under ``paths`` (a folder or a list),
    in folder order; runs written before status.json existed are not listed."""
    roots = [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]
    found: dict[Path, dict[str, Any]] = {}
    for root in roots:
        files = [root / outputs.STATUS] if (root / outputs.STATUS).is_file() else []
        files += sorted(root.rglob(outputs.STATUS)) if root.is_dir() else []
        for f in files:
            entry = read_status(f.parent)
            found.setdefault(f.parent, entry or {"status": "failed", "message": "unreadable status.json"})
    return sorted(found.items())


def is_finished(run_dir: str | Path) -> bool:
    """False only for a run whose status.json says it did not finish (older runs: True)."""
    entry = read_status(run_dir)
    return entry is None or entry.get("status") == DONE


def unfinished_report(paths: Any) -> str:
    """Markdown: how many runs under ``paths`` did not finish, by status, and a line for each
    (folder, status, reason); empty when all finished. Aggregations append it, so that a
    table over a sweep says which jobs it leaves out."""
    states = run_states(paths)
    bad = [(run, e) for run, e in states if e.get("status") != DONE]
    if not bad:
        return ""
    counts: dict[str, int] = {}
    lines = []
    for run, e in bad:
        status = str(e.get("status"))
        if status == "running":
            alive = _alive(e)
            status = {True: "running", False: "killed"}.get(alive, "running or killed")  # type: ignore[arg-type]
        counts[status] = counts.get(status, 0) + 1
        reason = f": {e['message']}" if e.get("message") else ""
        lines.append(f"- `{run}`: {status}{reason}")
    by = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return (f"## Runs that did not finish\n\n{len(bad)} of {len(states)} runs did not finish "
            f"({by}); the tables above leave them out.\n\n" + "\n".join(lines) + "\n")
