"""What grows in a serving worker: tracemalloc snapshots while 32 streaming sessions run.

    .venv/bin/python -m benchmarks.bench_memory [--minutes 6] [--sessions 32] [--census]

The service runs in this process (uvicorn in a thread, the instant model, the sample index, a real
Redis) with tracemalloc tracing 12 frames; 32 users each keep one session and ask streaming questions
back to back, as the soak does (``make bench-soak``). A snapshot is taken after a warm-up minute and
at the end; the allocations that grew most between them are printed by traceback, with the process's
RSS and Python's traced total at each sample. ``make bench-memory``; results in
benchmarks/results/memory.json.

``--census`` runs without tracemalloc (which slows a worker about sevenfold, too slow to show a growth
of a few KB per request): at full speed it samples RSS, the malloc heap in use and free
(``serving.memory.heap``), Python's allocated blocks and the live objects the garbage collector tracks,
and prints the object types whose count grew most after the warm-up minute (results in
benchmarks/results/memory-census.json).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

import httpx
import psutil

from benchmarks.bench_serving import QUESTIONS
from benchmarks.common import RESULTS, ThreadServer, machine, sample_service

ROOT = Path(__file__).resolve().parents[1]


async def user(url: str, name: str, until: float, counts: dict[str, int], turns_per_session: int = 0) -> None:
    """Ask streaming questions back to back in one session (a new one every ``turns_per_session``, if set)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        turn = 0
        while time.monotonic() < until:
            session = f"{name}-{turn // turns_per_session}" if turns_per_session else name
            body = {
                "model": "cairn-agent",
                "stream": True,
                "messages": [{"role": "user", "content": f"{QUESTIONS[turn % len(QUESTIONS)]} ({turn})"}],
            }
            async with client.stream("POST", "/v1/chat/completions", json=body, headers={"X-Session-Id": session}) as r:
                async for _ in r.aiter_lines():
                    pass
                counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1
            if r.status_code != 200:
                await asyncio.sleep(0.5)
            turn += 1


def top_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, limit: int = 15) -> list[dict]:
    stats = after.compare_to(before, "traceback")
    out = []
    for stat in stats[:limit]:
        frames = [f"{f.filename.replace(str(ROOT) + '/', '')}:{f.lineno}" for f in stat.traceback][-6:]
        out.append({"kb": round(stat.size_diff / 1024, 1), "count": stat.count_diff, "where": frames})
    return out


def pymalloc_arenas() -> int | None:
    """CPython's small-object arenas mapped now (``sys._debugmallocstats``, which writes to fd 2)."""
    import re
    import tempfile

    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        found = re.search(rb"# arenas allocated current\s*=\s*([\d,]+)", out.read())
    return int(found.group(1).replace(b",", b"")) if found else None


