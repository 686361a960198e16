"""Hostile input gets a 4xx with a message, never a 500: surrogates, depth, path patterns, huge counts.

Each case here was a 500 (or a hung worker) before; Schemathesis did not generate them, so they are
written out. The service runs with the instant model on a real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import RedisProcess, Server, served

pytestmark = pytest.mark.integration

HUMAN = {"type": "human", "content": "How does the LRU cache evict?"}


@pytest.fixture(scope="module")
def service(service_index: Path, redis_server: RedisProcess) -> Iterator[Server]:
    with served(service_index, redis_server.url) as server:
        yield server


def _post_raw(service: Server, path: str, body: bytes) -> httpx.Response:
    return httpx.post(service.url + path, content=body, headers={"Content-Type": "application/json"}, timeout=60)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/agent/invoke", "/agent/stream"])
def test_a_lone_surrogate_is_a_400(service: Server, path: str) -> None:
    if path.startswith("/v1"):
        body = b'{"model": "cairn-agent", "messages": [{"role": "user", "content": "what is \\ud800 here?"}]}'
    else:
        body = b'{"input": {"messages": [{"type": "human", "content": "what is \\udc00 here?"}]}}'
    reply = _post_raw(service, path, body)
    assert reply.status_code == 400, reply.text
    assert "lone surrogate" in reply.json()["error"]["message"]


def test_a_surrogate_pair_and_an_escaped_backslash_u_are_fine(service: Server) -> None:
    body = (b'{"model": "cairn-agent", "messages": [{"role": "user", '
            b'"content": "what does \\ud83d\\ude00 or \\\\ud800 mean in the cache?"}]}')  # fmt: skip
    assert _post_raw(service, "/v1/chat/completions", body).status_code == 200


@pytest.mark.parametrize("path", ["/agent/invoke", "/agent/batch", "/v1/chat/completions", "/agent/stream_events"])
def test_deep_nesting_is_a_400_before_parsing(service: Server, path: str) -> None:
    depth = 100_000
    body = b'{"input": ' + b"[" * depth + b"]" * depth + b"}"
    reply = _post_raw(service, path, body)
    assert reply.status_code == 400, reply.text[:500]
    assert reply.headers["content-type"].startswith("application/json")
    assert "nests deeper than" in reply.json()["error"]["message"]


def test_brackets_inside_strings_do_not_count_as_depth(service: Server) -> None:
    question = "what does " + "[{" * 500 + " mean?"
    reply = httpx.post(f"{service.url}/v1/chat/completions", timeout=60,
                       json={"model": "cairn-agent", "messages": [{"role": "user", "content": question}]})  # fmt: skip
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("pattern", ["\\", "src\\", "!"])
def test_an_invalid_path_pattern_is_a_400(service: Server, pattern: str) -> None:
    reply = httpx.get(f"{service.url}/api/search", params={"q": "retry", "path": pattern}, timeout=60)
    assert reply.status_code == 400, reply.text
    assert "not a valid gitignore-style pattern" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/search", {"q": "retry", "k": 10**12}),
        ("/api/search", {"q": "x" * 5000}),
        ("/api/files/tinykv/store.py", {"start": 10**15}),
        ("/api/files/tinykv/store.py", {"start": 1, "context": 10**9}),
        ("/sessions", {"limit": 10**9}),
        ("/api/references", {"name": "put", "limit": 10**9}),
    ],
)
def test_huge_counts_are_refused_or_bounded(service: Server, path: str, params: dict) -> None:
    reply = httpx.get(service.url + path, params=params, timeout=60)
    assert reply.status_code < 500, reply.text
    if reply.status_code == 400:
        assert reply.json()["error"]["message"]


def test_a_huge_batch_is_refused_without_running(service: Server) -> None:
    reply = httpx.post(f"{service.url}/agent/batch", json={"inputs": [{"messages": [HUMAN]}] * 300}, timeout=60)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "batch_too_large"


def test_invalid_utf8_and_non_json_are_400(service: Server) -> None:
    for body in (b"\xff\xfe{not json", b'{"model": "cairn-agent", "messages": [{"role": "user", "content": "\xc3"}]}'):
        reply = _post_raw(service, "/v1/chat/completions", body)
        assert reply.status_code == 400, reply.text
