"""outputs.run_figure_jobs: figures drawn in forked workers are the files one process writes
(same bytes, same order), the costliest jobs start first, a job's error reaches the caller,
torch's threads and the garbage collector come back as they were; and the concept
callback's figures and galleries through it, forked or not, byte for byte."""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from clustercam import outputs  # noqa: E402
from clustercam.callbacks.concept_figures import class_gallery_figures, concept_figures  # noqa: E402
from clustercam.explain.concepts.classes.passes import ClassGallery  # noqa: E402
from clustercam.explain.concepts.image.settings import ConceptSettings  # noqa: E402
from clustercam.explain.concepts.vocabulary import ConceptConfig  # noqa: E402
from clustercam.explain.plots.concepts import concept_figure  # noqa: E402
from clustercam.explain.plots.fidelity import ORDERS  # noqa: E402
from clustercam.outputs import figure_jobs  # noqa: E402

FORK = "fork" in multiprocessing.get_all_start_methods()


def drawing_job(out: Path, i: int):
    """Job i: one concept figure of its own random image, and the process that drew it."""
    def job(save):
        g = torch.Generator().manual_seed(i)
        image, maps = torch.rand(3, 24, 24, generator=g), torch.rand(3, 24, 24, generator=g)
        fig = concept_figure(image, maps, [2, 1, 0], [30.0 + i, 10.0, math.nan], title=f"job {i}")
        (out / f"{i}.pid").write_text(str(os.getpid()))
        return [save(fig, out / f"{i}.png", 100)]
    return job


def files(folder: Path, suffix: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"*{suffix}"))}


def test_forked_workers_write_the_files_of_one_process(tmp_path) -> None:
    serial, forked = tmp_path / "serial", tmp_path / "forked"
    for d in (serial, forked):
        d.mkdir()
    one = outputs.run_figure_jobs([drawing_job(serial, i) for i in range(5)], workers=1)
    two = outputs.run_figure_jobs([drawing_job(forked, i) for i in range(5)], workers=2)
    assert one == [serial / f"{i}.png" for i in range(5)] and two == [forked / f"{i}.png" for i in range(5)]
    assert files(serial, ".png") == files(forked, ".png") and len(files(serial, ".png")) == 5
    assert len(set(files(serial, ".png").values())) == 5  # five different figures
    assert {int(v) for v in files(serial, ".pid").values()} == {os.getpid()}
    if FORK:  # drawn in other processes
        assert os.getpid() not in {int(v) for v in files(forked, ".pid").values()}


def test_dispatch_order_is_costliest_first_ties_in_job_order() -> None:
    assert figure_jobs.dispatch_order([1, 5, 2, 5, 9], 5) == [4, 1, 3, 2, 0]
    assert figure_jobs.dispatch_order(None, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="2 costs for 3 jobs"):
        figure_jobs.dispatch_order([1, 2], 3)


def test_jobs_run_costliest_first_and_their_paths_come_back_in_job_order(tmp_path) -> None:
    ran: list[int] = []

    def job(i: int):
        return lambda save: ran.append(i) or [tmp_path / f"{i}a", tmp_path / f"{i}b"]
    paths = outputs.run_figure_jobs([job(i) for i in range(4)], workers=1, costs=[3, 10, 0.5, 7])
    assert ran == [1, 3, 0, 2]
    assert paths == [tmp_path / f"{i}{s}" for i in range(4) for s in "ab"]
    per_job = figure_jobs.figure_job_paths([job(i) for i in range(3)], workers=1, costs=[1, 2, 3])
    assert per_job == [[tmp_path / f"{i}a", tmp_path / f"{i}b"] for i in range(3)]


def test_the_pool_is_handed_the_jobs_costliest_first(tmp_path, monkeypatch) -> None:
    """pool.map (chunksize 1) hands the workers the jobs in the order it is given them."""
    mapped: list[list[int]] = []

    class Pool:  # records what the pool is asked to run, runs it here
        def __init__(self, n, **kwargs):
            assert n == 2 and kwargs["mp_context"].get_start_method() == "fork"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, items):
            mapped.append(list(items))
            return [fn(i) for i in mapped[-1]]
    if not FORK:
        pytest.skip("no fork")
    monkeypatch.setattr(figure_jobs, "ProcessPoolExecutor", Pool)
    paths = outputs.run_figure_jobs([lambda save, i=i: [tmp_path / str(i)] for i in range(4)], workers=2,
                                    costs=[1, 4, 2, 3])
    assert mapped == [[1, 3, 2, 0]] and paths == [tmp_path / str(i) for i in range(4)]


