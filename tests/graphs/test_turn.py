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
