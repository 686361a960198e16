"""One turn runner for every way in: the tail the thinking filter holds back reaches `cairn ask` and the service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graphs.agent.turn import Final, Thinking, Token, Turn
from tests.fakes import StreamingChatModel

#: The reply ends with "<": a prefix of "<think>", which the filter holds back until it knows.
PIECES = ["The cache evicts the least recently used entry ", "once it holds more than capacity <"]
ANSWER = "".join(PIECES)


def _held_back_reply(spec, config) -> StreamingChatModel:
    return StreamingChatModel(pieces=list(PIECES))


def _settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CAIRN_MODEL", "instant")
    monkeypatch.setenv("CAIRN_MODEL_ANSWER", "fake/x")


def test_the_runner_yields_the_held_back_tail_and_thinking(sample_index, fake_models, tmp_path: Path) -> None:
    from langchain_core.messages import HumanMessage

    from config import Settings
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph

    fake_models(lambda spec, config: StreamingChatModel(pieces=["<think>which entry?</think>The oldest ", "one <"]))
    settings = Settings(_env_file=None, data_dir=tmp_path, index_dir=sample_index.generation.path.parent,
                        model="instant", model_answer="fake/x")  # fmt: skip
    turn = Turn(build_graph().compile(), Context.from_settings(settings), [HumanMessage("How does the cache evict?")])

    async def collect() -> list:
        return [event async for event in turn.events()]

    events = asyncio.run(collect())
    assert "".join(e.text for e in events if isinstance(e, Token)) == "The oldest one <"
    assert "".join(e.text for e in events if isinstance(e, Thinking)) == "which entry?"
    assert isinstance(events[-1], Final) and events[-1].streamed and turn.completed


def test_cairn_ask_prints_the_held_back_tail(
    sample_index, fake_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli import app

    fake_models(_held_back_reply)
    _settings_env(monkeypatch, tmp_path)
    index = str(sample_index.generation.path.parent)
    result = CliRunner().invoke(app, ["ask", "How does the LRU cache evict entries?", "--index", index])
    assert result.exit_code == 0, result.output
    assert ANSWER in result.stdout


def test_a_described_relation_is_walked_and_shown_as_a_step(sample_index, tmp_path: Path) -> None:
    """The sample question of issue 28: the callers of the helper it describes come first, and the step says so."""
    from langchain_core.messages import HumanMessage

    from config import Settings
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph
    from graphs.agent.turn import Step, describe_step

    question = "Which functions call the helper that encodes one log record (header, then key length, key and value)?"
    settings = Settings(_env_file=None, data_dir=tmp_path, index_dir=sample_index.generation.path.parent,
                        model="instant")  # fmt: skip
    turn = Turn(build_graph().compile(), Context.from_settings(settings), [HumanMessage(question)])

    async def collect() -> list:
        return [event async for event in turn.events()]

    events = asyncio.run(collect())
    lines = [describe_step(e.data) for e in events if isinstance(e, Step)]
    assert "following `encode_record` → 2 callers" in lines
    final = events[-1].state
    assert final["walk"] == "callers" and final["walked"] == ["following `encode_record` → 2 callers"]
    first_two = {d.metadata["path"] for d in final["documents"][:2]}
    assert first_two == {"tinykv/store.py", "tinykv/wal.py"}
    assert {"Store.compact", "WriteAheadLog"} <= {s["symbol"] for s in final["sources"]}


@pytest.mark.parametrize("pieces", [[""], ["  ", "\n\n"]], ids=["no-text", "whitespace"])
def test_an_answer_without_text_says_so_and_lists_the_places(sample_index, fake_models, tmp_path: Path, pieces) -> None:
    """Never a bare Sources list: the reply says in one sentence that the model gave no answer, then the places."""
    from langchain_core.messages import HumanMessage

    from config import Settings
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph
    from prompts.agent import EMPTY_ANSWER

    fake_models(lambda spec, config: StreamingChatModel(pieces=list(pieces)))
    settings = Settings(_env_file=None, data_dir=tmp_path, index_dir=sample_index.generation.path.parent,
                        model="instant", model_answer="fake/x")  # fmt: skip
    turn = Turn(build_graph().compile(), Context.from_settings(settings), [HumanMessage("How are records encoded?")])

    async def collect() -> list:
        return [event async for event in turn.events()]

    events = asyncio.run(collect())
    assert not [e for e in events if isinstance(e, Token)]
    final = events[-1]
    assert isinstance(final, Final) and not final.streamed
    state = final.state
    assert state["empty_answer"] and state["answer"] == EMPTY_ANSWER and state["sources"]
    assert state["messages"][-1].content.startswith(EMPTY_ANSWER + "\n\nSources:\n- `")