@pytest.mark.skipif(not FORK, reason="no fork")
def test_forked_workers_start_the_costliest_job_first(tmp_path) -> None:
    """Two workers, five jobs of 0.25 s: the costliest starts at once, the cheapest only
    after two jobs ended; the paths come back in job order all the same."""
    def job(i: int):
        def draw(save):
            (tmp_path / f"{i}.start").write_text(repr(time.monotonic()))
            time.sleep(0.25)
            return [tmp_path / f"{i}.png"]
        return draw
    paths = outputs.run_figure_jobs([job(i) for i in range(5)], workers=2, costs=[0, 1, 2, 3, 4])
    assert paths == [tmp_path / f"{i}.png" for i in range(5)]
    start = [float((tmp_path / f"{i}.start").read_text()) for i in range(5)]
    assert start[4] < start[0] and start[3] < start[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_raises_in_the_caller(tmp_path, workers) -> None:
    def bad(save):
        raise ValueError("job 1 could not draw")
    with pytest.raises(ValueError, match="job 1 could not draw"):
        outputs.run_figure_jobs([drawing_job(tmp_path, 0), bad], workers=workers)
    assert gc.get_freeze_count() == 0  # the parent's objects are collectable again


@pytest.mark.skipif(not FORK, reason="no fork")
def test_the_parent_objects_are_frozen_across_the_fork_only(tmp_path) -> None:
    """The workers inherit the parent's objects frozen out of their collections (the count
    they see) and draw with the collector off; the parent's objects are unfrozen again when
    the pool is done, its collector still on."""
    def job(save):
        (tmp_path / f"{os.getpid()}.frozen").write_text(f"{gc.get_freeze_count()} {gc.isenabled():d}")
        time.sleep(0.1)
        return []
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    outputs.run_figure_jobs([job, job, job], workers=2)
    seen = [p.read_text().split() for p in tmp_path.glob("*.frozen")]
    assert seen and min(int(n) for n, _ in seen) > 1000  # torch, pytest, ... of this process
    assert {on for _, on in seen} == {"0"}
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_a_worker_collects_the_cycles_of_each_job_when_it_ends(monkeypatch) -> None:
    """With the collector off (as in a worker), the reference cycles a job left (a
    matplotlib figure's) are freed when the job ends."""
    class Node:
        pass
    left: list[weakref.ref] = []

    def job(save):
        a, b = Node(), Node()
        a.b, b.a = b, a  # a cycle: refcounts alone never free it
        left.append(weakref.ref(a))
        return []
    monkeypatch.setattr(figure_jobs, "_JOBS", [job])
    gc.disable()
    try:
        assert figure_jobs._run(0) == [] and len(left) == 1 and left[0]() is None
    finally:
        gc.enable()


def test_torch_runs_on_one_thread_while_drawing_and_gets_its_threads_back() -> None:
    before, seen = torch.get_num_threads(), []
    torch.set_num_threads(2)
    try:
        outputs.run_figure_jobs([lambda save: seen.append(torch.get_num_threads()) or []], workers=1)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_callback_figures_are_the_same_forked_or_not(tmp_path, monkeypatch) -> None:
    """concept_figures (2 images, concepts + sub-concepts, fidelity) and the class galleries
    (2 groups) with one worker and with two: the same files, byte for byte."""
    s = ConceptSettings(method="cgap", n_concepts=3, sub_concepts=2, n_init=1)
    g = torch.Generator().manual_seed(0)
    f, c, n, k = len(s.details), len(s.configs), s.l_max, s.n_sub
    data = SimpleNamespace(
        idx=torch.arange(2), maps=torch.rand(2, f, n, 4, 4, generator=g),
        sub_maps=torch.rand(2, f, n, k, 4, 4, generator=g), channels=torch.full((2, c, n), 4),
        importance=torch.rand(2, c, n, generator=g) * 50, p_target=torch.full((2,), 0.9),
        sub_channels=torch.full((2, f, n, k), 2), sub_importance=torch.rand(2, f, n, k, generator=g),
        fidelity_curves=torch.rand(2, c, len(ORDERS), 2, n + 1, generator=g))
    images = {i: torch.rand(3, 16, 16, generator=g) for i in range(4)}
    dm = SimpleNamespace(display_image=lambda i: images[int(i)])
    cfg = ConceptConfig("cgap", "kmeans", 3)
    galleries = [ClassGallery(group, cfg, src, {
        "index": torch.tensor([[group, 2], [3, -1], [1, 0]]), "maps": torch.rand(3, 2, 4, 4, generator=g),
        "channels": [3, 2, 0], "stability": [0.5, 1.0, math.nan], "importance": [5.0, 1.0, math.nan],
        "importance_std": [1.0, 0.5, math.nan], "title": f"group {group} {src}"})
        for group, src in ((0, "coassociation"), (1, "nmf"))]
    written = {}
    for workers in (1, 2):
        monkeypatch.setattr(figure_jobs, "figure_workers", lambda w=workers: w)
        out = tmp_path / str(workers)
        paths = concept_figures(s, dm, data, ["a", "b"], ["x", "y"], out, max_figures=None)
        paths += class_gallery_figures(galleries, dm, ["x", "y"], [cfg], out)
        written[workers] = [(str(p.relative_to(out)), p.read_bytes()) for p in paths]
    assert len(written[1]) == 2 * 2 + 1 + 2  # figures, fidelity, galleries
    assert written[1] == written[2]
    assert outputs.CONCEPT_FIDELITY_FIGURE in {name for name, _ in written[1]}


def test_without_fork_the_jobs_run_in_this_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(figure_jobs.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    paths = outputs.run_figure_jobs([drawing_job(tmp_path, i) for i in range(2)], workers=2)
    assert paths == [tmp_path / "0.png", tmp_path / "1.png"]
    assert {int(v) for v in files(tmp_path, ".pid").values()} == {os.getpid()}


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_counts_the_jobs_as_they_end_in_this_process(tmp_path, workers) -> None:
    """One call a job, (done, total), from the parent (the forked workers cannot report)."""
    import os

    parent, seen = os.getpid(), []

    def job(i: int):
        return lambda save: [tmp_path / f"{i}"]
    per_job = figure_jobs.figure_job_paths([job(i) for i in range(3)], workers=workers, costs=[1, 3, 2],
                                           progress=lambda done, total: seen.append((done, total, os.getpid())))
    assert per_job == [[tmp_path / f"{i}"] for i in range(3)]
    assert seen == [(1, 3, parent), (2, 3, parent), (3, 3, parent)]
