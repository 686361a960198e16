from __future__ import annotations

import logging
import time

import pytest
from langchain_core.callbacks import CallbackManager
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableWithFallbacks
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from cairn.errors import ModelConfigError
from config import Settings
from models import ModelConfig, build_chat_model, chat_model, parse_model_spec
from models.instant import InstantChatModel
from tests.fakes import QueuedChatModel


def config(spec: str, **settings) -> ModelConfig:
    return ModelConfig.from_settings(Settings(_env_file=None, **settings), spec)


def test_specs_parse() -> None:
    spec = parse_model_spec("openai-compatible/qwen2.5-coder@http://127.0.0.1:8000/v1")
    assert (spec.provider, spec.model, spec.base_url) == (
        "openai-compatible",
        "qwen2.5-coder",
        "http://127.0.0.1:8000/v1",
    )
    assert parse_model_spec("ollama/qwen2.5-coder:7b").model == "qwen2.5-coder:7b"
    assert parse_model_spec("embedded").provider == "embedded"
    assert parse_model_spec("instant").provider == "instant"
    with pytest.raises(ModelConfigError, match="provider/model"):
        parse_model_spec("gpt-4")


def test_factory_builds_clients_with_timeouts_and_retries() -> None:
    openai = build_chat_model(config("openai-compatible/m@http://127.0.0.1:9/v1", model_timeout=7, model_max_retries=3))
    assert isinstance(openai, ChatOpenAI)
    assert openai.request_timeout == 7 and openai.max_retries == 3
    assert openai.openai_api_base == "http://127.0.0.1:9/v1"
    payload = openai._get_request_payload([HumanMessage("hi")])
    assert payload["extra_body"] == {"max_tokens": 512} and "max_completion_tokens" not in payload
    embedded = build_chat_model(config("embedded", embedded_port=9999))
    assert embedded.openai_api_base == "http://127.0.0.1:9999/v1"
    ollama = build_chat_model(config("ollama/qwen2.5-coder:7b", model_context_tokens=8192))
    assert isinstance(ollama, ChatOllama) and ollama.base_url == "http://127.0.0.1:11434" and ollama.num_ctx == 8192
    assert isinstance(build_chat_model(config("instant")), InstantChatModel)


def test_clients_are_cached_by_their_whole_configuration() -> None:
    """Timeout, retries, API key and context size each make a different client (none is silently shared)."""
    base = config("openai-compatible/m@http://127.0.0.1:9/v1")
    assert chat_model(base) is chat_model(config("openai-compatible/m@http://127.0.0.1:9/v1"))
    variants = [
        config("openai-compatible/m@http://127.0.0.1:9/v1", model_timeout=3),
        config("openai-compatible/m@http://127.0.0.1:9/v1", model_max_retries=4),
        config("openai-compatible/m@http://127.0.0.1:9/v1", model_api_key="k2"),
        config("openai-compatible/m@http://127.0.0.1:9/v1", model_context_tokens=8192),
        config("openai-compatible/m@http://127.0.0.1:9/v1", model_temperature=0.7),
    ]
    clients = {id(chat_model(c)) for c in variants}
    assert len(clients) == len(variants) and id(chat_model(base)) not in clients
    assert chat_model(variants[2]).openai_api_key.get_secret_value() == "k2"
    assert "k2" not in repr(variants[2])  # the key is never printed


def test_unknown_provider_and_missing_endpoint_say_what_to_do() -> None:
    with pytest.raises(ModelConfigError, match=r"choose one of: embedded, instant, .*ollama, openai-compatible"):
        build_chat_model(config("anthropic/claude"))
    with pytest.raises(ModelConfigError, match="no endpoint"):
        build_chat_model(config("openai-compatible/m"))


def test_failover_uses_the_second_model_and_logs(fake_models, caplog) -> None:
    down = QueuedChatModel(replies=[ConnectionError("refused"), ConnectionError("refused")])
    up = QueuedChatModel(default="from b")
    fake_models(lambda spec, c: {"a": down, "b": up}[spec.model], name="queued")
    model = build_chat_model(config("queued/a", model_fallback="queued/b"))
    assert isinstance(model, RunnableWithFallbacks)  # LangChain's own mechanism
    with caplog.at_level(logging.WARNING, logger="cairn.models"):
        assert model.invoke([HumanMessage("hi")]).content == "from b"
        assert "".join(c.content for c in model.stream([HumanMessage("hi")])) == "from b"
    assert caplog.text.count("failing over to queued/b") == 2
    # bind_tools reaches every model of the chain, and failing over from the bound model is logged too
    bound = model.bind_tools([])
    assert isinstance(bound, RunnableWithFallbacks) and len(bound.fallbacks) == 1
    down.replies.append(ConnectionError("refused"))
    with caplog.at_level(logging.WARNING, logger="cairn.models"):
        assert bound.invoke([HumanMessage("hi")]).content == "from b"
    assert caplog.text.count("failing over to queued/b") == 3


def test_failover_is_logged_for_a_model_built_with_a_callback_manager(fake_models, caplog) -> None:
    """A provider's model may carry a CallbackManager, not a list: the failover log joins it, not a copy of it."""
    shared = CallbackManager([])
    down = QueuedChatModel(replies=[ConnectionError("refused")], callbacks=shared)
    up = QueuedChatModel(default="from b")
    fake_models(lambda spec, c: {"a": down, "b": up}[spec.model], name="queued")
    model = build_chat_model(config("queued/a", model_fallback="queued/b"))
    with caplog.at_level(logging.WARNING, logger="cairn.models"):
        assert model.invoke([HumanMessage("hi")]).content == "from b"
    assert caplog.text.count("failing over to queued/b") == 1
    assert shared.handlers == []  # the provider's own manager is left as it was


def test_real_unreachable_endpoint_fails_over_within_the_timeout(fake_models) -> None:
    """The official client against a closed port: the failover answers, quickly."""
    fake_models(lambda spec, c: QueuedChatModel(default="fallback answer"), name="queued")
    dead = config(
        "openai-compatible/m@http://127.0.0.1:9/v1", model_timeout=2, model_max_retries=0, model_fallback="queued/x"
    )
    model = build_chat_model(dead)
    started = time.monotonic()
    assert model.invoke("hello").content == "fallback answer"
    assert time.monotonic() - started < 2
