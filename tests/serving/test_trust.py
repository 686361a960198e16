"""Trust: each key's sessions its own, keys that cannot be blank, a turn saved whole or not at all, bounded work.

Against the real service (uvicorn in a thread) on a real Redis, with the instant model or a model
endpoint that fails the way a real one does (down, silent, dying mid-answer).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from cairn.errors import ExitCode, UnsafeBind
from serving.keys import parse_keys
from tests.serving.conftest import CAIRN, free_port, served

pytestmark = pytest.mark.integration

KEY1, KEY2 = "key-one-0123456789abcdef", "key-two-0123456789abcdef"
QUESTION = "How does the LRU cache evict?"


def _ask(url: str, key: str | None = None, session: str | None = None, stream: bool = False, **extra) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if session:
        headers["X-Session-Id"] = session
    body = {"model": "cairn-agent", "messages": [{"role": "user", "content": QUESTION}], "stream": stream, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def _roles(url: str, session: str, key: str | None = None) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    reply = httpx.get(f"{url}/sessions/{session}", headers=headers)
    if reply.status_code == 404:
        return []
    return [m["role"] for m in reply.json()["messages"]]


# ---------------------------------------------------------------- keys and sessions


def test_blank_whitespace_and_repeated_keys_are_refused() -> None:
    for bad in ([""], ["", "real-key"], ["   "], [" padded "], ["same", "same"], ["a:one", "a:two"], ["ops:"]):
        with pytest.raises(UnsafeBind) as raised:
            parse_keys(bad)
        assert raised.value.exit_code == ExitCode.UNSAFE_BIND
        assert not any(v.strip() and v.strip() in raised.value.message for v in bad if len(v.strip()) > 3)
    keys = parse_keys(["alice:s3cret-key", "plain-key", "team/x:not-a-name"])
    assert [k.name for k in keys] == ["alice", "key-2", "key-3"]
    assert keys[2].secret == b"team/x:not-a-name"  # not a valid name before the colon: the whole is the key
    assert keys[0].owner != keys[1].owner and "s3cret" not in keys[0].owner


def test_cairn_serve_refuses_a_blank_key_with_exit_11(tmp_path: Path) -> None:
    import subprocess

    env = {"CAIRN_DATA_DIR": str(tmp_path), "CAIRN_API_KEYS": '["", "real"]', "CAIRN_MODEL": "instant",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([CAIRN, "serve", "--no-start-redis", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == ExitCode.UNSAFE_BIND, done.stderr
    assert "CAIRN_API_KEYS entry 1 is empty" in done.stderr


def test_each_key_sees_only_its_own_sessions(service_index: Path, redis_url: str) -> None:
    with served(service_index, redis_url, api_keys=[f"alice:{KEY1}", KEY2]) as server:
        assert _ask(server.url, KEY1, session="alice-private").status_code == 200
        assert _ask(server.url, KEY2, session="bob-notes").status_code == 200
        assert _ask(server.url, KEY2, session="alice-private").status_code == 200  # the same name: another session

        def listed(key: str) -> set[str]:
            reply = httpx.get(f"{server.url}/sessions", headers={"Authorization": f"Bearer {key}"})
            return {s["id"] for s in reply.json()["sessions"]}

        assert listed(KEY1) == {"alice-private"}
        assert listed(KEY2) == {"bob-notes", "alice-private"}
        assert _roles(server.url, "alice-private", KEY1) == ["user", "assistant"]  # not bob's turn in it
        assert (
            httpx.get(f"{server.url}/sessions/bob-notes", headers={"Authorization": f"Bearer {KEY1}"}).status_code
            == 404
        )
        gone = httpx.delete(f"{server.url}/sessions/bob-notes", headers={"Authorization": f"Bearer {KEY1}"})
        assert gone.status_code == 404
        assert "bob-notes" in listed(KEY2)  # still there
        for header, blank in (("Authorization", "Bearer "), ("Authorization", "Bearer    "), ("X-API-Key", "")):
            assert _status(server.port, "/sessions", header, blank) == 401


def _status(port: int, path: str, header: str, value: str) -> int:
    """GET with a header value httpx will not send (blank, trailing spaces)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path)
        connection.putheader(header, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_session_ids_with_control_characters_are_refused(service_index: Path, redis_url: str) -> None:
    with served(service_index, redis_url) as server:
        assert httpx.get(f"{server.url}/sessions/a%1Fb").status_code == 400


def test_one_user_with_two_conversations_never_shares_a_session(service_index: Path, redis_url: str) -> None:
    """Open WebUI sends one stable `user` per person: each chat stays its own (the resent history is the chat)."""
    with served(service_index, redis_url) as server:
        first = _ask(server.url, user="alice")
        asked = [{"role": "user", "content": "How are records encoded in the write-ahead log?"}]
        body = {"model": "cairn-agent", "user": "alice", "messages": asked}
        second = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
        assert first.status_code == second.status_code == 200
        assert first.json()["cairn"]["session_id"] is None and second.json()["cairn"]["session_id"] is None
        # the second chat's run saw its own question only: no rewrite from "history", no earlier words searched
        assert second.json()["cairn"]["queries"][0] == "How are records encoded in the write-ahead log?"
        assert not any("LRU" in q or "evict" in q for q in second.json()["cairn"]["queries"])
        assert httpx.get(f"{server.url}/sessions").json()["sessions"] == []  # nothing kept under "alice"
        odd = _ask(server.url, user="a\x1fb")  # `user` is not a session id: any string is recorded, not refused
        assert odd.status_code == 200


# ---------------------------------------------------------------- a turn is saved whole or not at all


class _Failing(BaseChatModel):
    """Answers the plan, then fails in the answer: before its first token, or after some."""

    after_tokens: int = 0
    error: str = "boom"

    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        raise RuntimeError(self.error)

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        for i in range(self.after_tokens):
            chunk = AIMessageChunk(content=f"word{i} ")
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.content, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)
        raise RuntimeError(self.error)


