"""The full graph against the real llama.cpp server running the bundled SmolLM2-135M model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from config import Settings
from graphs.agent.citations import find_citations, supported
from graphs.agent.context import Context
from graphs.agent.graph import graph
from ingest.pipeline import ingest_repository
from models.embedded import is_serving
from tests.conftest import ROOT, SAMPLE_REPO, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_index(tmp_path_factory, real_embedder) -> str:
    path = tmp_path_factory.mktemp("llama-index") / "index"
    ingest_repository(SAMPLE_REPO, Settings(index_dir=path), embedder_factory=lambda: real_embedder)
    return str(path)


def test_the_reply_length_limit_reaches_the_server(llama) -> None:
    from models import ModelConfig, build_chat_model

    config = ModelConfig.from_settings(llama.settings, "embedded", max_tokens=12)
    reply = build_chat_model(config).invoke("Write a long story about a dragon.")
    assert reply.usage_metadata["output_tokens"] <= 12


async def test_bundled_model_answers_through_the_full_graph_with_a_valid_citation(llama, real_index) -> None:
    # temperature 0: the tiny model's replies (and so this test) are the same on every run
    context = Context(
        model=f"openai-compatible/smollm2-135m@{llama.base_url}", index_dir=real_index, max_rounds=1, temperature=0
    )
    state = await graph.ainvoke(
        {"messages": [HumanMessage("How does the LRU cache evict entries when it is full?")]}, context=context
    )
    assert state["answer"].strip()
    for citation in state["citations"]:
        (_, parsed), *_ = find_citations(citation)
        assert supported(parsed, state["documents"]), citation
    assert any(s["citation"].startswith("tinykv/cache.py:") for s in state["sources"]), state["sources"]
    assert all(not supported(find_citations(c)[0][1], state["documents"]) for c in state["dropped_citations"])


def _cairn(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=600,
    )  # fmt: skip


def test_cairn_ask_starts_the_embedded_model_itself_and_keeps_sessions(real_index, tmp_path: Path) -> None:
    port = free_port()
    env = {"CAIRN_DATA_DIR": str(tmp_path), "CAIRN_EMBEDDED_PORT": str(port), "CAIRN_AGENT_MAX_ROUNDS": "0",
           "CAIRN_MODEL_TEMPERATURE": "0"}  # fmt: skip
    first = _cairn("ask", "What does Store.compact do?", "--index", real_index, "--session", "s1", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert "starting the embedded model" in first.stderr
    state = json.loads(first.stdout)
    assert state["sources"] and state["answer"]
    assert not is_serving(Settings(embedded_port=port))  # stopped again on exit

    second = _cairn("ask", "And where is it called?", "--index", real_index, "--session", "s1", "--json", env=env)
    assert second.returncode == 0, second.stderr
    messages = json.loads(second.stdout)["messages"]
    assert [m["role"] for m in messages] == ["human", "ai", "human", "ai"]
    assert messages[0]["content"] == "What does Store.compact do?"
    assert (tmp_path / "sessions.sqlite").exists()


def test_unreachable_model_endpoint_is_a_clear_error(real_index, tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    done = _cairn(
        "ask", "anything?", "--index", real_index, "--model", f"openai-compatible/m@http://127.0.0.1:{port}/v1",
        env={"CAIRN_DATA_DIR": str(tmp_path), "CAIRN_MODEL_TIMEOUT": "5", "CAIRN_MODEL_MAX_RETRIES": "0"},
    )  # fmt: skip
    assert done.returncode == 10
    assert "unreachable" in done.stderr and "hint:" in done.stderr and "Traceback" not in done.stderr


async def test_a_follow_up_on_the_bundled_model_names_its_antecedent_and_copies_no_example(llama, real_index) -> None:
    """The two-turn case from Open WebUI: "And where is its capacity set?" after a question about the cache."""
    from langgraph.checkpoint.memory import InMemorySaver

    from graphs.agent.graph import build_graph
    from graphs.agent.judgements import copies_example

    context = Context(
        model=f"openai-compatible/smollm2-135m@{llama.base_url}", index_dir=real_index, max_rounds=0, temperature=0
    )
    memory = build_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "follow-up"}}
    first = "How does the LRU cache evict entries when it is full?"
    await memory.ainvoke({"messages": [HumanMessage(first)]}, config, context=context)
    follow = await memory.ainvoke(
        {"messages": [HumanMessage("And where is its capacity set?")]}, config, context=context
    )
    assert follow["planned_by"] == "model"
    assert not any(copies_example(q) for q in [follow["question"], *follow["queries"]]), follow["queries"]
    assert "cache" in follow["question"].lower(), follow["question"]  # what "its" stands for
    assert "tinykv/cache.py" in {d.metadata["path"] for d in follow["documents"]}
    assert follow["answer"].strip()  # never a bare Sources list


async def test_the_described_helpers_callers_are_cited_on_the_bundled_model(llama, real_index) -> None:
    """The issue's question names no symbol; the reply cites both callers of encode_record."""
    question = "Which functions call the helper that encodes one log record (header, then key length, key and value)?"
    context = Context(
        model=f"openai-compatible/smollm2-135m@{llama.base_url}", index_dir=real_index, max_rounds=0, temperature=0
    )
    state = await graph.ainvoke({"messages": [HumanMessage(question)]}, context=context)
    assert state["walked"] == ["following `encode_record` → 2 callers"]
    reply = state["messages"][-1].content
    callers = [d for d in state["documents"] if d.metadata.get("walk", "").startswith("callers of")]
    assert {d.metadata["path"] for d in callers} == {"tinykv/wal.py", "tinykv/store.py"}
    assert all(f"`{d.metadata['citation']}`" in reply for d in callers), reply  # both cited, as code spans
