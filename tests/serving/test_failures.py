"""What the service does when its parts fail: model down or slow, Redis down or restarted, restarts, access."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import RedisProcess, Server, cairn_env, free_port, served

pytestmark = pytest.mark.integration

QUESTION = {"model": "cairn-agent", "messages": [{"role": "user", "content": "How does the LRU cache evict?"}]}


def _chat(url: str, session: str | None = None, stream: bool = False, timeout: float = 30) -> httpx.Response:
    headers = {"X-Session-Id": session} if session else {}
    return httpx.post(
        f"{url}/v1/chat/completions", json={**QUESTION, "stream": stream}, headers=headers, timeout=timeout
    )


def _app():
    from serving.app import create_app

    return create_app()


def test_model_down_is_503_with_the_reason(service_index: Path, redis_server: RedisProcess) -> None:
    dead = f"openai-compatible/m@http://127.0.0.1:{free_port()}/v1"
    with served(service_index, redis_server.url, CAIRN_MODEL=dead, CAIRN_MODEL_MAX_RETRIES="0") as server:
        for stream in (False, True):
            started = time.monotonic()
            reply = _chat(server.url, stream=stream)
            assert reply.status_code == 503, reply.text
            assert "unreachable" in reply.json()["error"]["message"]
            assert time.monotonic() - started < 10
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 503 and not ready.json()["checks"]["model"]["ok"]


def test_model_timeout_is_504_within_the_timeout(service_index: Path, redis_server: RedisProcess) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        slow = f"openai-compatible/m@http://127.0.0.1:{silent.getsockname()[1]}/v1"
        with served(
            service_index, redis_server.url, CAIRN_MODEL=slow, CAIRN_MODEL_TIMEOUT="1", CAIRN_MODEL_MAX_RETRIES="0"
        ) as server:
            started = time.monotonic()
            reply = _chat(server.url)
            elapsed = time.monotonic() - started
    assert reply.status_code == 504, reply.text
    assert "did not answer within 1s" in reply.json()["error"]["message"]
    assert elapsed < 5


def test_failover_endpoint_is_used(service_index: Path, redis_server: RedisProcess) -> None:
    dead = f"openai-compatible/m@http://127.0.0.1:{free_port()}/v1"
    with served(
        service_index,
        redis_server.url,
        CAIRN_MODEL=dead,
        CAIRN_MODEL_FALLBACK="instant/fake",
        CAIRN_MODEL_MAX_RETRIES="0",
    ) as server:
        reply = _chat(server.url)
    assert reply.status_code == 200, reply.text
    assert reply.json()["cairn"]["citations"]


def test_redis_down_sessions_503_stateless_works_and_recovers(service_index: Path, tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path)  # not started yet
    with cairn_env(service_index, redis.url), Server(_app()) as server:
        ready = httpx.get(f"{server.url}/ready")
        assert ready.status_code == 503 and not ready.json()["checks"]["redis"]["ok"]
        assert "redis" in ready.json()["checks"]["redis"]["hint"]
        down = _chat(server.url, session="s1")
        assert down.status_code == 503 and "session store" in down.json()["error"]["message"]
        assert httpx.get(f"{server.url}/sessions").status_code == 503
        assert _chat(server.url).status_code == 200  # stateless requests still work

        redis.start()  # Redis comes up: sessions work without restarting the service
        try:
            assert _chat(server.url, session="s1").status_code == 200
            redis.stop()
            redis.start()  # restarted (appendonly): the session continues
            assert _chat(server.url, session="s1").status_code == 200
            messages = httpx.get(f"{server.url}/sessions/s1").json()["messages"]
            assert len(messages) == 4
            assert httpx.get(f"{server.url}/ready").status_code == 200
        finally:
            redis.stop()


def test_killed_service_keeps_every_committed_turn(service_index: Path, redis_server: RedisProcess) -> None:
    root = Path(__file__).resolve().parents[2]
    with cairn_env(service_index, redis_server.url) as env:
        port = free_port()

        def start() -> subprocess.Popen:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.serving.fake_service", "--port", str(port)],
                cwd=root,
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        return process
                except httpx.HTTPError:
                    time.sleep(0.2)
            process.kill()
            raise RuntimeError(process.stderr.read().decode()[-2000:])

        url = f"http://127.0.0.1:{port}"
        process = start()
        try:
            assert _chat(url, session="killed").status_code == 200
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process = start()
            assert _chat(url, session="killed").status_code == 200
            messages = httpx.get(f"{url}/sessions/killed").json()["messages"]
            assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
        finally:
            process.kill()
            process.wait(10)


def test_api_keys_rate_limit_and_cors(service_index: Path, redis_server: RedisProcess) -> None:
    with served(
        service_index,
        redis_server.url,
        CAIRN_API_KEYS="k1,k2",
        CAIRN_RATE_LIMIT="3",
        CAIRN_CORS_ORIGINS="http://localhost:3000",
    ) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200  # open
        missing = httpx.get(f"{server.url}/v1/models")
        assert missing.status_code == 401 and "Bearer" in missing.json()["error"]["message"]
        wrong = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert httpx.get(f"{server.url}/agent/playground/").status_code == 401
        ok = {"Authorization": "Bearer k1"}
        statuses = [httpx.get(f"{server.url}/v1/models", headers=ok).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
        limited = httpx.get(f"{server.url}/v1/models", headers=ok)
        assert int(limited.headers["retry-after"]) >= 1
        # the limit is per key: the other key still has its budget
        assert httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
        preflight = httpx.options(
            f"{server.url}/v1/chat/completions",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = httpx.options(
            f"{server.url}/v1/chat/completions",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_chunked_body_over_the_limit_is_413(service_index: Path, redis_server: RedisProcess) -> None:
    with cairn_env(service_index, redis_server.url, CAIRN_MAX_BODY_BYTES="4096"), Server(_app()) as server:

        def body():
            for _ in range(10):
                yield b" " * 1000

        reply = httpx.post(
            f"{server.url}/v1/chat/completions", content=body(), headers={"content-type": "application/json"}
        )
    assert reply.status_code == 413, reply.text
