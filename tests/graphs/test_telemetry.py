"""Traces and metrics of an agent run: the span tree, GenAI attributes, tokens, privacy, streaming."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from prometheus_client import CollectorRegistry

from cairn import telemetry
from cairn.telemetry import ContentPolicy, redact
from graphs.agent.context import Context
from graphs.agent.graph import GRAPH_NAME, graph
from graphs.agent.telemetry import AgentMetrics, RunTelemetry
from tests.fakes import QueuedChatModel, StreamingChatModel

QUESTION = "how is a torn record detected? my api_key=sk-live-abcdefghijklmnop"
PLAN = '{"question": "How does the WAL detect a torn record?", "queries": ["decode_records crc32"]}'
ANALYZE = '{"relevant": [1], "sufficient": true, "missing": ""}'
USAGE = {"input_tokens": 321, "output_tokens": 12, "total_tokens": 333}


@pytest.fixture(scope="module")
def index_dir(sample_index) -> str:
    # built with the real embedding model: dense search, as a user runs it
    return str(sample_index.generation.path.parent)


@pytest.fixture
def fakes(fake_models):
    models: dict[str, object] = {}
    fake_models(lambda spec, config: models[spec.model])
    return models


def context(index_dir: str, fakes: dict, answer: object) -> Context:
    fakes.update(plan=QueuedChatModel(replies=[PLAN]), analyze=QueuedChatModel(replies=[ANALYZE]), answer=answer)
    return Context(index_dir=index_dir, retriever="hybrid", plan="model", plan_model="fake/plan",
                   analyze_model="fake/analyze", answer_model="fake/answer")  # fmt: skip


def answer_reply() -> AIMessage:
    text = "Records carry a CRC32 [tinykv/wal.py:24-36]."
    return AIMessage(text, usage_metadata=USAGE, response_metadata={"finish_reason": "stop"})


def by_name(finished) -> dict[str, list]:
    named: dict[str, list] = {}
    for span in finished:
        named.setdefault(span.name, []).append(span)
    return named


def ancestors(span, finished) -> list[str]:
    ids = {s.context.span_id: s for s in finished}
    chain = []
    while span.parent is not None and span.parent.span_id in ids:
        span = ids[span.parent.span_id]
        chain.append(span.name)
    return chain


async def test_a_run_is_one_trace_request_agent_node_model_and_search(index_dir, fakes, spans) -> None:
    ctx = context(index_dir, fakes, QueuedChatModel(replies=[answer_reply()]))
    metrics = AgentMetrics(CollectorRegistry())
    handler = RunTelemetry(content=ContentPolicy("none"), metrics=metrics, conversation="session-7")
    with telemetry.span("POST /v1/chat/completions") as request:
        state = await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, {"callbacks": [handler]}, context=ctx)
    assert state["citations"] == ["tinykv/wal.py:24-36"]

    finished = spans.get_finished_spans()
    named = by_name(finished)
    assert {s.context.trace_id for s in finished} == {request.get_span_context().trace_id}  # one trace
    agent = named[f"invoke_agent {GRAPH_NAME}"][0]
    assert ancestors(agent, finished) == ["POST /v1/chat/completions"]
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert agent.attributes["gen_ai.conversation.id"] == "session-7"
    for node in ("plan", "retrieve", "analyze", "answer"):
        (span,) = named[f"node {node}"]
        assert ancestors(span, finished)[0] == agent.name, node
    # model calls under the node that made them, with the GenAI attributes
    chats = named["chat queued-fake"]
    assert sorted(s.attributes["cairn.node"] for s in chats) == ["analyze", "answer", "plan"]
    for chat in chats:
        assert ancestors(chat, finished)[0] == f"node {chat.attributes['cairn.node']}"
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "queued-fake"
    (answer_call,) = [s for s in chats if s.attributes["cairn.node"] == "answer"]
    assert answer_call.attributes["gen_ai.usage.input_tokens"] == 321
    assert answer_call.attributes["gen_ai.usage.output_tokens"] == 12
    assert list(answer_call.attributes["gen_ai.response.finish_reasons"]) == ["stop"]
    # a reply without usage leaves the token attributes unset rather than claiming zero
    (plan_call,) = [s for s in chats if s.attributes["cairn.node"] == "plan"]
    assert "gen_ai.usage.input_tokens" not in plan_call.attributes
    # the searches (dense, keyword, their fusion, the query embedding) under the retrieve node
    for name in ("search dense", "search keyword", "search fusion", "embed queries"):
        assert named[name] and all("node retrieve" in ancestors(s, finished) for s in named[name]), name
    retrieved = named["node retrieve"][0].attributes
    assert retrieved["cairn.documents.kept"] == len(state["documents"])
    assert list(retrieved["cairn.documents.ids"]) == [d.metadata["citation"] for d in state["documents"]]
    assert list(named["node answer"][0].attributes["cairn.citations"]) == ["tinykv/wal.py:24-36"]
    # metrics: one observation per node, tokens by model
    for node in ("plan", "retrieve", "analyze", "answer"):
        assert metrics.node.labels(node)._sum.get() > 0
    assert metrics.prompt_tokens.labels("queued-fake")._value.get() == 321
    assert metrics.generation_tokens.labels("queued-fake")._value.get() == 12


async def test_no_text_of_users_models_or_code_is_recorded_when_content_is_none(index_dir, fakes, spans) -> None:
    ctx = context(index_dir, fakes, QueuedChatModel(replies=[answer_reply()]))
    handler = RunTelemetry(content=ContentPolicy("none"))
    state = await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, {"callbacks": [handler]}, context=ctx)

    texts = [QUESTION, "torn record", "decode_records crc32", "Records carry a CRC32"]
    texts += [d.page_content[:30] for d in state["documents"]]
    for span in spans.get_finished_spans():
        for key, value in span.attributes.items():
            rendered = str(list(value) if isinstance(value, tuple) else value)
            assert not any(text in rendered for text in texts), (span.name, key)


async def test_full_content_records_prompts_and_answers_redacted(index_dir, fakes, spans) -> None:
    ctx = context(index_dir, fakes, QueuedChatModel(replies=[answer_reply()]))
    handler = RunTelemetry(content=ContentPolicy("full"))
    await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, {"callbacks": [handler]}, context=ctx)

    named = by_name(spans.get_finished_spans())
    plan = named["node plan"][0].attributes["cairn.question"]
    assert "torn record" in plan and "sk-live-abcdefghijklmnop" not in plan and "[REDACTED]" in plan
    prompts = [s.attributes["gen_ai.input.messages"] for s in named["chat queued-fake"]]
    assert all(prompts) and not any("sk-live" in m for p in prompts for m in p)
    assert "Records carry a CRC32" in named["node answer"][0].attributes["cairn.answer"]


async def test_a_streamed_call_ends_with_its_stream_and_records_first_token_and_usage(index_dir, fakes, spans) -> None:
    pieces = ["Records ", "carry ", "a CRC32 ", "[tinykv/wal.py:24-36]."]
    ctx = context(index_dir, fakes, StreamingChatModel(pieces=pieces, delay=0.1, usage=USAGE | {"total_tokens": 0}))
    metrics = AgentMetrics(CollectorRegistry())
    handler = RunTelemetry(content=ContentPolicy("metadata"), metrics=metrics)
    seen = []
    async for chunk, meta in graph.astream(
        {"messages": [HumanMessage(QUESTION)]}, {"callbacks": [handler]}, context=ctx, stream_mode="messages"
    ):
        if meta.get("langgraph_node") == "answer" and isinstance(chunk, AIMessageChunk):
            seen.append(chunk.content)
    assert "".join(seen) == "".join(pieces)

    named = by_name(spans.get_finished_spans())
    (chat,) = named["chat streaming-fake"]
    duration = (chat.end_time - chat.start_time) / 1e9
    assert duration >= 0.3  # three gaps of 0.1 s: the span lasted as long as the stream
    assert chat.attributes["gen_ai.response.time_to_first_chunk"] < duration - 0.25
    assert chat.attributes["gen_ai.usage.input_tokens"] == 321
    agent = named[f"invoke_agent {GRAPH_NAME}"][0]
    assert 0 < agent.attributes["cairn.time_to_first_token"] < (agent.end_time - agent.start_time) / 1e9
    assert metrics.ttft._sum.get() > 0 and metrics.e2e._sum.get() >= metrics.ttft._sum.get()
    # metadata: questions and queries, never prompts or answers
    assert "cairn.question" in named["node plan"][0].attributes
    assert "gen_ai.input.messages" not in chat.attributes and "cairn.answer" not in named["node answer"][0].attributes


async def test_a_failing_model_marks_its_span_node_and_error_metric(index_dir, fakes, spans) -> None:
    ctx = context(index_dir, fakes, QueuedChatModel(replies=[ConnectionError("endpoint went away")]))
    metrics = AgentMetrics(CollectorRegistry())
    traced = {"callbacks": [RunTelemetry(content=ContentPolicy(), metrics=metrics)]}
    with pytest.raises(ConnectionError):
        await graph.ainvoke({"messages": [HumanMessage(QUESTION)]}, traced, context=ctx)
    named = by_name(spans.get_finished_spans())
    failed = next(s for s in named["chat queued-fake"] if s.attributes["cairn.node"] == "answer")
    assert failed.status.status_code.name == "ERROR" and failed.attributes["error.type"] == "ConnectionError"
    assert named["node answer"][0].status.status_code.name == "ERROR"
    assert metrics.errors.labels("answer", "ConnectionError")._value.get() >= 1


def test_redaction_covers_the_usual_secrets() -> None:
    text = (
        "token: abcdef123456 Authorization: Bearer eyJhbGciOiJIUzI1NiJ9 AKIAABCDEFGHIJKLMNOP "
        "https://user:hunter22@example.internal/x ghp_abcdefghijklmnopqrstuv "
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"
    )
    cleaned = redact(text)
    for secret in ("abcdef123456", "eyJhbGciOiJIUzI1NiJ9", "AKIAABCDEFGHIJKLMNOP", "hunter22", "ghp_abc", "MIIE"):
        assert secret not in cleaned, secret
    assert redact("x" * 10_000).endswith("…") and len(redact("x" * 10_000)) <= 8_001
