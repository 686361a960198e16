"""One factory from a model setting to a LangChain chat model, with timeouts, retries and failover.

A model setting ("spec") is one of::

    embedded                                   the bundled SmolLM2-135M behind llama.cpp's server
    openai-compatible/<model>@<base_url>       any OpenAI-compatible server (llama.cpp, vLLM, Ollama /v1)
    ollama/<model>[@<base_url>]                Ollama's native API (default http://127.0.0.1:11434)
    instant[/<seconds>]                        no model at all: answers at once (load tests, benchmarks)

Providers live in a registry: built-ins and plugins (entry-point group ``cairn.models``) register the
same way, and an unknown provider's error lists the valid ones. A ``ModelConfig`` is everything that
shapes a client; ``chat_model`` keeps one client per distinct config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, cast

import httpx
from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from pydantic import BaseModel, SecretStr

from cairn.errors import ModelConfigError
from cairn.registry import Registry
from config import Settings
from models.structured import Judgement, StructuredJudge

log = logging.getLogger("cairn.models")

EMBEDDED_MODEL_NAME = "smollm2-135m"
#: Providers whose setting may be the bare provider name (they need no model name or endpoint).
BARE_PROVIDERS = {"embedded": EMBEDDED_MODEL_NAME, "instant": "0"}
OLLAMA_URL = "http://127.0.0.1:11434"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A parsed model setting: provider, model name and optional endpoint."""

    provider: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}" + (f"@{self.base_url}" if self.base_url else "")


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``provider/model[@base_url]`` (or a bare ``embedded`` / ``instant``) into a ModelSpec."""
    text = text.strip()
    if text in BARE_PROVIDERS:
        return ModelSpec(text, BARE_PROVIDERS[text])
    provider, sep, rest = text.partition("/")
    if not sep or not rest:
        raise ModelConfigError(
            f"Model setting {text!r} is not of the form provider/model[@base_url]",
            "e.g. 'openai-compatible/qwen2.5-coder@http://127.0.0.1:8000/v1', 'ollama/qwen2.5-coder:7b' or 'embedded'",
        )
    model, at, base_url = rest.partition("@")
    if not model:
        raise ModelConfigError(f"Model setting {text!r} names no model", "put the model name after the '/'")
    return ModelSpec(provider, model, base_url if at else None)


def embedded_base_url(host: str, port: int) -> str:
    """Return the OpenAI-compatible base URL of the embedded llama.cpp server."""
    return f"http://{host}:{port}/v1"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Everything that shapes a chat-model client; equal configs share one client (``chat_model``)."""

    spec: str
    temperature: float
    max_tokens: int
    timeout: float
    max_retries: int
    context_tokens: int
    embedded_url: str
    fallback: str | None = None
    api_key: str | None = field(default=None, repr=False)
    structured_output: str = "auto"

    @classmethod
    def from_settings(
        cls, settings: Settings, spec: str | None = None, *, max_tokens: int | None = None
    ) -> ModelConfig:
        """Return the config of ``spec`` (default: CAIRN_MODEL) under the CAIRN_* model settings."""
        return cls(
            spec=spec or settings.model,
            temperature=settings.model_temperature,
            max_tokens=max_tokens or settings.model_max_tokens,
            timeout=settings.model_timeout,
            max_retries=settings.model_max_retries,
            context_tokens=settings.model_context_tokens,
            embedded_url=embedded_base_url(settings.embedded_host, settings.embedded_port),
            fallback=settings.model_fallback,
            api_key=settings.model_api_key.get_secret_value() if settings.model_api_key else None,
            structured_output=settings.model_structured_output,
        )

    def with_spec(self, spec: str) -> ModelConfig:
        """Return this config for another model (the fallback's client, say)."""
        return replace(self, spec=spec, fallback=None)


