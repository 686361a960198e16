"""``cairn-chat``: the configured chat model itself, for a client's chores (titles, tags, follow-up suggestions).

Open WebUI sends its housekeeping prompts to the chat's model; sent to ``cairn-agent`` each ran the whole
code agent (retrieval, judgement, a cited answer) and queued ahead of the user's next question, for a
useless reply. ``cairn-chat`` answers them as the model does: the messages go to the configured endpoint
(``CAIRN_MODEL_ANSWER``, else ``CAIRN_MODEL``) as they are, with no retrieval, no agent and no session,
and the reply is streamed back (a reasoning model's thinking removed). Keys, rate limits, the bound on
concurrent runs, traces and metrics are the chat route's.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.runnables import RunnableConfig
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.completion_usage import CompletionUsage

from config import Node
from models import chat_model
from models.reasoning import ThinkingFilter, split_thinking
from serving.chat import check_history, until_disconnected
from serving.openai_compat import DONE, ChatCompletionRequest, ChunkWriter, completion_id, to_langchain
from serving.service import Service


def _usage(metadata: dict[str, Any] | None) -> CompletionUsage:
    metadata = metadata or {}
    prompt, completion = int(metadata.get("input_tokens", 0)), int(metadata.get("output_tokens", 0))
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _traced(service: Service, body: ChatCompletionRequest) -> RunnableConfig:
    """The model call's config: traced and counted in /metrics like the agent's runs."""
    return {"callbacks": [service.run_telemetry(None, body.user)]}


async def passthrough(
    service: Service, body: ChatCompletionRequest, request: Request, extra: dict[str, Any]
) -> Response:
    """Answer a chat-completions request with the configured chat model alone, whole or streamed."""
    check_history(service, body)
    context = service.context.override(
        temperature=body.temperature, max_tokens=body.max_completion_tokens or body.max_tokens, stop=body.stop_list()
    )
    model = chat_model(context.model_config(Node.ANSWER))
    messages = to_langchain(body.messages)
    stop = context.stop or None
    extra = {"passthrough": True, **extra}
    if not body.stream:
        try:
            reply = await until_disconnected(request, model.ainvoke(messages, _traced(service, body), stop=stop))
        except Exception as exc:
            raise await service.translate(exc, context) from exc
        visible, _thinking = split_thinking(str(reply.content))
        finish = (reply.response_metadata or {}).get("finish_reason") or "stop"
        completion = ChatCompletion(
            id=completion_id(),
            object="chat.completion",
            created=int(time.time()),
            model=body.model,
            choices=[
                Choice(
                    index=0,
                    message=ChatCompletionMessage(role="assistant", content=visible.strip()),
                    finish_reason="length" if finish == "length" else "stop",
                    logprobs=None,
                )
            ],
            usage=_usage(getattr(reply, "usage_metadata", None)),
            cairn=extra,  # type: ignore[call-arg]
        )
        return JSONResponse(completion.model_dump(mode="json", exclude_unset=True))

    stream = cast("AsyncGenerator[Any, None]", model.astream(messages, _traced(service, body), stop=stop))
    writer = ChunkWriter(body.model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    # the first chunk is awaited before the response starts, so an endpoint that is down is a 503, not a broken 200
    try:
        first = await until_disconnected(request, anext(aiter(stream)))
    except StopAsyncIteration:
        first = None
    except Exception as exc:
        raise await service.translate(exc, context) from exc

    async def chunks() -> AsyncIterator[str]:
        thinking = ThinkingFilter()
        usage: dict[str, Any] = {}
        finish = "stop"
        try:
            yield writer.delta("", role="assistant")
            pending = [first] if first is not None else []
            while True:
                if pending:
                    piece = pending.pop()
                else:
                    try:
                        piece = await anext(aiter(stream))
                    except StopAsyncIteration:
                        break
                usage = dict(getattr(piece, "usage_metadata", None) or usage)
                finish = (piece.response_metadata or {}).get("finish_reason") or finish
                visible, _ = thinking.feed(str(piece.content))
                if visible:
                    yield writer.delta(visible)
            visible, _ = thinking.flush()
            if visible:
                yield writer.delta(visible)
            yield writer.delta(finish="length" if finish == "length" else "stop", cairn=extra)
            if include_usage:
                yield writer.usage(_usage(usage))
            yield DONE
        except Exception as exc:  # after the first token: said inside the stream, then the end
            from serving.errors import error_body

            error = await service.translate(exc, context)
            yield f"data: {json.dumps(error_body(error.message, error.code, error.kind))}\n\n"
        finally:
            with anyio.CancelScope(shield=True):  # the client left or the stream ended: close the model's stream
                await stream.aclose()

    return StreamingResponse(chunks(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip
