"""Service benchmarks: overhead, throughput, streaming time to first token, and a soak run.

    python benchmarks/bench_serving.py [--quick] [--skip-llama]

1. Overhead: the service (a separate uvicorn process, instant fake model, real Redis) against the
   same graph invoked in this process on the same index; p50/p95 and requests/s at concurrency 1, 8, 32.
2. Streaming TTFT with the bundled SmolLM2 (llama.cpp): through the service, through the graph in
   this process, and one request straight to llama.cpp with the answer prompt.
3. Soak: 2,000 requests at concurrency 32; errors and the service's RSS before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, summary_ms, write_result  # noqa: E402
from cairn.processes import free_port  # noqa: E402

QUESTIONS = [
    "How does the LRU cache evict entries?",
    "How is a torn write detected after a crash?",
    "What does Store.put do?",
    "Where is the write-ahead log replayed?",
    "How does the retry helper back off?",
]


def wait_ready(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready")


async def load(url: str, n: int, concurrency: int, *, stream: bool = False, session: bool = False) -> dict:
    """Send n chat requests with `concurrency` in flight; return latency summary, req/s and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(w: int) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {
                    "model": "cairn-agent",
                    "stream": stream,
                    "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                }
                headers = {"X-Session-Id": f"bench-{w}"} if session else {}
                started = time.perf_counter()
                try:
                    reply = await client.post("/v1/chat/completions", json=body, headers=headers)
                    if reply.status_code != 200:
                        errors.append(f"{reply.status_code}: {reply.text[:200]}")
                        continue
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        **summary_ms(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": len(errors),
        "error_examples": errors[:3],
        "concurrency": concurrency,
    }


async def direct_graph(context, n: int) -> dict:
    """The same requests as the service gets, but graph.ainvoke in this process (the baseline)."""
    from langchain_core.messages import HumanMessage

    from graphs.agent.graph import build_graph

    graph = build_graph().compile()
    await graph.ainvoke({"messages": [HumanMessage(QUESTIONS[0])]}, context=context)  # warm up
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        await graph.ainvoke({"messages": [HumanMessage(QUESTIONS[i % len(QUESTIONS)])]}, context=context)
        latencies.append(time.perf_counter() - started)
    return summary_ms(latencies)


async def ttft_service(url: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        for i in range(n):
            body = {
                "model": "cairn-agent",
                "stream": True,
                "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            }
            started = time.perf_counter()
            first = None
            async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                async for line in reply.aiter_lines():  # read to the end so the run completes
                    if first is None and '"content": "' in line and '"content": ""' not in line:
                        first = time.perf_counter() - started
            out.append(first)
    return out


async def ttft_graph(context, n: int) -> list[float]:
    """First answer token through the graph in this process."""
    from langchain_core.messages import AIMessageChunk, HumanMessage

    from graphs.agent.graph import build_graph

    graph = build_graph().compile()
    out = []
    for i in range(n):
        started = time.perf_counter()
        first = None
        async for chunk, meta in graph.astream(
            {"messages": [HumanMessage(QUESTIONS[i % len(QUESTIONS)])]}, context=context, stream_mode="messages"
        ):
            is_answer = meta.get("langgraph_node") == "answer" and isinstance(chunk, AIMessageChunk)
            if first is None and is_answer and chunk.content:
                first = time.perf_counter() - started
        out.append(first if first is not None else float("nan"))
    return out


def ttft_llama_direct(base_url: str, n: int) -> list[float]:
    """First token straight from llama.cpp for an answer-sized prompt (the agent's last call alone)."""
    import openai

    from prompts.agent import ANSWER

    client = openai.OpenAI(base_url=base_url, api_key="unused")
    context = (ROOT / "examples/sample-repo/tinykv/cache.py").read_text()
    out = []
    for i in range(n):
        messages = [
            {"role": "system" if m.type == "system" else "user", "content": str(m.content)}
            for m in ANSWER.format_messages(
                context=f"[tinykv/cache.py:1-40]\n{context}", question=QUESTIONS[i % len(QUESTIONS)]
            )
        ]
        started = time.perf_counter()
        stream = client.chat.completions.create(
            model="smollm2-135m", messages=messages, stream=True, max_tokens=64, temperature=0
        )
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        out.append(first)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--skip-llama", action="store_true", help="skip the streaming TTFT part")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0

    from config import Settings
    from graphs.agent.context import Context
    from ingest.pipeline import ingest_repository
    from serving.redis_server import local_redis

    work = Path(tempfile.mkdtemp(prefix="cairn-bench-serving-"))
    index_dir = work / "index"
    ingest_repository(ROOT / "examples/sample-repo", Settings(data_dir=work, index_dir=index_dir))
    redis_port = free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {
        **os.environ,
        "CAIRN_INDEX_DIR": str(index_dir),
        "CAIRN_DATA_DIR": str(work),
        "CAIRN_MODEL": "instant",
        "CAIRN_REDIS_URL": redis_url,
        "CAIRN_REDIS_PREFIX": "bench",
    }
    # The service reads these at its start; the baseline gets the same settings as a Context.
    settings = Settings(_env_file=None, data_dir=work, index_dir=index_dir, model="instant", redis_url=redis_url)
    results: dict = {"machine": machine(), "index": "examples/sample-repo (32 chunks)"}

    with local_redis(Settings(redis_url=redis_url, data_dir=work)):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cairn = str(Path(sys.executable).with_name("cairn"))
        service = subprocess.Popen([cairn, "serve", "--no-start-redis", "--port", str(port)], cwd=ROOT, env=env)
        try:
            wait_ready(f"{url}/ready", service)
            proc = psutil.Process(service.pid)
            asyncio.run(load(url, 50, 4))  # warm up: model clients, index pages, connection pools
            print("baseline: graph.ainvoke in this process ...", flush=True)
            direct = asyncio.run(direct_graph(Context.from_settings(settings), int(200 * scale)))
            results["direct_graph"] = direct
            overhead = {}
            for concurrency, n in ((1, 200), (8, 400), (32, 800)):
                print(f"service, concurrency {concurrency} ...", flush=True)
                overhead[f"c{concurrency}"] = asyncio.run(load(url, max(20, int(n * scale)), concurrency))
            overhead["c1_session"] = asyncio.run(load(url, max(20, int(200 * scale)), 1, session=True))
            overhead["c8_stream"] = asyncio.run(load(url, max(20, int(400 * scale)), 8, stream=True))
            results["service"] = overhead
            results["added_p50_ms_c1"] = round(overhead["c1"]["p50_ms"] - direct["p50_ms"], 3)
            results["added_p95_ms_c1"] = round(overhead["c1"]["p95_ms"] - direct["p95_ms"], 3)

            print("soak: 2,000 requests at concurrency 32 ...", flush=True)
            rss_before = proc.memory_info().rss
            soak = asyncio.run(load(url, int(2000 * scale), 32))
            rss_after = proc.memory_info().rss
            results["soak"] = {
                **soak,
                "rss_before_mb": round(rss_before / 2**20, 1),
                "rss_after_mb": round(rss_after / 2**20, 1),
            }
        finally:
            service.terminate()
            service.wait(30)

        if not args.skip_llama:
            results["ttft"] = bench_ttft(env, settings, work, scale)
    print_summary(results)
    path = write_result("serving-quick" if args.quick else "serving", results)
    print(f"wrote {path}")


def bench_ttft(env: dict, settings, work: Path, scale: float) -> dict:
    from config import Settings
    from graphs.agent.context import Context
    from models.embedded import EmbeddedServer

    llama = EmbeddedServer(Settings(_env_file=None, data_dir=work, embedded_port=free_port()))
    llama.start(timeout=120)
    try:
        spec = f"openai-compatible/smollm2-135m@{llama.base_url}"
        llama_env = {**env, "CAIRN_MODEL": spec, "CAIRN_MODEL_TEMPERATURE": "0"}
        context = Context.from_settings(settings.model_copy(update={"model": spec, "model_temperature": 0.0}))
        n = max(3, int(10 * scale))
        print("TTFT: direct to llama.cpp ...", flush=True)
        direct = ttft_llama_direct(llama.base_url, n)
        print("TTFT: graph in this process ...", flush=True)
        graph = asyncio.run(ttft_graph(context, n))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        service = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "serving.app:create_app",
                "--factory",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=llama_env,
        )
        try:
            wait_ready(f"{url}/ready", service)
            asyncio.run(ttft_service(url, 1))  # warm up
            print("TTFT: through the service ...", flush=True)
            through = asyncio.run(ttft_service(url, n))
        finally:
            service.terminate()
            service.wait(30)
        # Interleaving would be fairer still; the three runs are back to back on the same warm server.
        return {
            "llama_direct_answer_prompt": summary_ms(direct),
            "graph_in_process": summary_ms(graph),
            "service": summary_ms(through),
            "service_minus_graph_p50_ms": round((statistics.median(through) - statistics.median(graph)) * 1000, 1),
        }
    finally:
        llama.stop()


def print_summary(results: dict) -> None:
    direct = results["direct_graph"]
    print(f"\ngraph in process: p50 {direct['p50_ms']:.1f} ms  p95 {direct['p95_ms']:.1f} ms")
    for name, row in results["service"].items():
        print(
            f"service {name:>11}: p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
            f"{row['requests_per_s']:6.1f} req/s  errors {row['errors']}"
        )
    print(f"added by the service (c=1): p50 {results['added_p50_ms_c1']} ms, p95 {results['added_p95_ms_c1']} ms")
    soak = results["soak"]
    print(
        f"soak: {soak['n']} ok, {soak['errors']} errors, {soak['requests_per_s']} req/s, "
        f"RSS {soak['rss_before_mb']} -> {soak['rss_after_mb']} MB"
    )
    if "ttft" in results:
        t = results["ttft"]
        print(
            f"TTFT p50: llama direct {t['llama_direct_answer_prompt']['p50_ms']:.0f} ms, graph "
            f"{t['graph_in_process']['p50_ms']:.0f} ms, service {t['service']['p50_ms']:.0f} ms "
            f"(service - graph {t['service_minus_graph_p50_ms']} ms)"
        )


if __name__ == "__main__":
    main()
