"""Scale-out benchmarks: throughput with 1 and 2 workers, and a soak with Redis restarted mid-run.

    python benchmarks/bench_scale.py [--rounds 5]                 # throughput (make bench-scale)
    python benchmarks/bench_scale.py --soak --minutes 10          # soak (make bench-soak)
    python benchmarks/bench_scale.py --backends [--rounds 3]      # 1 worker: torch vs ONNX query embedding

Throughput: `cairn serve --workers 1` and `cairn serve --workers 2` run side by side (the instant
fake model, one real Redis, the sample index); in each round every concurrency (1, 8, 32) is sent to
both, in alternating order, and the medians over rounds are reported with requests/s, p50/p95 and
the RSS of each worker process.

Soak: 32 concurrent streaming sessions against 2 workers for --minutes; Redis is stopped half-way
and started again 10 s later (its append-only file keeps what it had). Every turn whose stream ended
with `data: [DONE]` is committed; at the end each session must hold every committed turn. Errors are
counted by kind (each should be a 503 naming the session store while Redis is down), and the
workers' RSS is sampled every 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_serving import QUESTIONS, load, wait_ready  # noqa: E402
from benchmarks.common import machine, write_result  # noqa: E402
from cairn.processes import free_port  # noqa: E402

CAIRN = str(Path(sys.executable).with_name("cairn"))


def start_service(env: dict, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [CAIRN, "serve", "--no-start-redis", "--port", str(port), "--workers", str(workers)]
    service = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/ready", service)
    return service, url


def worker_rss_mb(service: subprocess.Popen) -> list[float]:
    """RSS of each process serving requests (the workers; the process itself when it has none)."""
    parent = psutil.Process(service.pid)
    workers = [p for p in parent.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())] or [parent]
    return [round(p.memory_info().rss / 2**20, 1) for p in workers]


def throughput(services_env: dict[str, tuple[dict, int]], rounds: int) -> dict:
    """Send each concurrency to every service (label → (env, workers)) in alternating order; medians."""
    services = {label: start_service(env, workers) for label, (env, workers) in services_env.items()}
    labels = list(services)
    try:
        for _, url in services.values():
            asyncio.run(load(url, 40, 8))  # warm every worker: model clients, index pages, pools
        runs: dict[str, list[dict]] = {}
        for r in range(rounds):
            for concurrency, n in ((1, 60), (8, 240), (32, 480)):
                for label in labels if r % 2 == 0 else labels[::-1]:
                    result = asyncio.run(load(services[label][1], n, concurrency))
                    runs.setdefault(f"{label}_c{concurrency}", []).append(result)
                    print(
                        f"round {r + 1} {label} c{concurrency}: {result['requests_per_s']} req/s "
                        f"p50 {result['p50_ms']} ms p95 {result['p95_ms']} ms errors {result['errors']}",
                        flush=True,
                    )
        summary = {
            name: {
                "requests_per_s": statistics.median(r["requests_per_s"] for r in results),
                "p50_ms": statistics.median(r["p50_ms"] for r in results),
                "p95_ms": statistics.median(r["p95_ms"] for r in results),
                "errors": sum(r["errors"] for r in results),
            }
            for name, results in runs.items()
        }
        first, second = labels[0], labels[-1]
        for c in (1, 8, 32):
            summary[f"ratio_c{c}_{second}_over_{first}"] = round(
                summary[f"{second}_c{c}"]["requests_per_s"] / summary[f"{first}_c{c}"]["requests_per_s"], 2
            )
        summary["rss_mb"] = {label: worker_rss_mb(service) for label, (service, _) in services.items()}
        return summary
    finally:
        for service, _ in services.values():
            service.terminate()
            service.wait(60)


async def soak_session(url: str, name: str, until: float, log: dict) -> None:
    """One user: streaming turns in one session until `until`; record committed turns and errors."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        turn = 0
        while time.monotonic() < until:
            question = f"{QUESTIONS[turn % len(QUESTIONS)]} (turn {turn})"
            body = {"model": "cairn-agent", "stream": True, "messages": [{"role": "user", "content": question}]}
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body,
                                         headers={"X-Session-Id": name}) as reply:  # fmt: skip
                    if reply.status_code != 200:
                        text = (await reply.aread()).decode()
                        code = json.loads(text)["error"]["code"] if text.startswith("{") else text[:80]
                        log["errors"][f"{reply.status_code} {code}"] += 1
                        await asyncio.sleep(0.5)
                        continue
                    lines = [line async for line in reply.aiter_lines() if line]
                if lines and lines[-1] == "data: [DONE]" and '"error"' not in "".join(lines[-3:]):
                    log["committed"].setdefault(name, []).append(question)
                    turn += 1
                else:
                    log["errors"]["stream ended with an error"] += 1
            except httpx.HTTPError as exc:
                log["errors"][type(exc).__name__] += 1
                await asyncio.sleep(0.5)


