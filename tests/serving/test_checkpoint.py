"""The Redis checkpointer: the official conformance suite, TTL, atomicity, and a real graph on it."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.exceptions
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import START, MessagesState, StateGraph
from typer.testing import CliRunner

from cli import app
from graphs.agent.transcript import TranscriptUnavailable
from serving.checkpoint import RedisCheckpointSaver
from serving.checkpoint_migration import old_base, old_layout_sessions
from serving.session_usage import record_usage, session_usage

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


async def test_a_session_keeps_its_latest_checkpoint_and_the_one_its_turn_started_from(redis_url: str) -> None:
    """keep_all=False (the service's): a session is not every checkpoint of every turn; rollback still works."""
    prefix = f"keep-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": "long"}}
    everything = RedisCheckpointSaver.from_url(redis_url, prefix=prefix)  # every checkpoint, as before
    for turn in range(1, 4):
        await _echo_graph(everything).ainvoke({"messages": [HumanMessage(f"q{turn}")]}, config)
    assert len([c async for c in everything.alist(config)]) > 6
    await everything.aclose()

    saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix, keep_all=False)
    graph = _echo_graph(saver)
    for turn in range(4, 9):
        await graph.ainvoke({"messages": [HumanMessage(f"q{turn}")]}, {**config, "metadata": {"run_id": f"run-{turn}"}},
                            durability="exit")  # fmt: skip
        assert len([c async for c in saver.alist(config)]) == 2  # the older ones forgotten by the first turn
    assert (await graph.aget_state(config)).values["messages"][-1].content == "turn 8"

    # a run that writes several checkpoints keeps them all until the next run starts from its last
    await graph.ainvoke({"messages": [HumanMessage("q9")]}, {**config, "metadata": {"run_id": "run-9"}})
    written = len([c async for c in saver.alist(config)])
    assert written > 2

    # a turn that did not finish is taken back to the one before, which is still there
    assert await saver.rollback_run("long", "run-9") == written - 1
    assert (await graph.aget_state(config)).values["messages"][-1].content == "turn 8"
    await graph.ainvoke({"messages": [HumanMessage("q9")]}, {**config, "metadata": {"run_id": "run-10"}},
                        durability="exit")  # fmt: skip
    assert [m.content for m in (await graph.aget_state(config)).values["messages"]][-2:] == ["q9", "turn 9"]
    assert len([c async for c in saver.alist(config)]) == 2
    await saver.aclose()


async def test_a_transcript_log_appends_and_reads_and_goes_with_its_session(redis_url: str) -> None:
    """Positions in order, read to a count, TTL kept with the session, copied, deleted; Redis gone: an error."""
    prefix = f"log-{uuid.uuid4().hex[:8]}"
    saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix, ttl=120)
    graph, config = _echo_graph(saver), {"configurable": {"thread_id": "t"}}
    assert [await saver.aappend_transcript("t", entry) for entry in ("0\none\n", "1\ntwo\n")] == [0, 1]
    assert await saver.aread_transcript("t", 2) == ["0\none\n", "1\ntwo\n"]
    assert await saver.aread_transcript("t", 1) == ["0\none\n"] and await saver.aread_transcript("t", 0) == []
    assert await saver.aread_transcript("t", 9) == ["0\none\n", "1\ntwo\n"]
    await saver.client.expire(f"{prefix}:{{t}}:log", 5)
    await graph.ainvoke({"messages": [HumanMessage("hi")]}, config)  # a checkpoint's write refreshes the log's TTL
    assert 60 < await saver.client.ttl(f"{prefix}:{{t}}:log") <= 120

    await saver.acopy_thread("t", "copy")
    assert await saver.aread_transcript("copy", 2) == ["0\none\n", "1\ntwo\n"]
    await saver.adelete_thread("t")
    await saver.adelete_thread("copy")
    assert await saver.client.keys(f"{prefix}:*") == []
    await saver.aclose()

    gone = RedisCheckpointSaver.from_url("redis://127.0.0.1:1/0", prefix=prefix, timeout=0.5)
    with pytest.raises(TranscriptUnavailable, match="ConnectionError"):
        await gone.aappend_transcript("t", "0\nlost\n")
    await gone.aclose()


async def test_ttl_applies_to_every_key_of_a_session(redis_url: str) -> None:
    prefix = f"ttl-{uuid.uuid4().hex[:8]}"
    saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix, ttl=120)
    await _echo_graph(saver).ainvoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "t"}})
    keys = await saver.client.keys(f"{prefix}:{{*")
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


