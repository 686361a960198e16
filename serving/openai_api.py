"""The OpenAI-compatible chat API: request and response shapes, and the agent run behind them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from pydantic import BaseModel, ConfigDict, Field, field_validator

MODEL_ID = "cairn-agent"
DONE = "data: [DONE]\n\n"


class ChatMessage(BaseModel):
    """One message of an OpenAI chat request (text content, or a list of text parts)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """Return the message text (text parts joined; other parts ignored)."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat-completions request that the agent honours; other fields are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if value[-1].role != "user" or not value[-1].text().strip():
            raise ValueError("the last message must be a non-empty user message (the question)")
        return value

    def stop_list(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def to_langchain(messages: list[ChatMessage]) -> list[BaseMessage]:
    """Convert chat messages to LangChain messages (tool messages are dropped: the agent has its own tools)."""
    out: list[BaseMessage] = []
    for message in messages:
        if message.role == "user":
            out.append(HumanMessage(message.text()))
        elif message.role == "assistant":
            out.append(AIMessage(message.text()))
        elif message.role in {"system", "developer"}:
            out.append(SystemMessage(message.text()))
    return out


def new_turn(messages: list[ChatMessage]) -> list[BaseMessage]:
    """Return what a session does not have yet: the messages after the last assistant reply."""
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return [m for m in to_langchain(messages[last_assistant + 1 :]) if isinstance(m, HumanMessage)]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class TokenUsage(BaseCallbackHandler):
    """Sum the tokens every model call of a run uses (plan, analyze, refine, answer), any provider.

    Endpoints report usage on non-streamed replies; some (llama.cpp's server) send none when streaming.
    Such calls are counted with Cairn's estimate (about 3.5 characters a token) and ``estimated`` is set.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.estimated = False
        self._prompts: dict[Any, int] = {}

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], *, run_id: Any,
                            **kwargs: Any) -> None:  # fmt: skip
        self._prompts[run_id] = sum(_approx_tokens(str(m.content)) for batch in messages for m in batch)

    def on_llm_end(self, response: LLMResult, *, run_id: Any = None, **kwargs: Any) -> None:
        prompt_estimate = self._prompts.pop(run_id, 0)
        for generations in response.generations:
            for generation in generations:
                message = generation.message if isinstance(generation, ChatGeneration) else None
                usage = getattr(message, "usage_metadata", None) or {}
                if usage.get("total_tokens") or usage.get("input_tokens"):
                    self.prompt_tokens += int(usage.get("input_tokens", 0))
                    self.completion_tokens += int(usage.get("output_tokens", 0))
                else:
                    self.estimated = True
                    self.prompt_tokens += prompt_estimate
                    self.completion_tokens += _approx_tokens(generation.text)

    def as_openai(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}


def _approx_tokens(text: str) -> int:
    from graphs.agent.nodes import approx_tokens

    return approx_tokens(text) if text else 0


def cairn_extra(state: dict[str, Any], session: str | None, usage_estimated: bool = False) -> dict[str, Any]:
    """The structured extra field: checked citations, removed ones, and what the agent did."""
    return {
        "citations": state.get("citations", []),
        "dropped_citations": state.get("dropped_citations", []),
        "queries": state.get("searched", []),
        "rounds": state.get("rounds", 0),
        "fallbacks": state.get("fallbacks", []),
        "session_id": session,
        "usage_estimated": usage_estimated,
    }


def finish_reason_of(state: dict[str, Any]) -> str:
    messages = state.get("messages") or []
    reason = (messages[-1].response_metadata or {}).get("finish_reason") if messages else None
    return "length" if reason == "length" else "stop"


def completion_body(
    cid: str, created: int, state: dict[str, Any], usage: TokenUsage, session: str | None
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` object."""
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": MODEL_ID,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": state.get("answer", "")},
                "finish_reason": finish_reason_of(state),
                "logprobs": None,
            }
        ],
        "usage": usage.as_openai(),
        "cairn": cairn_extra(state, session, usage.estimated),
    }


def chunk_body(cid: str, created: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_ID,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n"


async def stream_chunks(
    events: AsyncIterator[tuple[str, Any]],
    handler: TokenUsage,
    session: str | None,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Turn the graph's (mode, payload) stream into ``chat.completion.chunk`` SSE lines ending in [DONE].

    The answer model's tokens are sent as they come; after it, the "Sources" list the answer node
    adds, then a last chunk with the finish reason and the ``cairn`` extra field (checked citations).
    """
    cid, created = completion_id(), int(time.time())
    yield chunk_body(cid, created, {"role": "assistant", "content": ""})
    streamed: list[str] = []
    final: dict[str, Any] = {}
    async for mode, payload in events:
        if mode == "values":
            final = payload
            continue
        chunk, meta = payload
        if meta.get("langgraph_node") == "answer" and isinstance(chunk, AIMessageChunk) and chunk.content:
            text = str(chunk.content)
            streamed.append(text)
            yield chunk_body(cid, created, {"content": text})
    if rest := _unsent(final.get("answer", ""), "".join(streamed)):
        yield chunk_body(cid, created, {"content": rest})
    yield chunk_body(cid, created, {}, finish_reason_of(final), cairn=cairn_extra(final, session, handler.estimated))
    if include_usage:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL_ID,
            "choices": [],
            "usage": handler.as_openai(),
        }
        yield f"data: {json.dumps(body)}\n\n"
    yield DONE


def _unsent(answer: str, sent: str) -> str:
    """Return the part of the final answer the client has not seen (normally the Sources list).

    When the answer node removed an invented citation, the streamed text differs from the final one;
    the client keeps what it saw and gets the Sources list (the removed ones are in ``cairn``).
    """
    if answer.startswith(sent):
        return answer[len(sent) :]
    at = answer.rfind("\n\nSources:")
    return answer[at:] if at >= 0 else ""


def models_body() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "cairn"}],
    }
