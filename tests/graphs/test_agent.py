"""The agent graph driven by fake models through every branch (no network, no real model)."""

from __future__ import annotations

import logging

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from graphs.agent.context import Context
from graphs.agent.graph import build_graph, graph
from ingest.pipeline import ingest_repository
from models.structured import json_object_in as parse_json_object
from prompts.agent import NOTHING_FOUND
from tests.conftest import SAMPLE_REPO, FakeEmbedder
from tests.fakes import QueuedChatModel


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("agent") / "index"
    from config import Settings

    ingest_repository(SAMPLE_REPO, Settings(index_dir=path), embedder_factory=FakeEmbedder)
    return str(path)


MODELS: dict[str, QueuedChatModel] = {}


@pytest.fixture(autouse=True)
def fake_provider(fake_models):
    """Models named fake/<name> answer from MODELS[<name>]."""
    MODELS.clear()
    fake_models(lambda spec, config: MODELS[spec.model])
    yield
    MODELS.clear()


def models(**nodes: QueuedChatModel) -> dict[str, str]:
    """Register one fake per node and return the Context fields that select them."""
    fields = {}
    for node, model in nodes.items():
        MODELS[node] = model
        fields[f"{node}_model"] = f"fake/{node}"
    return fields


def context(index_dir: str, **kwargs) -> Context:
    """A keyword-retrieval context that asks the model to plan every question (unless told otherwise)."""
    return Context(**{"index_dir": index_dir, "retriever": "keyword", "plan": "model", **kwargs})


PLAN_OK = '{"question": "How does the WAL detect a torn record?", "queries": ["decode_records crc32"]}'


async def test_happy_path_answers_with_checked_citations(index_dir) -> None:
    answer_model = QueuedChatModel(
        replies=["Records carry a CRC32 [tinykv/wal.py:24-36] and torn ones are dropped [tinykv/lies.py:1-9]."]
    )
    ctx = context(
        index_dir,
        **models(
            plan=QueuedChatModel(replies=[PLAN_OK]),
            analyze=QueuedChatModel(replies=['{"relevant": [1], "sufficient": true, "missing": ""}']),
            answer=answer_model,
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("how is a torn record detected?")]}, context=ctx)

    assert state["fallbacks"] == [] and state["rounds"] == 0
    assert "decode_records crc32" in state["queries"] and "how is a torn record detected?" in state["queries"]
    assert state["citations"] == ["tinykv/wal.py:24-36"]
    assert state["dropped_citations"] == ["tinykv/lies.py:1-9"]
    assert "lies.py" not in state["answer"] and "`tinykv/wal.py:24-36`" in state["answer"]
    # the answer's text and its sources are separate fields; the message a reader sees has both
    assert "Sources:" not in state["answer"] and state["sources"]
    reply = state["messages"][-1]
    assert isinstance(reply, AIMessage) and reply.content.startswith(state["answer"])
    assert reply.content.endswith(
        "\n".join(f"- `{s['citation']}`" + (f" (`{s['symbol']}`)" if s["symbol"] else "") for s in state["sources"])
    )
    # the answer was shown every excerpt (the shared layout): all are sources, the ones analyze chose first
    chosen = [state["documents"][i].metadata["citation"] for i in state["relevant"]]
    assert [s["citation"] for s in state["sources"] if s["relevant"]] == chosen
    assert [s["citation"] for s in state["sources"]][: len(chosen)] == chosen
    assert len(state["sources"]) == len(state["documents"])
    # the answer prompt carried the relevant chunk with its citation, and was told which excerpt to use
    system, task = answer_model.prompts[0][0].content, answer_model.prompts[0][-1].content
    first = state["documents"][state["relevant"][0]]
    assert f"[{first.metadata['citation']}]" in system and first.page_content[:40] in system
    assert f"from the excerpt [{first.metadata['citation']}]." in task  # named as the answer should cite it
    assert state["judged"] == ["plan", "analyze"] and state["planned_by"] == "model"


