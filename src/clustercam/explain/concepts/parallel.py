"""CPU threads for the concept pipeline's many small tensor operations.

On a CPU most of a batch's concept work is thousands of small ops (k-means on 2,048 x 4
points, 64 x 64 eigendecompositions, per-cluster distance blocks) that torch's intra-op
threads do not split well. Independent pieces of work run instead side by side in Python
threads (torch releases the GIL inside its kernels), each with one intra-op thread, so the
cores stay busy. Every op is the same call as in one thread: the results are bit-identical
to a serial run (tests compare them).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

T = TypeVar("T")
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (process id, workers): none survive a fork
_LOCK = threading.Lock()


@contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """One CPU thread for LAPACK on many tiny matrices: its OpenMP threads gain nothing on a
    64 x 64 ``eigh`` and, when another process keeps a core busy, spin-wait for it (measured:
    0.4 ms a matrix with one thread, up to 80 ms with two on a busy 2-core machine)."""
    before = torch.get_num_threads()
    if device.type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` threads (made once, reused by every batch; a forked
    child makes its own, the parent's threads do not exist there)."""
    key = (os.getpid(), workers)
    with _LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix=f"clustercam-{workers}")
        return _POOLS[key]


def _modes() -> tuple[bool, bool]:
    return torch.is_inference_mode_enabled(), torch.is_grad_enabled()


def _single(modes: tuple[bool, bool], fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a pool thread under the caller's ``modes`` (inference mode and grad
    mode are per thread: Lightning's test loop runs under inference mode) with one
    intra-op thread (a pool thread's OpenMP setting starts at the default, all cores)."""
    torch.set_num_threads(1)
    with torch.inference_mode(modes[0]), torch.set_grad_enabled(modes[1]):
        return fn(*args)


@contextmanager
def _tasks(workers: int) -> Iterator[Callable[..., Future]]:
    """A ``submit(fn, *args)`` onto the pool, each call run by :func:`_single`; on the way
    out (also on an error) nothing it started is left running, and the caller's thread
    count is back."""
    before = torch.get_num_threads()
    modes = _modes()
    started: list[Future] = []

    def submit(fn: Callable[..., Any], *args: Any) -> Future:
        started.append(pool(workers).submit(_single, modes, fn, *args))
        return started[-1]

    try:
        torch.set_num_threads(1)
        yield submit
    finally:
        for f in started:
            f.cancel()
        wait(started)
        torch.set_num_threads(before)


def call_all(tasks: Sequence[Callable[[], T]], workers: int, cost: Sequence[float] | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[T]:
    """``[t() for t in tasks]``; with ``workers`` >= 2 over that many threads of one
    intra-op thread each, the tasks of largest ``cost`` started first (a long task
    started last would run alone at the end). Results in the order of ``tasks``;
    ``progress(done, total)`` is called in the caller's thread as each task ends."""
    note = progress or (lambda done, total: None)
    if workers < 2 or len(tasks) < 2:
        results = []
        for t in tasks:
            results.append(t())
            note(len(results), len(tasks))
        return results
    order = sorted(range(len(tasks)), key=lambda i: -cost[i]) if cost is not None else range(len(tasks))
    with _tasks(workers) as submit:
        futures = {i: submit(tasks[i]) for i in order}
        for done, f in enumerate(as_completed(futures.values()), 1):
            if f.exception() is not None:  # nothing more is started; the first failure in task order
                for g in futures.values():
                    g.cancel()
                wait(list(futures.values()))
                raise next(e for i in range(len(tasks))
                           if not futures[i].cancelled() and (e := futures[i].exception()) is not None)
            note(done, len(tasks))
        return [futures[i].result() for i in range(len(tasks))]


def cpu_workers(device: torch.device) -> int:
    """How many threads :func:`run_stages` should use on ``device``: torch's CPU threads
    on a CPU, 0 (run serially in the caller) on an accelerator, with one thread, or under
    CPU autocast (a per-thread state the tasks would not have)."""
    n = torch.get_num_threads()
    if device.type != "cpu" or n < 2 or torch.is_autocast_enabled("cpu"):
        return 0
    return n


def run_stages(first: Sequence[Callable[[], T]], then: Callable[[int, T], Sequence[Callable[[], Any]]],
               workers: int) -> list[T]:
    """Run ``first[i]()`` for every i, and as each returns r the tasks ``then(i, r)``;
    returns the ``first`` results in order.

    With ``workers`` >= 2 the tasks run in that many threads of one intra-op thread each
    (a task is queued as soon as what it needs exists; put the longest first); else in
    this thread, in order. The first error is raised once every started task has ended
    (and the caller's thread count restored), nothing left running.
    """
    if workers < 2:
        results = []
        for i, task in enumerate(first):
            results.append(task())
            for t in then(i, results[-1]):
                t()
        return results
    with _tasks(workers) as submit:
        stage = {submit(task): i for i, task in enumerate(first)}
        results_of = list(stage)
        pending = set(stage)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                result = f.result()  # raises the task's error
                if f in stage:
                    pending.update(submit(t) for t in then(stage.pop(f), result))
        return [f.result() for f in results_of]
