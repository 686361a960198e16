"""Cairn as an MCP server, driven by the official SDK's client, over every transport, and by the MCP Inspector.

In process (``Client(server)``), over streamable HTTP at ``/mcp`` of the real service (its keys,
metrics and sessions), over stdio (``cairn mcp``), and with the Inspector's CLI (npm), which `make test`
installs beside the venv.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from config import Settings
from serving.mcp_server import CairnMCP
from serving.service import Service
from tests.conftest import ROOT
from tests.serving.conftest import CAIRN, served

pytestmark = pytest.mark.integration

INSPECTOR = ROOT / ".venv" / "mcp-inspector" / "node_modules" / ".bin" / "mcp-inspector"
TOOLS = {"search", "definition", "references", "importers", "read_file", "repo_map", "list_repositories", "ask"}


def _service(index: Path, **overrides) -> Service:
    settings = Settings(_env_file=None, data_dir=index.parent, index_dir=index, model="instant", **overrides)
    service = Service.build(settings)
    service.load_index()
    return service


def test_tools_have_schemas_descriptions_and_are_read_only(service_index: Path) -> None:
    async def run() -> list:
        async with Client(CairnMCP(_service(service_index))) as client:
            return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in asyncio.run(run())}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description or "") > 40, tool.name
        assert tool.output_schema, tool.name  # structured output everywhere
        assert tool.annotations is not None and tool.annotations.read_only_hint, tool.name
    query = tools["search"].input_schema["properties"]["query"]
    assert query["type"] == "string" and query["description"] and tools["search"].input_schema["required"] == ["query"]


def test_each_tool_answers_with_structured_content_and_text(service_index: Path) -> None:
    async def run() -> dict:
        found = {}
        async with Client(CairnMCP(_service(service_index))) as client:
            found["search"] = await client.call_tool("search", {"query": "evict the least recently used entry", "k": 3})
            found["definition"] = await client.call_tool("definition", {"name": "LRUCache"})
            found["references"] = await client.call_tool("references", {"name": "encode_record"})
            found["importers"] = await client.call_tool("importers", {"module": "tinykv.store"})
            found["read_file"] = await client.call_tool("read_file", {"path": "tinykv/store.py", "start": 1, "end": 3})
            found["repo_map"] = await client.call_tool("repo_map", {"tokens": 200})
            found["list_repositories"] = await client.call_tool("list_repositories", {})
        return found

    found = asyncio.run(run())
    assert not any(result.is_error for result in found.values())
    assert found["search"].structured_content["results"][0]["citation"].startswith("tinykv/cache.py:")
    assert "tinykv/cache.py:" in found["search"].content[0].text
    assert found["definition"].structured_content["definitions"][0]["qualified_name"] == "LRUCache"
    callers = {c["caller"]["qualified_name"] for c in found["references"].structured_content["callers"]}
    assert callers == {"Store.compact", "WriteAheadLog.append"}
    assert any(i["path"] == "tinykv/__init__.py" for i in found["importers"].structured_content["importers"])
    assert found["read_file"].structured_content["text"].startswith('"""The Store')
    assert "tinykv/store.py" in found["repo_map"].content[0].text
    assert found["list_repositories"].structured_content["repositories"][0]["chunks"] > 10


def test_errors_are_tool_errors_with_the_cli_message(service_index: Path) -> None:
    async def run() -> list:
        async with Client(CairnMCP(_service(service_index))) as client:
            return [
                await client.call_tool("read_file", {"path": "../../etc/passwd"}),
                await client.call_tool("read_file", {"path": ".env"}),
                await client.call_tool("search", {"query": "x", "repo": "nope"}),
                await client.call_tool("definition", {"name": "NoSuchThing"}),
                await client.call_tool("search", {"query": "x", "path": ["\\"]}),
                await client.call_tool("search", {"query": "cache"}),  # and the session still works
            ]

    refused, secret, unknown, missing, pattern, after = asyncio.run(run())
    assert refused.is_error and "refused" in refused.content[0].text
    assert secret.is_error and "not an indexed file" in secret.content[0].text
    assert unknown.is_error and "No repository named 'nope'" in unknown.content[0].text
    assert missing.is_error and "hint:" in missing.content[0].text
    assert pattern.is_error and "gitignore-style pattern" in pattern.content[0].text
    assert not after.is_error


