"""A chat request end to end: pick the session and graph, run the agent, answer whole or as a stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from cairn.errors import SessionRepositoryMismatch
from config import Node
from graphs.agent.budget import text_tokens
from graphs.agent.citations import render_answer, sources_block
from graphs.agent.context import Context
from graphs.agent.turn import Session, Step, Thinking, Token, Turn, TurnEvent
from serving import session_usage
from serving.errors import REDIS_ERRORS, ServiceError, error_body
from serving.openai_compat import (
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
from serving.security import check_session_id, key_of, session_thread
from serving.service import Service

log = logging.getLogger("cairn.serving")
T = TypeVar("T")

SESSION_HEADER = "x-session-id"
#: The most messages one request may carry (the token bound is CAIRN_MAX_HISTORY_TOKENS).
MAX_MESSAGES = 500
#: A request with this header set to 1 gets the agent's steps as `event: cairn.step` SSE events.
EVENTS_HEADER = "x-cairn-events"
STEP_EVENT = "cairn.step"


def session_id(body: ChatCompletionRequest, request: Request) -> str | None:
    """Return the request's session: the ``X-Session-Id`` header, else None (the resent history is the conversation).

    Never the ``user`` field: clients put one stable id per person there (Open WebUI, LibreChat), and a
    session from it would merge all of a person's chats into one conversation. ``user`` is recorded on
    the run's trace (``enduser.id``) instead.
    """
    session = request.headers.get(SESSION_HEADER)
    if session is not None:
        check_session_id(session)
    return session


def check_history(service: Service, body: ChatCompletionRequest) -> None:
    """Refuse (400) a request whose messages are over the history bound, before anything runs."""
    limit = service.settings.max_history_tokens
    tokens = sum(text_tokens(message.text()) for message in body.messages)
    if tokens > limit or len(body.messages) > MAX_MESSAGES:
        raise ServiceError(400, f"The conversation sent is too long ({len(body.messages)} messages, about {tokens} "
                           f"tokens; at most {MAX_MESSAGES} messages and {limit} tokens): send only the recent turns, "
                           "or keep the conversation server-side with X-Session-Id and send only the new question",
                           "history_too_long")  # fmt: skip


def run_context(service: Service, body: ChatCompletionRequest) -> Context:
    """Return the Context of the requested model (its repository) with this request's overrides."""
    return service.context_for_model(body.model).override(
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=body.stop_list(),
    )