Provider = Callable[[ModelSpec, ModelConfig], BaseChatModel]
PROVIDERS: Registry[Provider] = Registry("cairn.models")
#: How each provider's server is asked for JSON fitting a schema (``models.structured``); a provider
#: not listed gets none (its replies are parsed), openai-compatible ones the CAIRN setting.
STRUCTURED_OUTPUT: dict[str, str] = {}


def register_provider(name: str, provider: Provider, *, structured_output: str | None = None) -> None:
    """Make ``name/...`` model settings build chat models with ``provider(spec, config)``.

    ``structured_output`` names how its server constrains replies to a schema (see ``models.structured``).
    """
    PROVIDERS.register(name, provider)
    if structured_output is not None:
        STRUCTURED_OUTPUT[name] = structured_output


def available_providers() -> list[str]:
    """Return the provider names a model setting may start with."""
    return PROVIDERS.names()


def _openai_compatible(spec: ModelSpec, config: ModelConfig) -> BaseChatModel:
    from models.bounded import BoundedChatOpenAI

    if not spec.base_url:
        raise ModelConfigError(
            f"Model setting {str(spec)!r} has no endpoint",
            "append @<base_url>, e.g. openai-compatible/qwen2.5-coder@http://127.0.0.1:8000/v1",
        )
    return BoundedChatOpenAI(
        model=spec.model,
        base_url=spec.base_url,
        api_key=SecretStr(config.api_key or "not-needed"),
        timeout=config.timeout,
        max_retries=config.max_retries,
        temperature=config.temperature,
        # HTTP client spans under the model call's span, and `traceparent` on every request (vLLM reads it)
        http_client=traced_http_client(),
        http_async_client=traced_async_http_client(),
        # langchain-openai sends max_tokens as `max_completion_tokens`, which llama.cpp's server ignores
        # (seen: replies running on to the context limit); `max_tokens` is what OpenAI-compatible
        # servers (llama.cpp, vLLM, Ollama, LM Studio) all accept.
        extra_body={"max_tokens": config.max_tokens},
        stream_usage=True,
        # and a server that ignores it is cut off there (a stream's content chunks are a token or more each)
        stream_limit=config.max_tokens,
    )


def _traced(transport: httpx.HTTPTransport) -> httpx.BaseTransport:
    """Wrap an httpx transport so each request is a client span and carries ``traceparent``."""
    from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport

    return SyncOpenTelemetryTransport(transport)


def _traced_async(transport: httpx.AsyncHTTPTransport) -> httpx.AsyncBaseTransport:
    """The async form of ``_traced``."""
    from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport

    return AsyncOpenTelemetryTransport(transport)


def _openai_http() -> str:
    """Return which HTTP library the installed openai package speaks: ``httpx``, or its fork ``httpx2``.

    The tracing transport must be of the same library as the client; a transport of the other one
    fails every request (seen: openai 2.x with httpx2, and an httpx transport → "Connection error").
    """
    import openai

    return "httpx2" if any(c.__module__.startswith("httpx2") for c in openai.DefaultHttpxClient.__mro__) else "httpx"


def traced_http_client() -> Any:
    """Return openai's default HTTP client, its requests traced (a client span and ``traceparent``)."""
    import openai

    transport: Any  # httpx's or httpx2's: whichever the installed openai speaks, known only at run time
    if _openai_http() == "httpx2":
        import httpx2
        from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransportHttpx2

        # the instrumentation's hints name httpx's classes for its httpx2 transports too (they import httpx2
        # as httpx only where httpx is missing); the object passed is httpx2's, as it needs
        transport = SyncOpenTelemetryTransportHttpx2(cast(httpx.BaseTransport, httpx2.HTTPTransport()))
    else:
        transport = _traced(httpx.HTTPTransport())
    return openai.DefaultHttpxClient(transport=transport)


