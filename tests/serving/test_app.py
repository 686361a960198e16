"""The service over real HTTP (uvicorn) with real Redis and an instant fake model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import RedisProcess, Server, served

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(service_index: Path, redis_server: RedisProcess) -> Iterator[Server]:
    """A service on the ingested sample repository, the instant model and the test Redis."""
    with served(service_index, redis_server.url) as server:
        yield server


def test_health_and_ready(service: Server) -> None:
    assert httpx.get(f"{service.url}/health").json()["status"] == "ok"
    ready = httpx.get(f"{service.url}/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["index"]["ok"] and checks["index"]["chunks"] > 10
    assert checks["redis"]["ok"] and checks["model"]["ok"]


def test_models_lists_the_agent_and_the_plain_model(service: Server) -> None:
    body = httpx.get(f"{service.url}/v1/models").json()
    assert [m["id"] for m in body["data"]] == ["cairn-agent", "cairn-chat"]


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
    citations, sources = body["cairn"]["citations"], body["cairn"]["sources"]
    assert citations and all(c in content for c in citations)
    assert sources and all(s["citation"] in content.split("Sources:")[1] for s in sources)
    assert all(isinstance(s["score"], float) for s in sources)
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0


def test_streaming_sends_chunks_then_done(service: Server) -> None:
    with httpx.stream(
        "POST",
        f"{service.url}/v1/chat/completions",
        json={
            "model": "cairn-agent",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "How is a torn write detected?"}],
        },
        timeout=60,
    ) as response:
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


def _sse(lines: list[str]) -> list[tuple[str | None, str]]:
    """Split SSE lines into (event name or None, data) pairs."""
    out, event = [], None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, line[6:]))
            event = None
    return out


def test_steps_stream_as_named_events_only_for_clients_that_ask(service: Server) -> None:
    body = {"model": "cairn-agent", "stream": True, "messages": [{"role": "user", "content": "How is a put logged?"}]}
    url = f"{service.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers={"X-Cairn-Events": "1"}, timeout=60) as response:
        events = _sse([line for line in response.iter_lines() if line])
    steps = [json.loads(data) for event, data in events if event == "cairn.step"]
    order = [(s["node"], s["status"]) for s in steps]
    assert order[0] == ("plan", "running") and order[-1] == ("answer", "done")
    assert ("retrieve", "running") in order and ("analyze", "done") in order
    searched = next(s for s in steps if s["node"] == "retrieve" and s["status"] == "running")
    assert "How is a put logged?" in searched["queries"]
    assert next(s for s in steps if s["node"] == "retrieve" and s["status"] == "done")["kept"] > 0
    assert steps[-1]["sources"] and "citations" in steps[-1]
    chunks = [json.loads(data) for event, data in events if event is None and data != "[DONE]"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks) and events[-1] == (None, "[DONE]")

    with httpx.stream("POST", url, json=body, timeout=60) as plain:  # a stock client sees plain OpenAI
        lines = [line for line in plain.iter_lines() if line]
    assert not any(line.startswith("event:") for line in lines)
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in lines[:-1])


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
        (
            json.dumps({"model": "cairn-agent", "messages": [{"role": "assistant", "content": "x"}]}).encode(),
            400,
            "user message",
        ),
        (json.dumps({"model": "cairn-agent"}).encode(), 400, "messages"),
        (
            json.dumps(
                {"model": "cairn-agent", "messages": [{"role": "user", "content": "x"}], "temperature": 9}
            ).encode(),
            400,
            "temperature",
        ),
        (b"x" * 2_000_000, 413, "limit"),
    ],
)
def test_malformed_requests_are_4xx_with_a_message(service: Server, body: bytes, status: int, needle: str) -> None:
    reply = httpx.post(
        f"{service.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert reply.status_code == status, reply.text
    assert needle in reply.json()["error"]["message"]


def test_official_openai_client_sync(service: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["cairn-agent", "cairn-chat"]
    completion = client.chat.completions.create(
        model="cairn-agent", messages=[{"role": "user", "content": "How does the LRU cache evict?"}], max_tokens=64
    )
    assert completion.choices[0].finish_reason == "stop"
    assert "Sources:" in completion.choices[0].message.content
    assert completion.model_extra["cairn"]["citations"] and completion.model_extra["cairn"]["sources"]
    assert completion.usage.total_tokens > 0

    stream = client.chat.completions.create(
        model="cairn-agent",
        messages=[{"role": "user", "content": "How does the LRU cache evict?"}],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.0,
        stop=["\n\n\n"],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Sources:" in text and chunks[-1].usage.total_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="cairn-agent", messages=[])


async def test_official_openai_client_async_with_session(service: Server) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=f"{service.url}/v1", api_key="unused")
    session = {"X-Session-Id": "async-session"}
    first = await client.chat.completions.create(
        model="cairn-agent", extra_headers=session, messages=[{"role": "user", "content": "What does put do?"}]
    )
    stream = await client.chat.completions.create(
        model="cairn-agent",
        extra_headers=session,
        stream=True,
        messages=[
            {"role": "user", "content": "What does put do?"},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "And get?"},
        ],
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "Sources:" in text
    await client.close()
    session = httpx.get(f"{service.url}/sessions/async-session").json()
    # the session already had turn one, so only the new user turn was taken from the request
    assert [m["content"] for m in session["messages"] if m["role"] == "user"] == ["What does put do?", "And get?"]


async def test_langserve_client_invoke_and_stream(service: Server) -> None:
    from langchain_core.messages import HumanMessage
    from langserve import RemoteRunnable

    agent = RemoteRunnable(f"{service.url}/agent")
    state = await agent.ainvoke({"messages": [HumanMessage("How does the LRU cache evict?")]})
    assert state["answer"] and state["citations"] and state["sources"]
    assert "Sources:" in str(state["messages"][-1])
    updates = [chunk async for chunk in agent.astream({"messages": [HumanMessage("What is the WAL?")]})]
    assert updates and any("answer" in str(u) for u in updates)
    batch = await agent.abatch([{"messages": [HumanMessage("put")]}, {"messages": [HumanMessage("get")]}])
    assert len(batch) == 2 and all(b["citations"] for b in batch)
    events = [e async for e in agent.astream_events({"messages": [HumanMessage("evict")]}, version="v2")]
    assert any(e["event"] == "on_chain_end" for e in events)
    # a LangServe client can follow the agent's steps: each node starts and ends, in order
    nodes = {"plan", "retrieve", "analyze", "refine", "answer"}
    started = [e["name"] for e in events if e["event"] == "on_chain_start" and e["name"] in nodes]
    ended = [e["name"] for e in events if e["event"] == "on_chain_end" and e["name"] in nodes]
    assert started[:3] == ["plan", "retrieve", "analyze"] and started[-1] == "answer" and ended == started
    assert httpx.get(f"{service.url}/agent/playground/").status_code == 200


def test_embeddings_through_the_official_openai_client(service: Server, real_embedder) -> None:
    """/v1/embeddings serves the model Cairn searches with: the client's default base64 and floats alike."""
    import numpy as np
    import openai

    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused")
    texts = ["def put(self, key, value):", "How does the LRU cache evict entries?"]
    expected = real_embedder.embed_documents(texts)
    packed = client.embeddings.create(model="cairn-embedding", input=texts)  # encoding_format base64 by default
    assert [e.index for e in packed.data] == [0, 1] and packed.usage.prompt_tokens > 8
    np.testing.assert_allclose(np.asarray([e.embedding for e in packed.data]), expected, atol=1e-6)
    floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, expected[0], atol=1e-6)
    with pytest.raises(openai.NotFoundError, match="cairn-embedding"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="384-dimensional"):
        client.embeddings.create(model="cairn-embedding", input="x", dimensions=256)
    with pytest.raises(openai.BadRequestError, match="1 to 256 texts"):
        client.embeddings.create(model="cairn-embedding", input=["x"] * 257)
    too_long = httpx.post(f"{service.url}/v1/embeddings", json={"model": "cairn-embedding", "input": ["a" * 32_001]})
    assert too_long.status_code == 413 and "input[0]" in too_long.json()["error"]["message"]
    tokens = httpx.post(f"{service.url}/v1/embeddings", json={"model": "cairn-embedding", "input": [[1, 2, 3]]})
    assert tokens.status_code == 400  # token arrays are not taken


