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


def test_an_answer_of_whitespace_is_said_and_counted_never_a_bare_sources_list(
    service_index: Path, redis_url: str, fake_models
) -> None:
    """Open WebUI got a bare "Sources:" list when the model wrote no text; now the reply says so (both ways)."""
    from openai import OpenAI

    from prompts.agent import EMPTY_ANSWER
    from tests.fakes import StreamingChatModel

    fake_models(lambda spec, config: StreamingChatModel(pieces=[" ", "\n"]))
    with served(service_index, redis_url, model="instant", model_answer="fake/x") as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        messages = [{"role": "user", "content": "How are records encoded?"}]
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model="cairn-agent", messages=messages, stream=True)
            if chunk.choices
        )
        whole = client.chat.completions.create(model="cairn-agent", messages=messages).choices[0].message.content
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    for reply in (streamed, whole):
        assert reply.startswith(EMPTY_ANSWER + "\n\nSources:\n- `"), reply
    assert "cairn:empty_answers_total 2.0" in metrics
