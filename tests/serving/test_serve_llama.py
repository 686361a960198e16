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

from cairn.processes import ChildProcess, http_ok
from graphs.agent.citations import find_citations
from tests.conftest import ROOT
from tests.serving.conftest import CAIRN, RedisProcess, free_port

pytestmark = pytest.mark.integration


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
    serve = ChildProcess([CAIRN, "serve", "--port", str(port)], name="cairn serve", env=env,
                         log_path=tmp_path / "serve.log")  # fmt: skip
    serve.start(lambda: http_ok(f"http://127.0.0.1:{port}/ready", timeout=2), timeout=180)
    try:
        ready = httpx.get(f"http://127.0.0.1:{port}/ready").json()
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
        citations, sources = final.model_extra["cairn"]["citations"], final.model_extra["cairn"]["sources"]
        assert all(c in text for c in citations)
        listed = text[text.index("Sources:") :]
        assert sources and [str(c) for _, c in find_citations(listed)] == [s["citation"] for s in sources]
        session = httpx.get(f"http://127.0.0.1:{port}/sessions/llama-session").json()
        assert session["telemetry"]["message_count"] == 2 and session["telemetry"]["prompt_tokens"] > 0
        # Open WebUI's title task, pointed at the plain model: answered by the model alone, quickly
        from tests.serving.test_app import TITLE_TASK

        started = time.perf_counter()
        title = client.chat.completions.create(model="cairn-chat", max_tokens=24,
                                               messages=[{"role": "user", "content": TITLE_TASK}])  # fmt: skip
        assert title.choices[0].message.content.strip() and "Sources:" not in title.choices[0].message.content
        assert title.model_extra["cairn"]["passthrough"] is True and time.perf_counter() - started < 30
    finally:
        serve.signal(signal.SIGINT)  # Ctrl-C: the service stops the model server it started
        try:
            code = serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise
    assert code == 0, (tmp_path / "serve.log").read_text()[-2000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{model_port}/v1/models", timeout=2)


def test_serve_refuses_a_public_address_without_a_key(tmp_path: Path) -> None:
    env = {**os.environ, "CAIRN_DATA_DIR": str(tmp_path)}
    env.pop("CAIRN_API_KEYS", None)
    result = subprocess.run([CAIRN, "serve", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 11
    assert "without an API key" in result.stderr and "CAIRN_API_KEYS" in result.stderr


def test_langgraph_dev_loads_the_graph_and_runs_a_thread(service_index: Path, llama, tmp_path: Path) -> None:
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
    command = [langgraph, "dev", "--no-browser", "--no-reload", "--port", str(port),
               "--config", str(ROOT / "langgraph.json")]  # fmt: skip
    with ChildProcess(command, name="langgraph dev", env=env, cwd=ROOT, log_path=tmp_path / "dev.log") as dev:
        dev.start(lambda: http_ok(f"http://127.0.0.1:{port}/ok", timeout=2), timeout=120)
        client = get_sync_client(url=f"http://127.0.0.1:{port}")
        assistants = client.assistants.search(graph_id="agent")
        assert assistants and assistants[0]["name"] == "cairn-agent"
        # Studio's context schema carries the CAIRN_* settings resolved when the graph was loaded
        schema = client.assistants.get_schemas(assistants[0]["assistant_id"])["context_schema"]
        assert schema["properties"]["model"]["default"] == env["CAIRN_MODEL"]
        assert schema["properties"]["max_rounds"]["default"] == 0
        thread = client.threads.create()
        state = client.runs.wait(
            thread["thread_id"],
            "agent",
            input={"messages": [{"role": "human", "content": "How does the LRU cache evict?"}]},
        )
        assert state["answer"] and state["sources"]
        state = client.runs.wait(
            thread["thread_id"],
            "agent",
            input={"messages": [{"role": "human", "content": "And what does get return?"}]},
            context={"k": 3},  # a field set for this run; the rest from the loaded settings
        )
        assert len(state["messages"]) == 4  # the thread kept the first turn


def test_a_client_that_goes_away_stops_the_model(service_index: Path, redis_server: RedisProcess, llama) -> None:
    """Closing a stream mid-answer closes the model request: llama.cpp stops generating for nobody."""
    import time

    import openai

    from tests.serving.conftest import served

    spec = f"openai-compatible/smollm2-135m@{llama.base_url}"
    direct = openai.OpenAI(base_url=llama.base_url, api_key="unused")

    def quick_reply_seconds() -> float:
        started = time.monotonic()
        direct.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=2)  # fmt: skip
        return time.monotonic() - started

    # llama.cpp's server answers one request at a time, so a generation still running would hold this up
    idle = quick_reply_seconds()
    # At temperature 0 this question runs the bundled model to its 1,500-token limit (measured: 55 s),
    # so a generation that went on would hold up the probe below for tens of seconds.
    with served(service_index, redis_server.url, model=spec, model_max_tokens=1500, model_temperature=0,
                agent_max_rounds=0) as server:  # fmt: skip
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        stream = client.chat.completions.create(
            model="cairn-agent",
            messages=[{"role": "user", "content": "Write a very long story about the LRU cache, in detail."}],
            stream=True,
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break  # the answer has started: go away
        stream.close()
        time.sleep(0.5)
        after = quick_reply_seconds()
    assert after < idle + 3, f"the model kept generating after the client left ({after:.1f}s vs {idle:.1f}s idle)"
