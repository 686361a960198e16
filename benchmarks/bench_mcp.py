"""Cairn over MCP: what the protocol costs a search, and whether a model picks the right tool from its description.

    .venv/bin/python benchmarks/bench_mcp.py [--rounds 200] [--skip-choice]

1. Overhead: one `cairn serve` process (sample repository, instant model, its own Redis), the same
   queries as ``search`` over MCP (streamable HTTP at /mcp, one client session, the official SDK) and as
   ``GET /api/search`` (httpx), interleaved query by query: latency p50/p95 of each and the difference;
   then requests/s of each at concurrency 8. Goal: MCP adds at most 5 ms at p50.
2. Tool choice: the bundled SmolLM2-135M (llama.cpp) is shown Cairn's MCP tools (name and description,
   as ``tools/list`` gives them) and a question, and answers with a tool name, constrained to those names
   (llama.cpp's JSON-schema grammar); N phrasings, each with the tool it should pick. Reported: the rate
   overall and per expected tool. It sets the baseline for stronger models.
Results: benchmarks/results/mcp.json.
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
import urllib.request
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_serving import wait_ready  # noqa: E402
from benchmarks.common import machine, percentile, write_result  # noqa: E402
from cairn.processes import free_port  # noqa: E402

QUERIES = [
    "evict the least recently used entry", "torn write detected after a crash", "replay the write-ahead log",
    "retry with exponential backoff", "compact the log into a new file", "Store.put", "encode_record",
    "open the database folder", "LRUCache capacity", "checksum of a record",
]  # fmt: skip

#: Phrasings and the tool a client should call for each.
CHOICES: list[tuple[str, str]] = [
    ("Where is the class LRUCache defined?", "definition"),
    ("Where is encode_record defined?", "definition"),
    ("Show me the definition of Store.compact.", "definition"),
    ("In which file is WriteAheadLog declared?", "definition"),
    ("Who calls encode_record?", "references"),
    ("What calls Store.put?", "references"),
    ("Find every use of the LRUCache class.", "references"),
    ("List the callers of WriteAheadLog.append.", "references"),
    ("Which modules import tinykv.store?", "importers"),
    ("What files import the cache module?", "importers"),
    ("Who imports tinykv.wal?", "importers"),
    ("Where are retries with exponential backoff handled?", "search"),
    ("Find the code that detects a torn write.", "search"),
    ("Search for where the database folder is opened.", "search"),
    ("Look for checksum computations.", "search"),
    ("How does the LRU cache evict entries? Explain with citations.", "ask"),
    ("Explain how the write-ahead log is replayed after a crash.", "ask"),
    ("Why does the store compact its log? Answer the question.", "ask"),
    ("Show me lines 1 to 20 of tinykv/store.py.", "read_file"),
    ("Read the file tinykv/wal.py.", "read_file"),
    ("Open web/client.js and show its contents.", "read_file"),
    ("Give me an overview of the repository's main definitions.", "repo_map"),
    ("Summarise the structure of the codebase: its most used classes and functions.", "repo_map"),
    ("Which repositories are indexed?", "list_repositories"),
    ("What projects can you answer about?", "list_repositories"),
]


def start_service(work: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """Ingest the sample repository and serve it (instant model, a Redis of its own)."""
    cairn = str(ROOT / ".venv" / "bin" / "cairn")
    env = {**os.environ, "CAIRN_DATA_DIR": str(work), "CAIRN_MODEL": "instant",
           "CAIRN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "CAIRN_RATE_LIMIT": "0"}  # fmt: skip
    subprocess.run([cairn, "ingest", str(ROOT / "examples" / "sample-repo"), "--index", str(work / "index"), "-q"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    port = free_port()
    process = subprocess.Popen([cairn, "serve", "--index", str(work / "index"), "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/health", process)
    return process, url, env


async def overhead(url: str, rounds: int) -> dict[str, Any]:
    """Interleave the same queries over MCP and /api/search; latency of each, then throughput at concurrency 8."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    mcp_ms: list[float] = []
    http_ms: list[float] = []
    async with (
        create_mcp_http_client() as mcp_http,
        Client(streamable_http_client(f"{url}/mcp", http_client=mcp_http)) as client,
        httpx.AsyncClient(timeout=60) as http,
    ):
        for query in QUERIES[:3]:  # warm both paths (index load, query embedding)
            await client.call_tool("search", {"query": query})
            await http.get(f"{url}/api/search", params={"q": query})
        for n in range(rounds):
            query = QUERIES[n % len(QUERIES)]
            order = ("mcp", "http") if n % 2 == 0 else ("http", "mcp")
            for kind in order:
                started = time.perf_counter()
                if kind == "mcp":
                    result = await client.call_tool("search", {"query": query})
                    assert not result.is_error, result.content
                    mcp_ms.append((time.perf_counter() - started) * 1000)
                else:
                    (await http.get(f"{url}/api/search", params={"q": query})).raise_for_status()
                    http_ms.append((time.perf_counter() - started) * 1000)
        throughput = {"mcp": await _rate(client.call_tool, rounds, "mcp"),
                      "http": await _rate(http.get, rounds, "http", url=url)}  # fmt: skip
    deltas = [m - h for m, h in zip(mcp_ms, http_ms, strict=True)]
    return {
        "rounds": rounds,
        "mcp_ms": {"p50": round(statistics.median(mcp_ms), 2), "p95": round(percentile(mcp_ms, 95), 2)},
        "api_search_ms": {"p50": round(statistics.median(http_ms), 2), "p95": round(percentile(http_ms, 95), 2)},
        "mcp_minus_api_ms": {"p50": round(statistics.median(deltas), 2), "p95": round(percentile(deltas, 95), 2)},
        "requests_per_s_concurrency_8": throughput,
    }


