"""How the command line's process allocates memory on a CPU (set once, at its start).

A CPU forward of a CNN allocates and frees hundreds of megabytes a batch. With the C
library's defaults every large block is a fresh ``mmap``, returned at ``free``: the next
batch faults its pages in again and the kernel zeroes them (nf_resnet50 at 256 px: ~40,000
faults and a third of the CPU time a photo). Two settings remove that cost:

- torch's ``THP_MEM_ALLOC_ENABLE=1``: its tensors of 2 MB and more get 2 MiB huge pages
  (~1,700 faults a photo; torch reads the variable at a process's first tensor);
- glibc's ``mallopt``: no ``mmap`` for large blocks and no trimming of the heap below
  :data:`TRIM_THRESHOLD` of free memory, so the blocks a batch frees serve the next batch
  (no fault at all after the first batch). It costs resident memory: the heap keeps its
  high-water mark and its gaps.

The CLI applies both unless the environment says otherwise: ``THP_MEM_ALLOC_ENABLE=0``,
``CLUSTERCAM_KEEP_FREED_MEMORY=0``, or glibc's own ``MALLOC_*_`` / ``GLIBC_TUNABLES`` (the
user's choice wins). The library itself changes nothing in a notebook's process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"  # torch's switch, read at the process's first tensor
KEEP_FREED = "CLUSTERCAM_KEEP_FREED_MEMORY"  # "0": glibc's defaults
TRIM_THRESHOLD = 1 << 30  # free heap kept for reuse (bytes): above one batch's transient peak
_GLIBC_OWN = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h
_KEPT = False  # whether keep_freed_memory() applied its settings in this process


@functools.cache
def c_library() -> ctypes.CDLL:
    """The C library, loaded once (``find_library`` runs ``ldconfig``).

    Returns:
        Its ``ctypes`` handle.

    Raises:
        OSError: where there is none to load (Windows).
    """
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _user_set_glibc() -> bool:
    """Whether the environment already tunes glibc's malloc (its variables are read at start)."""
    return any(v in os.environ for v in _GLIBC_OWN) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """glibc's malloc: large blocks from the heap, up to :data:`TRIM_THRESHOLD` of freed
    memory kept for reuse. Returns whether it was applied: not off glibc (macOS, musl),
    with ``CLUSTERCAM_KEEP_FREED_MEMORY=0``, or where the user tunes glibc's malloc."""
    if os.environ.get(KEEP_FREED, "1") == "0" or _user_set_glibc() or platform.libc_ver()[0] != "glibc":
        return False
    global _KEPT
    try:
        libc = c_library()
        _KEPT = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        _KEPT = False
    return _KEPT


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` applied its settings in this process."""
    return _KEPT


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _mallinfo2():
    """glibc's ``mallinfo2`` returning :class:`_MallInfo2`, or None (off glibc, before 2.33)."""
    try:
        fn = c_library().mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


def heap_free_bytes() -> int | None:
    """Free bytes in glibc's heaps (``mallinfo2().fordblks``, every arena); None off glibc
    or before its 2.33."""
    fn = _mallinfo2()
    return None if fn is None else int(fn().fordblks)


def configure_process() -> dict[str, bool]:
    """The CLI's allocator settings (see the module's docstring), before anything allocates
    a tensor. Returns which of the two are on."""
    os.environ.setdefault(HUGE_PAGES, "1")
    return {"huge_pages": os.environ[HUGE_PAGES] == "1", "keep_freed_memory": keep_freed_memory()}
