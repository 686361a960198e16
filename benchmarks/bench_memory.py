"""What grows in a serving worker: tracemalloc snapshots while 32 streaming sessions run.

    .venv/bin/python -m benchmarks.bench_memory [--minutes 6] [--sessions 32]

The service runs in this process (uvicorn in a thread, the instant model, the sample index, a real
Redis) with tracemalloc tracing 12 frames; 32 users each keep one session and ask streaming questions
back to back, as the soak does (``make bench-soak``). A snapshot is taken after a warm-up minute and
at the end; the allocations that grew most between them are printed by traceback, with the process's
RSS and Python's traced total at each sample. ``make bench-memory``; results in
benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import tracemalloc
from pathlib import Path

import httpx
import psutil

from benchmarks.bench_serving import QUESTIONS
from benchmarks.common import RESULTS, ThreadServer, machine, sample_service

ROOT = Path(__file__).resolve().parents[1]


async def user(url: str, name: str, until: float, counts: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        turn = 0
        while time.monotonic() < until:
            body = {
                "model": "cairn-agent",
                "stream": True,
                "messages": [{"role": "user", "content": f"{QUESTIONS[turn % len(QUESTIONS)]} ({turn})"}],
            }
            async with client.stream("POST", "/v1/chat/completions", json=body, headers={"X-Session-Id": name}) as r:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--sessions", type=int, default=32)
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