async def _rate(call: Any, n: int, kind: str, url: str = "") -> float:
    """Requests/s of ``n`` calls with 8 in flight."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            query = QUERIES[i % len(QUERIES)]
            if kind == "mcp":
                await call("search", {"query": query})
            else:
                await call(f"{url}/api/search", params={"q": query})

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(8)))
    return round(n / (time.perf_counter() - started), 1)


def choose_tool(base_url: str, tools: list[dict[str, str]], question: str) -> str:
    """Ask a model (an OpenAI-compatible llama.cpp server) which tool answers ``question``; one of their names.

    The reply is constrained to ``{"tool": <one of the names>}`` by llama-cpp-python's JSON-schema
    grammar, so the model can only choose; what it chooses by is each tool's description.
    """
    listing = "\n".join(f"- {tool['name']}: {tool['description']}" for tool in tools)
    schema = {"type": "object", "properties": {"tool": {"type": "string", "enum": [t["name"] for t in tools]}},
              "required": ["tool"]}  # fmt: skip
    body = {
        "messages": [
            {"role": "system", "content": f"You choose the one tool that best answers the user's request.\nTools:\n"
                                          f"{listing}\nReply with JSON: {{\"tool\": \"<name>\"}}."},
            {"role": "user", "content": question},
        ],
        "temperature": 0,
        "max_tokens": 24,
        "response_format": {"type": "json_object", "schema": schema},
    }  # fmt: skip
    request = urllib.request.Request(f"{base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        reply = json.loads(response.read())
    return str(json.loads(reply["choices"][0]["message"]["content"])["tool"])


def required_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's input schema cut to its required arguments, type and description only, for a small model to fill.

    llama-cpp-python 0.3.36 compiles a tool's schema into a grammar; the full schemas (optional arguments
    as anyOf with null, length bounds) crashed its server with SIGSEGV, and a small model fills the
    required arguments best anyway.
    """
    required = list(schema.get("required", []))
    properties = {
        name: {key: value for key, value in spec.items() if key in ("type", "description", "enum")}
        for name, spec in schema.get("properties", {}).items()
        if name in required
    }
    return {"type": "object", "properties": properties, "required": required}


async def mcp_tools(url: str) -> list[dict[str, str]]:
    """Cairn's tools as a client lists them: name and description."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async with create_mcp_http_client() as http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as c:
        return [{"name": t.name, "description": " ".join((t.description or "").split())}
                for t in (await c.list_tools()).tools]  # fmt: skip


def tool_choice(url: str, work: Path) -> dict[str, Any]:
    """The bundled model's rate of picking the expected tool for each phrasing."""
    from config import Settings
    from models.embedded import EmbeddedServer

    tools = asyncio.run(mcp_tools(url))
    server = EmbeddedServer(Settings(_env_file=None, data_dir=work / "llama", embedded_port=free_port()))
    server.start(timeout=180)
    try:
        picks = [(question, expected, choose_tool(server.base_url, tools, question)) for question, expected in CHOICES]
    finally:
        server.stop()
    per_tool: dict[str, list[bool]] = {}
    for _, expected, chosen in picks:
        per_tool.setdefault(expected, []).append(chosen == expected)
    right = sum(chosen == expected for _, expected, chosen in picks)
    return {
        "model": "SmolLM2-135M (bundled)",
        "phrasings": len(picks),
        "right": right,
        "rate": round(right / len(picks), 3),
        "per_tool": {tool: f"{sum(hits)}/{len(hits)}" for tool, hits in per_tool.items()},
        "picks": [{"question": q, "expected": e, "chosen": c} for q, e, c in picks],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--skip-choice", action="store_true", help="only the overhead (no llama.cpp)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    process, url, _ = start_service(work)
    try:
        report: dict[str, Any] = {"machine": machine(), "overhead": asyncio.run(overhead(url, args.rounds))}
        if not args.skip_choice:
            report["tool_choice"] = tool_choice(url, work)
    finally:
        process.terminate()
        process.wait(30)
    path = write_result("mcp", report)
    print(json.dumps({k: v for k, v in report.items() if k != "tool_choice"}, indent=2))
    if "tool_choice" in report:
        print(json.dumps({k: v for k, v in report["tool_choice"].items() if k != "picks"}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
