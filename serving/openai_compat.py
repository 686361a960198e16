"""The OpenAI-compatible chat API's shapes: the request Cairn honours, and responses in openai's own types."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import BaseModel, ConfigDict, Field, field_validator

from graphs.agent.budget import message_tokens, text_tokens

MODEL_ID = "cairn-agent"
MODEL_ALIASES = {MODEL_ID, "cairn"}
#: The configured chat model itself, no agent (serving/passthrough.py): for a client's titles and tags.
PASSTHROUGH_MODEL_ID = "cairn-chat"
#: A repository's model id is this prefix and its name (``cairn/tinykv``); ``cairn/*`` spans them all.
REPO_MODEL_PREFIX = "cairn/"
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
    """OpenAI's ``stream_options``: ``include_usage`` adds a last chunk with the token usage."""

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
    n: int | None = Field(default=None, description="Must be 1 (or unset): the agent gives one answer per request.")

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("Cairn's agent gives one answer per request: send n=1 or leave n out")
        return value

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if value[-1].role != "user" or not value[-1].text().strip():
            raise ValueError("the last message must be a non-empty user message (the question)")
        return value

    def stop_list(self) -> list[str] | None:
        """Return ``stop`` as a list (None when unset)."""
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


class TokenUsage(BaseCallbackHandler):
    """Sum the tokens every model call of a run uses (plan, analyze, refine, answer), any provider.

    Endpoints report usage on non-streamed replies; some (llama.cpp's server) send none when streaming.
    Such calls are counted with LangChain's approximate counter and ``estimated`` is set.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.estimated = False
        self._prompts: dict[Any, int] = {}

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], *, run_id: Any,
                            **kwargs: Any) -> None:  # fmt: skip
        self._prompts[run_id] = sum(message_tokens(batch) for batch in messages)

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
                    self.completion_tokens += text_tokens(generation.text)

    def as_usage(self) -> CompletionUsage:
        """Return the totals as OpenAI's usage object."""
        return CompletionUsage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )


def tools_note(body: BaseModel) -> dict[str, Any]:
    """Say what becomes of the client's ``tools``: ignored (noted in the reply's ``cairn`` field), or a 400 when
    ``tool_choice`` demands a call, which Cairn's models never make of a client's tools."""
    from serving.errors import ServiceError

    extra = body.model_extra or {}
    tools = extra.get("tools") or []
    if not isinstance(tools, list):
        raise ServiceError(400, "tools: expected a list of tool definitions", "invalid_tools")
    if not tools:
        return {}
    choice = extra.get("tool_choice")
    if choice == "required" or isinstance(choice, dict):
        raise ServiceError(400, "tool_choice asks for a call of the request's tools, which Cairn's models do not make "
                           "(the agent uses its own tools): send tool_choice 'auto' or 'none', or no tools",
                           "tools_unsupported")  # fmt: skip
    return {"tools_ignored": f"the request's {len(tools)} tool(s) were not offered to the model; Cairn answers "
                             "with text (the agent uses its own tools)"}  # fmt: skip


def cairn_extra(state: dict[str, Any], session: str | None, usage_estimated: bool = False) -> dict[str, Any]:
    """The structured extra field: checked citations, the sources, removed citations, what the agent did."""
    return {
        "citations": state.get("citations", []),
        "sources": state.get("sources", []),
        "dropped_citations": state.get("dropped_citations", []),
        "queries": state.get("searched", []),
        "lookups": state.get("lookups", []),
        "rounds": state.get("rounds", 0),
        "fallbacks": state.get("fallbacks", []),
        "history": state.get("history") or {},
        "session_id": session,
        "usage_estimated": usage_estimated,
    }


def finish_reason_of(state: dict[str, Any]) -> Literal["stop", "length"]:
    """Return "length" when the answer hit its token limit, else "stop"."""
    messages = state.get("messages") or []
    reason = (messages[-1].response_metadata or {}).get("finish_reason") if messages else None
    return "length" if reason == "length" else "stop"


def completion_id() -> str:
    """Return a new ``chatcmpl-…`` id."""
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion(
    state: dict[str, Any],
    usage: TokenUsage,
    session: str | None,
    model: str = MODEL_ID,
    note: dict[str, Any] | None = None,
) -> ChatCompletion:
    """Return the non-streaming ``chat.completion`` for a finished run (its ``cairn`` extra included)."""
    messages = state.get("messages") or []
    content = str(messages[-1].content) if messages else state.get("answer", "")
    return ChatCompletion(
        id=completion_id(),
        object="chat.completion",
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                index=0,
                message=ChatCompletionMessage(role="assistant", content=content),
                finish_reason=finish_reason_of(state),
                logprobs=None,
            )
        ],
        usage=usage.as_usage(),
        # openai's models take extra fields (extra="allow"), which their signatures cannot list
        cairn={**cairn_extra(state, session, usage.estimated), **(note or {})},  # type: ignore[call-arg]
    )


class ChunkWriter:
    """Writes one streamed completion's ``chat.completion.chunk`` SSE lines (same id and time for each)."""

    def __init__(self, model: str = MODEL_ID) -> None:
        self.id, self.created, self.model = completion_id(), int(time.time()), model

    def _line(self, chunk: ChatCompletionChunk) -> str:
        return f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"

    def delta(
        self,
        content: str | None = None,
        *,
        role: Literal["assistant"] | None = None,
        finish: Literal["stop", "length"] | None = None,
        **extra: Any,
    ) -> str:
        """Return a chunk carrying ``content`` (and a role, a finish reason, extra fields when given)."""
        delta = (
            ChoiceDelta(role=role, content=content)
            if role
            else ChoiceDelta(content=content)
            if content
            else ChoiceDelta()
        )
        chunk = ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish, logprobs=None)],
            **extra,
        )
        return self._line(chunk)

    def usage(self, usage: CompletionUsage) -> str:
        """Return the last chunk of ``stream_options.include_usage``: no choices, the run's usage."""
        chunk = ChatCompletionChunk(
            id=self.id, object="chat.completion.chunk", created=self.created, model=self.model, choices=[], usage=usage
        )
        return self._line(chunk)


def model_card(model_id: str = MODEL_ID) -> Model:
    """Return a model id the agent answers as (cairn-agent, cairn/<repository>) as an OpenAI model object."""
    return Model(id=model_id, object="model", created=0, owned_by="cairn")


#: The model id /v1/embeddings answers as (the configured embedding model's own name is accepted too).
EMBEDDING_MODEL_ID = "cairn-embedding"
#: What one embeddings request may carry: inputs, and characters in each.
MAX_EMBEDDING_INPUTS = 256
MAX_EMBEDDING_CHARS = 32_000


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request: texts (token arrays are not taken), float or base64 vectors."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[str] = Field(description="A text, or up to 256 texts, of at most 32,000 characters each.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="Must be the model's own dimension if given.")
    user: str | None = None


class EmbeddingData(BaseModel):
    """One vector: floats, or base64 of its little-endian float32 bytes (``encoding_format``)."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    """OpenAI's embeddings response."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class ModelList(BaseModel):
    """OpenAI's model list: ``{"object": "list", "data": [...]}``."""

    object: Literal["list"] = "list"
    data: list[Model]
