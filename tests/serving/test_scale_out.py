"""Scale-out: rate limits shared through Redis, replicas that share sessions, `cairn serve --workers N`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
from redis.asyncio import Redis

from serving.security import SharedRateLimit
from tests.serving.conftest import RedisProcess, ServiceProcess, service_settings

QUESTION = "How does the LRU cache evict entries?"


async def test_the_limit_holds_across_replicas_each_with_its_own_connection(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        a = SharedRateLimit(3, lambda: first, prefix)
        b = SharedRateLimit(3, lambda: second, prefix)
        assert [await a.take("ip:1.2.3.4"), await b.take("ip:1.2.3.4"), await a.take("ip:1.2.3.4")] == [0, 0, 0]
        wait = await b.take("ip:1.2.3.4")
        assert 19 < wait <= 20  # 3 a minute, all three taken (by either replica): the next token in 20 s
        assert await b.take("ip:5.6.7.8") == 0  # another client has its own bucket
    finally:
        await first.aclose()
        await second.aclose()


async def test_buckets_expire_when_idle_and_store_no_api_key(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url)
    try:
        limit = SharedRateLimit(60, lambda: client, prefix)
        await limit.take("key:sk-very-secret")
        keys = [k.decode() async for k in client.scan_iter(f"{prefix}:rl:*")]
        assert len(keys) == 1 and "sk-very-secret" not in keys[0]
        assert 0 < await client.pttl(keys[0]) <= 61_000  # full again after a minute: then it is gone
    finally:
        await client.aclose()


async def test_without_redis_each_process_limits_on_its_own() -> None:
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)  # nothing listens on port 1
    limit = SharedRateLimit(2, lambda: client)
    assert [await limit.take("ip:x"), await limit.take("ip:x")] == [0, 0]
    assert await limit.take("ip:x") > 0
    await client.aclose()


@pytest.mark.integration
def test_two_replicas_share_a_conversation_and_the_rate_limit(
    service_index: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    """Turn 1 through replica A, turn 2 through replica B: real processes, one Redis, one key prefix."""
    settings = service_settings(service_index, redis_server.url, rate_limit=6)
    a = ServiceProcess(settings, log_path=tmp_path / "a.log")
    b = ServiceProcess(settings, log_path=tmp_path / "b.log")
    with a, b:
        session = {"X-Session-Id": f"s-{uuid.uuid4().hex[:8]}"}

        def ask(service: ServiceProcess, question: str) -> httpx.Response:
            body = {"model": "cairn-agent", "messages": [{"role": "user", "content": question}]}
            return httpx.post(f"{service.url}/v1/chat/completions", json=body, headers=session, timeout=60)

        assert ask(a, QUESTION).status_code == 200  # 1 (of 6 a minute)
        assert ask(b, "And where is it tested?").status_code == 200  # 2
        detail = httpx.get(f"{b.url}/sessions/{session['X-Session-Id']}", timeout=30).json()  # 3
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant", "user", "assistant"]
        assert detail["messages"][0]["content"] == QUESTION  # B answered turn 2 knowing turn 1 (from A)
        replicas = {httpx.get(f"{s.url}/ready", timeout=30).json()["replica"]["pid"] for s in (a, b)}  # 4, 5
        assert len(replicas) == 2  # each replica reports itself
        assert httpx.get(f"{a.url}/v1/models", timeout=30).status_code == 200  # 6
        refused = httpx.get(f"{b.url}/v1/models", timeout=30)  # 7: over the limit, counted across A and B
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1


@pytest.mark.integration
def test_serve_with_two_workers(service_index: Path, redis_server: RedisProcess, tmp_path: Path) -> None:
    settings = service_settings(service_index, redis_server.url)
    with ServiceProcess(settings, "--workers", "2", log_path=tmp_path / "serve.log") as service:
        workers = [p for p in psutil.Process(service.process.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]  # fmt: skip
        assert len(workers) == 2, [p.cmdline() for p in workers]

        async def ready_many() -> list[dict]:
            async with httpx.AsyncClient(timeout=60) as client:
                replies = await asyncio.gather(*(client.get(f"{service.url}/ready") for _ in range(8)))
            return [r.json() for r in replies]

        replies = asyncio.run(ready_many())
        assert all(r["ready"] for r in replies), replies[0]
        assert {r["replica"]["pid"] for r in replies} <= {p.pid for p in workers}  # a worker answered, not the parent
        assert {r["replica"]["workers"] for r in replies} == {2}
        body = {"model": "cairn-agent", "messages": [{"role": "user", "content": QUESTION}]}
        answer = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=60)
        assert answer.status_code == 200 and "tinykv/cache.py" in answer.text
