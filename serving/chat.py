"""A chat request end to end: pick the session and graph, run the agent, answer whole or as a stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.messages import AIMessageChunk

from config import Node
from graphs.agent.citations import render_answer, sources_block
from graphs.agent.context import Context
from graphs.agent.sessions import recorded_repo, repo_mismatch, session_metadata
from models.reasoning import ThinkingFilter
from serving.errors import REDIS_ERRORS, ServiceError, error_body
from serving.openai_api import (
    DONE,
    MODEL_ID,
    ChatCompletionRequest,
    ChunkWriter,
    TokenUsage,
    cairn_extra,
    completion,
    finish_reason_of,
    new_turn,
    to_langchain,
)
from serving.service import Service

log = logging.getLogger("cairn.serving")
T = TypeVar("T")

SESSION_HEADER = "x-session-id"
#: A request with this header set to 1 gets the agent's steps as `event: cairn.step` SSE events.
EVENTS_HEADER = "x-cairn-events"
STEP_EVENT = "cairn.step"


def session_id(body: ChatCompletionRequest, request: Request) -> str | None:
    """Return the request's session: the ``X-Session-Id`` header, else the ``user`` field, else None."""
    session = request.headers.get(SESSION_HEADER) or body.user
    if session is not None and not (0 < len(session) <= 200):
        raise ServiceError(400, "A session id must be 1 to 200 characters", "invalid_session_id")
    return session


def run_context(service: Service, body: ChatCompletionRequest) -> Context:
    """Return the Context of the requested model (its repository) with this request's overrides."""
    return service.context_for_model(body.model).override(
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=body.stop_list(),
    )