async def test_unparseable_plan_falls_back_to_the_question_and_its_identifiers(index_dir) -> None:
    ctx = context(
        index_dir,
        **models(
            plan=QueuedChatModel(replies=["Sure! Here are some thoughts about caches..."]),
            analyze=QueuedChatModel(replies=['{"relevant": [1, 2], "sufficient": true}']),
            answer=QueuedChatModel(replies=["It evicts the oldest entry."]),
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("what does LRUCache.put do with hit_ratio?")]}, context=ctx)
    assert state["fallbacks"] == ["plan"]
    assert state["question"] == "what does LRUCache.put do with hit_ratio?"
    assert {"LRUCache.put", "hit_ratio"} <= set(state["queries"])
    assert state["answer"].startswith("It evicts the oldest entry.")


async def test_unparseable_analysis_falls_back_to_retrieval_scores(index_dir) -> None:
    ctx = context(
        index_dir,
        **models(
            plan=QueuedChatModel(replies=[PLAN_OK]),
            analyze=QueuedChatModel(replies=["I think excerpt one looks good"]),
            answer=QueuedChatModel(replies=["See the checksum."]),
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("torn record crc32")]}, context=ctx)
    assert "analyze" in state["fallbacks"]
    assert state["relevant"] and state["sufficient"]
    best = max(range(len(state["documents"])), key=lambda i: state["documents"][i].metadata["score"])
    assert best in state["relevant"]


async def test_refine_loop_stops_at_its_bound(index_dir) -> None:
    refine_model = QueuedChatModel(default='{"queries": ["WriteAheadLog append fsync"]}')
    analyze_model = QueuedChatModel(default='{"relevant": [1], "sufficient": false, "missing": "the fsync call"}')
    ctx = context(
        index_dir,
        max_rounds=2,
        **models(
            plan=QueuedChatModel(replies=[PLAN_OK]),
            analyze=analyze_model,
            refine=refine_model,
            answer=QueuedChatModel(replies=["Appends are fsynced."]),
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("is every append durable?")]}, context=ctx)
    assert state["rounds"] == 2
    assert len(refine_model.prompts) == 2 and len(analyze_model.prompts) == 3
    assert "WriteAheadLog append fsync" in state["searched"]
    assert state["answer"].startswith("Appends are fsynced.")


async def test_refine_with_unparseable_output_still_makes_new_queries(index_dir) -> None:
    ctx = context(
        index_dir,
        max_rounds=1,
        **models(
            plan=QueuedChatModel(replies=[PLAN_OK]),
            analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": false, "missing": "compact_threshold"}'),
            refine=QueuedChatModel(replies=["no idea"]),
            answer=QueuedChatModel(replies=["ok"]),
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("when does compaction run?")]}, context=ctx)
    assert "refine" in state["fallbacks"] and "compact_threshold" in state["searched"]


async def test_nothing_retrieved_says_so_without_asking_the_answer_model(index_dir) -> None:
    answer_model = QueuedChatModel()  # raises if called
    ctx = context(
        index_dir,
        max_rounds=1,
        **models(
            plan=QueuedChatModel(replies=['{"question": "zyzzyva?", "queries": ["zyzzyva"]}']),
            analyze=QueuedChatModel(),
            refine=QueuedChatModel(replies=['{"queries": ["qwxjk"]}']),
            answer=answer_model,
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("zyzzyva quuxplorp?")]}, context=ctx)
    assert state["documents"] == [] and state["rounds"] == 1
    assert state["answer"] == NOTHING_FOUND and state["citations"] == []
    assert answer_model.prompts == []


async def test_tool_errors_are_recorded_and_the_answer_still_comes(index_dir) -> None:
    calls = AIMessage(
        "",
        tool_calls=[
            {"name": "read_file", "args": {"path": "../../etc/passwd"}, "id": "a"},
            {"name": "no_such_tool", "args": {}, "id": "b"},
            {"name": "grep", "args": {"pattern": "(unclosed"}, "id": "c"},
            {
                "name": "read_file",
                "args": {"path": "tinykv/cache.py", "start_line": 1, "end_line": 5},
                "id": "d",
            },
        ],
    )
    ctx = context(
        index_dir,
        use_tools=True,
        **models(
            plan=QueuedChatModel(replies=[PLAN_OK]),
            analyze=QueuedChatModel(replies=[calls, '{"relevant": [1], "sufficient": true}']),
            answer=QueuedChatModel(replies=["Done [tinykv/cache.py:1-5]."]),
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("how are records checked?")]}, context=ctx)
    errors = {c["name"]: c["error"] for c in state["tool_calls"] if c["error"]}
    assert "leaves the repository" in errors["read_file"]
    assert "no tool named" in errors["no_such_tool"] and "invalid pattern" in errors["grep"]
    assert any(d.metadata["citation"] == "tinykv/cache.py:1-5" for d in state["documents"])
    assert "tinykv/cache.py:1-5" in state["citations"]