class _Slow(BaseChatModel):
    """Streams a long answer slowly (a client can leave in the middle)."""

    @property
    def _llm_type(self) -> str:
        return "slow"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("x"))])

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        for i in range(200):
            await asyncio.sleep(0.05)
            chunk = AIMessageChunk(content=f"w{i} ")
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.content, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)


def test_a_turn_that_fails_leaves_the_session_as_it_was(service_index: Path, redis_url: str, fake_models) -> None:
    """500, 503, 504, an error mid-stream, a client that leaves: the session keeps only its whole turns."""
    with served(service_index, redis_url, model="instant") as good:
        assert _ask(good.url, session="whole").status_code == 200
        assert _roles(good.url, "whole") == ["user", "assistant"]
        prefix = good.app.state.cairn.settings.redis_prefix

    def with_model(model: str, **overrides):
        return served(service_index, redis_url, model=model, redis_prefix=prefix, model_max_retries=0, **overrides)

    # 503: the model endpoint is down
    with with_model(f"openai-compatible/m@http://127.0.0.1:{free_port()}/v1") as server:
        for stream in (False, True):
            assert _ask(server.url, session="whole", stream=stream).status_code == 503
            assert _roles(server.url, "whole") == ["user", "assistant"]
        assert _ask(server.url, session="brand-new").status_code == 503
        assert httpx.get(f"{server.url}/sessions/brand-new").status_code == 404  # no empty session left
        assert "brand-new" not in {s["id"] for s in httpx.get(f"{server.url}/sessions").json()["sessions"]}

    # 504: the model endpoint never answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        with with_model(
            f"openai-compatible/m@http://127.0.0.1:{silent.getsockname()[1]}/v1", model_timeout=1
        ) as server:
            assert _ask(server.url, session="whole").status_code == 504
            assert _roles(server.url, "whole") == ["user", "assistant"]

    # 500 before the first token, and an error after some tokens (inside the 200 stream)
    fake_models(lambda spec, config: _Failing(after_tokens=int(spec.model)))
    with with_model("fake/0") as server:
        reply = _ask(server.url, session="whole")
        assert reply.status_code == 500 and "boom" not in reply.json()["error"]["message"]  # details in the log
        assert _roles(server.url, "whole") == ["user", "assistant"]
    with with_model("fake/3", model_plan="instant", model_analyze="instant") as server:
        reply = _ask(server.url, session="whole", stream=True)
        assert reply.status_code == 200 and '"error"' in reply.text
        assert _roles(server.url, "whole") == ["user", "assistant"]

    # a client that leaves in the middle of the answer
    fake_models(lambda spec, config: _Slow(), name="slow")
    with with_model("slow/x", model_plan="instant", model_analyze="instant") as server:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers={"X-Session-Id": "whole"}, timeout=30,
                          json={"model": "cairn-agent", "stream": True,
                                "messages": [{"role": "user", "content": QUESTION}]}) as stream:  # fmt: skip
            lines = stream.iter_lines()
            while "w2" not in next(lines):
                pass
        deadline = time.monotonic() + 5
        while _roles(server.url, "whole") != ["user", "assistant"]:
            assert time.monotonic() < deadline, _roles(server.url, "whole")
            time.sleep(0.1)
        time.sleep(1.0)  # and it stays so
        assert _roles(server.url, "whole") == ["user", "assistant"]
        assert _ask(server.url, session="whole").status_code == 200  # the session goes on
        assert _roles(server.url, "whole") == ["user", "assistant", "user", "assistant"]


