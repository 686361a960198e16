"""What tracing costs the service: request latency with spans recorded (and exported) against not.

    .venv/bin/python benchmarks/bench_tracing.py [--rounds 20] [--per-round 20]

`cairn serve` processes on the same index and the instant model (so the service's own work is what
is timed, not a model's), stateless requests, one at a time:

- recording: the default — spans recorded, nothing exported;
- exporting: every span also sent over OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``) to a receiver on
  loopback, with the default ``CAIRN_TRACE_CONTENT=metadata``;
- exporting-full: the same with ``CAIRN_TRACE_CONTENT=full`` (prompts and answers);
- disabled: ``OTEL_SDK_DISABLED=true`` (for reference: separate processes differ by a few ms on their
  own, which is why the comparison below is made inside each process).

Inside each process, requests alternate between a sampled and an unsampled incoming ``traceparent``
(W3C flags 01 and 00, which the default parent-based sampler obeys): the unsampled request runs the
same code with non-recording spans, so "sampled minus unsampled" is what recording and exporting
spans cost, free of the differences between processes. Rounds are interleaved across the processes
(the order rotated). Reported: p50/p95 per process and sampling, and the p50 added by sampling (the
goal: ≤ 2 ms). Results: benchmarks/results/tracing.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_serving import QUESTIONS, wait_ready  # noqa: E402
from benchmarks.common import machine, summary_ms, write_result  # noqa: E402
from cairn.processes import free_port  # noqa: E402


class Sink(ThreadingHTTPServer):
    """An OTLP/HTTP receiver that accepts and counts export requests (the bytes, not their content)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _SinkHandler)
        self.requests = 0
        self.bytes = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _SinkHandler(BaseHTTPRequestHandler):
    server: Sink

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.requests += 1
        self.server.bytes += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=20, help="requests per variant per round")
    args = parser.parse_args()

    from config import Settings
    from ingest.pipeline import ingest_repository

    work = Path(tempfile.mkdtemp(prefix="cairn-bench-tracing-"))
    index_dir = work / "index"
    ingest_repository(ROOT / "examples/sample-repo", Settings(_env_file=None, data_dir=work, index_dir=index_dir))
    sink = Sink()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CAIRN_"))}
    base |= {
        "CAIRN_INDEX_DIR": str(index_dir),
        "CAIRN_DATA_DIR": str(work),
        "CAIRN_MODEL": "instant",
        "CAIRN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }  # fmt: skip  (no Redis: stateless requests)
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    variants = {
        "recording": {},
        "exporting": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        "exporting-full": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "CAIRN_TRACE_CONTENT": "full"},
        "disabled": {"OTEL_SDK_DISABLED": "true"},
    }
    cairn = str(Path(sys.executable).with_name("cairn"))
    processes: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    try:
        for name, extra in variants.items():
            port = free_port()
            processes[name] = subprocess.Popen(
                [cairn, "serve", "--no-start-redis", "--port", str(port)], cwd=ROOT, env={**base, **extra},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            urls[name] = f"http://127.0.0.1:{port}"
        for name, url in urls.items():
            wait_ready(f"{url}/health", processes[name])
        latencies: dict[str, list[float]] = {f"{name} {kind}": [] for name in variants for kind in KINDS}
        names = list(variants)
        with httpx.Client(timeout=60) as client:
            for name in names:  # warm up: model clients, index pages, connections
                for question in QUESTIONS * 4:
                    post(client, urls[name], question, sampled=True)
            traced = post(client, urls["recording"], QUESTIONS[0], sampled=True).headers.get("traceresponse", "")
            untraced = post(client, urls["recording"], QUESTIONS[0], sampled=False).headers.get("traceresponse", "")
            assert traced.endswith("1") and not untraced.endswith("1"), (traced, untraced)  # sampled, and not
            for round_ in range(args.rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    for i in range(args.per_round):
                        sampled = (i + round_) % 2 == 0
                        started = time.perf_counter()
                        post(client, urls[name], QUESTIONS[i % len(QUESTIONS)], sampled=sampled)
                        latencies[f"{name} {KINDS[0 if sampled else 1]}"].append(time.perf_counter() - started)
                print(f"round {round_ + 1}/{args.rounds}: " + "  ".join(
                    f"{n} +{added(latencies, n):.2f} ms" for n in names), flush=True)  # fmt: skip
        time.sleep(6)  # the exporting service's last batch (sent every 5 s)
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(30)
    results = {
        "machine": machine(),
        "requests": {name: len(values) for name, values in latencies.items()},
        "latency": {name: summary_ms(values) for name, values in latencies.items()},
        "added_p50_ms": {name: round(added(latencies, name), 3) for name in variants},
        "exported": {"otlp_requests": sink.requests, "bytes": sink.bytes},
    }
    for name, summary in results["latency"].items():
        print(f"{name:<26} p50 {summary['p50_ms']:7.2f} ms  p95 {summary['p95_ms']:7.2f} ms")
    print(f"p50 added by sampling: {results['added_p50_ms']}; exported {sink.requests} OTLP requests, "
          f"{sink.bytes} bytes")  # fmt: skip
    print(f"wrote {write_result('tracing', results)}")


KINDS = ("sampled", "unsampled")


def added(latencies: dict[str, list[float]], name: str) -> float:
    """The p50 a sampled request of process ``name`` takes over an unsampled one, in ms."""
    sampled, unsampled = latencies[f"{name} sampled"], latencies[f"{name} unsampled"]
    if not sampled or not unsampled:
        return float("nan")
    return (statistics.median(sampled) - statistics.median(unsampled)) * 1000


def post(client: httpx.Client, url: str, question: str, *, sampled: bool) -> httpx.Response:
    """Ask one question, with an incoming trace context that is sampled or not."""
    body = {"model": "cairn-agent", "messages": [{"role": "user", "content": question}]}
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"
    reply = client.post(f"{url}/v1/chat/completions", json=body, headers={"traceparent": traceparent})
    reply.raise_for_status()
    return reply


if __name__ == "__main__":
    main()