async def chat(
    service: Service, body: ChatCompletionRequest, request: Request, note: dict[str, Any] | None = None
) -> Response:
    """Answer a chat-completions request, whole or streamed; a session keeps the conversation in Redis.

    The turn itself is the agent's (``graphs.agent.turn``): this renders it as OpenAI's response or
    stream. A session is its API key's own (kept under the key's hash); a turn is saved whole or not
    at all, whatever ends it.
    """
    context = run_context(service, body)  # 404 for a model (repository) that does not exist
    check_history(service, body)
    await service.require_index(context)
    session = session_id(body, request)
    usage = TokenUsage()
    telemetry = service.run_telemetry(session, body.user)
    request.state.cairn_run = telemetry  # the access log and status view read its first token's time
    callbacks = [usage, telemetry]
    if session:
        thread = session_thread(key_of(request.scope), session)
        turn = Turn(service.session_graph, context, new_turn(body.messages), callbacks=callbacks,
                    session=Session(service.saver, thread, session), run_name="cairn-chat")  # fmt: skip
        try:
            await turn.check()
        except SessionRepositoryMismatch as exc:
            raise ServiceError(400, f"{exc.message}: start another session (X-Session-Id) to ask about it, or ask "
                               "with the model this session uses", "session_repository_mismatch") from exc  # fmt: skip
        except REDIS_ERRORS as exc:
            raise service.redis_down(exc) from exc
    else:
        turn = Turn(service.graph, context, to_langchain(body.messages), callbacks=callbacks, run_name="cairn-chat")

    if not body.stream:
        state = await whole_turn(service, request, turn, context, usage)
        reply = completion(state, usage, session, model=body.model, note=note)
        return JSONResponse(reply.model_dump(mode="json", exclude_unset=True))

    with_steps = request.headers.get(EVENTS_HEADER, "").strip().lower() in {"1", "true", "yes"}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    chunks = stream_chunks(turn.events(steps=with_steps), usage, session, include_usage, with_steps, model=body.model,
                           note=note)  # fmt: skip
    # Hold the response until the answer starts (or the run fails), so a model or Redis failure before
    # the first token is a proper 503/504 rather than an error inside a 200 stream. With steps asked for,
    # the first step starts the response at once, and a later failure is an error event in the stream.
    # The wait watches the connection: a client that leaves before the first token cancels the run.
    first = await anext(chunks)  # the role chunk, sent without waiting
    try:
        second = await until_disconnected(request, anext(chunks))
    except StopAsyncIteration:
        second = None
    except BaseException as exc:
        await chunks.aclose()
        if isinstance(exc, Exception):
            raise await service.translate(exc, context) from exc
        raise

    async def relay() -> AsyncIterator[str]:
        try:
            yield first
            if second is None:
                return
            yield second
            async for line in chunks:
                if line == DONE and turn.session is not None:  # count the turn's tokens before the client sees the end
                    await record_usage(service, turn.session.thread, usage)
                yield line
        except Exception as exc:  # after the first token: report inside the stream, then end it
            error = await service.translate(exc, context)
            log.warning("stream failed after the first token: %s", error.message)
            yield f"data: {json.dumps(error_body(error.message, error.code, error.kind))}\n\n"
        finally:
            # The client went away (Starlette cancels the response) or the stream ended: close the turn,
            # which closes the model's HTTP stream (the model server stops generating for nobody) and
            # takes back an unfinished turn. Shielded: the response's cancel scope would cancel these too.
            with anyio.CancelScope(shield=True):
                await chunks.aclose()

    return StreamingResponse(
        relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def whole_turn(service: Service, request: Request, turn: Turn, context: Context, usage: TokenUsage) -> dict:
    """Run a turn to its end for an answer sent whole (cancelled if the client leaves); count its session's tokens."""
    try:
        state = await until_disconnected(request, turn.result())
    except Exception as exc:
        raise await service.translate(exc, context) from exc
    if turn.session is not None:
        await record_usage(service, turn.session.thread, usage)
    return state


async def until_disconnected(request: Request, run: Awaitable[T], poll: float = 0.25) -> T:
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
    events: AsyncGenerator[TurnEvent, None],
    usage: TokenUsage,
    session: str | None,
    include_usage: bool,
    with_steps: bool = False,
    model: str = MODEL_ID,
    note: dict[str, Any] | None = None,
) -> AsyncGenerator[str, None]:
    """Render a turn's events as ``chat.completion.chunk`` SSE lines ending in [DONE].

    The answer's visible tokens are sent as they come (a reasoning model's thinking is sent as a
    step, if steps were asked for); after them the "Sources" list, then a last chunk with the finish
    reason and the ``cairn`` extra field (checked citations, sources). An answer given without the
    model (nothing found) is sent whole. Steps become ``cairn.step`` events.
    """
    writer = ChunkWriter(model)
    yield writer.delta("", role="assistant")
    final: dict[str, Any] = {}
    streamed = False
    try:
        async for event in events:
            if isinstance(event, Token):
                yield writer.delta(event.text)
            elif isinstance(event, Step):
                yield step_event(event.data)
            elif isinstance(event, Thinking):
                if with_steps:
                    yield step_event({"node": Node.ANSWER, "status": "thinking", "thinking": event.text})
            else:
                final, streamed = event.state, event.streamed
    finally:
        await events.aclose()  # closing the turn's events ends the turn
    sources = final.get("sources", [])
    rest = f"\n\n{sources_block(sources)}" if streamed and sources else ""
    if not streamed:
        rest = render_answer(final.get("answer", ""), sources)
    if rest:
        yield writer.delta(rest)
    extra = {**cairn_extra(final, session, usage.estimated), **(note or {})}
    yield writer.delta(finish=finish_reason_of(final), cairn=extra)
    if include_usage:
        yield writer.usage(usage.as_usage())
    yield DONE


async def record_usage(service: Service, session: str, usage: TokenUsage) -> None:
    """Add a turn's tokens to the session's counters (a Redis failure loses only the counters)."""
    try:
        totals = usage.as_usage()
        counts = {"prompt_tokens": totals.prompt_tokens, "completion_tokens": totals.completion_tokens,
                  "total_tokens": totals.total_tokens}  # fmt: skip
        await session_usage.record_usage(service.saver, session, counts)
    except REDIS_ERRORS as exc:
        log.warning("could not record token usage for session %s: %s", session, exc)
