"""A worker hands the memory it has freed back to the system (glibc's malloc_trim), on a timer."""

from __future__ import annotations

import asyncio
import platform
import threading
import time

import psutil
import pytest

from serving import memory

GLIBC = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim and mallinfo2 are glibc's")


@GLIBC
def test_freed_native_memory_goes_back_to_the_system() -> None:
    process = psutil.Process()

    def churn() -> None:  # many threads allocating and freeing: memory left in their arenas
        kept: list[bytes] = []
        for i in range(60_000):
            kept.append(bytes(200_000 if i % 500 == 0 else 1_000 + i % 3_000))
            if len(kept) > 4_000:
                kept = kept[::9]

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    before = memory.heap()
    assert before is not None and before["in_use"] > 0
    rss = process.memory_info().rss
    assert memory.trim() is True  # some pages were given back
    assert process.memory_info().rss < rss


@GLIBC
def test_the_timer_trims_until_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(1) or True)

    async def run() -> None:
        task = asyncio.create_task(memory.trimming(0.01))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        count = len(calls)
        await asyncio.sleep(0.05)
        assert len(calls) == count  # stopped

    asyncio.run(run())
    assert len(calls) >= 3


@GLIBC
@pytest.mark.parametrize(("every_s", "threshold_kb"), [(0.05, 64), (0, 0)])
def test_the_service_trims_on_its_timer_and_maps_large_blocks_unless_told_not_to(
    every_s: float, threshold_kb: int, service_index, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from tests.serving.conftest import served

    calls: list[int] = []
    thresholds: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(1) or True)
    monkeypatch.setattr(memory, "map_large", lambda kb: thresholds.append(kb) or True)
    with served(service_index, redis_url, malloc_trim_s=every_s, malloc_mmap_threshold_kb=threshold_kb) as server:
        time.sleep(0.5)
        assert httpx.get(f"{server.url}/health").status_code == 200
    count = len(calls)
    assert (count >= 3) if every_s else (count == 0)
    time.sleep(0.2)
    assert len(calls) == count  # the timer stopped with the service
    assert thresholds == ([threshold_kb] if threshold_kb else [])


#: Allocate 24 MiB after setting the threshold, in a fresh process (a heap with no free chunk that fits):
#: print the bytes mapped apart while it is held and after it is freed.
_PROBE = """
import sys
from serving import memory
assert memory.map_large(int(sys.argv[1]))
lib = memory._libc()
before = lib.mallinfo2().hblkhd
block = bytearray(24 * 2**20)
held = lib.mallinfo2().hblkhd - before
del block
print(held, lib.mallinfo2().hblkhd - before)
"""


@GLIBC
@pytest.mark.parametrize(("threshold_kb", "mapped"), [(64, True), (32 * 1024, False)])
def test_large_blocks_get_a_map_of_their_own_from_the_threshold_set(threshold_kb: int, mapped: bool) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    probe = subprocess.run([sys.executable, "-c", _PROBE, str(threshold_kb)], cwd=ROOT, capture_output=True,
                           text=True, timeout=60, check=True)  # fmt: skip
    held, after = map(int, probe.stdout.split())
    assert (held >= 24 * 2**20) is mapped  # 24 MiB: over 64 KiB, under 32 MiB
    assert after < 2**20  # and a mapped block went back when freed
