"""OpenAI's Responses API over the agent: ``POST /v1/responses``, whole or streamed, chained by response id.

Newer clients and agent SDKs speak only the Responses API. A response is one turn of the same agent as
chat completions (``graphs.agent.turn``), with the same models (``cairn-agent``, ``cairn/<name>``,
``cairn/*``; ``cairn-chat`` is chat completions only), keys, limits, traces and metrics.

Every response is kept as a turn of a session, and its id names that session: ``resp_<session>_<n>``.
A request with ``previous_response_id`` continues the session of that response (under the caller's
key, like every session: another key's id is a 404), so a client that chains ids gets server-side
memory without sending the history again; a request without one starts a new session, so two
conversations never meet. ``store: false`` on a new conversation keeps nothing (on a continued one the
turn joins the session it continues). Cairn's extra data (the
checked citations, the sources) travels where a stock client ignores it: the response's ``cairn``
field, besides the answer's trailing "Sources:" list.

Streaming sends the events the official client parses, in order: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` for each piece of the answer, then ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done`` and ``response.completed`` carrying the
whole response; an error after the start is a ``response.failed`` event.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

import anyio
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field

from graphs.agent.citations import render_answer, sources_block
from graphs.agent.transcript import answered
from graphs.agent.turn import Final, Session, Token, Turn
from serving.chat import MAX_MESSAGES, record_usage, whole_turn
from serving.errors import REDIS_ERRORS, ServiceError
from serving.openai_compat import TokenUsage, cairn_extra
from serving.security import check_session_id, key_of, session_thread
from serving.service import Service

_RESPONSE_ID = re.compile(r"^resp_([0-9a-f]{32})_(\d+)$")


class InputPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = "input_text"
    text: str = ""


class InputMessage(BaseModel):
    """One input item: a message with text, or text parts (images and files are not read)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"] = "user"
    content: str | list[InputPart] = ""

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if part.type in {"input_text", "output_text", "text"})


class ResponsesRequest(BaseModel):
    """The subset of OpenAI's Responses request the agent honours; other fields are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[InputMessage] = Field(description="The question, or messages (the last user one is asked).")
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, description="Continue that response's conversation.")
    stream: bool = False
    store: bool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    user: str | None = None


def _messages(body: ResponsesRequest, continuing: bool) -> list[BaseMessage]:
    """The turn's input: with a previous response only the new user messages; else the instructions and messages."""
    items = [InputMessage(content=body.input)] if isinstance(body.input, str) else body.input
    if continuing:  # the session holds the conversation: the new user turn only
        return [HumanMessage(item.text()) for item in items if item.role == "user" and item.text().strip()]
    out: list[BaseMessage] = [SystemMessage(body.instructions)] if body.instructions else []
    for item in items:
        if item.role == "user":
            out.append(HumanMessage(item.text()))
        elif item.role == "assistant":  # a client keeping its own history (store: false) resends the answers
            out.append(AIMessage(item.text()))
        elif item.role in {"system", "developer"}:
            out.append(SystemMessage(item.text()))
    return out


def _session_of(body: ResponsesRequest) -> tuple[str, int]:
    """The session a request continues (from ``previous_response_id``) or a new one, and the turn number."""
    if body.previous_response_id is None:
        return uuid.uuid4().hex, 1
    match = _RESPONSE_ID.match(body.previous_response_id)
    if match is None:
        raise ServiceError(404, f"No response {body.previous_response_id!r} (ids look like resp_<32 hex>_<n>)",
                           "response_not_found")  # fmt: skip
    return match.group(1), int(match.group(2)) + 1


def _usage(usage: TokenUsage) -> dict[str, Any]:
    counted = usage.as_usage()
    return {
        "input_tokens": counted.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": counted.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": counted.total_tokens,
    }


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def _response(rid: str, body: ResponsesRequest, status: str, output: list[dict[str, Any]], **extra: Any) -> dict:
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.model,
        "output": output,
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "previous_response_id": body.previous_response_id,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "store": body.store,
        "user": body.user,
        "error": None,
        "incomplete_details": None,
        **extra,
    }


