"""`cairn serve` from cold: seconds to alive (/health) and to ready (/ready), and idle RSS, with the bundled models.

    .venv/bin/python -m benchmarks.bench_startup [--runs 3]

Each run starts `cairn serve` (one worker, the default embedded model: llama.cpp's server on SmolLM2-135M,
started by `cairn serve`; the bundled embedding model; Redis started by `cairn serve`) on the sample
repository's index, polls /health and /ready every 50 ms, then times an MCP ``initialize`` at /mcp (whose
SDK loads in the background once the service is ready), then waits 10 s idle and reads the RSS of the
worker, of the llama.cpp server and of redis-server. "Ready" includes loading the chat model (the
embedded server answers one token). Each run is followed by one with ``CAIRN_MODEL=instant`` (no chat
model to start or load: what Cairn itself takes to come up, the seed's "start-up excluding model
load"). ``make bench-startup``; results in benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.common import machine, write_result

ROOT = Path(__file__).resolve().parents[1]
CAIRN = str(Path(sys.executable).with_name("cairn"))


def _until(url: str, process: subprocess.Popen, started: float, timeout: float = 240) -> float:
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"cairn serve exited {process.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def _mcp_answers(url: str, started: float) -> float:
    """Seconds from the start until ``/mcp`` answers an ``initialize`` (its SDK loads after /ready)."""
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "bench-startup", "version": "1"}}}  # fmt: skip
    headers = {"Accept": "application/json, text/event-stream"}
    response = httpx.post(url, json=initialize, headers=headers, timeout=60)  # waits while the SDK loads
    response.raise_for_status()
    return time.perf_counter() - started


def one_run(work: Path, index_dir: Path, model: str | None = None) -> dict:
    from cairn.processes import free_port

    port = free_port()
    env = {
        **os.environ,
        "CAIRN_INDEX_DIR": str(index_dir),
        "CAIRN_DATA_DIR": str(work),
        "CAIRN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "CAIRN_EMBEDDED_PORT": str(free_port()),
    }
    if model is not None:
        env["CAIRN_MODEL"] = model
    started = time.perf_counter()
    process = subprocess.Popen([CAIRN, "serve", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        alive = _until(f"http://127.0.0.1:{port}/health", process, started)
        ready = _until(f"http://127.0.0.1:{port}/ready", process, started)
        mcp = _mcp_answers(f"http://127.0.0.1:{port}/mcp", started)
        time.sleep(10)
        rss: dict[str, float] = {}
        for child in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
            line = " ".join(child.cmdline())
            kind = "llama.cpp server" if "llama_cpp" in line else "redis-server" if "redis-server" in line else "cairn"
            rss[kind] = round(rss.get(kind, 0) + child.memory_info().rss / 2**20, 1)
        return {"alive_s": round(alive, 2), "ready_s": round(ready, 2), "mcp_s": round(mcp, 2), "idle_rss_mb": rss}
    finally:
        process.terminate()
        process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from config import Settings
    from ingest.pipeline import ingest_repository

    work = Path(tempfile.mkdtemp(prefix="cairn-bench-startup-"))
    index_dir = work / "index"
    ingest_repository(ROOT / "examples/sample-repo", Settings(_env_file=None, data_dir=work, index_dir=index_dir))
    runs, bare = [], []
    for _ in range(args.runs):  # interleaved: the embedded model, then no chat model at all
        runs.append(one_run(work, index_dir))
        bare.append(one_run(work, index_dir, model="instant"))
        print(runs[-1], bare[-1], flush=True)

    def medians(of: list[dict]) -> dict:
        return {
            "alive_s_median": statistics.median(r["alive_s"] for r in of),
            "ready_s_median": statistics.median(r["ready_s"] for r in of),
            "mcp_s_median": statistics.median(r["mcp_s"] for r in of),
            "idle_rss_mb_median": {
                kind: statistics.median(r["idle_rss_mb"].get(kind, 0) for r in of) for kind in of[0]["idle_rss_mb"]
            },
        }

    result = {"machine": machine(), "runs": runs, **medians(runs), "without_model": {"runs": bare, **medians(bare)}}
    print(result)
    print(f"wrote {write_result('startup', result)}")


if __name__ == "__main__":
    main()
