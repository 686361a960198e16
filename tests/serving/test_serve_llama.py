"""`cairn serve` and `langgraph dev` end to end: real Redis, the real llama.cpp server, the official clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from graphs.agent.citations import find_citations
from tests.conftest import ROOT
from tests.serving.conftest import RedisProcess, free_port

pytestmark = pytest.mark.integration

CAIRN = str(Path(sys.executable).with_name("cairn"))


def _wait(url: str, process: subprocess.Popen, seconds: float = 180) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited {process.returncode}: {process.stderr.read().decode()[-3000:]}")
        try:
            reply = httpx.get(url, timeout=2)
            if reply.status_code == 200:
                return reply
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{url} not ready: {process.stderr.read().decode()[-3000:]}")


def test_cairn_serve_with_the_embedded_model(service_index: Path, redis_server: RedisProcess, tmp_path: Path) -> None:
    import openai

    port, model_port = free_port(), free_port()
    env = {
        **os.environ,
        "CAIRN_INDEX_DIR": str(service_index),
        "CAIRN_DATA_DIR": str(tmp_path),
        "CAIRN_REDIS_URL": redis_server.url,
        "CAIRN_EMBEDDED_PORT": str(model_port),
        "CAIRN_MODEL": "embedded",
        "CAIRN_MODEL_TEMPERATURE": "0",
        "CAIRN_REDIS_PREFIX": "serve-llama",
    }
    process = subprocess.Popen(
        [CAIRN, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        ready = _wait(f"http://127.0.0.1:{port}/ready", process).json()
        assert ready["checks"]["model"]["endpoint"].startswith(f"http://127.0.0.1:{model_port}")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        stream = client.chat.completions.create(
            model="cairn-agent",
            messages=[{"role": "user", "content": "How does the LRU cache evict entries?"}],
            stream=True,
            max_tokens=48,
            extra_headers={"X-Session-Id": "llama-session"},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
        assert final.choices[0].finish_reason in {"stop", "length"}
        citations = final.model_extra["cairn"]["citations"]
        assert citations and all(c in text for c in citations)
        sources = text[text.index("Sources:") :]
        assert find_citations(sources), sources
        session = httpx.get(f"http://127.0.0.1:{port}/sessions/llama-session").json()
        assert session["telemetry"]["message_count"] == 2 and session["telemetry"]["prompt_tokens"] > 0
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: the service stops the model server it started
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert process.returncode == 0, process.stderr.read().decode()[-2000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{model_port}/v1/models", timeout=2)


def test_serve_refuses_a_public_address_without_a_key(tmp_path: Path) -> None:
    env = {**os.environ, "CAIRN_DATA_DIR": str(tmp_path)}
    env.pop("CAIRN_API_KEYS", None)
    result = subprocess.run([CAIRN, "serve", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 11
    assert "without an API key" in result.stderr and "CAIRN_API_KEYS" in result.stderr


def test_langgraph_dev_loads_the_graph_and_runs_a_thread(service_index: Path, llama) -> None:
    from langgraph_sdk import get_sync_client

    port = free_port()
    env = {
        **os.environ,
        "CAIRN_INDEX_DIR": str(service_index),
        "CAIRN_MODEL_TEMPERATURE": "0",
        "CAIRN_MODEL": f"openai-compatible/smollm2-135m@{llama.base_url}",
        "CAIRN_AGENT_MAX_ROUNDS": "0",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
    }
    langgraph = str(Path(sys.executable).with_name("langgraph"))
    process = subprocess.Popen(
        [
            langgraph,
            "dev",
            "--no-browser",
            "--no-reload",
            "--port",
            str(port),
            "--config",
            str(ROOT / "langgraph.json"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/ok", process, seconds=120)
        client = get_sync_client(url=f"http://127.0.0.1:{port}")
        assistants = client.assistants.search(graph_id="agent")
        assert assistants and assistants[0]["name"] == "cairn-agent"
        thread = client.threads.create()
        state = client.runs.wait(
            thread["thread_id"],
            "agent",
            input={"messages": [{"role": "human", "content": "How does the LRU cache evict?"}]},
        )
        assert "Sources:" in state["answer"] and state["citations"]
        state = client.runs.wait(
            thread["thread_id"],
            "agent",
            input={"messages": [{"role": "human", "content": "And what does get return?"}]},
        )
        assert len(state["messages"]) == 4  # the thread kept the first turn
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