async def chat(service: Service, body: ChatCompletionRequest, request: Request) -> Response:
    """Answer a chat-completions request, whole or streamed; a session keeps the conversation in Redis."""
    context = run_context(service, body)  # 404 for a model (repository) that does not exist
    await service.require_index(context)
    session = session_id(body, request)
    usage = TokenUsage()
    config: dict[str, Any] = {"callbacks": [usage, service.run_telemetry(session)], "run_name": "cairn-chat"}
    if session:
        graph = service.session_graph
        config["configurable"] = {"thread_id": session}
        config["metadata"] = session_metadata(context)  # the session remembers its repository
        messages = new_turn(body.messages)
        try:
            recorded = await recorded_repo(service.saver, session)
        except REDIS_ERRORS as exc:
            raise service.redis_down(exc) from exc
        if mismatch := repo_mismatch(recorded, context, session):
            raise ServiceError(400, f"{mismatch}: start another session (X-Session-Id) to ask about it, or ask "
                               "with the model this session uses", "session_repository_mismatch")  # fmt: skip
    else:
        graph = service.graph
        messages = to_langchain(body.messages)
    # durability="exit": a session's turn is written once, when it completes (one Redis transaction per
    # turn instead of one per step); a turn killed midway leaves the session as it was before it.
    durability: dict[str, Any] = {"durability": "exit"} if session else {}

    if not body.stream:
        run = graph.ainvoke({"messages": messages}, config, context=context, **durability)
        try:
            state = await until_disconnected(request, run)
        except Exception as exc:
            raise service.translate(exc, context) from exc
        if session:
            await record_usage(service, session, usage)
        reply = completion(state, usage, session, model=body.model)
        return JSONResponse(reply.model_dump(mode="json", exclude_unset=True))

    with_steps = request.headers.get(EVENTS_HEADER, "").strip().lower() in {"1", "true", "yes"}
    modes = ["messages", "values", "custom"] if with_steps else ["messages", "values"]
    events = graph.astream({"messages": messages}, config, context=context, stream_mode=modes, **durability)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = stream_chunks(events, usage, session, include_usage, with_steps, model=body.model)
    # Hold the response until the answer starts (or the run fails), so a model or Redis failure before
    # the first token is a proper 503/504 rather than an error inside a 200 stream. With steps asked for,
    # the first step starts the response at once, and a later failure is an error event in the stream.
    first = await anext(chunks)  # the role chunk, sent without waiting
    try:
        second = await anext(chunks)
    except StopAsyncIteration:
        second = None
    except Exception as exc:
        await chunks.aclose()
        raise service.translate(exc, context) from exc

    async def relay() -> AsyncIterator[str]:
        try:
            yield first
            if second is None:
                return
            yield second
            async for line in chunks:
                if line == DONE and session:  # count the turn's tokens before the client sees the end
                    await record_usage(service, session, usage)
                yield line
        except Exception as exc:  # after the first token: report inside the stream, then end it
            error = service.translate(exc, context)
            log.warning("stream failed after the first token: %s", error.message)
            yield f"data: {json.dumps(error_body(error.message, error.code, error.kind))}\n\n"
        finally:
            # The client went away (Starlette cancels the response) or the stream ended: close the run,
            # which closes the model's HTTP stream, so the model server stops generating for nobody.
            await chunks.aclose()

    return StreamingResponse(
        relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def until_disconnected(request: Request, run: Coroutine[Any, Any, T], poll: float = 0.25) -> T:
    """Await ``run``, cancelling it if the client disconnects first (its model call is closed with it).

    Starlette cancels a streaming response when its client goes away, but not a plain one: this
    watches the connection for a request whose answer is sent whole.
    """
    task = asyncio.ensure_future(run)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ServiceError(499, "The client closed the request before the answer was ready",
                                   "client_closed_request")  # fmt: skip
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def step_event(step: dict[str, Any]) -> str:
    """Return an agent step as a named SSE event (``event: cairn.step``), which only opted-in clients get."""
    return f"event: {STEP_EVENT}\ndata: {json.dumps(step, default=str)}\n\n"


async def stream_chunks(
    events: AsyncIterator[tuple[str, Any]],
    usage: TokenUsage,
    session: str | None,
    include_usage: bool,
    with_steps: bool = False,
    model: str = MODEL_ID,
) -> AsyncIterator[str]:
    """Turn the graph's (mode, payload) stream into ``chat.completion.chunk`` SSE lines ending in [DONE].

    The answer model's tokens are sent as they come, a reasoning model's thinking held out of them
    (sent as a step, if steps were asked for); after them the "Sources" list, then a last chunk with
    the finish reason and the ``cairn`` extra field (checked citations, sources). An answer given
    without the model (nothing found) is sent whole. Steps (mode ``custom``) become ``cairn.step``
    events.
    """
    writer = ChunkWriter(model)
    yield writer.delta("", role="assistant")
    streamed = False
    thinking = ThinkingFilter()
    final: dict[str, Any] = {}
    try:
        async for mode, payload in events:
            if mode == "values":
                final = payload
                continue
            if mode == "custom":
                yield step_event(payload)
                continue
            chunk, meta = payload
            if meta.get("langgraph_node") == Node.ANSWER and isinstance(chunk, AIMessageChunk) and chunk.content:
                visible, thought = thinking.feed(str(chunk.content))
                if thought and with_steps:
                    yield step_event({"node": Node.ANSWER, "status": "thinking", "thinking": thought})
                if visible:
                    streamed = True
                    yield writer.delta(visible)
    finally:
        await events.aclose()  # type: ignore[attr-defined]  (an async generator: closing it ends the run)
    visible, _ = thinking.flush()
    if visible:
        streamed = True
        yield writer.delta(visible)
    sources = final.get("sources", [])
    rest = f"\n\n{sources_block(sources)}" if streamed and sources else ""
    if not streamed:
        rest = render_answer(final.get("answer", ""), sources)
    if rest:
        yield writer.delta(rest)
    yield writer.delta(finish=finish_reason_of(final), cairn=cairn_extra(final, session, usage.estimated))
    if include_usage:
        yield writer.usage(usage.as_usage())
    yield DONE


async def record_usage(service: Service, session: str, usage: TokenUsage) -> None:
    """Add a turn's tokens to the session's counters (a Redis failure loses only the counters)."""
    try:
        totals = usage.as_usage()
        counts = {"prompt_tokens": totals.prompt_tokens, "completion_tokens": totals.completion_tokens,
                  "total_tokens": totals.total_tokens}  # fmt: skip
        await service.saver.record_usage(session, counts)
    except REDIS_ERRORS as exc:
        log.warning("could not record token usage for session %s: %s", session, exc)
