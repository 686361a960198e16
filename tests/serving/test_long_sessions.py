"""A session longer than the model's window: every turn answers, and what the history policy did is reported."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from tests.serving.conftest import served

pytestmark = pytest.mark.integration

QUESTIONS = [
    "How does the LRU cache evict entries?",
    "Where is the write-ahead log replayed?",
    "How is the configuration loaded?",
    "What does the store do on compaction?",
    "How does the web client talk to the server?",
]


def test_thirty_turns_on_a_4096_token_window_keep_answering_and_say_what_was_summarised(
    service_index: Path, redis_url: str
) -> None:
    with (
        served(service_index, redis_url, model_context_tokens=4096) as server,
        httpx.Client(base_url=server.url, timeout=60, headers={"X-Session-Id": "thirty-turns"}) as http,
    ):
        seen, asked = [], []
        for turn in range(30):
            question = f"{QUESTIONS[turn % len(QUESTIONS)]} (turn {turn + 1})"
            asked.append(question)
            reply = http.post(
                "/v1/chat/completions",
                json={"model": "cairn-agent", "messages": [{"role": "user", "content": question}]},
            )
            assert reply.status_code == 200, (turn, reply.text)
            history = reply.json()["cairn"]["history"]
            assert history["tokens"] <= history["budget"] == 4096 // 8
            assert history["verbatim"] + history["summarised"] + history["dropped"] == turn
            seen.append(history)
        assert seen[0]["verbatim"] == 0 and seen[-1]["summarised"] > 0 and seen[-1]["dropped"] > 0

        # streamed, the plan step says it too (the page's note), and the last chunk carries it
        streamed = http.post("/v1/chat/completions", headers={"X-Cairn-Events": "1"},
                             json={"model": "cairn-agent", "stream": True,
                                   "messages": [{"role": "user", "content": "And the cache again?"}]})  # fmt: skip
        blocks = [b for b in streamed.text.split("\n\n") if b.strip()]
        steps = [json.loads(b.split("data: ", 1)[1]) for b in blocks if b.startswith("event: cairn.step")]
        planned = next(s for s in steps if s["node"] == "plan" and s["status"] == "done")
        assert planned["history"]["dropped"] > 0
        last = json.loads([b for b in blocks if b.startswith("data: {")][-1][len("data: ") :])
        assert last["cairn"]["history"]["summarised"] > 0

        detail = http.get("/sessions/thirty-turns").json()
        # older turns moved out of the state a turn loads (graphs.agent.transcript); the session still shows all
        shown = [m["content"] for m in detail["messages"] if m["role"] == "user"]
        assert shown == [*asked, "And the cache again?"]
        telemetry = detail["telemetry"]
        assert (
            telemetry["history"]["verbatim"] + telemetry["history"]["summarised"] + telemetry["history"]["dropped"]
            == 31
        )
        assert 0 < telemetry["context_tokens"] <= 512 and telemetry["message_count"] == 62
        # the search of sessions reads the moved-out turns too: its snippet is at the first question
        (found,) = http.get("/sessions", params={"q": "(turn 1)"}).json()["sessions"]
        assert found["id"] == "thirty-turns" and "(turn 1)" in found["snippet"], found

    # the moved-out turns are in the session's transcript log, not in the checkpoints each turn reads and writes
    client = redis.Redis.from_url(redis_url)
    (log_key,) = [k for k in client.scan_iter(match="*thirty-turns*") if k.endswith(b":log")]
    assert b"(turn 1)" in b"".join(client.lrange(log_key, 0, -1))
    records = [client.hgetall(k) for k in client.scan_iter(match=log_key[: -len(b"log")] + b"*:cp:*")]
    serde = JsonPlusSerializer()
    states = [serde.loads_typed((r[b"type"].decode(), r[b"checkpoint"]))["channel_values"] for r in records]
    assert states and all(state["transcript"] == "" and 0 < state["logged"] <= 31 for state in states)
    assert max(state["logged"] for state in states) == client.llen(log_key)
    assert not any("(turn 1)" in m.text for state in states for m in state["messages"])
    client.close()