async def test_failover_to_the_second_endpoint_is_taken_and_logged(index_dir, caplog) -> None:
    MODELS["down"] = QueuedChatModel(default=None, replies=[ConnectionError("connection refused")] * 4)
    MODELS["up"] = QueuedChatModel(default='{"relevant": [1], "sufficient": true, "question": "q", "queries": ["wal"]}')
    ctx = context(index_dir, model="fake/down", fallback_model="fake/up")
    with caplog.at_level(logging.WARNING, logger="cairn.models"):
        state = await graph.ainvoke({"messages": [HumanMessage("wal checksum")]}, context=ctx)
    assert state["answer"]
    assert "failing over to fake/up" in caplog.text and "connection refused" in caplog.text
    assert len(MODELS["up"].prompts) >= 3  # plan, analyze and answer all came from the fallback


async def test_model_errors_without_fallback_propagate(index_dir) -> None:
    ctx = context(index_dir, model="fake/down")
    MODELS["down"] = QueuedChatModel(replies=[TimeoutError("model timed out")])
    with pytest.raises(TimeoutError, match="timed out"):
        await graph.ainvoke({"messages": [HumanMessage("anything")]}, context=ctx)


async def test_conversation_history_feeds_the_next_turn(index_dir) -> None:
    plan_model = QueuedChatModel(replies=[PLAN_OK, "unparseable"])
    ctx = context(
        index_dir,
        **models(
            plan=plan_model,
            analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": true}'),
            answer=QueuedChatModel(replies=["decode_records checks the CRC32.", "In WriteAheadLog.replay."]),
        ),
    )
    memory = build_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "s1"}}
    await memory.ainvoke(
        {"messages": [HumanMessage("how does decode_records detect torn writes?")]}, config, context=ctx
    )
    state = await memory.ainvoke({"messages": [HumanMessage("and who calls it?")]}, config, context=ctx)

    assert len(state["messages"]) == 4
    second_plan_prompt = " ".join(str(m.content) for m in plan_model.prompts[1])
    assert "how does decode_records detect torn writes?" in second_plan_prompt
    assert "decode_records checks the CRC32." in second_plan_prompt
    # the deterministic fallback carries the earlier turn's identifiers into the search
    assert "decode_records" in state["queries"]


def test_json_is_found_inside_chatter_and_fences() -> None:
    assert parse_json_object('Sure!\n```json\n{"a": [1, 2], "b": "x}y"}\n```') == {"a": [1, 2], "b": "x}y"}
    assert parse_json_object(r'{"q": "say \"hi}\" now", "n": 1} trailing') == {"q": 'say "hi}" now', "n": 1}
    assert parse_json_object('{oops} then {"ok": true}') == {"ok": True}
    with pytest.raises(ValueError):
        parse_json_object("no json here {broken")


async def test_a_first_question_is_searched_as_asked_and_a_follow_up_is_rewritten(index_dir) -> None:
    """plan=auto (the default) saves the model call a first question does not need."""
    plan_model = QueuedChatModel(replies=['{"question": "Who calls decode_records?", "queries": ["replay records"]}'])
    ctx = context(
        index_dir,
        plan="auto",
        **models(
            plan=plan_model,
            analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": true}'),
            answer=QueuedChatModel(default="It is checked in decode_records."),
        ),
    )
    memory = build_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "auto-plan"}}
    first = await memory.ainvoke({"messages": [HumanMessage("how does decode_records work?")]}, config, context=ctx)
    assert plan_model.prompts == [] and first["planned_by"] == "question"
    assert first["queries"][:2] == ["how does decode_records work?", "decode_records"]
    assert first["judged"] == ["analyze"]
    follow = await memory.ainvoke({"messages": [HumanMessage("and who calls it?")]}, config, context=ctx)
    assert len(plan_model.prompts) == 1 and follow["planned_by"] == "model"
    assert follow["question"] == "Who calls decode_records?" and "replay records" in follow["queries"]


