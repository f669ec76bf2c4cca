"""Figure jobs drawn on every core of the machine at the end of a run.

Drawing a matplotlib figure holds the GIL, so threads do not draw two figures at once; at
the end of a run the main process is idle while the figures are drawn, so
:func:`run_figure_jobs` forks one worker process per available core and hands each a share
of the jobs (a job draws and saves a few figures: one image's, one class's galleries),
the costliest first so that no large job starts last while the other cores idle. A
forked worker inherits the jobs (closures over the run's data, never pickled), draws them
with the same code as the serial path, saves them through its own :class:`FigureWriter` and
returns their paths, so the files are the same as one process would write. Where ``fork``
is not available (Windows), on one core, or for a single job, the jobs run one after the
other in this process; if a worker dies (killed for memory), they all run here again.

The parent's objects are frozen out of the garbage collector across the fork
(:func:`gc.freeze`, as Python's docs advise before ``fork()``), so that the workers'
collections neither scan the run's whole heap (torch, Lightning, its data) nor touch its
pages (copy on write); a worker collects only between jobs (a full collection after each,
none while drawing): matplotlib's figures hold reference cycles (a gallery's canvas is
~6 MB), so collecting never would let each job's figures pile up (the CPU and memory
measured: docs/design/decisions.md, "Figures").
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from clustercam.explain.concepts.parallel import one_thread
from clustercam.outputs.figure_writer import FigureWriter

log = logging.getLogger(__name__)

#: a job: given a ``save(fig, path, dpi) -> Path`` function, draws and saves its figures
#: and returns their paths, in order
FigureJob = Callable[[Callable[..., Path]], list[Path]]

_JOBS: Sequence[FigureJob] = ()  # the jobs a forked worker inherits


MAX_WORKERS = 8  # bounds the memory the workers add (their images and figure buffers) on many cores


def figure_workers() -> int:
    """The cores this process may run on (its CPU affinity where known), at most ``MAX_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def _start_worker() -> None:
    """A forked worker draws on one torch thread, for good: the figures' small tensor
    operations (resizing a few maps, ``ToTensor``) cost several times more CPU on a thread
    pool, and the cores are the figure workers' to use. Its garbage collector runs between
    jobs only (:func:`_run`)."""
    torch.set_num_threads(1)
    gc.disable()


def _run(i: int) -> list[Path]:
    try:
        with FigureWriter() as writer:
            return _JOBS[i](writer.save)
    finally:  # the cycles of the job's figures (gc is off in a worker)
        gc.collect()


def dispatch_order(costs: Sequence[float] | None, n: int) -> list[int]:
    """The indices of ``n`` jobs, costliest first (ties, and ``costs=None``: in job order).

    Raises:
        ValueError: when ``costs`` does not give one number per job.
    """
    if costs is None:
        return list(range(n))
    if len(costs) != n:
        raise ValueError(f"figure jobs: {len(costs)} costs for {n} jobs")
    return sorted(range(n), key=lambda i: -float(costs[i]))


def figure_job_paths(jobs: Sequence[FigureJob], workers: int | None = None, costs: Sequence[float] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> list[list[Path]]:
    """As :func:`run_figure_jobs`, but each job's paths in a list of their own (to log the
    paths of several kinds of jobs drawn in one pool apart).

    Args:
        jobs: each draws and saves its figures with the ``save`` function it is given.
        workers: processes to draw in (None: :func:`figure_workers`).
        costs: a rough cost of each job; the costliest start first (None: in job order).
        progress: called ``(done, total)`` in this process as the jobs end (in dispatch order).

    Returns:
        Per job, in the order of ``jobs``, the paths it wrote.

    Raises:
        ValueError: when ``costs`` does not give one number per job.
    """
    global _JOBS
    order, done = dispatch_order(costs, len(jobs)), [[] for _ in jobs]  # done[i]: job i's paths
    note = progress or (lambda k, total: None)
    n = min(figure_workers() if workers is None else int(workers), len(jobs))
    if n > 1 and "fork" in multiprocessing.get_all_start_methods():
        from concurrent.futures.process import BrokenProcessPool

        _JOBS = jobs
        gc.freeze()  # the parent's objects out of the workers' collections (and pages)
        try:  # chunksize 1: the workers take the jobs in ``order``
            with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"),
                                     initializer=_start_worker) as pool:
                for k, (i, paths) in enumerate(zip(order, pool.map(_run, order)), 1):
                    done[i] = paths
                    note(k, len(jobs))
                return done
        except BrokenProcessPool as err:  # a worker died (killed for memory?): draw them here
            log.warning("figure workers failed (%s): drawing the figures in this process", err)
        finally:
            _JOBS = ()
            gc.unfreeze()
    with one_thread(torch.device("cpu")), FigureWriter() as writer:
        for k, i in enumerate(order, 1):
            done[i] = jobs[i](writer.save)
            note(k, len(jobs))
    return done


def run_figure_jobs(jobs: Sequence[FigureJob], workers: int | None = None,
                    costs: Sequence[float] | None = None) -> list[Path]:
    """Run the figure ``jobs`` and return the paths they wrote, in job order.

    Args:
        jobs: each draws and saves its figures with the ``save`` function it is given.
        workers: processes to draw in (None: :func:`figure_workers`); 1, or a platform
            without ``fork``, runs the jobs here, one after the other.
        costs: a rough cost of each job (e.g. the panels it draws): the workers take the
            costliest first, so the last job to start is a short one. None: in job order.

    Returns:
        The paths of every job, in the order of ``jobs`` (whatever order they ran in).

    Raises:
        ValueError: when ``costs`` does not give one number per job.
    """
    return [p for paths in figure_job_paths(jobs, workers, costs) for p in paths]

