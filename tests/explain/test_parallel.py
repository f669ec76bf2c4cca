"""The concept pipeline's CPU threads: same bits as a serial run, errors raised, threads restored."""

from __future__ import annotations

import pytest
import torch

from clustercam.explain.concepts import ConceptBatch, ConceptSettings, parallel, run_concepts
from clustercam.explain.concepts.image.kmeans import _eigh_vectors


def _run(a: torch.Tensor, threads: int) -> ConceptBatch:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        w = torch.randn(10, a.shape[1], generator=torch.Generator().manual_seed(1))
        head = lambda x: x.mean((2, 3)) @ w.T  # noqa: E731
        return run_concepts(head, a, torch.arange(len(a)) % 10,
                            settings=ConceptSettings(n_concepts=4, sub_concepts=2, n_init=3, fidelity=True))
    finally:
        torch.set_num_threads(before)


def test_the_threaded_pipeline_gives_the_serial_results_bit_for_bit(monkeypatch) -> None:
    from clustercam.explain.concepts.image import batch as pipeline

    workers: list[int] = []
    real = pipeline.run_stages
    monkeypatch.setattr(pipeline, "run_stages", lambda f, t, n: (workers.append(n), real(f, t, n))[1])
    a = torch.relu(torch.randn(6, 96, 6, 6, generator=torch.Generator().manual_seed(0)) - 0.5)
    with torch.inference_mode():  # as in Lightning's test loop: per thread, the tasks' too
        threaded = _run(a, 2)
    one_thread = _run(a, 1)
    from clustercam.explain.concepts.image import kmeans

    monkeypatch.setattr(kmeans, "cpu_workers", lambda device: 0)
    monkeypatch.setattr(pipeline, "cpu_workers", lambda device: 0)
    two_intra_op = _run(a, 2)  # serial, each op on two threads (the code before the tasks)
    assert workers == [2, 0, 0]
    for serial in (one_thread, two_intra_op):
        _assert_same(serial, threaded)


def _assert_same(serial: ConceptBatch, threaded: ConceptBatch) -> None:
    serial, threaded = vars(serial), vars(threaded)
    assert set(serial) == set(threaded)
    for key, value in serial.items():
        other = threaded[key]
        if key == "metrics":  # the seconds are wall time
            value, other = ({m: v for m, v in d.items() if m != "seconds"} for d in (value, other))
        if isinstance(value, torch.Tensor):
            assert torch.equal(value.nan_to_num(-7.0), other.nan_to_num(-7.0)), key
        elif isinstance(value, dict):
            assert value.keys() == other.keys()
            assert all(torch.equal(value[c].nan_to_num(-7.0), other[c].nan_to_num(-7.0)) for c in value), key
        else:
            assert value == other, key