async def test_a_reasoning_models_thinking_never_reaches_the_answer_or_history(index_dir) -> None:
    """Thinking inline (<think>…</think>) and apart (reasoning_content): judgements parse, answers stay clean."""
    analyze_reply = AIMessage('{"relevant": [1], "sufficient": true}',
                              additional_kwargs={"reasoning_content": "SECRET-A: excerpt 1 has the CRC."})  # fmt: skip
    ctx = context(
        index_dir,
        **models(
            plan=QueuedChatModel(replies=["<think>SECRET-P the user asks about torn records</think>" + PLAN_OK]),
            analyze=QueuedChatModel(replies=[analyze_reply]),
            answer=QueuedChatModel(replies=["<think>SECRET-B I should cite wal</think>It checks a CRC32."]),
        ),
    )
    steps = []
    async for mode, payload in graph.astream(
        {"messages": [HumanMessage("how is a torn record detected?")]}, context=ctx, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            steps.append(payload)
        else:
            state = payload
    assert state["fallbacks"] == [] and "decode_records crc32" in state["queries"]
    assert state["answer"].startswith("It checks a CRC32.")
    visible = " ".join([state["answer"], *(str(m.content) for m in state["messages"]), *state["citations"]])
    assert "SECRET" not in visible
    thoughts = [s for s in steps if s["status"] == "thinking"]
    assert [s["node"] for s in thoughts] == ["plan", "analyze"]
    assert "SECRET-A" in thoughts[1]["thinking"]


async def test_each_node_reports_its_steps_in_order(index_dir) -> None:
    ctx = context(
        index_dir,
        **models(
            plan=QueuedChatModel(replies=[PLAN_OK]),
            analyze=QueuedChatModel(replies=['{"relevant": [1, 2], "sufficient": true}']),
            answer=QueuedChatModel(replies=["Checked by CRC [tinykv/wal.py:24-36]."]),
        ),
    )
    steps = [p async for p in graph.astream({"messages": [HumanMessage("torn record?")]}, context=ctx,
                                              stream_mode="custom")]  # fmt: skip
    assert [(s["node"], s["status"]) for s in steps] == [
        ("plan", "running"), ("plan", "done"), ("retrieve", "running"), ("retrieve", "done"),
        ("analyze", "running"), ("analyze", "done"), ("answer", "running"), ("answer", "done"),
    ]  # fmt: skip
    by_step = {(s["node"], s["status"]): s for s in steps}
    assert by_step[("retrieve", "running")]["queries"] == ["torn record?", "decode_records crc32"]
    assert by_step[("retrieve", "done")]["kept"] >= 2 and by_step[("analyze", "done")]["relevant"] == 2
    assert by_step[("answer", "done")]["citations"] == ["tinykv/wal.py:24-36"]


async def test_what_calls_x_is_answered_from_the_symbol_graph(index_dir) -> None:
    ctx = context(
        index_dir,
        plan="auto",
        **models(
            analyze=QueuedChatModel(replies=['{"relevant": [1, 2], "sufficient": true, "missing": ""}']),
            answer=QueuedChatModel(replies=["Store.compact calls it [tinykv/store.py:54-64]."]),
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("What calls encode_record?")]}, context=ctx)
    assert state["lookups"] == [{"kind": "references", "target": "encode_record"}]
    from_graph = [d for d in state["documents"] if d.metadata["retriever"] == "graph:references"]
    # the graph's chunks come first: the definition, then each calling chunk (keyword search fills the rest)
    assert state["documents"][: len(from_graph)] == from_graph and len(from_graph) >= 2
    assert from_graph[0].metadata["symbol"] == "encode_record"
    assert "tinykv/store.py:54-64" in [d.metadata["citation"] for d in from_graph]
    assert any(not d.metadata["retriever"].startswith("graph:") for d in state["documents"])
    assert state["citations"] == ["tinykv/store.py:54-64"]


async def test_a_question_without_navigation_makes_no_lookup(index_dir) -> None:
    ctx = context(
        index_dir,
        plan="auto",
        **models(
            analyze=QueuedChatModel(replies=['{"relevant": [1], "sufficient": true, "missing": ""}']),
            answer=QueuedChatModel(replies=["It rewrites the file."]),
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("how does compaction work?")]}, context=ctx)
    assert state["lookups"] == []
    assert not any(d.metadata["retriever"].startswith("graph:") for d in state["documents"])


