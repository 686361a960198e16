"""One factory from a model setting to a LangChain chat model, with timeouts, retries and failover.

A model setting ("spec") is one of::

    embedded                                   the bundled SmolLM2-135M behind llama.cpp's server
    openai-compatible/<model>@<base_url>       any OpenAI-compatible server (llama.cpp, vLLM, Ollama /v1)
    ollama/<model>[@<base_url>]                Ollama's native API (default http://127.0.0.1:11434)

Providers live in a registry: built-ins and plugins (entry-point group ``cairn.models``) register the
same way, and an unknown provider's error lists the valid ones.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from cairn.errors import CairnError
from cairn.registry import Registry
from config import Settings

log = logging.getLogger("cairn.models")

EMBEDDED_MODEL_NAME = "smollm2-135m"


class ModelConfigError(CairnError):
    """A model setting that cannot be understood."""

    exit_code = 8


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A parsed model setting: provider, model name and optional endpoint."""

    provider: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}" + (f"@{self.base_url}" if self.base_url else "")


def parse_model_spec(text: str) -> ModelSpec:
    """Parse ``provider/model[@base_url]`` (or ``embedded``) into a ModelSpec."""
    text = text.strip()
    if text == "embedded":
        return ModelSpec("embedded", EMBEDDED_MODEL_NAME)
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


Provider = Callable[[ModelSpec, Settings], BaseChatModel]
_PROVIDERS: Registry[Provider] = Registry("cairn.models")


def register_provider(name: str, provider: Provider) -> None:
    """Make ``name/...`` model settings build chat models with ``provider``."""
    _PROVIDERS.register(name, provider)


def available_providers() -> list[str]:
    """Return the provider names a model setting may start with."""
    return _PROVIDERS.names()


def embedded_base_url(settings: Settings) -> str:
    """Return the OpenAI-compatible base URL of the embedded llama.cpp server."""
    return f"http://{settings.embedded_host}:{settings.embedded_port}/v1"


def _openai_compatible(spec: ModelSpec, settings: Settings) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    if not spec.base_url:
        raise ModelConfigError(
            f"Model setting {str(spec)!r} has no endpoint",
            "append @<base_url>, e.g. openai-compatible/qwen2.5-coder@http://127.0.0.1:8000/v1",
        )
    key = settings.model_api_key.get_secret_value() if settings.model_api_key else "not-needed"
    return ChatOpenAI(
        model=spec.model,
        base_url=spec.base_url,
        api_key=key,
        timeout=settings.model_timeout,
        max_retries=settings.model_max_retries,
        temperature=settings.model_temperature,
        # langchain-openai sends max_tokens as `max_completion_tokens`, which llama.cpp's server ignores
        # (seen: replies running on to the context limit); `max_tokens` is what OpenAI-compatible
        # servers (llama.cpp, vLLM, Ollama, LM Studio) all accept.
        extra_body={"max_tokens": settings.model_max_tokens},
        stream_usage=True,
    )


def _embedded(spec: ModelSpec, settings: Settings) -> BaseChatModel:
    return _openai_compatible(ModelSpec("openai-compatible", spec.model, embedded_base_url(settings)), settings)


def _ollama(spec: ModelSpec, settings: Settings) -> BaseChatModel:
    from langchain_ollama import ChatOllama

    return ChatOllama(
        model=spec.model,
        base_url=spec.base_url or "http://127.0.0.1:11434",
        temperature=settings.model_temperature,
        num_predict=settings.model_max_tokens,
        num_ctx=settings.model_context_tokens,
        client_kwargs={"timeout": settings.model_timeout},
    )


register_provider("embedded", _embedded)
register_provider("openai-compatible", _openai_compatible)
register_provider("ollama", _ollama)


