"""The service over real HTTP (uvicorn) with real Redis and an instant fake model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from config import get_settings
from models import register_provider
from tests.conftest import SAMPLE_REPO
from tests.fakes import InstantChatModel
from tests.serving.conftest import RedisProcess, free_port

pytestmark = pytest.mark.integration

FAKE = InstantChatModel()
register_provider("instant", lambda spec, settings: FAKE)


class Server:
    """The Cairn app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def service_env(tmp_path_factory: pytest.TempPathFactory, real_embedder, redis_server: RedisProcess) -> Iterator[dict]:
    """CAIRN_* for a service on the ingested sample repository, the instant model and the test Redis."""
    from config import Settings
    from ingest.pipeline import ingest_repository

    base = tmp_path_factory.mktemp("service")
    ingest_repository(SAMPLE_REPO, Settings(data_dir=base, index_dir=base / "index"),
                      embedder_factory=lambda: real_embedder)  # fmt: skip
    env = {
        "CAIRN_DATA_DIR": str(base),
        "CAIRN_INDEX_DIR": str(base / "index"),
        "CAIRN_MODEL": "instant/fake",
        "CAIRN_REDIS_URL": redis_server.url,
        "CAIRN_REDIS_PREFIX": f"test-{free_port()}",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        yield env
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def service(service_env) -> Iterator[Server]:
    from serving.app import create_app

    if not service_env:
        pytest.fail("no env")
    with Server(create_app()) as server:
        yield server


def test_health_and_ready(service: Server) -> None:
    assert httpx.get(f"{service.url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{service.url}/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["index"]["ok"] and checks["index"]["chunks"] > 10
    assert checks["redis"]["ok"] and checks["model"]["ok"]


def test_models_lists_the_agent(service: Server) -> None:
    body = httpx.get(f"{service.url}/v1/models").json()
    assert [m["id"] for m in body["data"]] == ["cairn-agent"]


def test_chat_completion_with_citations(service: Server) -> None:
    reply = httpx.post(
        f"{service.url}/v1/chat/completions",
        json={"model": "cairn-agent", "messages": [{"role": "user", "content": "How does the LRU cache evict?"}]},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    content = body["choices"][0]["message"]["content"]
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "stop"
    assert "Sources:" in content
    citations = body["cairn"]["citations"]
    assert citations and all(c in content for c in citations)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0


def test_streaming_sends_chunks_then_done(service: Server) -> None:
    with httpx.stream(
        "POST",
        f"{service.url}/v1/chat/completions",
        json={"model": "cairn-agent", "stream": True, "stream_options": {"include_usage": True},
              "messages": [{"role": "user", "content": "How is a torn write detected?"}]},
        timeout=60,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "Sources:" in text
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals[-1]["choices"][0]["finish_reason"] == "stop" and finals[-1]["cairn"]["citations"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_session_keeps_the_conversation(service: Server) -> None:
    headers = {"X-Session-Id": "sess-1"}
    url = f"{service.url}/v1/chat/completions"
    ask = {"model": "cairn-agent", "messages": [{"role": "user", "content": "What does the WAL do?"}]}
    assert httpx.post(url, json=ask, headers=headers, timeout=60).status_code == 200
    follow = {"model": "cairn-agent", "messages": [{"role": "user", "content": "And how is it replayed?"}]}
    assert httpx.post(url, json=follow, headers=headers, timeout=60).status_code == 200
    session = httpx.get(f"{service.url}/sessions/sess-1").json()
    roles = [m["role"] for m in session["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert session["telemetry"]["message_count"] == 4 and session["telemetry"]["turns"] == 2
    assert session["telemetry"]["total_tokens"] > 0 and session["telemetry"]["context_tokens"] > 0
    assert "sess-1" in [s["id"] for s in httpx.get(f"{service.url}/sessions").json()["sessions"]]
    assert httpx.delete(f"{service.url}/sessions/sess-1").status_code == 204
    assert httpx.get(f"{service.url}/sessions/sess-1").status_code == 404
    assert httpx.delete(f"{service.url}/sessions/sess-1").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "JSON"),
        (json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}).encode(), 404, "gpt-4"),
        (json.dumps({"model": "cairn-agent", "messages": []}).encode(), 400, "messages"),
        (json.dumps({"model": "cairn-agent", "messages": [{"role": "assistant", "content": "x"}]}).encode(), 400,
         "user message"),
        (json.dumps({"model": "cairn-agent"}).encode(), 400, "messages"),
        (json.dumps({"model": "cairn-agent", "messages": [{"role": "user", "content": "x"}],
                     "temperature": 9}).encode(), 400, "temperature"),
        (b"x" * 2_000_000, 413, "limit"),
    ],
)  # fmt: skip
def test_malformed_requests_are_4xx_with_a_message(service: Server, body: bytes, status: int, needle: str) -> None:
    reply = httpx.post(f"{service.url}/v1/chat/completions", content=body,
                       headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert reply.status_code == status, reply.text
    assert needle in reply.json()["error"]["message"]