def test_search_rerank_is_a_409_without_a_reranker_and_a_warning_when_it_is_down(
    service: Server, service_index: Path, redis_server: RedisProcess
) -> None:
    from tests.conftest import free_port

    unset = httpx.get(f"{service.url}/api/search", params={"q": "cache", "rerank": "true"})
    assert unset.status_code == 409 and "CAIRN_RERANK_MODEL" in unset.json()["error"]["message"]
    plain = httpx.get(f"{service.url}/api/search", params={"q": "cache"}).json()
    assert plain["reranked"] is False and plain["warnings"] == []
    model = f"openai-compatible/m@http://127.0.0.1:{free_port()}"
    with served(service_index, redis_server.url, rerank=True, rerank_model=model) as reranking:
        down = httpx.get(f"{reranking.url}/api/search", params={"q": "cache"})
        assert down.status_code == 200 and down.json()["reranked"] is False
        assert "cannot be reached" in down.json()["warnings"][0]
        assert [r["citation"] for r in down.json()["results"]] == [r["citation"] for r in plain["results"]]


# Open WebUI's title task, as it sends it to the chat's model (replayed from its request log)
TITLE_TASK = (
    "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
    '### Output:\nJSON format: { "title": "your concise title here" }\n### Chat History:\n<chat_history>\n'
    "USER: How does the LRU cache evict entries?\nASSISTANT: It evicts the least recently used entry.\n</chat_history>"
)


