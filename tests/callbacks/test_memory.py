"""The concept callbacks return the heap pages a batch freed (a 10,000-image run stays flat)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clustercam.callbacks.memory import _trim, release_freed_memory
from clustercam.runtime.allocator import heap_free_bytes


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or _trim() is None, reason="glibc only")
def test_freed_heap_blocks_pinned_by_later_ones_go_back_to_the_os() -> None:
    # 125 MiB of 64 KiB blocks (below glibc's mmap threshold: served from the heap), then
    # blocks allocated after them, which pin the heap's top so that free() cannot shrink it
    blocks = [bytearray(64 * 1024) for _ in range(2000)]
    pinned = [bytearray(64 * 1024) for _ in range(20)]
    before = _rss_mib()
    del blocks
    freed = _rss_mib()
    assert release_freed_memory() is True
    after = _rss_mib()
    assert before - freed < 20  # glibc kept the freed pages...
    assert freed - after > 100  # ...until the callback's call handed them back
    assert len(pinned) == 20


def test_without_malloc_trim_it_is_a_no_op(monkeypatch) -> None:
    from clustercam.callbacks import memory

    monkeypatch.setattr(memory, "_trim", lambda: None)
    assert memory.release_freed_memory() is False


def test_batch_trim_trims_every_batch_unless_freed_blocks_are_kept_then_at_each_growth_by_the_first(monkeypatch) -> None:
    """With glibc's defaults every batch hands its freed heap back; where the process keeps
    freed blocks (the CLI's allocator) the first batch's free bytes are the blocks each
    batch reuses, and the heap is trimmed only when its free bytes pass twice that, then
    each time they have grown by as much again since the last trim (the free bytes still
    count what a trim handed back, so a fixed threshold would trim every batch once passed)."""
    from clustercam.callbacks import memory

    trims: list[int] = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: trims.append(1) or True)
    free = iter([300, 600, 601, 700, 901, 902, 902])
    monkeypatch.setattr(memory, "heap_free_bytes", lambda: next(free) << 20)
    monkeypatch.setattr(memory, "keeps_freed_memory", lambda: False)
    plain = memory.BatchTrim()
    assert [plain() for _ in range(3)] == [True, True, True] and len(trims) == 3
    monkeypatch.setattr(memory, "keeps_freed_memory", lambda: True)
    free = iter([300, 600, 601, 700, 901, 902, 902])
    kept = memory.BatchTrim()
    # 300 MiB: the base; 600 <= 2 x 300; 601 > 600: trim, next at 601 + 300; 700, 901 <= 901; 902: trim
    assert [kept() for _ in range(7)] == [False, False, True, False, False, True, False]
    assert len(trims) == 5
    monkeypatch.setattr(memory, "heap_free_bytes", lambda: None)  # no mallinfo2 (glibc < 2.33): every batch
    assert memory.BatchTrim()() is True


def _fake_system(tmp_path, cgroup_line: str, files: dict[str, str], available_kib: int = 8 * 2**20):
    """A /proc (meminfo, self/cgroup) and a cgroup tree under tmp_path."""
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "meminfo").write_text(f"MemTotal:       32000000 kB\nMemAvailable:   {available_kib} kB\n")
    (tmp_path / "proc" / "self" / "cgroup").write_text(cgroup_line + "\n")
    for name, text in files.items():
        (tmp_path / "cg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / name).write_text(text)
    return str(tmp_path / "proc"), str(tmp_path / "cg")


@pytest.mark.parametrize(("line", "files", "expected_gib"), [
    ("0::/", {}, 8),  # no cgroup files: MemAvailable (8 GiB)
    ("0::/job", {"job/memory.max": "max\n", "job/memory.current": "1\n"}, 8),  # v2 without a limit
    ("0::/job", {"job/memory.max": f"{6 * 2**30}\n", "job/memory.current": f"{2**30}\n"}, 5),  # v2: 6 - 1 GiB
    ("4:memory:/slurm/job", {"memory/slurm/job/memory.limit_in_bytes": f"{4 * 2**30}",
                             "memory/slurm/job/memory.usage_in_bytes": f"{2**30}"}, 3),  # v1 at its path
    ("4:memory:/host/path", {"memory/memory.limit_in_bytes": f"{3 * 2**30}",  # v1, container: at the root
                             "memory/memory.usage_in_bytes": "0"}, 3),
    ("4:memory:/x", {"memory/x/memory.limit_in_bytes": "9223372036854771712",
                     "memory/x/memory.usage_in_bytes": "5"}, 8),  # v1's "no limit"
    # SLURM: the limit on the job, the task in a child without one; a parent's limit counts
    ("0::/slurm/job_7/step_0/task_0", {"slurm/job_7/step_0/task_0/memory.max": "max",
                                       "slurm/job_7/step_0/task_0/memory.current": f"{2**30}",
                                       "slurm/job_7/memory.max": f"{4 * 2**30}",
                                       "slurm/job_7/memory.current": f"{2**30}"}, 3),
    # page cache the kernel can drop is not used memory: 6 GiB used of which 4 inactive file pages
    ("0::/c", {"c/memory.max": f"{7 * 2**30}", "c/memory.current": f"{6 * 2**30}",
               "c/memory.stat": f"anon 1\ninactive_file {4 * 2**30}\nactive_file 5\n"}, 5),
    ("4:memory:/c", {"memory/c/memory.limit_in_bytes": f"{7 * 2**30}", "memory/c/memory.usage_in_bytes": f"{6 * 2**30}",
                     "memory/c/memory.stat": f"inactive_file 1\ntotal_inactive_file {4 * 2**30}\n"}, 5),
])
def test_available_memory_is_the_least_of_meminfo_and_the_cgroup_room(tmp_path, line, files, expected_gib) -> None:
    from clustercam.callbacks.memory import available_memory

    assert available_memory(*_fake_system(tmp_path, line, files)) == expected_gib * 2**30


def test_available_memory_is_none_where_nothing_says(tmp_path) -> None:
    from clustercam.callbacks.memory import available_memory

    assert available_memory(str(tmp_path / "nothing"), str(tmp_path / "none")) is None


class _Ranks:
    """A trainer of ``world_size`` ranks whose all_gather stacks this rank's tensor with the
    other ranks' ``others`` (what a DDP collective returns on every rank)."""

    def __init__(self, others: list[int]) -> None:
        import torch

        self.world_size = 1 + len(others)
        self.strategy = self
        self.root_device = torch.device("cpu")
        self._others = others

    def all_gather(self, t):
        import torch

        return torch.stack([t, *(torch.full_like(t, v) for v in self._others)])


def test_ranks_agree_on_the_sign_and_on_the_least_memory(monkeypatch) -> None:
    """One rank's non-negative first batch beside another's signed one: both take the signed
    verdict (the memory check would otherwise stop one rank and not the other: a hang)."""
    import torch

    from clustercam.callbacks import memory

    relu, signed = torch.rand(2, 4, 3, 3), torch.rand(2, 4, 3, 3) - 0.5
    assert not memory.signed_on_any_rank(_Ranks([]), relu) and memory.signed_on_any_rank(_Ranks([]), signed)
    assert memory.signed_on_any_rank(_Ranks([1]), relu)  # the other rank saw a negative value
    assert not memory.signed_on_any_rank(_Ranks([0, 0]), relu)
    monkeypatch.setattr(memory, "available_memory", lambda: 5 * 2**30)
    assert memory.least_available_memory(_Ranks([3 * 2**30, 2**62])) == 3 * 2**30  # 2**62: a rank that cannot tell
    assert memory.least_available_memory(_Ranks([])) == 5 * 2**30


@pytest.mark.skipif(heap_free_bytes() is None, reason="glibc >= 2.33 only (mallinfo2)")
def test_heap_free_bytes_counts_the_blocks_a_free_left_in_the_heap() -> None:
    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # 125 MiB from the heap (below the mmap threshold)
    pinned = [bytearray(64 * 1024) for _ in range(20)]  # after them: free() cannot shrink the heap's top
    before = heap_free_bytes()
    del blocks
    assert heap_free_bytes() - before > 100 * 2**20
    assert len(pinned) == 20


@pytest.mark.skipif(heap_free_bytes() is None, reason="glibc only")
@pytest.mark.parametrize(("env", "kept"), [({}, True), ({"CLUSTERCAM_KEEP_FREED_MEMORY": "0"}, False),
                                           ({"MALLOC_TOP_PAD_": "0"}, False)])
def test_configure_process_says_what_it_set_and_keeps_freed_memory_agrees(env, kept) -> None:
    code = ("import json; from clustercam.runtime.allocator import configure_process, keeps_freed_memory; "
            "a = configure_process(); print(json.dumps([a, keeps_freed_memory()]))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "CLUSTERCAM_KEEP", "THP_MEM"))}
    out = subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, text=True, check=True)
    setting, keeps = json.loads(out.stdout)
    assert setting == {"huge_pages": True, "keep_freed_memory": kept} and keeps is kept
