"""The concept callbacks return the heap pages a batch freed (a 10,000-image run stays flat)."""

from __future__ import annotations

import sys

import pytest

from clustercam.callbacks.memory import _trim, release_freed_memory


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