def test_cairn_chat_is_the_model_alone_for_a_clients_chores(service: Server) -> None:
    """No agent: no retrieval, no Sources, no session; streamed or whole, through the official client."""
    import openai

    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused")
    messages = [{"role": "user", "content": TITLE_TASK}]
    sessions = httpx.get(f"{service.url}/sessions").json()["sessions"]
    whole = client.chat.completions.create(model="cairn-chat", messages=messages)
    text = whole.choices[0].message.content
    assert text == "ok" and "Sources:" not in text  # the instant model's reply to a prompt without excerpts
    assert whole.model == "cairn-chat" and whole.model_extra["cairn"]["passthrough"] is True
    assert whole.usage.prompt_tokens > 0
    streamed = client.chat.completions.create(model="cairn-chat", messages=messages, stream=True,
                                              stream_options={"include_usage": True})  # fmt: skip
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ok"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert httpx.get(f"{service.url}/sessions").json()["sessions"] == sessions  # none kept


def test_a_requests_tools_are_noted_or_refused_not_ignored_in_silence(service: Server) -> None:
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]
    body = {"model": "cairn-agent", "messages": [{"role": "user", "content": "How does the LRU cache evict?"}],
            "tools": tools}  # fmt: skip
    noted = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=60)
    assert noted.status_code == 200 and "1 tool(s) were not offered" in noted.json()["cairn"]["tools_ignored"]
    required = httpx.post(f"{service.url}/v1/chat/completions", json={**body, "tool_choice": "required"}, timeout=60)
    assert required.status_code == 400 and required.json()["error"]["code"] == "tools_unsupported"
    chat = httpx.post(f"{service.url}/v1/chat/completions", json={**body, "model": "cairn-chat"}, timeout=60)
    assert chat.status_code == 200 and chat.json()["cairn"]["tools_ignored"]
    malformed = httpx.post(f"{service.url}/v1/chat/completions", json={**body, "tools": 5}, timeout=60)
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_tools"


def test_the_responses_api_through_the_official_client(service: Server) -> None:
    """client.responses.create, whole and streamed; previous_response_id continues one conversation only."""
    import openai

    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused")
    first = client.responses.create(model="cairn-agent", input="How does the LRU cache evict entries?")
    assert first.status == "completed" and first.id.startswith("resp_")
    assert first.output_text.startswith("It is implemented in") and "Sources:" in first.output_text
    assert first.usage.output_tokens > 0 and first.model_extra["cairn"]["sources"]
    events = list(client.responses.create(model="cairn-agent", input="And where is put?", stream=True,
                                          previous_response_id=first.id))  # fmt: skip
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"] and kinds[-1] == "response.completed"  # fmt: skip
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    follow = events[-1].response
    assert deltas == follow.output_text and "Sources:" in deltas
    # the follow-up continued the first response's session: both questions are in it
    session = httpx.get(f"{service.url}/sessions/{follow.model_extra['cairn']['session_id']}").json()
    asked = [m["content"] for m in session["messages"] if m["role"] == "user"]
    assert asked == ["How does the LRU cache evict entries?", "And where is put?"]
    # both turns' tokens are counted in the session, the streamed one too
    assert session["telemetry"]["turns"] == 2 and session["telemetry"]["total_tokens"] > first.usage.total_tokens
    other = client.responses.create(model="cairn-agent", input="How are records encoded?")
    assert other.model_extra["cairn"]["session_id"] != follow.model_extra["cairn"]["session_id"]  # never merged
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="cairn-agent", input="x", previous_response_id="resp_" + "0" * 32 + "_1")
    with client.responses.stream(model="cairn-agent", input="What does get return?") as stream:  # the helper
        final = stream.get_final_response()
    assert final.output_text.startswith("It is implemented in")
    # a client keeping its own history (store: false): the answers it resends are part of the conversation
    history = [
        {"role": "user", "content": "How does the LRU cache evict entries?"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And where is get?"},
    ]
    kept = client.responses.create(model="cairn-agent", input=history, store=False)
    assert kept.status == "completed" and kept.model_extra["cairn"]["session_id"] is None
    with pytest.raises(openai.BadRequestError, match="user message"):
        client.responses.create(model="cairn-agent", input="   ")