def test_split_eigh_gives_the_one_call_vectors_and_layout() -> None:
    x = torch.randn(40, 50, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cov = x.mT @ x
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = _eigh_vectors(cov)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with parallel.one_thread(cov.device):
        ref = torch.linalg.eigh(cov)[1]
    assert torch.equal(got, ref) and got.stride() == ref.stride()


def test_run_stages_runs_every_task_once_then_raises_the_first_error_and_restores_threads() -> None:
    before = torch.get_num_threads()
    seen: list[tuple[int, str]] = []

    def first(i: int):
        return lambda: (seen.append((i, "first")), i * 10)[1]

    def then(i: int, r: int):
        def task() -> None:
            assert torch.get_num_threads() == 1  # one intra-op thread per task
            seen.append((r, "then"))
        return [task, task]

    assert parallel.run_stages([first(0), first(1), first(2)], then, workers=2) == [0, 10, 20]
    assert parallel.run_stages([first(3)], lambda i, r: [], workers=0) == [30]
    assert sorted(seen) == [(0, "first"), (0, "then"), (0, "then"), (1, "first"), (2, "first"),
                            (3, "first"), (10, "then"), (10, "then"), (20, "then"), (20, "then")]
    assert torch.get_num_threads() == before

    def broken(i: int, r: int):
        def task() -> None:
            raise ValueError(f"bad task {r}")
        return [task]

    with pytest.raises(ValueError, match="bad task"):
        parallel.run_stages([first(0), first(1)], broken, workers=2)
    assert torch.get_num_threads() == before


def test_labels_beyond_n_concepts_are_an_error_not_a_silent_count() -> None:
    from clustercam.explain.concepts.image.extract import concept_counts

    assert concept_counts(torch.tensor([[0, 2, -1, 2]]), 3).tolist() == [[1, 0, 2]]
    with pytest.raises(ValueError, match="up to 3, beyond n_concepts=3"):
        concept_counts(torch.tensor([[0, 3]]), 3)


def test_no_threads_under_cpu_autocast() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert parallel.cpu_workers(torch.device("cpu")) == 2
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert parallel.cpu_workers(torch.device("cpu")) == 0
        assert parallel.cpu_workers(torch.device("meta")) == 0
    finally:
        torch.set_num_threads(before)


def test_call_all_returns_results_in_task_order_and_submits_the_costliest_first(monkeypatch) -> None:
    before, real = torch.get_num_threads(), parallel.pool
    submitted: list[int] = []
    threads: list[int] = []

    class Recording:  # the real pool, noting the order in which tasks reach its queue
        def __init__(self, workers: int) -> None:
            self.pool = real(workers)

        def submit(self, fn, modes, task):
            submitted.append(task.index)
            return self.pool.submit(fn, modes, task)

    def task(i: int):
        def run() -> int:
            threads.append(torch.get_num_threads())
            return i * i
        run.index = i
        return run

    monkeypatch.setattr(parallel, "pool", Recording)
    tasks = [task(i) for i in range(5)]
    assert parallel.call_all(tasks, workers=2, cost=[1, 1, 9, 1, 8]) == [0, 1, 4, 9, 16]
    assert submitted == [2, 4, 0, 1, 3]  # by decreasing cost, ties in order
    assert threads == [1] * 5  # one intra-op thread per task in the pool
    submitted.clear()
    assert parallel.call_all(tasks, workers=0, cost=[1, 1, 9, 1, 8]) == [0, 1, 4, 9, 16]
    assert submitted == []  # serial: no pool
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("workers", [0, 2])
def test_call_all_reports_each_task_as_it_ends_in_the_callers_thread(workers) -> None:
    import threading

    caller, seen = threading.get_ident(), []
    ended = threading.Event()

    def slow() -> str:  # ends after the second task has ended (threads) or simply first (serial)
        ended.wait(5 if workers else 0)
        return "slow"

    def fast() -> str:
        ended.set()
        return "fast"

    out = parallel.call_all([slow, fast, lambda: "third"], workers,
                            progress=lambda done, total: seen.append((done, total, threading.get_ident())))
    assert out == ["slow", "fast", "third"]
    assert seen == [(1, 3, caller), (2, 3, caller), (3, 3, caller)]


def test_call_all_stops_handing_out_tasks_once_one_fails() -> None:
    """A failing task started first (the costliest) though last in task order: the tasks not
    started by then never run, and of several failures the first in task order is raised."""
    import time

    ran: list[int] = []

    def task(i: int, fails: bool = False):
        def run() -> int:
            if fails:
                raise ValueError(f"task {i}")
            time.sleep(0.05)
            ran.append(i)
            return i
        return run

    with pytest.raises(ValueError, match="task 11"):
        parallel.call_all([task(i, fails=i == 11) for i in range(12)], workers=2, cost=[1] * 11 + [9])
    assert len(ran) <= 3  # the other worker's task and at most a couple more, not the 11
    with pytest.raises(ValueError, match="task 3"):  # 7 and 3 start first and both fail
        parallel.call_all([task(i, fails=i in (3, 7)) for i in range(12)], workers=2,
                          cost=[8 if i == 3 else 9 if i == 7 else 1 for i in range(12)])
