"""A queued fake chat model for driving the agent graph through every branch."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class QueuedChatModel(BaseChatModel):
    """Answers with queued replies in order (a str, an AIMessage, or an exception to raise)."""

    replies: list[Any] = Field(default_factory=list)
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    default: str | None = None

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

    def bind_tools(self, tools, **kwargs):
        return self


class InstantChatModel(BaseChatModel):
    """An instant model for service tests and benchmarks: answers citing the first chunk it is shown.

    Plan, analyze and refine prompts get a reply that is not JSON (the graph takes its deterministic
    fallbacks); the answer prompt gets one sentence citing the first ``[path:start-end]`` in it,
    streamed word by word, with token usage like a real endpoint reports.
    """

    delay: float = 0.0
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "instant-fake"

    def _reply(self, messages: list[BaseMessage]) -> str:
        import re

        prompt = "\n".join(str(m.content) for m in messages)
        found = re.search(r"\[([^\[\]\s]+:\d+-\d+)\]", prompt)
        if found is None or not str(messages[0].content).startswith("You are Cairn"):
            return "ok"
        return f"It is implemented in {found.group(1)}, which handles the question."

    def _message(self, text: str, messages: list[BaseMessage]) -> AIMessage:
        prompt_tokens = sum(len(str(m.content)) for m in messages) // 4
        usage = {"input_tokens": prompt_tokens, "output_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}  # fmt: skip
        return AIMessage(text, usage_metadata=usage, response_metadata={"finish_reason": "stop"})

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.calls += 1
        if self.delay:
            import time

            time.sleep(self.delay)
        text = self._reply(messages)
        return ChatResult(generations=[ChatGeneration(message=self._message(text, messages))])

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self.calls += 1
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        text = self._reply(messages)
        return ChatResult(generations=[ChatGeneration(message=self._message(text, messages))])

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        self.calls += 1
        text = self._reply(messages)
        words = text.split(" ")
        for n, word in enumerate(words):
            chunk = AIMessageChunk(content=word if n == 0 else " " + word)
            if n == len(words) - 1:
                full = self._message(text, messages)
                chunk = AIMessageChunk(content=chunk.content, usage_metadata=full.usage_metadata,
                                       response_metadata={"finish_reason": "stop"})  # fmt: skip
            if run_manager:
                await run_manager.on_llm_new_token(str(chunk.content), chunk=ChatGenerationChunk(message=chunk))
            yield ChatGenerationChunk(message=chunk)
