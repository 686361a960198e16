"""What one session holds in Redis as it grows: keys, checkpoints and bytes at 1 to 240 turns.

    .venv/bin/python -m benchmarks.bench_session_size [--turns 240] [--keep-all]

One session on the instant model over the OpenAI route, against a fresh Redis; after some turns it
reads every key of the prefix and sums ``MEMORY USAGE``. ``--keep-all`` runs the service's saver the
way it was before sessions kept one checkpoint per turn (every checkpoint of every turn), for the
comparison. Results in benchmarks/results/session-size.json (``session-size-keep-all.json``).
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
import redis

from benchmarks.bench_memory import QUESTIONS
from benchmarks.common import RESULTS, ThreadServer, machine, sample_service

SAMPLED = (1, 10, 30, 60, 120, 240, 480, 960)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=240)
    parser.add_argument("--keep-all", action="store_true", help="keep every checkpoint (the saver's old way)")
    args = parser.parse_args()

    from serving.app import create_app
    from serving.service import Service

    settings, server_process = sample_service("size")
    rows = []
    try:
        app = create_app(settings)
        if args.keep_all:
            service: Service = app.state.cairn
            service.saver.keep_all = True
        client = redis.Redis.from_url(settings.redis_url)
        with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
            for turn in range(1, args.turns + 1):
                question = f"{QUESTIONS[turn % len(QUESTIONS)]} ({turn})"
                started = time.perf_counter()
                body = {"model": "cairn-agent", "messages": [{"role": "user", "content": question}]}
                reply = http.post("/v1/chat/completions", headers={"X-Session-Id": "size"}, json=body)
                seconds = time.perf_counter() - started
                reply.raise_for_status()
                if turn in SAMPLED or turn == args.turns:
                    keys = client.keys(f"{settings.redis_prefix}*")
                    checkpoints = [k for k in keys if b":cp:" in k]
                    row = {"turn": turn, "keys": len(keys), "checkpoints": len(checkpoints),
                           "bytes": sum(client.memory_usage(k) or 0 for k in keys),
                           "latest_checkpoint_bytes": max(client.memory_usage(k) or 0 for k in checkpoints),
                           "turn_ms": round(seconds * 1000, 1)}  # fmt: skip
                    rows.append(row)
                    print(row, flush=True)
    finally:
        server_process.stop()
    name = "session-size-keep-all" if args.keep_all else "session-size"
    report = {"machine": machine(), "keep_all": args.keep_all, "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
