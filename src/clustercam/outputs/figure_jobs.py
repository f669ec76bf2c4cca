"""Figure jobs drawn on every core of the machine at the end of a run.

Drawing a matplotlib figure holds the GIL, so threads do not draw two figures at once; at
the end of a run the main process is idle while the figures are drawn, so
:func:`run_figure_jobs` forks one worker process per available core and hands each a share
of the jobs (a job draws and saves a few figures: one image's, one class's galleries). A
forked worker inherits the jobs (closures over the run's data, never pickled), draws them
with the same code as the serial path, saves them through its own :class:`FigureWriter` and
returns their paths, so the files are the same as one process would write. Where ``fork``
is not available (Windows), on one core, or for a single job, the jobs run one after the
other in this process; if a worker dies (killed for memory), they all run here again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
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
    pool, and the cores are the figure workers' to use."""
    torch.set_num_threads(1)


def _run(i: int) -> list[Path]:
    with FigureWriter() as writer:
        return _JOBS[i](writer.save)


def run_figure_jobs(jobs: Sequence[FigureJob], workers: int | None = None) -> list[Path]:
    """Run the figure ``jobs`` and return the paths they wrote, in job order.

    Args:
        jobs: each draws and saves its figures with the ``save`` function it is given.
        workers: processes to draw in (None: :func:`figure_workers`); 1, or a platform
            without ``fork``, runs the jobs here, one after the other.

    Returns:
        The paths of every job, in the order of ``jobs``.
    """
    global _JOBS
    n = min(figure_workers() if workers is None else int(workers), len(jobs))
    if n > 1 and "fork" in multiprocessing.get_all_start_methods():
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        _JOBS = jobs
        try:
            with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"),
                                     initializer=_start_worker) as pool:
                return [p for paths in pool.map(_run, range(len(jobs))) for p in paths]
        except BrokenProcessPool as err:  # a worker died (killed for memory?): draw them here
            log.warning("figure workers failed (%s): drawing the figures in this process", err)
        finally:
            _JOBS = ()
    paths: list[Path] = []
    with one_thread(torch.device("cpu")), FigureWriter() as writer:
        for job in jobs:
            paths += job(writer.save)
    return paths