def rss_by_mapping() -> dict[str, float]:
    """Resident MB of this process by kind of mapping (/proc/self/smaps): the brk heap, anonymous maps of
    1 MiB (CPython's arenas), other anonymous maps (malloc's thread heaps, large blocks), files."""
    kinds: dict[str, float] = collections.defaultdict(float)
    kind = "other"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            begin, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            size = end - begin
            if name:
                kind = "brk heap" if name == "[heap]" else "file" if name.startswith("/") else name
            else:
                kind = "anonymous 1 MiB" if size == 2**20 else "anonymous other"
        elif fields[0] == "Rss:":
            kinds[kind] += int(fields[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(kinds.items())}


def census() -> collections.Counter[str]:
    """Live objects the garbage collector tracks, counted by type."""
    gc.collect()
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--census", action="store_true", help="no tracemalloc: heap and object counts at full speed")
    parser.add_argument("--turns-per-session", type=int, default=0,
                        help="with --census: a new session after this many turns (0: never)")  # fmt: skip
    parser.add_argument("--result", default="", help="with --census: the results file's name (default: by options)")
    args = parser.parse_args()
    if args.census:
        run_census(args.minutes, args.sessions, args.turns_per_session, args.result)
        return

    from serving.app import create_app

    settings, redis = sample_service("memory", max_concurrent_runs=args.sessions,
                                     max_concurrent_runs_per_key=args.sessions)  # fmt: skip
    process = psutil.Process(os.getpid())
    samples: list[dict] = []
    counts: dict[str, int] = {}
    tracemalloc.start(12)
    try:
        with ThreadServer(create_app(settings)) as server:
            started = time.monotonic()
            until = started + args.minutes * 60
            snapshots: dict[str, tracemalloc.Snapshot] = {}

            async def run() -> None:
                users = [asyncio.create_task(user(server.url, f"m-{i}", until, counts)) for i in range(args.sessions)]
                while time.monotonic() < until:
                    await asyncio.sleep(15)
                    at = round(time.monotonic() - started)
                    traced, _peak = tracemalloc.get_traced_memory()
                    samples.append(
                        {
                            "s": at,
                            "rss_mb": round(process.memory_info().rss / 2**20, 1),
                            "traced_mb": round(traced / 2**20, 1),
                            "answers": sum(counts.values()),
                        }
                    )
                    print(samples[-1], flush=True)
                    if "warm" not in snapshots and at >= 60:
                        snapshots["warm"] = tracemalloc.take_snapshot()
                await asyncio.gather(*users)

            asyncio.run(run())
            snapshots["end"] = tracemalloc.take_snapshot()
    finally:
        redis.stop()
    growth = top_growth(snapshots["warm"], snapshots["end"])
    report = {"machine": machine(), "minutes": args.minutes, "sessions": args.sessions, "responses": counts,
              "samples": samples, "growth_after_warmup": growth}  # fmt: skip
    (RESULTS / "memory.json").write_text(json.dumps(report, indent=2) + "\n")
    for item in growth:
        print(f"{item['kb']:>10} KB {item['count']:>7} blocks  " + " <- ".join(reversed(item["where"])))


def run_census(minutes: float, sessions: int, turns_per_session: int = 0, result: str = "") -> None:
    from serving import memory
    from serving.app import create_app

    settings, redis = sample_service("census", max_concurrent_runs=sessions, max_concurrent_runs_per_key=sessions)
    process = psutil.Process(os.getpid())
    samples: list[dict] = []
    counts: dict[str, int] = {}
    censuses: dict[str, collections.Counter[str]] = {}
    try:
        with ThreadServer(create_app(settings)) as server:
            started = time.monotonic()
            until = started + minutes * 60

            async def run() -> None:
                users = [asyncio.create_task(user(server.url, f"c-{i}", until, counts, turns_per_session))
                         for i in range(sessions)]  # fmt: skip
                while time.monotonic() < until:
                    await asyncio.sleep(15)
                    at = round(time.monotonic() - started)
                    heap = memory.heap() or {}
                    samples.append({"s": at, "rss_mb": round(process.memory_info().rss / 2**20, 1),
                                    "malloc_in_use_mb": round(heap.get("in_use", 0) / 2**20, 1),
                                    "malloc_free_mb": round(heap.get("free", 0) / 2**20, 1),
                                    "python_blocks": sys.getallocatedblocks(), "pymalloc_arenas": pymalloc_arenas(),
                                    "rss_by_mapping_mb": rss_by_mapping(),
                                    "answers": counts.get("200", 0)})  # fmt: skip
                    print(samples[-1], flush=True)
                    if "warm" not in censuses and at >= 60:
                        censuses["warm"] = census()
                await asyncio.gather(*users)

            asyncio.run(run())
            censuses["end"] = census()
    finally:
        redis.stop()
    grew = (censuses["end"] - censuses["warm"]).most_common(20)
    report = {"machine": machine(), "minutes": minutes, "sessions": sessions, "responses": counts,
              "turns_per_session": turns_per_session or None, "python_malloc": os.environ.get("PYTHONMALLOC"),
              "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
              "samples": samples, "objects_grown_after_warmup": dict(grew),
              "objects_at_end": sum(censuses["end"].values())}  # fmt: skip
    name = "memory-census" + (f"-{turns_per_session}-turns" if turns_per_session else "")
    name += "-pythonmalloc-malloc" if os.environ.get("PYTHONMALLOC") == "malloc" else ""
    name = result or name
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, grown in grew:
        print(f"{grown:>9} more {name}")


if __name__ == "__main__":
    main()