def test_ask_reports_its_steps_as_progress_and_answers_with_citations(service_index: Path) -> None:
    steps: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append(message or "")

    async def run():
        async with Client(CairnMCP(_service(service_index))) as client:
            return await client.call_tool("ask", {"question": "How does the LRU cache evict entries?"},
                                          progress_callback=on_progress)  # fmt: skip

    result = asyncio.run(run())
    assert not result.is_error, result.content
    assert steps[0] == "planning" and "answering" in steps
    assert result.structured_content["citations"] and "Sources:" in result.content[0].text


def test_a_cancelled_ask_stops_the_run(service_index: Path, fake_models) -> None:
    """The client gives up (notifications/cancelled): the turn is cancelled, and its session keeps nothing."""
    from tests.serving.test_trust import _Slow

    fake_models(lambda spec, config: _Slow(), name="slow")
    service = _service(service_index, model_answer="slow/x")

    async def run() -> None:
        async with Client(CairnMCP(service)) as client:
            with anyio.move_on_after(2.0):
                await client.call_tool("ask", {"question": "How does the cache evict?"})
            assert service.runs.running == 0  # the run let go of its slot: it ended
            result = await client.call_tool("search", {"query": "cache"})
            assert not result.is_error

    asyncio.run(run())


def test_over_http_behind_the_keys_with_sessions_per_key(service_index: Path, redis_url: str) -> None:
    with served(service_index, redis_url, api_keys=["alice:key-alice-0123456789", "key-bob-0123456789"]) as server:

        async def call(key: str | None, tool: str, arguments: dict):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            async with (
                create_mcp_http_client(headers=headers) as http,
                Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
            ):
                return await client.call_tool(tool, arguments)

        found = asyncio.run(call("key-alice-0123456789", "search", {"query": "write-ahead log"}))
        assert not found.is_error and found.structured_content["results"]
        asked = asyncio.run(call("key-alice-0123456789", "ask", {"question": "How is a torn write detected?",
                                                                  "session": "mcp-s1"}))  # fmt: skip
        assert not asked.is_error and asked.structured_content["session_id"] == "mcp-s1"
        alice = httpx.get(f"{server.url}/sessions", headers={"Authorization": "Bearer key-alice-0123456789"})
        bob = httpx.get(f"{server.url}/sessions", headers={"Authorization": "Bearer key-bob-0123456789"})
        assert [s["id"] for s in alice.json()["sessions"]] == ["mcp-s1"] and bob.json()["sessions"] == []
        unauthenticated = httpx.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                     headers={"Accept": "application/json, text/event-stream"})  # fmt: skip
        assert unauthenticated.status_code == 401
        metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer key-bob-0123456789"}).text
        assert 'route="/mcp"' in metrics


def test_the_sdk_loads_after_start_up_and_an_endpoint_that_cannot_load_is_a_503(
    service_index: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the app does not import the MCP SDK (it loads in the background once the service is up,
    serving/mcp_endpoint.py); if it cannot load, /mcp says why with a 503 and everything else serves."""
    import sys

    import serving.mcp_server

    code = "import sys, serving.app; print('mcp' in sys.modules, 'serving.mcp_server' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]

    def broken(*args: object, **kwargs: object) -> None:
        raise ImportError("No module named 'mcp' (as if it were not installed)")

    monkeypatch.setattr(serving.mcp_server, "http_endpoint", broken)
    with served(service_index, redis_url) as server:
        response = httpx.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                              headers={"Accept": "application/json, text/event-stream"})  # fmt: skip
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert "MCP endpoint is unavailable: it could not start (ImportError" in message
        assert "not installed" not in message  # the reason is logged for the operator, not told to clients
        assert httpx.get(f"{server.url}/ready").status_code == 200
        assert httpx.get(f"{server.url}/v1/models").status_code == 200


def test_the_endpoint_serves_again_after_the_app_restarts(service_index: Path, redis_url: str) -> None:
    """Each start of the app's lifespan builds /mcp afresh (a stopped endpoint is never served)."""
    from starlette.testclient import TestClient

    from serving.app import create_app
    from tests.serving.conftest import service_settings

    app = create_app(service_settings(service_index, redis_url))
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "test", "version": "1"}}}  # fmt: skip
    for _ in range(2):
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            response = client.post("/mcp", json=initialize, headers={"Accept": "application/json, text/event-stream"})
            assert response.status_code == 200, response.text
            assert '"serverInfo"' in response.text


