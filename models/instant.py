"""The ``instant`` model: no model at all, for load tests, benchmarks and smoke tests of a deployment.

It answers every prompt at once, or at ``instant/<seconds>`` per word (a model streaming at a known
pace, for a page or a client to watch), so what is measured is Cairn and its infrastructure (HTTP,
retrieval, Redis), not a model. Judgement prompts get a reply that is not JSON, so the graph takes
its deterministic fallbacks; the answer prompt gets one sentence citing the first excerpt it is shown
(``[path:start-end]``, or a commit's ``[commit <sha>]``), streamed word by word, with token usage as
a real endpoint reports it. Never the default: it is chosen with ``CAIRN_MODEL=instant``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from prompts.agent import ANSWER_TASK

#: An excerpt's citation as the answer prompt labels it: ``[path:start-end]``, or ``[commit <sha>]`` for a
#: commit from a file's history (tools/history.py).
_CITATION = re.compile(r"\[([^\[\]\s]+:\d+-\d+|commit [0-9a-f]{7,40})\]")


class InstantChatModel(BaseChatModel):
    """Answers at once, citing the first excerpt of an answer prompt; ``delay`` seconds per word."""

    delay: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "cairn-instant"

    def reply_to(self, messages: list[BaseMessage]) -> str:
        """Return the reply text for a prompt."""
        if ANSWER_TASK not in str(messages[-1].content):
            return "ok"
        found = _CITATION.search(str(messages[0].content))  # the excerpts, not the instructions' example
        if found is None:
            return "ok"
        return f"It is implemented in {found.group(1)}, which handles the question."

    def _message(self, text: str, messages: list[BaseMessage]) -> AIMessage:
        prompt_tokens = sum(len(str(m.content)) for m in messages) // 4
        usage = {"input_tokens": prompt_tokens, "output_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}  # fmt: skip
        return AIMessage(text, usage_metadata=usage, response_metadata={"finish_reason": "stop"})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.reply_to(messages)
        if self.delay:
            time.sleep(self.delay * len(text.split(" ")))
        return ChatResult(generations=[ChatGeneration(message=self._message(text, messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.reply_to(messages)
        if self.delay:
            await asyncio.sleep(self.delay * len(text.split(" ")))
        return ChatResult(generations=[ChatGeneration(message=self._message(text, messages))])

    def _chunks(self, messages: list[BaseMessage]) -> Iterator[ChatGenerationChunk]:
        text = self.reply_to(messages)
        words = text.split(" ")
        for n, word in enumerate(words):
            chunk = AIMessageChunk(content=word if n == 0 else " " + word)
            if n == len(words) - 1:
                full = self._message(text, messages)
                chunk = AIMessageChunk(content=chunk.content, usage_metadata=full.usage_metadata,
                                       response_metadata={"finish_reason": "stop"})  # fmt: skip
            yield ChatGenerationChunk(message=chunk)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if self.delay:
                time.sleep(self.delay)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages):
            if self.delay:
                await asyncio.sleep(self.delay)
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
