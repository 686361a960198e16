"""Sessions on a Redis Cluster: the checkpointer finds the cluster itself and behaves as on one node.

The cluster is real: cluster-mode redis-servers on loopback joined by ``redis-cli --cluster create``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from redis.asyncio.cluster import RedisCluster

from serving.checkpoint import RedisCheckpointSaver
from tests.serving.conftest import RedisClusterProcess, served
from tests.serving.test_checkpoint import _echo_graph

pytestmark = pytest.mark.integration


async def test_passes_the_official_conformance_suite_on_a_cluster(redis_cluster: RedisClusterProcess) -> None:
    prefix = f"conf-{uuid.uuid4().hex[:8]}"

    @checkpointer_test(name="RedisCheckpointSaver (cluster)")
    async def factory():
        saver = await RedisCheckpointSaver.connect(redis_cluster.url, prefix=prefix)
        assert saver.mode == "cluster" and isinstance(saver.client, RedisCluster)
        yield saver
        await saver.aclose()

    report = await validate(factory)
    failures = {cap: result.failures for cap, result in report.results.items() if result.failures}
    assert report.passed_all_base(), failures
    assert report.conformance_level() == "FULL", report.to_dict()  # the same level as on one node
    assert len(report.results) == 8 and all(r.detected and r.passed for r in report.results.values())


async def test_a_session_lives_in_one_slot_and_sessions_spread_over_the_masters(
    redis_cluster: RedisClusterProcess,
) -> None:
    prefix = f"slot-{uuid.uuid4().hex[:8]}"
    saver = RedisCheckpointSaver.from_url(redis_cluster.url, prefix=prefix, ttl=120)  # found on first use
    graph = _echo_graph(saver)
    for n in range(12):
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": f"user:{n}"}})
    assert saver.mode == "cluster"
    client = saver.client
    owners = set()
    for n in range(12):
        keys = [k async for k in client.scan_iter(match=f"{prefix}:{{user%3A{n}}}:*")]
        assert len(keys) >= 5  # at, ns, ids, checkpoints, writes
        assert len({client.keyslot(k) for k in keys}) == 1, keys
        assert all(0 < ttl <= 120 for ttl in [await client.ttl(k) for k in keys])
        owners.add(client.get_node_from_key(keys[0]).port)
    assert len(owners) > 1  # not everything on one master (12 random slots on 3 masters)
    assert {t for t, _ in await saver.thread_ids()} == {f"user:{n}" for n in range(12)}
    await saver.aclose()


def test_the_session_api_works_on_a_cluster(service_index: Path, redis_cluster: RedisClusterProcess) -> None:
    with served(service_index, redis_cluster.url, session_ttl=600) as service:
        ready = httpx.get(f"{service.url}/ready").json()
        assert ready["checks"]["redis"]["ok"] and ready["checks"]["redis"]["mode"] == "cluster", ready

        def turn(text: str) -> httpx.Response:
            return httpx.post(
                f"{service.url}/v1/chat/completions",
                json={"model": "cairn-agent", "messages": [{"role": "user", "content": text}]},
                headers={"X-Session-Id": "cluster-alice"},
                timeout=60,
            )

        first, second = turn("How does the LRU cache evict?"), turn("And how is a torn write detected?")
        assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
        listed = httpx.get(f"{service.url}/sessions").json()["sessions"]
        assert [s["id"] for s in listed] == ["cluster-alice"]
        detail = httpx.get(f"{service.url}/sessions/cluster-alice").json()
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant", "user", "assistant"]
        assert detail["messages"][2]["content"] == "And how is a torn write detected?"
        assert detail["telemetry"]["turns"] == 2 and detail["telemetry"]["total_tokens"] > 0
        assert httpx.delete(f"{service.url}/sessions/cluster-alice").status_code == 204
        assert httpx.get(f"{service.url}/sessions/cluster-alice").status_code == 404
        assert httpx.get(f"{service.url}/sessions").json()["sessions"] == []
        assert httpx.delete(f"{service.url}/sessions/cluster-alice").status_code == 404


async def test_a_session_survives_the_loss_of_a_master_with_replicas(tmp_path: Path) -> None:
    with RedisClusterProcess(tmp_path, masters=3, replicas=1) as cluster:
        saver = await RedisCheckpointSaver.connect(cluster.url, prefix="failover")
        graph = _echo_graph(saver)
        config = {"configurable": {"thread_id": "bob"}}
        await graph.ainvoke({"messages": [HumanMessage("before")]}, config)
        owner = saver.client.get_node_from_key(saver.at_key("bob")).port
        cluster.node(owner).kill()  # as a crash would; its replica takes over after the node timeout (1 s)
        started = time.monotonic()
        state = await graph.ainvoke({"messages": [HumanMessage("after")]}, config)  # retried through the failover
        failover_s = time.monotonic() - started
        assert [m.content for m in state["messages"]] == ["before", "turn 1", "after", "turn 2"]
        assert saver.client.get_node_from_key(saver.at_key("bob")).port != owner
        assert [t for t, _ in await saver.thread_ids()] == ["bob"]
        assert failover_s < 15
        await saver.aclose()


async def test_the_shared_rate_limit_runs_on_the_cluster(redis_cluster: RedisClusterProcess) -> None:
    """Each bucket is one key, so its script runs in one slot; two replicas' limiters share it."""
    from serving.security import SharedRateLimit

    prefix = f"rl-{uuid.uuid4().hex[:8]}"
    a = await RedisCheckpointSaver.connect(redis_cluster.url, prefix=prefix)
    b = await RedisCheckpointSaver.connect(redis_cluster.url, prefix=prefix)
    try:
        first, second = SharedRateLimit(2, lambda: a.client, prefix), SharedRateLimit(2, lambda: b.client, prefix)
        assert [await first.take("ip:9.9.9.9"), await second.take("ip:9.9.9.9")] == [0, 0]
        assert await first.take("ip:9.9.9.9") > 0  # the cluster's bucket, not a per-process fallback
        assert first.local.take("ip:9.9.9.9") == 0  # (the fallback bucket was never touched)
    finally:
        await a.aclose()
        await b.aclose()
