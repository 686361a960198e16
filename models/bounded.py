"""An OpenAI-compatible chat client whose streams end at ``max_tokens``, whatever the server does.

Servers are asked for at most ``max_tokens`` (``extra_body``), and llama.cpp, vLLM and Ollama stop
there. One that ignores it would stream on for as long as anyone reads, and since the graph reads the
answer as fast as the model writes it (whatever pace the HTTP client reads at), the service would hold
all of it: this client stops reading after ``max_tokens`` content chunks (at least one token each),
closes the request, and ends the reply with ``finish_reason: "length"``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import ChatOpenAI

log = logging.getLogger("cairn.models")


class BoundedChatOpenAI(ChatOpenAI):
    """ChatOpenAI that ends a stream after ``stream_limit`` content chunks (None: no limit)."""

    stream_limit: int | None = None

    def _cut(self) -> ChatGenerationChunk:
        log.warning("model %s streamed past max_tokens=%s; its reply was cut there", self.model_name, self.stream_limit)
        return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={"finish_reason": "length"}))

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        stream = super()._stream(*args, **kwargs)
        with contextlib.closing(stream):
            count = 0
            for chunk in stream:
                if chunk.message.content:
                    count += 1
                    if self.stream_limit is not None and count > self.stream_limit:
                        yield self._cut()
                        return
                yield chunk

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        stream = super()._astream(*args, **kwargs)
        async with contextlib.aclosing(stream):  # closing it closes the HTTP response
            count = 0
            async for chunk in stream:
                if chunk.message.content:
                    count += 1
                    if self.stream_limit is not None and count > self.stream_limit:
                        yield self._cut()
                        return
                yield chunk
