"""Native memory of a worker: what glibc's allocator holds, and handing freed memory back (``malloc_trim``).

CPython's larger objects, ONNX Runtime, FAISS and the tokenizer allocate through glibc's ``malloc``.
Memory they free stays with the allocator, in the arena of each thread that allocated it, and glibc
returns only what lies at the top of a heap. ``malloc_trim(0)`` gives back every free page of every
arena: measured over a 30-minute soak, a busy worker held about 35 MB less with it (docs/benchmarks.md,
"Memory over a 30-minute soak"). Large blocks (a turn's serialised checkpoint, a batch of vectors)
are given a memory map of their own (``map_large``), which goes back to the system as soon as they
are freed. Outside glibc (musl, macOS) these functions do nothing."""

from __future__ import annotations

import asyncio
import ctypes
import functools


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]  # fmt: skip


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library's allocator functions, if it is glibc's (the symbols of the running process)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim"):
        return None
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if hasattr(libc, "mallinfo2"):  # glibc >= 2.33
        libc.mallinfo2.argtypes, libc.mallinfo2.restype = [], _MallInfo2
    return libc


def heap() -> dict[str, int] | None:
    """Bytes the allocator has in use and holds free (``mallinfo2``), or None outside glibc 2.33+."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    info = libc.mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free": info.fordblks}


#: mallopt's parameter for the size from which a block gets its own memory map (malloc.h).
M_MMAP_THRESHOLD = -3


def map_large(threshold_kb: int) -> bool:
    """Map a block of at least ``threshold_kb`` KiB apart when no free chunk fits it; True if the allocator took it.

    Such a block then never extends a heap, and goes back to the system when freed. glibc's own
    threshold starts at 128 KiB and rises to the size of each mapped block freed (up to 32 MiB), so
    blocks that grow over time end up extending the heaps, whose high-water mark stays: measured with
    sessions that grow, RSS rose about 10 MB in 7 minutes with the default and about 4 MB with 64 KiB.
    Setting it turns that rise off.
    """
    libc = _libc()
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold_kb * 1024)) if libc is not None else False


def trim() -> bool:
    """Give every free page the allocator holds back to the system; True if any was given back."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


async def trimming(every_s: float) -> None:
    """Trim every ``every_s`` seconds until cancelled (the service's lifespan runs it)."""
    if _libc() is None:
        return
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(trim)
