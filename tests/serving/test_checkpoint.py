"""The Redis checkpointer: the official conformance suite, TTL, atomicity, and a real graph on it."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import START, MessagesState, StateGraph

from serving.checkpoint import RedisCheckpointSaver

pytestmark = pytest.mark.integration


async def test_passes_the_official_conformance_suite(redis_url: str) -> None:
    prefix = f"conf-{uuid.uuid4().hex[:8]}"

    @checkpointer_test(name="RedisCheckpointSaver")
    async def factory():
        saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix)
        await saver.ping()
        yield saver
        await saver.aclose()

    report = await validate(factory)
    failures = {cap: result.failures for cap, result in report.results.items() if result.failures}
    assert report.passed_all_base(), failures
    # base and extended (delete_for_runs, copy_thread, prune): all implemented, all passed
    assert report.conformance_level() == "FULL", report.to_dict()
    assert len(report.results) == 8 and all(r.detected and r.passed for r in report.results.values())
    assert sum(r.tests_passed for r in report.results.values()) > 50


def _echo_graph(saver: RedisCheckpointSaver):
    def reply(state: MessagesState) -> dict:
        return {"messages": [AIMessage(f"turn {len(state['messages']) // 2 + 1}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=saver)


async def test_a_conversation_survives_a_new_saver(redis_url: str) -> None:
    prefix = f"conv-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": "alice"}}
    saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix)
    await _echo_graph(saver).ainvoke({"messages": [HumanMessage("hi")]}, config)
    await saver.aclose()

    fresh = RedisCheckpointSaver.from_url(redis_url, prefix=prefix)  # as after a service restart
    state = await _echo_graph(fresh).ainvoke({"messages": [HumanMessage("again")]}, config)
    assert [m.content for m in state["messages"]] == ["hi", "turn 1", "again", "turn 2"]
    assert [t for t, _ in await fresh.thread_ids()] == ["alice"]
    await fresh.adelete_thread("alice")
    assert await fresh.thread_ids() == []
    assert await fresh.client.keys(f"{prefix}:*") == []
    await fresh.aclose()


async def test_ttl_applies_to_every_key_of_a_session(redis_url: str) -> None:
    prefix = f"ttl-{uuid.uuid4().hex[:8]}"
    saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix, ttl=120)
    await _echo_graph(saver).ainvoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "t"}})
    keys = [k for k in await saver.client.keys(f"{prefix}:t:*")]
    assert keys
    ttls = [await saver.client.ttl(k) for k in keys]
    assert all(0 < t <= 120 for t in ttls), dict(zip(keys, ttls, strict=True))
    await saver.aclose()


async def test_thread_ids_with_separators_do_not_collide(redis_url: str) -> None:
    prefix = f"sep-{uuid.uuid4().hex[:8]}"
    saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix)
    graph = _echo_graph(saver)
    await graph.ainvoke({"messages": [HumanMessage("one")]}, {"configurable": {"thread_id": "a:b"}})
    await graph.ainvoke({"messages": [HumanMessage("two")]}, {"configurable": {"thread_id": "a"}})
    first = await saver.aget_tuple({"configurable": {"thread_id": "a:b"}})
    second = await saver.aget_tuple({"configurable": {"thread_id": "a"}})
    assert first.checkpoint["channel_values"]["messages"][0].content == "one"
    assert second.checkpoint["channel_values"]["messages"][0].content == "two"
    await saver.aclose()


async def test_sync_methods_are_refused_on_the_event_loop(redis_url: str) -> None:
    saver = RedisCheckpointSaver.from_url(redis_url)
    await saver.ping()
    with pytest.raises(RuntimeError, match="async"):
        saver.get_tuple({"configurable": {"thread_id": "x"}})
    await saver.aclose()
