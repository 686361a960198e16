"""Structured replies: each provider's own constrained decoding, and a tolerant parse for the rest.

A judgement (plan, analyze, refine) is a pydantic schema. The model is asked to decode only JSON
that fits it, by the mechanism its server understands:

    json_object_schema  ``response_format={"type": "json_object", "schema": …}``: llama-cpp-python's
                        server compiles the schema into a grammar (it ignores OpenAI's json_schema form)
    json_schema         ``response_format={"type": "json_schema", "json_schema": …}``: OpenAI's form,
                        which vLLM, llama.cpp's llama-server, LM Studio and Ollama's /v1 accept
    ollama_format       ``format=<schema>`` on Ollama's native API
    none                no constraint; the reply is parsed as well as it can be

``auto`` (the default for an OpenAI-compatible endpoint of unknown kind) tries json_schema, then
json_object_schema, then none, moving on only when the server refuses the request outright (HTTP 400
or 422), and remembers per endpoint what worked; a server that silently ignores the constraint is
caught by the parse. Whatever the mechanism, the reply is parsed the same tolerant way: thinking
removed, the first JSON object found, the schema validated; a reply that still does not fit is a
``None`` result the caller's deterministic fallback handles.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Generic, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ValidationError

from models.reasoning import split_thinking, thinking_of

log = logging.getLogger("cairn.models")

Schema = TypeVar("Schema", bound=BaseModel)

MECHANISMS = ("auto", "json_schema", "json_object_schema", "ollama_format", "none")
AUTO_ORDER = ("json_schema", "json_object_schema", "none")


@dataclass(frozen=True, slots=True)
class Judgement(Generic[Schema]):
    """A structured reply: the parsed schema (None when the reply did not fit), the raw message, why not."""

    parsed: Schema | None
    raw: AIMessage
    mechanism: str
    error: str | None = None
    thinking: str = ""


def json_object_in(text: str) -> dict[str, Any]:
    """Return the first JSON object in text (code fences and chatter around it allowed); ValueError if none."""
    start = text.find("{")
    decoder = json.JSONDecoder()
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise ValueError("no JSON object in the reply")


@lru_cache(maxsize=32)
def _json_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """``schema``'s JSON schema, built once (pydantic builds it anew on every call: ~0.2 ms)."""
    return schema.model_json_schema()


def request_for(mechanism: str, schema: type[BaseModel]) -> dict[str, Any]:
    """Return the request parameters that ask a server for JSON fitting ``schema`` by ``mechanism``."""
    json_schema = copy.deepcopy(_json_schema(schema))  # the caller's to change
    if mechanism == "json_schema":
        named = {"name": schema.__name__, "schema": json_schema, "strict": False}
        return {"response_format": {"type": "json_schema", "json_schema": named}}
    if mechanism == "json_object_schema":
        return {"response_format": {"type": "json_object", "schema": json_schema}}
    if mechanism == "ollama_format":
        return {"format": json_schema}
    if mechanism == "none":
        return {}
    raise ValueError(f"unknown structured-output mechanism {mechanism!r}; choose one of: {', '.join(MECHANISMS)}")


def parse_reply(message: BaseMessage, schema: type[Schema], mechanism: str) -> Judgement[Schema]:
    """Parse a reply into ``schema`` tolerantly: thinking removed, first JSON object, validated."""
    raw = message if isinstance(message, AIMessage) else AIMessage(str(message.content))
    text, thinking = split_thinking(str(raw.content))
    thinking = thinking_of(raw) or thinking
    try:
        parsed = schema.model_validate(json_object_in(text))
    except (ValueError, ValidationError) as exc:
        return Judgement(None, raw, mechanism, f"{type(exc).__name__}: {str(exc)[:200]}", thinking)
    return Judgement(parsed, raw, mechanism, None, thinking)


def _refused(exc: BaseException) -> bool:
    """Whether a server refused the request's structured-output parameter rather than failing to answer.

    A server that does not know a parameter answers 400 or 422; llama-cpp-python's answers a
    validation error of ``response_format`` as a 500 (seen with 0.3.36), so that counts too.
    """
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if status in (400, 422):
        return True
    return status == 500 and "response_format" in str(exc)


def _cut_short(exc: BaseException, mechanism: str) -> Judgement | None:
    """Return the judgement of a reply the client refused because it hit its token limit, or None.

    openai's client raises ``LengthFinishReasonError`` for a structured reply cut at ``max_tokens``
    (the JSON unfinished) instead of returning it; that is a reply that did not fit, for the caller's
    fallback, not a failure of the request (it was a 500 at turn 6 of a long session).
    """
    try:
        from openai import LengthFinishReasonError
    except ImportError:  # pragma: no cover - openai is a dependency
        return None
    if not isinstance(exc, LengthFinishReasonError):
        return None
    choices = getattr(getattr(exc, "completion", None), "choices", None) or []
    text = (choices[0].message.content or "") if choices else ""
    return Judgement(None, AIMessage(text), mechanism, "LengthFinishReasonError: the reply hit its token limit")


class StructuredJudge(Runnable[Any, Judgement]):
    """A chat model asked for replies that fit a schema; invoking it returns a ``Judgement``.

    With ``auto``, a mechanism the endpoint refuses is dropped for the next one, and the one that
    worked is remembered for that endpoint (``endpoint`` names it) by every judge of the process.
    """

    _learned: ClassVar[dict[str, str]] = {}  # endpoint -> the mechanism it accepted
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: BaseChatModel, schema: type[BaseModel], mechanism: str, endpoint: str) -> None:
        request_for(mechanism if mechanism != "auto" else "none", schema)  # an unknown name fails now
        self.model, self.schema, self.mechanism, self.endpoint = model, schema, mechanism, endpoint

    def _candidates(self) -> tuple[str, ...]:
        if self.mechanism != "auto":
            return (self.mechanism,)
        learned = self._learned.get(self.endpoint)
        return AUTO_ORDER[AUTO_ORDER.index(learned) :] if learned else AUTO_ORDER

    def _learn(self, mechanism: str) -> None:
        if self.mechanism == "auto":
            with self._lock:
                if self._learned.get(self.endpoint) != mechanism:
                    log.info("structured output for %s: %s", self.endpoint, mechanism)
                self._learned[self.endpoint] = mechanism

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Judgement:
        candidates = self._candidates()
        for n, mechanism in enumerate(candidates):
            try:
                reply = self.model.invoke(input, config, **request_for(mechanism, self.schema), **kwargs)
            except Exception as exc:
                if n + 1 < len(candidates) and _refused(exc):
                    continue
                if (short := _cut_short(exc, mechanism)) is not None:
                    return short
                raise
            self._learn(mechanism)
            return parse_reply(reply, self.schema, mechanism)
        raise AssertionError("unreachable")

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Judgement:
        candidates = self._candidates()
        for n, mechanism in enumerate(candidates):
            try:
                reply = await self.model.ainvoke(input, config, **request_for(mechanism, self.schema), **kwargs)
            except Exception as exc:
                if n + 1 < len(candidates) and _refused(exc):
                    continue
                if (short := _cut_short(exc, mechanism)) is not None:
                    return short
                raise
            self._learn(mechanism)
            return parse_reply(reply, self.schema, mechanism)
        raise AssertionError("unreachable")