async def test_a_lost_sessions_list_write_is_repaired(redis_url: str) -> None:
    prefix = f"idx-{uuid.uuid4().hex[:8]}"
    saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix)
    graph = _echo_graph(saver)
    await graph.ainvoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "kept"}})

    async def refused(*args, **kwargs):
        raise redis.exceptions.ConnectionError("the node of the sessions list is down")

    saver.client.zadd = refused  # the list's write is lost; the turn itself is stored
    await graph.ainvoke({"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": "unlisted"}})
    del saver.client.zadd
    # an entry whose turn never got written (a crash in between), a minute old
    await saver.client.zadd(f"{prefix}:sessions", {"ghost": time.time() - 120})
    assert {t for t, _ in await saver.thread_ids()} == {"kept", "unlisted"}  # rebuilt from a SCAN, ghost dropped
    assert await saver.client.zscore(f"{prefix}:sessions", "ghost") is None
    assert await saver.has_thread("unlisted") and not await saver.has_thread("ghost")

    await saver.client.delete(f"{prefix}:sessions")  # lost altogether
    assert await saver.thread_ids() == []
    assert await saver.reindex() == 2
    assert {t for t, _ in await saver.thread_ids()} == {"kept", "unlisted"}
    await saver.aclose()


class _OldLayoutSaver(RedisCheckpointSaver):
    """Writes the layout before hash tags: ``P:threads`` and ``P:t:T:...`` (its ``at`` keys are dropped after)."""

    def _index_key(self) -> str:
        return f"{self.prefix}:threads"

    def thread_base(self, thread_id: str) -> str:
        return old_base(self, thread_id)


def test_cairn_sessions_migrate_moves_sessions_of_the_old_layout(redis_url: str) -> None:
    prefix = f"mig-{uuid.uuid4().hex[:8]}"
    alice, other = {"configurable": {"thread_id": "alice"}}, {"configurable": {"thread_id": "a:b"}}

    async def write_old() -> set[bytes]:
        old = _OldLayoutSaver.from_url(redis_url, prefix=prefix)
        graph = _echo_graph(old)
        await graph.ainvoke({"messages": [HumanMessage("one")]}, alice)
        await graph.ainvoke({"messages": [HumanMessage("two")]}, alice)
        await graph.ainvoke({"messages": [HumanMessage("three")]}, other)
        await record_usage(old, "alice", {"total_tokens": 42})
        await old.client.delete(*await old.client.keys(f"{prefix}:t:*:at"))
        keys = set(await old.client.keys(f"{prefix}:*"))
        await old.aclose()
        return keys

    old_keys = asyncio.run(write_old())
    assert {k.decode().split(":")[1] for k in old_keys} == {"threads", "t"}

    async def before() -> tuple[list, int, object]:
        saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix)
        found = (await saver.thread_ids(), await old_layout_sessions(saver), await saver.aget_tuple(alice))
        await saver.aclose()
        return found

    assert asyncio.run(before()) == ([], 2, None)  # not read until migrated

    env = {"CAIRN_REDIS_URL": redis_url, "CAIRN_REDIS_PREFIX": prefix}
    done = CliRunner(env=env).invoke(app, ["sessions", "migrate"])
    assert done.exit_code == 0, done.output
    assert "Migrated 2 session(s)" in done.output and "standalone" in done.output

    async def after() -> None:
        saver = RedisCheckpointSaver.from_url(redis_url, prefix=prefix)
        assert await saver.client.keys(f"{prefix}:t:*") == [] and not await saver.client.exists(f"{prefix}:threads")
        assert {t for t, _ in await saver.thread_ids()} == {"alice", "a:b"}
        assert await old_layout_sessions(saver) == 0
        assert (await session_usage(saver, "alice"))["total_tokens"] == 42
        state = await _echo_graph(saver).ainvoke({"messages": [HumanMessage("four")]}, alice)
        assert [m.content for m in state["messages"]] == ["one", "turn 1", "two", "turn 2", "four", "turn 3"]
        assert len([c async for c in saver.alist(alice)]) > 3  # the history came along, not only the latest
        await saver.aclose()

    asyncio.run(after())
    again = CliRunner(env=env).invoke(app, ["sessions", "migrate"])
    assert again.exit_code == 0 and "Migrated 0 session(s)" in again.output and "2 session(s) in all" in again.output