def soak(env: dict, minutes: float, redis_port: int, work: Path) -> dict:
    from serving.redis_server import redis_answers, start_redis

    redis = start_redis(redis_port, work / "redis")
    service, url = start_service(env, 2)
    log: dict = {"errors": Counter(), "committed": {}}
    rss: list[tuple[float, list[float]]] = []
    try:
        started = time.monotonic()
        until = started + minutes * 60

        async def run() -> None:
            users = [asyncio.create_task(soak_session(url, f"soak-{i}", until, log)) for i in range(32)]
            restarted = False
            while time.monotonic() < until:
                await asyncio.sleep(15)
                rss.append((round(time.monotonic() - started), worker_rss_mb(service)))
                if not restarted and time.monotonic() - started > minutes * 30:
                    restarted = True
                    print("stopping Redis for 10 s ...", flush=True)
                    log["redis_down_at_s"] = round(time.monotonic() - started)
                    await asyncio.to_thread(redis.stop)
                    await asyncio.sleep(10)
                    await asyncio.to_thread(redis.start, lambda: redis_answers("127.0.0.1", redis_port))
                    log["redis_up_at_s"] = round(time.monotonic() - started)
            await asyncio.gather(*users)

        asyncio.run(run())
        lost = {}
        for name, turns in log["committed"].items():
            detail = httpx.get(f"{url}/sessions/{name}", timeout=60).json()
            stored = [m["content"] for m in detail.get("messages", []) if m["role"] == "user"]
            missing = [t for t in turns if t not in stored]
            if missing:
                lost[name] = missing
        committed = sum(len(t) for t in log["committed"].values())
        return {
            "minutes": minutes, "sessions": 32, "workers": 2, "committed_turns": committed,
            "lost_committed_turns": sum(len(m) for m in lost.values()), "lost_examples": dict(list(lost.items())[:3]),
            "errors": dict(log["errors"]), "redis_down_at_s": log.get("redis_down_at_s"),
            "redis_up_at_s": log.get("redis_up_at_s"), "rss_mb_samples": rss,
        }  # fmt: skip
    finally:
        service.terminate()
        service.wait(60)
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds (medians over them)")
    parser.add_argument("--soak", action="store_true", help="run the soak instead of the throughput benchmark")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--result", default="", help="the results file's name (default: soak or scale)")
    parser.add_argument(
        "--backends", action="store_true",
        help="one worker embedding queries with torch against one with ONNX Runtime, instead of 1 vs 2 workers",
    )  # fmt: skip
    args = parser.parse_args()

    from config import Settings
    from ingest.pipeline import ingest_repository
    from serving.redis_server import start_redis

    work = Path(tempfile.mkdtemp(prefix="cairn-bench-scale-"))
    index_dir = work / "index"
    ingest_repository(ROOT / "examples/sample-repo", Settings(_env_file=None, data_dir=work, index_dir=index_dir))
    redis_port = free_port()
    env = {**os.environ, "CAIRN_INDEX_DIR": str(index_dir), "CAIRN_DATA_DIR": str(work), "CAIRN_MODEL": "instant",
           "CAIRN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "CAIRN_REDIS_PREFIX": "bench"}  # fmt: skip
    results: dict = {"machine": machine(), "index": "examples/sample-repo", "model": "instant (fake)"}
    if args.soak:
        (work / "redis").mkdir()
        results["soak"] = soak(env, args.minutes, redis_port, work)
        results["malloc_arena_max"] = os.environ.get("MALLOC_ARENA_MAX")
        results["malloc_trim_s"] = os.environ.get("CAIRN_MALLOC_TRIM_S", "60 (default)")
        name = args.result or "soak"
    else:
        redis = start_redis(redis_port, work)
        try:
            if args.backends:
                onnx = {**env, "CAIRN_EMBEDDING_BACKEND": "onnx"}
                results["throughput"] = throughput({"torch": (env, 1), "onnx": (onnx, 1)}, args.rounds)
                name = "scale-backends"
            else:
                results["throughput"] = throughput({"w1": (env, 1), "w2": (env, 2)}, args.rounds)
                name = "scale"
        finally:
            redis.stop()
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))
    print(f"wrote {write_result(name, results)}")


if __name__ == "__main__":
    main()
