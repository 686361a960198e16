"""The OpenAI route renders the agent's turn: the tail the thinking filter holds back reaches the client."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.graphs.test_turn import ANSWER, _held_back_reply
from tests.serving.conftest import served

pytestmark = pytest.mark.integration


def test_the_service_streams_the_held_back_tail(service_index: Path, redis_url: str, fake_models) -> None:
    fake_models(_held_back_reply)
    with served(service_index, redis_url, model="instant", model_answer="fake/x") as server:
        body = {"model": "cairn-agent", "stream": True,
                "messages": [{"role": "user", "content": "How does the LRU cache evict entries?"}]}  # fmt: skip
        text = ""
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"]
                    text += (delta[0]["delta"].get("content") or "") if delta else ""
        whole = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "stream": False}, timeout=60)
    assert text.startswith(ANSWER)
    assert whole.json()["choices"][0]["message"]["content"].startswith(ANSWER.rstrip(" <"))