# ---------------------------------------------------------------- bounded work


class SilentModel:
    """A TCP server that accepts model connections and never answers; says which are still open."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def open_connections(self) -> int:
        still = 0
        for conn in self.conns:
            conn.setblocking(False)
            try:
                data = conn.recv(65536)
                while data:  # the request; still open
                    data = conn.recv(65536)
                if data == b"":
                    continue  # closed by the client
            except BlockingIOError:
                still += 1
            except OSError:
                continue
        return still

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent_model() -> Iterator[SilentModel]:
    model = SilentModel()
    yield model
    model.close()


def test_a_client_that_leaves_before_the_first_token_cancels_the_model_call(
    service_index: Path, redis_url: str, silent_model: SilentModel
) -> None:
    with served(service_index, redis_url, model=f"openai-compatible/m@{silent_model.url}", model_timeout=60,
                model_max_retries=0) as server:  # fmt: skip
        for stream in (True, False):
            with pytest.raises(httpx.ReadTimeout):
                _client_leaves(server.url, stream)
        deadline = time.monotonic() + 5
        while silent_model.conns == [] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(silent_model.conns) >= 2
        time.sleep(2.0)
        assert silent_model.open_connections() == 0


def _client_leaves(url: str, stream: bool) -> None:
    body = {"model": "cairn-agent", "stream": stream, "messages": [{"role": "user", "content": QUESTION}]}
    httpx.post(f"{url}/v1/chat/completions", json=body, timeout=httpx.Timeout(1.0))


def test_concurrent_runs_are_bounded_with_a_429(service_index: Path, redis_url: str, fake_models) -> None:
    fake_models(lambda spec, config: _Slow(), name="slow")
    with served(service_index, redis_url, model="slow/x", model_plan="instant", model_analyze="instant",
                max_concurrent_runs=3, max_concurrent_runs_per_key=2) as server:  # fmt: skip

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                body = {"model": "cairn-agent", "messages": [{"role": "user", "content": QUESTION}]}
                return await asyncio.gather(*(client.post(f"{server.url}/v1/chat/completions", json=body)
                                              for _ in range(4)))  # fmt: skip

        replies = asyncio.run(run())
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 200, 429, 429]  # one address: two at once
    busy = next(r for r in replies if r.status_code == 429)
    assert int(busy.headers["retry-after"]) >= 1 and busy.json()["error"]["code"] == "too_many_runs"


def test_batches_are_capped_and_each_input_is_rate_limited(service_index: Path, redis_url: str) -> None:
    one = {"messages": [{"type": "human", "content": QUESTION}]}
    with served(service_index, redis_url, max_batch_inputs=4, rate_limit=6) as server:
        too_many = httpx.post(f"{server.url}/agent/batch", json={"inputs": [one] * 5}, timeout=60)
        assert too_many.status_code == 400 and "CAIRN_MAX_BATCH_INPUTS" in too_many.json()["error"]["message"]
        assert httpx.post(f"{server.url}/agent/batch", json={"inputs": [one] * 4}, timeout=60).status_code == 200
        # 1 + 4 + 4 requests' worth in a minute of 6
        limited = httpx.post(f"{server.url}/agent/batch", json={"inputs": [one] * 4}, timeout=60)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_history_is_bounded_by_tokens(service_index: Path, redis_url: str) -> None:
    with served(service_index, redis_url, max_history_tokens=1000) as server:
        long = [{"role": "user", "content": "word " * 2000}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": QUESTION}]  # fmt: skip
        reply = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "cairn-agent", "messages": long})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "history_too_long"
        many = [{"role": "user", "content": "hi"}] * 600
        reply = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "cairn-agent", "messages": many})
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "history_too_long"


def test_n_above_one_is_refused(service_index: Path, redis_url: str) -> None:
    with served(service_index, redis_url) as server:
        reply = _ask(server.url, n=2)
        assert reply.status_code == 400 and "one answer per request" in reply.json()["error"]["message"]
        assert _ask(server.url, n=1).status_code == 200


class DyingModel(ThreadingHTTPServer):
    """An OpenAI-compatible server whose chat stream breaks off after three chunks, as a crashed server's does."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _DyingHandler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _DyingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", "1000000")  # promised, never sent: the peer "closed mid-body"
        self.end_headers()
        for i in range(3):
            chunk = {"id": "d", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}  # fmt: skip
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