def traced_async_http_client() -> Any:
    """Return openai's default async HTTP client, its requests traced (a client span and ``traceparent``)."""
    import openai

    transport: Any  # httpx's or httpx2's, as in traced_http_client
    if _openai_http() == "httpx2":
        import httpx2
        from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransportHttpx2

        transport = AsyncOpenTelemetryTransportHttpx2(cast(httpx.AsyncBaseTransport, httpx2.AsyncHTTPTransport()))
    else:
        transport = _traced_async(httpx.AsyncHTTPTransport())
    return openai.DefaultAsyncHttpxClient(transport=transport)


def _embedded(spec: ModelSpec, config: ModelConfig) -> BaseChatModel:
    return _openai_compatible(ModelSpec("openai-compatible", spec.model, config.embedded_url), config)


def _ollama(spec: ModelSpec, config: ModelConfig) -> BaseChatModel:
    from langchain_ollama import ChatOllama

    return ChatOllama(
        model=spec.model,
        base_url=spec.base_url or OLLAMA_URL,
        temperature=config.temperature,
        num_predict=config.max_tokens,
        num_ctx=config.context_tokens,
        client_kwargs={"timeout": config.timeout},
        sync_client_kwargs={"transport": _traced(httpx.HTTPTransport())},
        async_client_kwargs={"transport": _traced_async(httpx.AsyncHTTPTransport())},
    )


def _instant(spec: ModelSpec, config: ModelConfig) -> BaseChatModel:
    from models.instant import InstantChatModel

    try:
        delay = float(spec.model)
    except ValueError:
        delay = 0.0
    return InstantChatModel(delay=delay)


register_provider("embedded", _embedded, structured_output="json_object_schema")  # llama-cpp-python's server
register_provider("openai-compatible", _openai_compatible)  # CAIRN_MODEL_STRUCTURED_OUTPUT, auto by default
register_provider("ollama", _ollama, structured_output="ollama_format")
register_provider("instant", _instant, structured_output="none")


class FailoverLog(BaseCallbackHandler):
    """Log that a model failed and which one answers instead (the fallback itself runs unchanged)."""

    def __init__(self, failed: str, next_model: str) -> None:
        self.failed, self.next_model = failed, next_model

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        if isinstance(error, Exception):  # a cancelled request is not a failover
            log.warning("model %s failed (%s: %s); failing over to %s", self.failed, type(error).__name__, error,
                        self.next_model)  # fmt: skip


def _add_callback(model: BaseChatModel, handler: BaseCallbackHandler) -> None:
    """Add a handler to a model's own callbacks, whether they are a list or a callback manager."""
    if isinstance(model.callbacks, BaseCallbackManager):  # a provider may build its model with a manager
        manager = model.callbacks.copy()
        manager.add_handler(handler, inherit=True)
        model.callbacks = manager
    else:
        model.callbacks = [*(model.callbacks or []), handler]


def build_chat_model(config: ModelConfig) -> Runnable:
    """Return a new chat model for ``config``: the primary, with failover to ``config.fallback`` when set.

    Failover is LangChain's ``with_fallbacks``: it switches only before the first streamed chunk
    (text already sent is never garbled by a second model), and ``bind_tools`` /
    ``with_structured_output`` apply to every model in the chain.
    """
    primary = _build_one(config.spec, config)
    if not config.fallback or config.fallback == config.spec:
        return primary
    fallback = _build_one(config.fallback, config.with_spec(config.fallback))
    # On the model itself, not a with_config binding: bind_tools and with_structured_output keep it.
    _add_callback(primary, FailoverLog(config.spec, config.fallback))
    return primary.with_fallbacks([fallback])


@lru_cache(maxsize=64)  # per-request temperature / max_tokens make variants; keep the cache bounded
def chat_model(config: ModelConfig) -> Runnable:
    """Return the chat model for ``config``, built once per distinct config."""
    return build_chat_model(config)


