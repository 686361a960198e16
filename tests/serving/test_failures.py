"""What the service does when its parts fail: model down or slow, Redis down or restarted, restarts, access."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from cairn.processes import http_ok
from tests.serving.conftest import (
    CAIRN,
    RedisProcess,
    Server,
    ServiceProcess,
    free_port,
    served,
    service_settings,
)

pytestmark = pytest.mark.integration

QUESTION = {"model": "cairn-agent", "messages": [{"role": "user", "content": "How does the LRU cache evict?"}]}


def _chat(url: str, session: str | None = None, stream: bool = False, timeout: float = 30) -> httpx.Response:
    headers = {"X-Session-Id": session} if session else {}
    return httpx.post(
        f"{url}/v1/chat/completions", json={**QUESTION, "stream": stream}, headers=headers, timeout=timeout
    )


def test_model_down_is_503_with_the_reason(service_index: Path, redis_server: RedisProcess) -> None:
    dead = f"openai-compatible/m@http://127.0.0.1:{free_port()}/v1"
    with served(service_index, redis_server.url, model=dead, model_max_retries=0) as server:
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
        with served(service_index, redis_server.url, model=slow, model_timeout=1, model_max_retries=0) as server:
            started = time.monotonic()
            reply = _chat(server.url)
            elapsed = time.monotonic() - started
    assert reply.status_code == 504, reply.text
    assert "did not answer within 1s" in reply.json()["error"]["message"]
    assert elapsed < 5


def test_failover_endpoint_is_used(service_index: Path, redis_server: RedisProcess) -> None:
    dead = f"openai-compatible/m@http://127.0.0.1:{free_port()}/v1"
    with served(service_index, redis_server.url, model=dead, model_fallback="instant", model_max_retries=0) as server:
        reply = _chat(server.url)
    assert reply.status_code == 200, reply.text
    assert reply.json()["cairn"]["citations"]


def test_redis_down_sessions_503_stateless_works_and_recovers(service_index: Path, tmp_path: Path) -> None:
    from serving.app import create_app

    redis = RedisProcess(tmp_path)  # not started yet
    with Server(create_app(service_settings(service_index, redis.url))) as server:
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


def test_killed_service_keeps_every_committed_turn(
    service_index: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    settings = service_settings(service_index, redis_server.url)
    service = ServiceProcess(settings, log_path=tmp_path / "serve.log").start()
    try:
        assert _chat(service.url, session="killed").status_code == 200
        service.process.kill()  # SIGKILL, as a crash would
        service.start()
        assert _chat(service.url, session="killed").status_code == 200
        messages = httpx.get(f"{service.url}/sessions/killed").json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    finally:
        service.process.stop()


def test_two_apps_in_one_process_each_answer_with_their_own_model(
    service_index: Path, redis_server: RedisProcess
) -> None:
    """Settings reach a run by one route: the app's own, never the process environment."""
    dead = f"openai-compatible/m@http://127.0.0.1:{free_port()}/v1"
    with (
        served(service_index, redis_server.url, model="instant") as working,
        served(service_index, redis_server.url, model=dead, model_max_retries=0) as broken,
    ):
        assert _chat(working.url).status_code == 200
        assert httpx.get(f"{working.url}/ready").json()["checks"]["model"]["model"] == "instant"
        down = _chat(broken.url)
        assert down.status_code == 503 and dead.split("@")[1] in down.json()["error"]["message"]
        ready = httpx.get(f"{broken.url}/ready").json()
        assert ready["checks"]["model"]["model"] == dead and not ready["checks"]["model"]["ok"]
        assert _chat(working.url).status_code == 200  # the other app's settings did not leak


def test_serve_reports_a_redis_that_cannot_start_in_one_line(tmp_path: Path) -> None:
    """A port held by something that is not Redis: redis-server cannot bind, and `cairn serve` says so."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        env = {"CAIRN_DATA_DIR": str(tmp_path), "CAIRN_REDIS_URL": f"redis://127.0.0.1:{port}/0",
               "CAIRN_MODEL": "instant", "PATH": os.environ["PATH"]}  # fmt: skip
        done = subprocess.run([CAIRN, "serve", "--port", str(free_port())], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert done.returncode == 14, done.stderr
    assert "redis-server" in done.stderr and "hint:" in done.stderr and "Traceback" not in done.stderr


def test_api_keys_rate_limit_and_cors(service_index: Path, redis_server: RedisProcess) -> None:
    with served(
        service_index,
        redis_server.url,
        api_keys=["k1", "k2"],
        rate_limit=3,
        cors_origins=["http://localhost:3000"],
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
    with served(service_index, redis_server.url, max_body_bytes=4096) as server:

        def body():
            for _ in range(10):
                yield b" " * 1000

        reply = httpx.post(
            f"{server.url}/v1/chat/completions", content=body(), headers={"content-type": "application/json"}
        )
    assert reply.status_code == 413, reply.text


def test_serve_stops_the_redis_it_started_on_sigterm(tmp_path: Path) -> None:
    """`kill` (systemd, docker stop) ends `cairn serve` as Ctrl-C does: what it started stops with it."""
    redis_port, port = free_port(), free_port()
    env = {"CAIRN_DATA_DIR": str(tmp_path), "CAIRN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "CAIRN_MODEL": "instant", "PATH": os.environ["PATH"]}  # fmt: skip
    serve = subprocess.Popen([CAIRN, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not _redis_answers(redis_port):
            assert serve.poll() is None and time.monotonic() < deadline, "cairn serve did not start Redis"
            time.sleep(0.2)
        while not http_ok(f"http://127.0.0.1:{port}/health", timeout=1):
            assert serve.poll() is None and time.monotonic() < deadline, "cairn serve did not start"
            time.sleep(0.2)
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(30)
    finally:
        if serve.poll() is None:
            serve.kill()
    assert code == 143, serve.stderr.read()[-2000:] if serve.stderr else code
    assert not _redis_answers(redis_port)  # the Redis it started is gone


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False