def test_a_model_that_dies_mid_answer_is_named_not_an_internal_error(service_index: Path, redis_url: str) -> None:
    model = DyingModel()
    threading.Thread(target=model.serve_forever, daemon=True).start()
    try:
        with served(service_index, redis_url, model=f"openai-compatible/m@{model.base_url}", model_max_retries=0,
                    model_plan="instant", model_analyze="instant") as server:  # fmt: skip
            reply = _ask(server.url, stream=True, session="dies")
            assert _roles(server.url, "dies") == []  # and the turn was not saved
    finally:
        model.shutdown()
        model.server_close()
    assert reply.status_code == 200 and "word0" in reply.text
    errors = [json.loads(line[6:])["error"] for line in reply.text.splitlines() if line.startswith('data: {"error"')]
    assert errors and errors[0]["code"] == "model_unavailable", reply.text
    assert "stopped in the middle of its answer" in errors[0]["message"]


# ---------------------------------------------------------------- supervised children


def test_a_redis_that_cairn_started_and_that_dies_is_restarted(tmp_path: Path, service_index: Path) -> None:
    """`cairn serve`'s Redis, SIGKILLed: reaped, restarted with its data, and /ready says so meanwhile."""
    import os
    import signal

    from fastapi.testclient import TestClient

    from cairn.processes import read_status
    from config import Settings
    from serving.app import create_app
    from serving.redis_server import local_redis, redis_answers, status_path

    port = free_port()
    settings = Settings(_env_file=None, data_dir=tmp_path, index_dir=service_index, model="instant",
                        redis_url=f"redis://127.0.0.1:{port}/0")  # fmt: skip
    with local_redis(settings, supervise=True) as redis, TestClient(create_app(settings)) as client:
        assert redis is not None and read_status(status_path(settings)).state == "running"
        assert _ask_client(client, "kept").status_code == 200
        os.kill(redis.pid, signal.SIGKILL)
        seen = set()
        deadline = time.monotonic() + 20
        while (status := read_status(status_path(settings))).state != "running" or status.restarts != 1:
            seen.add(status.state)
            if status.state == "restarting":
                check = client.get("/ready").json()["checks"]["redis"]
                if not check["ok"]:
                    assert "died with SIGKILL" in check["error"], check
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert "restarting" in seen and status.cause.startswith("died with SIGKILL")
        assert redis_answers("127.0.0.1", port)
        deadline = time.monotonic() + 10
        while client.get("/ready").json()["checks"]["redis"]["ok"] is not True:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.get("/ready").json()["checks"]["redis"]["restarts"] == 1
        assert [m["role"] for m in client.get("/sessions/kept").json()["messages"]] == ["user", "assistant"]
    assert read_status(status_path(settings)).state == "stopped"


def _ask_client(client, session: str):
    body = {"model": "cairn-agent", "messages": [{"role": "user", "content": QUESTION}]}
    return client.post("/v1/chat/completions", json=body, headers={"X-Session-Id": session})


def test_another_keys_response_cannot_be_continued(service_index: Path, redis_url: str) -> None:
    """previous_response_id is a session like any other: under the caller's key; another key's is a 404."""
    with served(service_index, redis_url, api_keys=[KEY1, KEY2]) as server:
        body = {"model": "cairn-agent", "input": "How does the LRU cache evict?"}
        first = httpx.post(f"{server.url}/v1/responses", json=body, headers={"Authorization": f"Bearer {KEY1}"},
                           timeout=60)  # fmt: skip
        assert first.status_code == 200
        follow = {**body, "previous_response_id": first.json()["id"]}
        stolen = httpx.post(f"{server.url}/v1/responses", json=follow, headers={"Authorization": f"Bearer {KEY2}"},
                            timeout=60)  # fmt: skip
        assert stolen.status_code == 404
        own = httpx.post(f"{server.url}/v1/responses", json=follow, headers={"Authorization": f"Bearer {KEY1}"},
                         timeout=60)  # fmt: skip
        assert own.status_code == 200 and own.json()["id"].endswith("_2")
        assert httpx.post(f"{server.url}/v1/responses", json=body).status_code == 401
