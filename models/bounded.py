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
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Any, cast

from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import ChatOpenAI

log = logging.getLogger("cairn.models")


class BoundedChatOpenAI(ChatOpenAI):
    """ChatOpenAI that ends a stream after ``stream_limit`` content chunks (None: no limit)."""

    stream_limit: int | None = None

    def _over_limit(self, chunk: ChatGenerationChunk, counted: list[int]) -> bool:
        """Count a content chunk; return True (and log) once the stream has gone past the limit."""
        if not chunk.message.content or self.stream_limit is None:
            return False
        counted[0] += 1
        if counted[0] <= self.stream_limit:
            return False
        log.warning("model %s streamed past max_tokens=%s; its reply was cut there", self.model_name, self.stream_limit)
        return True

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        counted = [0]
        # ChatOpenAI declares Iterator, but its _stream is a generator function (and closable)
        stream = cast(Generator[ChatGenerationChunk, None, None], super()._stream(*args, **kwargs))
        with contextlib.closing(stream):
            for chunk in stream:
                if self._over_limit(chunk, counted):
                    yield _length()
                    return
                yield chunk

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        counted = [0]
        # closing the stream closes the HTTP response, so the server stops generating; ChatOpenAI declares
        # AsyncIterator, but its _astream is an async generator function (and closable)
        stream = cast(AsyncGenerator[ChatGenerationChunk, None], super()._astream(*args, **kwargs))
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                if self._over_limit(chunk, counted):
                    yield _length()
                    return
                yield chunk


def _length() -> ChatGenerationChunk:
    """The chunk that ends a cut reply: no text, ``finish_reason: "length"``."""
    return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={"finish_reason": "length"}))