def build_chat_model(
    spec: str, settings: Settings, *, fallback: str | None = None, max_tokens: int | None = None
) -> BaseChatModel:
    """Return the chat model for a setting, wrapped with failover to ``fallback`` when given."""
    if max_tokens is not None:
        settings = settings.model_copy(update={"model_max_tokens": max_tokens})
    primary = _build_one(spec, settings)
    if not fallback or fallback == spec:
        return primary
    return FailoverChatModel(models=[primary, _build_one(fallback, settings)], names=[spec, fallback])


def _build_one(spec_text: str, settings: Settings) -> BaseChatModel:
    spec = parse_model_spec(spec_text)
    provider = _PROVIDERS.get(spec.provider)
    if provider is None:
        raise ModelConfigError(
            f"Unknown model provider {spec.provider!r} in {spec_text!r}",
            f"choose one of: {', '.join(available_providers())}",
        )
    return provider(spec, settings)


class FailoverChatModel(BaseChatModel):
    """Try each model in turn; when one raises (down, timed out), log it and use the next.

    Streaming fails over only before the first chunk: once text has reached the caller, switching
    models mid-answer would garble it, so a later error propagates.
    """

    models: list[BaseChatModel]
    names: list[str]

    @property
    def _llm_type(self) -> str:
        return "cairn-failover"

    def _failed(self, index: int, exc: BaseException) -> None:
        nxt = self.names[index + 1] if index + 1 < len(self.names) else None
        if nxt:
            log.warning("model %s failed (%s: %s); failing over to %s", self.names[index], type(exc).__name__,
                        exc, nxt)  # fmt: skip

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        for index, model in enumerate(self.models):
            try:
                return model._generate(messages, stop=stop, **kwargs)
            except Exception as exc:
                if index + 1 == len(self.models):
                    raise
                self._failed(index, exc)
        raise AssertionError("unreachable")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        for index, model in enumerate(self.models):
            try:
                return await model._agenerate(messages, stop=stop, **kwargs)
            except Exception as exc:
                if index + 1 == len(self.models):
                    raise
                self._failed(index, exc)
        raise AssertionError("unreachable")

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for index, model in enumerate(self.models):
            started = False
            try:
                for chunk in _chunks(model, messages, stop, **kwargs):
                    started = True
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
                return
            except Exception as exc:
                if started or index + 1 == len(self.models):
                    raise
                self._failed(index, exc)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for index, model in enumerate(self.models):
            started = False
            try:
                async for chunk in _achunks(model, messages, stop, **kwargs):
                    started = True
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
                return
            except Exception as exc:
                if started or index + 1 == len(self.models):
                    raise
                self._failed(index, exc)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Bind tools to every model; fall back across the bound models."""
        bound = [model.bind_tools(tools, **kwargs) for model in self.models]
        return bound[0].with_fallbacks(bound[1:])


def _chunks(model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any):
    """Stream from a model, or generate whole when the model cannot stream."""
    if type(model)._stream is not BaseChatModel._stream:
        yield from model._stream(messages, stop=stop, **kwargs)
        return
    result = model._generate(messages, stop=stop, **kwargs)
    message = result.generations[0].message
    yield ChatGenerationChunk(message=AIMessageChunk(content=message.content))


async def _achunks(model: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any):
    if type(model)._astream is not BaseChatModel._astream or type(model)._stream is not BaseChatModel._stream:
        async for chunk in model._astream(messages, stop=stop, **kwargs):
            yield chunk
        return
    result = await model._agenerate(messages, stop=stop, **kwargs)
    message = result.generations[0].message
    yield ChatGenerationChunk(message=AIMessageChunk(content=message.content))


def probe_url(spec_text: str, settings: Settings) -> str | None:
    """Return a URL that answers when the model's endpoint is up, or None when Cairn cannot tell."""
    spec = parse_model_spec(spec_text)
    if spec.provider == "embedded":
        return embedded_base_url(settings) + "/models"
    if spec.provider == "openai-compatible" and spec.base_url:
        return spec.base_url.rstrip("/") + "/models"
    if spec.provider == "ollama":
        return (spec.base_url or "http://127.0.0.1:11434").rstrip("/") + "/api/tags"
    return None