def structured_output_of(spec_text: str, config: ModelConfig) -> str:
    """Return the structured-output mechanism for a model: its provider's, or the setting's."""
    spec = parse_model_spec(spec_text)
    if spec.provider == "openai-compatible":
        return config.structured_output
    return STRUCTURED_OUTPUT.get(spec.provider, "none")


def build_judge(config: ModelConfig, schema: type[BaseModel]) -> Runnable[Any, Judgement]:
    """Return a model whose replies are constrained to ``schema`` by each provider's own mechanism.

    Invoking it returns a ``Judgement`` (the parsed schema, or None with the reason); with a
    fallback, each model of the chain is constrained its own way.
    """

    def one(spec_text: str, one_config: ModelConfig) -> StructuredJudge:
        spec = parse_model_spec(spec_text)
        endpoint = spec.base_url or (one_config.embedded_url if spec.provider == "embedded" else spec_text)
        model = _build_one(spec_text, one_config)
        return StructuredJudge(model, schema, structured_output_of(spec_text, one_config), endpoint)

    primary = one(config.spec, config)
    if not config.fallback or config.fallback == config.spec:
        return primary
    _add_callback(primary.model, FailoverLog(config.spec, config.fallback))
    return primary.with_fallbacks([one(config.fallback, config.with_spec(config.fallback))])


@lru_cache(maxsize=64)
def judge_model(config: ModelConfig, schema: type[BaseModel]) -> Runnable[Any, Judgement]:
    """Return the schema-constrained model for ``config``, built once per distinct config and schema."""
    return build_judge(config, schema)


def clear_model_caches() -> None:
    """Forget every built client (after a provider is registered or unregistered)."""
    chat_model.cache_clear()
    judge_model.cache_clear()


def _build_one(spec_text: str, config: ModelConfig) -> BaseChatModel:
    spec = parse_model_spec(spec_text)
    provider = PROVIDERS.get(spec.provider)
    if provider is None:
        raise ModelConfigError(
            f"Unknown model provider {spec.provider!r} in {spec_text!r}",
            f"choose one of: {', '.join(available_providers())}",
        )
    return provider(spec, config)


@dataclass(frozen=True, slots=True)
class AnswerProbe:
    """A request that makes a model produce one token: the cheapest proof that it can answer."""

    url: str
    body: dict[str, Any]


def answer_probe(spec_text: str, embedded_url: str) -> AnswerProbe | None:
    """Return the one-token request for a model's endpoint, or None for providers Cairn cannot probe.

    A server can list its models and still die at its first completion (a llama.cpp build with CPU
    instructions the machine cannot run, a model too large for memory), so readiness asks for a token.
    """
    spec = parse_model_spec(spec_text)
    messages = [{"role": "user", "content": "Say OK."}]
    if spec.provider in ("embedded", "openai-compatible") and (spec.base_url or spec.provider == "embedded"):
        base = (embedded_url if spec.provider == "embedded" else spec.base_url or "").rstrip("/")
        return AnswerProbe(f"{base}/chat/completions",
                           {"model": spec.model, "messages": messages, "max_tokens": 1, "temperature": 0})  # fmt: skip
    if spec.provider == "ollama":
        return AnswerProbe(f"{(spec.base_url or OLLAMA_URL).rstrip('/')}/api/chat",
                           {"model": spec.model, "messages": messages, "stream": False,
                            "options": {"num_predict": 1}})  # fmt: skip
    return None


def probe_url(spec_text: str, embedded_url: str) -> str | None:
    """Return a URL that answers when the model's endpoint is up, or None when Cairn cannot tell."""
    spec = parse_model_spec(spec_text)
    if spec.provider == "embedded":
        return embedded_url.rstrip("/") + "/models"
    if spec.provider == "openai-compatible" and spec.base_url:
        return spec.base_url.rstrip("/") + "/models"
    if spec.provider == "ollama":
        return (spec.base_url or OLLAMA_URL).rstrip("/") + "/api/tags"
    return None
