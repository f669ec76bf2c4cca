"""The process's memory: the heap a batch freed handed back to the operating system, and how
much the machine has available (:func:`available_memory`, for the class concepts' check).

Per batch, the concept callbacks free large temporaries (activations, distance blocks) and
keep a few small result tensors. glibc serves large blocks from its heap once its dynamic
mmap threshold has risen, and the small kept tensors pin that heap, so the freed pages are
never returned: a run over a large folder grows by ~0.75 MB per image (measured with
``test_resnet``, 256 px) though what it keeps is ~12 KB per image. ``malloc_trim(0)`` after
each batch returns those pages (the run's resident memory then stays flat). Where the process
keeps freed blocks for the next batch (the CLI's allocator, :mod:`clustercam.runtime.allocator`)
a trim every batch would hand back the very blocks the next forward reuses (it faulted them
all in again: 430k page faults in a 110-photo run against 223k), so :class:`BatchTrim` trims
there only each time the heap's free bytes have grown by the first batch's. Interleaved 110-photo
runs on 2 cores: class concepts off 109 against 122 ms a photo, the default 133 against 139;
peak RSS +5-7 %; 10,000 photos (``test_resnet``) 1,621 MiB against 1,596 MiB.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clustercam.runtime.allocator import c_library, heap_free_bytes, keeps_freed_memory


@functools.cache
def _trim():
    """The C library's ``malloc_trim``, or None where it has none (macOS, musl, Windows)."""
    try:
        return getattr(c_library(), "malloc_trim", None)
    except OSError:
        return None


class BatchTrim:
    """Freed heap handed back between batches (:func:`release_freed_memory`): after every
    batch where the process returns freed memory anyway (glibc's defaults); where it keeps
    freed blocks for the next batch (:mod:`clustercam.runtime.allocator`, the CLI's default)
    only each time the heap's free bytes have grown by as much as those after the first
    batch (the blocks every batch reuses): first at twice them, then at the free bytes of
    the last trim plus as much again. Trimming each batch made the next forward fault all
    its activations in again; never trimming lets the heap's gaps grow with the run. The
    free bytes still count the pages a trim handed back (glibc's ``mallinfo2``), so a
    fixed threshold, once passed, would trim every batch for the rest of the run."""

    def __init__(self) -> None:
        self.base: int | None = None
        self.limit = 0

    def __call__(self) -> bool:
        if keeps_freed_memory() and (free := heap_free_bytes()) is not None:
            if self.base is None:
                self.base = max(free, 1 << 20)
                self.limit = 2 * self.base
                return False
            if free <= self.limit:
                return False
            self.limit = free + self.base
        return release_freed_memory()


def release_freed_memory() -> bool:
    """Return freed heap pages to the OS (glibc's ``malloc_trim(0)``).

    Returns:
        True where it ran; False where the C library cannot (a no-op there).
    """
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True


def _stat(path: Path, key: str) -> int:
    """A counter of a cgroup's ``memory.stat`` (0 where it has none)."""
    try:
        for line in (path / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_room(proc: str, cgroup_root: str) -> list[int]:
    """Bytes left under each memory limit over this process: its cgroup's and every parent's
    (a SLURM job's limit sits on the job, its task in a child), v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``, less the usage without the page cache the kernel can drop
    (``inactive_file``); read at the cgroup's path or, inside a container whose namespace
    starts there, at the controller's root."""
    try:
        lines = Path(proc, "self", "cgroup").read_text().splitlines()
    except OSError:
        return []
    room = []
    for line in lines:  # "0::/path" (v2) or "4:memory:/path" (v1)
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if ".." in path.split("/"):  # outside this namespace's cgroup tree: unreadable from here
            continue
        if controllers == "":
            root, files, cache = Path(cgroup_root), ("memory.max", "memory.current"), "inactive_file"
        elif "memory" in controllers.split(","):
            root, files = Path(cgroup_root, "memory"), ("memory.limit_in_bytes", "memory.usage_in_bytes")
            cache = "total_inactive_file"
        else:
            continue
        level, levels = root / path.strip("/"), [root]
        while level != root and root in level.parents and level.is_dir():
            levels.insert(-1, level)
            level = level.parent
        for level in levels:
            try:
                limit, used = ((level / f).read_text().strip() for f in files)
            except OSError:
                continue
            if limit.isdigit() and used.isdigit() and int(limit) < 2**60:  # "max" / v1's 2**63: no limit
                room.append(max(0, int(limit) - max(0, int(used) - _stat(level, cache))))
    return room


def available_memory(proc: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes this process may still take: Linux's ``MemAvailable``, lowered to what its
    cgroup (a container's or a SLURM job's memory limit) leaves; None where neither is
    readable (macOS, Windows)."""
    found = _cgroup_room(proc, cgroup_root)
    try:
        for line in Path(proc, "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return min(found) if found else None


def _every_rank(trainer: Any, value: int) -> Tensor:
    """``value`` of every DDP rank (a collective: every rank calls it)."""
    return trainer.strategy.all_gather(torch.tensor([value], dtype=torch.int64, device=trainer.strategy.root_device))


def signed_on_any_rank(trainer: Any, activations: Tensor) -> bool:
    """Whether a first batch's ``activations`` have a negative value on any DDP rank (a
    collective: every rank calls it): the class concepts' memory check counts no NMF sample
    for signed activations, and ranks that read the sign apart would take apart verdicts."""
    mine = bool(activations.numel()) and float(activations.min()) < 0
    return mine if trainer.world_size <= 1 else bool(_every_rank(trainer, int(mine)).max())


def least_available_memory(trainer: Any) -> int | None:
    """:func:`available_memory` of the rank that has the least, on every DDP rank (a
    collective: every rank calls it), so that they all come to the same verdict on it; None
    where no rank can tell."""
    mine = available_memory()
    if trainer.world_size <= 1:
        return mine
    unknown = 2**62
    least = int(_every_rank(trainer, unknown if mine is None else mine).min())
    return None if least == unknown else least
