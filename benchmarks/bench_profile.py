"""Where one worker's time goes under load: a sampling profile of every thread, graph against the rest.

    python benchmarks/bench_profile.py [--requests 3000] [--concurrency 8]

The app (the instant fake model, a real Redis, the sample index, query embedding as configured) is
served by uvicorn in a thread of this process; a separate process sends chat requests at the given
concurrency (``benchmarks.bench_serving.load``). While it runs, a sampler reads every thread's Python
stack every 2 ms (``sys._current_frames``) and files each sample that is not idle (a thread waiting
on a lock, a selector or a queue) under the first of these it finds from the top of the stack down:
the query embedding, the search (FAISS, BM25, fusion), the rest of the graph (``graphs/``), Redis (the
checkpointer and sessions), the service's own code (``serving/``), and the web stack (uvicorn,
starlette, FastAPI, pydantic, anything else), with the innermost function of that kind. The event
loop's own thread is not counted (under uvloop its stack looks the same busy or waiting), so the web
stack's share covers only what runs in Python frames. A thread
waiting for the GIL is counted where it stands, so the shares say where the threads are, which on a
busy worker is close to, not the same as, where the CPU goes. A sampler costs some of the GIL, so the request rate
here is below ``make bench-scale``'s; the shares are what it is for. Results in
``benchmarks/results/profile.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import ThreadServer, machine, sample_service, write_result  # noqa: E402

#: The event loop's thread: under uvloop its Python stack ends at asyncio's runner whether it is handling
#: a request or waiting in epoll, so it is reported apart, not as busy.
LOOP = "event loop thread"
IDLE = ("wait", "select", "poll", "_worker", "get", "acquire", "sleep", "epoll", "run_forever", "_run_once")
#: (label, path fragments): the first label whose fragment appears in a frame's file, from the top of the stack.
KINDS = (
    ("query embedding", ("ingest/onnx_encoder.py", "ingest/embedder.py", "onnxruntime", "tokenizers")),
    ("search", ("retrievers/", "faiss", "bm25s", "ingest/bm25.py")),
    ("graph", ("graphs/", "langgraph", "langchain_core")),
    ("redis", ("redis/", "serving/checkpoint.py", "serving/session_usage.py")),
    ("service", ("serving/",)),
)


def classify(frame) -> tuple[str, str] | None:
    """Return the kind of work a thread's stack is doing and the innermost frame of that kind, or None if idle."""
    top = frame
    if top.f_code.co_name in IDLE and not any(part in top.f_code.co_filename for _, parts in KINDS for part in parts):
        return None
    frames = []
    while frame is not None:
        frames.append(frame.f_code)
        frame = frame.f_back
    for label, parts in KINDS:
        for code in frames:  # innermost first
            if any(part in code.co_filename for part in parts):
                where = code.co_filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
                return label, f"{where}:{code.co_name}"
    code = frames[0]
    if code.co_name == "run" and code.co_filename.endswith("asyncio/runners.py"):
        return LOOP, "asyncio/runners.py:run"  # uvloop runs in C below this frame, busy or waiting alike
    return "web stack and the rest", f"{code.co_filename.split('site-packages/')[-1]}:{code.co_name}"


class Sampler(threading.Thread):
    def __init__(self, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.interval, self.samples = interval, 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.places: collections.Counter[tuple[str, str]] = collections.Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        me = threading.get_ident()
        while not self.stopping.is_set():
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                if (found := classify(frame)) is not None:
                    self.counts[found[0]] += 1
                    self.places[found] += 1
            self.samples += 1
            time.sleep(self.interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from serving.app import create_app

    settings, redis = sample_service("profile")
    code = (
        "import asyncio, json, sys; from benchmarks.bench_serving import load; "
        "print(json.dumps(asyncio.run(load(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))))"
    )
    try:
        with ThreadServer(create_app(settings)) as server:
            warm = [sys.executable, "-c", code, server.url, "50", str(args.concurrency)]
            subprocess.run(warm, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            sampler = Sampler()
            sampler.start()
            started = time.perf_counter()
            run = subprocess.run([sys.executable, "-c", code, server.url, str(args.requests), str(args.concurrency)],
                                 cwd=ROOT, check=True, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
            seconds = time.perf_counter() - started
            sampler.stopping.set()
            sampler.join()
    finally:
        redis.stop()
    load_result = json.loads(run.stdout.strip().splitlines()[-1])
    loop_ticks = sampler.counts.pop(LOOP, 0)
    busy = sum(sampler.counts.values())
    shares = {kind: round(count / busy, 3) for kind, count in sampler.counts.most_common()}
    result = {
        "machine": machine(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": round(seconds, 1),
        "load": load_result,
        "busy_samples": busy,
        "sampler_ticks": sampler.samples,
        "event_loop_thread_ticks": loop_ticks,
        "shares_of_busy_samples": shares,
        "outside_the_graph": round(1 - sum(shares.get(k, 0) for k in ("graph", "search", "query embedding")), 3),
        "top_places": {
            kind: [[place, round(count / busy, 3)] for (k, place), count in sampler.places.most_common() if k == kind][
                :6
            ]
            for kind in shares
        },
    }
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result('profile', result)}")


if __name__ == "__main__":
    main()
