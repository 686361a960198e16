"""Clients nobody here wrote, as their users run them: Simon Willison's `llm` CLI through its OpenAI-compatible
model configuration (``extra-openai-models.yaml``), against a real service on the sample index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.conftest import Server, service_settings

pytestmark = pytest.mark.integration

LLM = Path(sys.executable).with_name("llm")


class Recorder:
    """The app, with every chat request body it received kept (to see what the client sent)."""

    def __init__(self, app) -> None:
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return
        chunks, done = [], False
        while not done:
            message = await receive()
            chunks.append(message.get("body", b""))
            done = not message.get("more_body", False)
        self.bodies.append(json.loads(b"".join(chunks)))
        replayed = iter([{"type": "http.request", "body": b"".join(chunks), "more_body": False}])

        async def replay():
            return next(replayed, None) or await receive()

        await self.app(scope, replay, send)


def run_llm(home: Path, *args: str) -> str:
    env = {**os.environ, "LLM_USER_PATH": str(home), "LLM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
    done = subprocess.run([str(LLM), *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_llm_asks_streams_and_continues_a_conversation(service_index: Path, redis_url: str, tmp_path: Path) -> None:
    from serving.app import create_app

    recorder = Recorder(create_app(service_settings(service_index, redis_url)))
    with Server(recorder) as server:
        home = tmp_path / "llm"
        home.mkdir()
        (home / "extra-openai-models.yaml").write_text(  # the README's llm section, as a user writes it
            f"- model_id: cairn\n  model_name: cairn-agent\n  api_base: {server.url}/v1\n"
            f"- model_id: cairn-chat\n  model_name: cairn-chat\n  api_base: {server.url}/v1\n",
            encoding="utf-8",
        )
        assert "cairn" in run_llm(home, "models", "list")

        first = run_llm(home, "-m", "cairn", "How does the LRU cache evict entries?")  # streamed, as llm does
        assert "Sources:" in first and "tinykv/cache.py:" in first
        assert recorder.bodies[-1]["stream"] is True and recorder.bodies[-1]["model"] == "cairn-agent"

        follow = run_llm(home, "-c", "--no-stream", "And where is it written to disk?")  # llm -c resends history
        assert "Sources:" in follow
        sent = recorder.bodies[-1]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        assert sent[0]["content"] == "How does the LRU cache evict entries?" and "Sources:" in sent[1]["content"]

        # the chores model answers with the chat model alone: no retrieval, no sources
        chore = run_llm(home, "-m", "cairn-chat", "--no-stream", "Give this chat a short title.")
        assert chore.strip() and "Sources:" not in chore
        logged = json.loads(run_llm(home, "logs", "--json", "-n", "3"))
        assert [entry["model"] for entry in logged] == ["cairn", "cairn", "cairn-chat"]
