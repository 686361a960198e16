"""A queued fake chat model for driving the agent graph through every branch."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field


class QueuedChatModel(BaseChatModel):
    """Answers with queued replies in order (a str, an AIMessage, or an exception to raise)."""

    replies: list[Any] = Field(default_factory=list)
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    default: str | None = None
    model: str = "queued-fake"

    @property
    def _llm_type(self) -> str:
        return "queued-fake"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.prompts.append(list(messages))
        if self.replies:
            reply = self.replies.pop(0)
        elif self.default is not None:
            reply = self.default
        else:
            raise AssertionError(f"unexpected model call #{len(self.prompts)}: {messages[-1].content[:200]}")
        if isinstance(reply, BaseException):
            raise reply
        message = reply if isinstance(reply, AIMessage) else AIMessage(reply)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools, **kwargs) -> Runnable:
        return self


class StreamingChatModel(BaseChatModel):
    """Streams one reply in pieces, ``delay`` seconds apart, token usage on the last piece."""

    pieces: list[str] = Field(default_factory=list)
    delay: float = 0.0
    usage: dict[str, int] | None = None
    model: str = "streaming-fake"

    @property
    def _llm_type(self) -> str:
        return "streaming-fake"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        message = AIMessage("".join(self.pieces), usage_metadata=self._usage_metadata())
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _usage_metadata(self) -> Any:
        if self.usage is None:
            return None
        return {**self.usage, "total_tokens": sum(self.usage.values())}

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        import asyncio

        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        for i, piece in enumerate(self.pieces):
            if i:
                await asyncio.sleep(self.delay)
            last = i == len(self.pieces) - 1
            chunk = AIMessageChunk(
                content=piece,
                usage_metadata=self._usage_metadata() if last else None,
                response_metadata={"finish_reason": "stop"} if last else {},
            )
            if run_manager is not None:
                await run_manager.on_llm_new_token(piece, chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)