async def test_hyde_searches_the_snippet_the_model_imagines(index_dir) -> None:
    """CAIRN_AGENT_HYDE: one model call writes a snippet (fences stripped) that is searched as a query."""
    plan_model = QueuedChatModel(replies=["```python\ndef decode_records(data):\n    check_crc32(data)\n```"])
    ctx = context(
        index_dir,
        plan="question",
        hyde=True,
        **models(
            plan=plan_model,
            analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": true}'),
            answer=QueuedChatModel(default="It checks a CRC [tinykv/wal.py:24-36]."),
        ),
    )
    state = await graph.ainvoke({"messages": [HumanMessage("How are torn records detected?")]}, context=ctx)
    assert len(plan_model.prompts) == 1  # the HyDE call; the plan itself was not asked for
    assert state["queries"][:2] == [
        "How are torn records detected?",
        "def decode_records(data):\n    check_crc32(data)",
    ]


async def test_without_hyde_no_snippet_is_asked_for(index_dir) -> None:
    plan_model = QueuedChatModel(replies=[])
    analyze = QueuedChatModel(default='{"relevant": [1], "sufficient": true}')
    ctx = context(
        index_dir, plan="question", **models(plan=plan_model, analyze=analyze, answer=QueuedChatModel(default="x"))
    )
    state = await graph.ainvoke({"messages": [HumanMessage("How are torn records detected?")]}, context=ctx)
    assert plan_model.prompts == [] and not any("def " in q for q in state["queries"])


async def test_a_described_helpers_callers_are_walked_to(index_dir) -> None:
    """The issue's question: it names no symbol, so the helper is found by search and its callers by the graph."""
    question = "Which functions call the helper that encodes one log record (header, then key length, key and value)?"
    ctx = context(
        index_dir,
        plan="auto",
        **models(
            analyze=QueuedChatModel(default='{"relevant": [1, 2, 3], "sufficient": true}'),
            answer=QueuedChatModel(default="WriteAheadLog.append and Store.compact call it."),
        ),
    )
    steps: list[dict] = []
    async for mode, chunk in graph.astream({"messages": [HumanMessage(question)]}, context=ctx,
                                           stream_mode=["custom", "values"]):  # fmt: skip
        if mode == "custom":
            steps.append(chunk)
        else:
            state = chunk
    assert state["lookups"] == [] and state["walk"] == "callers"
    assert state["queries"][1] == "encodes one log record (header, then key length, key and value)"
    walked = [d for d in state["documents"] if d.metadata["retriever"] == "walk:callers"]
    assert walked[0].metadata["symbol"] == "encode_record" and state["documents"][0] is walked[0]
    assert {d.metadata["path"] for d in walked[1:]} == {"tinykv/store.py", "tinykv/wal.py"}
    assert state["walked"] == ["following `encode_record` → 2 callers"]
    assert any(s.get("trail") == "following `encode_record` → 2 callers" for s in steps)


@pytest.mark.parametrize(
    "reply",
    [
        '{"question": "How does X handle Y?", "queries": ["X handle Y", "handle_y"]}',  # the prompt's example
        '{"question": "How does the LRU cache evict entries?", "queries": ["cache evict"]}',  # the earlier question
    ],
)
async def test_a_follow_up_plan_that_copies_or_loses_the_question_is_not_taken(index_dir, reply: str) -> None:
    ctx = context(
        index_dir,
        plan="auto",
        **models(
            plan=QueuedChatModel(replies=[reply]),
            analyze=QueuedChatModel(default='{"relevant": [1], "sufficient": true}'),
            answer=QueuedChatModel(default="In LRUCache.__init__."),
        ),
    )
    memory = build_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "follow"}}
    await memory.ainvoke({"messages": [HumanMessage("How does the LRU cache evict entries?")]}, config, context=ctx)
    follow = await memory.ainvoke({"messages": [HumanMessage("And where is its capacity set?")]}, config, context=ctx)
    assert follow["question"] == "And where is its capacity set? (follow-up to: How does the LRU cache evict entries?)"
    assert not any(q in ("X handle Y", "handle_y") for q in follow["queries"])
    assert "LRU cache evict entries And where is its capacity set?" in follow["queries"]