def test_over_stdio_with_cairn_mcp(service_index: Path) -> None:
    env = {**os.environ, "CAIRN_DATA_DIR": str(service_index.parent), "CAIRN_MODEL": "instant"}
    params = StdioServerParameters(command=CAIRN, args=["mcp", "--index", str(service_index)], env=env)

    async def run():
        async with Client(params) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            return tools, await client.call_tool("definition", {"name": "Store"})

    tools, found = asyncio.run(run())
    assert tools == TOOLS and found.structured_content["definitions"][0]["path"] == "tinykv/store.py"


def _inspector(*args: str, timeout: float = 120) -> dict:
    if not INSPECTOR.exists():
        pytest.fail(f"the MCP Inspector is not installed at {INSPECTOR}: run `make test` (it installs it with npm)")
    done = subprocess.run([str(INSPECTOR), "--cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HOME": str(ROOT / ".venv" / "mcp-inspector")})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_mcp_inspector_lists_and_calls_the_tools_over_both_transports(service_index: Path, redis_url: str) -> None:
    stdio = [CAIRN, "mcp", "--index", str(service_index)]
    env = ["-e", f"CAIRN_DATA_DIR={service_index.parent}", "-e", "CAIRN_MODEL=instant"]
    listed = _inspector(*stdio, *env, "--method", "tools/list")
    assert {tool["name"] for tool in listed["tools"]} == TOOLS
    found = _inspector(*stdio, *env, "--method", "tools/call", "--tool-name", "search", "--tool-arg",
                       "query=least recently used")  # fmt: skip
    assert found["structuredContent"]["results"][0]["path"] == "tinykv/cache.py"
    with served(service_index, redis_url) as server:
        url = f"{server.url}/mcp"
        assert {tool["name"] for tool in _inspector(url, "--method", "tools/list")["tools"]} == TOOLS
        defined = _inspector(url, "--method", "tools/call", "--tool-name", "definition", "--tool-arg", "name=Store")
        assert defined["structuredContent"]["definitions"][0]["citation"].startswith("tinykv/store.py:")
        asked = _inspector(url, "--method", "tools/call", "--tool-name", "ask", "--tool-arg",
                           "question=How does the LRU cache evict entries?")  # fmt: skip
        assert asked["structuredContent"]["citations"], asked


def test_an_agent_on_the_bundled_model_chooses_fills_and_calls_a_cairn_tool(
    service_index: Path, redis_url: str, llama
) -> None:
    """One agent step, end to end: the model reads Cairn's tool list, chooses a tool, fills its arguments
    (llama.cpp's grammar keeps both to the schemas), and the call goes over MCP to the real service."""
    from benchmarks.bench_mcp import choose_tool, required_arguments

    question = "Search for the code that evicts the least recently used cache entry."
    with served(service_index, redis_url) as server:

        async def listed() -> list:
            async with (
                create_mcp_http_client() as http,
                Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
            ):
                return (await client.list_tools()).tools

        tools = asyncio.run(listed())
        described = [{"name": t.name, "description": " ".join((t.description or "").split())} for t in tools]
        chosen = choose_tool(llama.base_url, described, question)
        assert chosen == "search"
        schema = required_arguments(next(t.input_schema for t in tools if t.name == chosen))
        reply = httpx.post(f"{llama.base_url}/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 64,
            "tools": [{"type": "function", "function": {"name": chosen, "parameters": schema}}],
            "tool_choice": {"type": "function", "function": {"name": chosen}},
        }).json()  # fmt: skip
        arguments = json.loads(reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])

        async def call():
            async with (
                create_mcp_http_client() as http,
                Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
            ):
                return await client.call_tool(chosen, arguments)

        result = asyncio.run(call())
    assert not result.is_error, (arguments, result.content)
    assert arguments.get("query") and result.structured_content["results"]