async def responses(service: Service, body: ResponsesRequest, request: Request) -> Response:
    """Answer a Responses request with one agent turn, whole or as the Responses stream events."""
    context = service.context_for_model(body.model).override(
        temperature=body.temperature, max_tokens=body.max_output_tokens
    )
    await service.require_index(context)
    session_key, number = _session_of(body)
    continuing = body.previous_response_id is not None
    messages = _messages(body, continuing)
    if not isinstance(messages[-1:][0] if messages else None, HumanMessage) or not str(messages[-1].content).strip():
        raise ServiceError(400, "input: the last item must be a user message with text to answer", "invalid_input")
    _check_history(service, messages)
    usage = TokenUsage()
    name = f"resp-{session_key}"
    check_session_id(name)
    telemetry = service.run_telemetry(name if body.store else None, body.user)
    request.state.cairn_run = telemetry  # the access log and status view read its first token's time
    callbacks = [usage, telemetry]
    if body.store or continuing:
        thread = session_thread(key_of(request.scope), name)
        session = Session(service.saver, thread, name)
        turn = Turn(service.session_graph, context, messages, callbacks=callbacks, session=session,
                    run_name="cairn-responses")  # fmt: skip
        try:
            answered = await _answered(service, thread) if continuing else 0
            if continuing and not answered:
                raise ServiceError(404, f"No response {body.previous_response_id!r} for this key", "response_not_found")
            await turn.check()
        except REDIS_ERRORS as exc:
            raise service.redis_down(exc) from exc
        number = answered + 1  # from the session, not the id sent: continuing an older id continues the session
    else:
        turn = Turn(service.graph, context, messages, callbacks=callbacks, run_name="cairn-responses")
    rid = f"resp_{session_key}_{number}"

    item_id = f"msg_{uuid.uuid4().hex}"
    if not body.stream:
        state = await whole_turn(service, request, turn, context, usage)
        text = str(state["messages"][-1].content) if state.get("messages") else state.get("answer", "")
        reply = _response(rid, body, "completed", [_message_item(item_id, text)], usage=_usage(usage),
                          cairn=cairn_extra(state, name if body.store else None, usage.estimated))  # fmt: skip
        return JSONResponse(reply)

    stream = _stream(rid, item_id, body, turn.events(steps=False), usage, name if body.store else None)
    if turn.session is not None:  # a kept turn's tokens are counted before the client sees it complete
        stream = _counted(stream, service, turn.session.thread, usage)
    return StreamingResponse(_relay(stream, rid, body, service, context), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip


async def _answered(service: Service, thread: str) -> int:
    """How many answers a session holds (0: no such session under this key)."""
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    found = await service.saver.aget_tuple(config)  # type: ignore[arg-type]
    if found is None:
        return 0
    return max(1, answered(found.checkpoint.get("channel_values") or {}))


def _check_history(service: Service, messages: list[BaseMessage]) -> None:
    """Refuse (400) an input over the history bound, as chat completions does."""
    from graphs.agent.budget import text_tokens

    limit = service.settings.max_history_tokens
    tokens = sum(text_tokens(str(m.content)) for m in messages)
    if tokens > limit or len(messages) > MAX_MESSAGES:
        raise ServiceError(400, f"The input is too long ({len(messages)} messages, about {tokens} tokens; at most "
                           f"{MAX_MESSAGES} and {limit}): send the new question with previous_response_id instead",
                           "history_too_long")  # fmt: skip


def _event(kind: str, sequence: int, **data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': sequence, **data})}\n\n"


async def _stream(
    rid: str,
    item_id: str,
    body: ResponsesRequest,
    events: AsyncGenerator[Any, None],
    usage: TokenUsage,
    session: str | None,
) -> AsyncGenerator[str, None]:
    """The Responses stream events of one turn (the first is sent at once: ``response.created``)."""
    sequence = iter(range(1_000_000))
    started = _response(rid, body, "in_progress", [])
    yield _event("response.created", next(sequence), response=started)
    yield _event("response.in_progress", next(sequence), response=started)
    yield _event("response.output_item.added", next(sequence), output_index=0,
                 item=_message_item(item_id, "", status="in_progress"))  # fmt: skip
    part = {"type": "output_text", "text": "", "annotations": []}
    yield _event("response.content_part.added", next(sequence), item_id=item_id, output_index=0, content_index=0,
                 part=part)  # fmt: skip
    text, final = "", None
    try:
        async for event in events:
            if isinstance(event, Token):
                text += event.text
                yield _event("response.output_text.delta", next(sequence), item_id=item_id, output_index=0,
                             content_index=0, delta=event.text, logprobs=[])  # fmt: skip
            elif isinstance(event, Final):
                final = event
    finally:
        await events.aclose()
    state = final.state if final else {}
    sources = state.get("sources", [])
    rest = f"\n\n{sources_block(sources)}" if final and final.streamed and sources else ""
    if final and not final.streamed:
        rest = render_answer(state.get("answer", ""), sources)
    if rest:
        text += rest
        yield _event("response.output_text.delta", next(sequence), item_id=item_id, output_index=0, content_index=0,
                     delta=rest, logprobs=[])  # fmt: skip
    yield _event("response.output_text.done", next(sequence), item_id=item_id, output_index=0, content_index=0,
                 text=text, logprobs=[])  # fmt: skip
    yield _event("response.content_part.done", next(sequence), item_id=item_id, output_index=0, content_index=0,
                 part={**part, "text": text})  # fmt: skip
    item = _message_item(item_id, text)
    yield _event("response.output_item.done", next(sequence), output_index=0, item=item)
    done = _response(rid, body, "completed", [item], usage=_usage(usage),
                     cairn=cairn_extra(state, session, usage.estimated))  # fmt: skip
    yield _event("response.completed", next(sequence), response=done)


async def _counted(
    stream: AsyncGenerator[str, None], service: Service, thread: str, usage: TokenUsage
) -> AsyncGenerator[str, None]:
    """Pass the stream's events on, adding the turn's tokens to its session's counters before the last one."""
    try:
        async for line in stream:
            if line.startswith("event: response.completed\n"):
                await record_usage(service, thread, usage)
            yield line
    finally:
        await stream.aclose()


async def _relay(
    stream: AsyncGenerator[str, None], rid: str, body: ResponsesRequest, service: Service, context: Any
) -> AsyncIterator[str]:
    """Send the turn's events; an error after the start is a ``response.failed`` event, then the end."""
    try:
        async for line in stream:
            yield line
    except Exception as exc:
        error = await service.translate(exc, context)
        failed = _response(rid, body, "failed", [], error={"code": error.code, "message": error.message})
        yield f"event: response.failed\ndata: {json.dumps({'type': 'response.failed', 'response': failed})}\n\n"
    finally:
        # the client left or the stream ended: close the turn (its model stream, an unfinished turn taken back)
        with anyio.CancelScope(shield=True):
            await stream.aclose()
