from __future__ import annotations

import logging

import pytest
from langchain_core.messages import HumanMessage
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from config import Settings
from models import FailoverChatModel, ModelConfigError, build_chat_model, parse_model_spec, register_provider
from tests.fakes import QueuedChatModel


def test_specs_parse() -> None:
    spec = parse_model_spec("openai-compatible/qwen2.5-coder@http://127.0.0.1:8000/v1")
    assert (spec.provider, spec.model, spec.base_url) == (
        "openai-compatible",
        "qwen2.5-coder",
        "http://127.0.0.1:8000/v1",
    )
    assert parse_model_spec("ollama/qwen2.5-coder:7b").model == "qwen2.5-coder:7b"
    assert parse_model_spec("embedded").provider == "embedded"
    with pytest.raises(ModelConfigError, match="provider/model"):
        parse_model_spec("gpt-4")


def test_factory_builds_clients_with_timeouts_and_retries() -> None:
    settings = Settings(model_timeout=7, model_max_retries=3)
    openai = build_chat_model("openai-compatible/m@http://127.0.0.1:9/v1", settings)
    assert isinstance(openai, ChatOpenAI)
    assert openai.request_timeout == 7 and openai.max_retries == 3
    assert openai.openai_api_base == "http://127.0.0.1:9/v1"
    payload = openai._get_request_payload([HumanMessage("hi")])
    assert payload["extra_body"] == {"max_tokens": 512} and "max_completion_tokens" not in payload
    embedded = build_chat_model("embedded", Settings(embedded_port=9999))
    assert embedded.openai_api_base == "http://127.0.0.1:9999/v1"
    ollama = build_chat_model("ollama/qwen2.5-coder:7b", settings)
    assert isinstance(ollama, ChatOllama) and ollama.base_url == "http://127.0.0.1:11434"


def test_unknown_provider_and_missing_endpoint_say_what_to_do() -> None:
    with pytest.raises(ModelConfigError, match=r"choose one of: embedded, .*ollama, openai-compatible"):
        build_chat_model("anthropic/claude", Settings())
    with pytest.raises(ModelConfigError, match="no endpoint"):
        build_chat_model("openai-compatible/m", Settings())


def test_failover_uses_the_second_model_and_logs(caplog) -> None:
    register_provider("queued", lambda spec, s: {"a": down, "b": up}[spec.model])
    down = QueuedChatModel(replies=[ConnectionError("refused"), ConnectionError("refused")])
    up = QueuedChatModel(default="from b")
    model = build_chat_model("queued/a", Settings(), fallback="queued/b")
    assert isinstance(model, FailoverChatModel)
    with caplog.at_level(logging.WARNING, logger="cairn.models"):
        assert model.invoke([HumanMessage("hi")]).content == "from b"
        assert "".join(c.content for c in model.stream([HumanMessage("hi")])) == "from b"
    assert caplog.text.count("failing over to queued/b") == 2


def test_real_unreachable_endpoint_fails_over_within_the_timeout() -> None:
    """The official client against a closed port: the failover answers, quickly."""
    import time

    register_provider("queued", lambda spec, s: QueuedChatModel(default="fallback answer"))
    settings = Settings(model_timeout=2, model_max_retries=0)
    model = build_chat_model("openai-compatible/m@http://127.0.0.1:9/v1", settings, fallback="queued/x")
    started = time.monotonic()
    assert model.invoke("hello").content == "fallback answer"
    assert time.monotonic() - started < 2
