"""Session requests on one Redis against a 3-master Redis Cluster on loopback.

    python benchmarks/bench_cluster.py [--rounds N] [--per-round N]

Two ``cairn serve`` processes on the sample repository's index with the ``instant`` model (so the
service's own work and its Redis round trips are timed, not a model's): one with CAIRN_REDIS_URL at a
single redis-server, one at a node of a 3-master cluster (``redis-cli --cluster create``, no replicas),
which the service detects by itself. Chat requests with an ``X-Session-Id``, one at a time, five
sessions per round, so each request reads the session's latest checkpoint and writes its turn.
Rounds alternate between the two services (the order flips each round); the reported p50/p95 are
over all requests, with the median of the rounds' p50s beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_serving import QUESTIONS  # noqa: E402
from benchmarks.common import machine, summary_ms, write_result  # noqa: E402
from cairn.processes import ChildProcess, free_port, http_ok  # noqa: E402


def serve(work: Path, index_dir: Path, redis_url: str, name: str) -> tuple[ChildProcess, str]:
    """Start ``cairn serve`` on ``redis_url`` and wait until /ready answers 200."""
    port = free_port()
    env = {**os.environ, "CAIRN_INDEX_DIR": str(index_dir), "CAIRN_DATA_DIR": str(work), "CAIRN_MODEL": "instant",
           "CAIRN_REDIS_URL": redis_url, "CAIRN_REDIS_PREFIX": f"bench-{name}"}  # fmt: skip
    cairn = str(Path(sys.executable).with_name("cairn"))
    process = ChildProcess([cairn, "serve", "--no-start-redis", "--port", str(port)], name=f"cairn serve ({name})",
                           log_path=work / f"serve-{name}.log", env=env, cwd=ROOT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    process.start(lambda: http_ok(f"{url}/ready", timeout=5), timeout=300)
    return process, url


def session_requests(client: httpx.Client, round_: int, n: int) -> list[float]:
    """Send ``n`` session requests one at a time over five sessions; return their latencies in seconds."""
    latencies = []
    for i in range(n):
        body = {"model": "cairn-agent", "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
        started = time.perf_counter()
        reply = client.post("/v1/chat/completions", json=body, headers={"X-Session-Id": f"r{round_}-s{i % 5}"})
        latencies.append(time.perf_counter() - started)
        if reply.status_code != 200:
            raise RuntimeError(f"{reply.status_code}: {reply.text[:300]}")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--per-round", type=int, default=25)
    args = parser.parse_args()

    from config import Settings
    from ingest.pipeline import ingest_repository
    from serving.redis_server import free_cluster_ports, start_redis, start_redis_cluster

    work = Path(tempfile.mkdtemp(prefix="cairn-bench-cluster-"))
    index_dir = work / "index"
    ingest_repository(ROOT / "examples/sample-repo", Settings(data_dir=work, index_dir=index_dir))
    started: list[ChildProcess] = []
    try:
        single_port = free_port()
        started.append(start_redis(single_port, work / "redis-single"))
        cluster_ports = free_cluster_ports(3)
        started.extend(start_redis_cluster(cluster_ports, work / "redis-cluster"))
        targets = {"single": f"redis://127.0.0.1:{single_port}/0", "cluster": f"redis://127.0.0.1:{cluster_ports[0]}/0"}
        urls = {}
        for name, redis_url in targets.items():
            process, urls[name] = serve(work, index_dir, redis_url, name)
            started.append(process)
            mode = httpx.get(f"{urls[name]}/ready").json()["checks"]["redis"]["mode"]
            assert mode == ("cluster" if name == "cluster" else "standalone"), mode
        clients = {name: httpx.Client(base_url=url, timeout=60) for name, url in urls.items()}
        for client in clients.values():  # warm up: model clients, index pages, connection pools
            session_requests(client, -1, 20)
        latencies: dict[str, list[float]] = {name: [] for name in targets}
        round_p50: dict[str, list[float]] = {name: [] for name in targets}
        for round_ in range(args.rounds):
            order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
            for name in order:
                seconds = session_requests(clients[name], round_, args.per_round)
                latencies[name].extend(seconds)
                round_p50[name].append(statistics.median(seconds) * 1000)
            print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
                f"{name} p50 {round_p50[name][-1]:.2f} ms" for name in targets), flush=True)  # fmt: skip
        results: dict = {"machine": machine(), "index": "examples/sample-repo", "model": "instant",
                         "rounds": args.rounds, "per_round": args.per_round}  # fmt: skip
        for name in targets:
            results[name] = {**summary_ms(latencies[name]),
                             "median_round_p50_ms": round(statistics.median(round_p50[name]), 3)}  # fmt: skip
        results["cluster_minus_single_p50_ms"] = round(results["cluster"]["p50_ms"] - results["single"]["p50_ms"], 3)
        print(write_result("cluster", results))
        print({name: results[name] for name in targets})
    finally:
        for process in reversed(started):
            process.stop()


if __name__ == "__main__":
    main()
