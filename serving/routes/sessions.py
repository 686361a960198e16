"""Sessions: list them, read one's messages and telemetry, forget one.

With API keys, a key sees only the sessions it created: they are kept under its hash, so another
key's session is listed nowhere and reads as a 404, like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from langchain_core.messages import AIMessage, HumanMessage

from graphs.agent.budget import message_tokens
from graphs.agent.sessions import REPO_KEY
from serving.errors import REDIS_ERRORS, ServiceError, documented
from serving.schemas import SessionDetail, SessionList, SessionMessage, SessionSummary, SessionTelemetry
from serving.security import SESSION_ID_PATTERN, check_session_id, key_of, session_of, session_thread
from serving.service import ServiceDep
from serving.session_usage import session_usage

router = APIRouter(prefix="/sessions", tags=["sessions"])

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session's id (X-Session-Id).")]


@router.get("", response_model=SessionList, responses=documented(401, 503))
async def list_sessions(
    request: Request,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many sessions.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Skip this many (most recent first).")] = 0,
) -> SessionList:
    """The caller's sessions, most recently used first."""
    key = key_of(request.scope)
    try:
        threads = await service.saver.thread_ids(
            limit=limit, offset=offset, where=lambda thread: session_of(key, thread) is not None
        )
    except REDIS_ERRORS as exc:
        raise service.redis_down(exc) from exc
    return SessionList(
        sessions=[SessionSummary(id=session_of(key, t) or t, updated_at=updated) for t, updated in threads]
    )


@router.get("/{session_id}", response_model=SessionDetail, responses=documented(400, 401, 404, 503))
async def get_session(session_id: SessionId, request: Request, service: ServiceDep) -> SessionDetail:
    """A session's messages and telemetry: message count, tokens used, context size."""
    check_session_id(session_id)
    thread = session_thread(key_of(request.scope), session_id)
    try:
        snapshot = await service.session_graph.aget_state({"configurable": {"thread_id": thread}})
        usage = await session_usage(service.saver, thread)
    except REDIS_ERRORS as exc:
        raise service.redis_down(exc) from exc
    messages = snapshot.values.get("messages", []) if snapshot and snapshot.values else []
    if not messages:
        raise ServiceError(404, f"No session {session_id!r}", "session_not_found")
    repo = (snapshot.metadata or {}).get(REPO_KEY)
    return SessionDetail(
        id=session_id,
        repo=str(repo) if repo is not None else None,
        messages=[
            SessionMessage(role="user" if isinstance(m, HumanMessage) else "assistant", content=str(m.content))
            for m in messages
            if isinstance(m, HumanMessage | AIMessage)
        ],
        telemetry=SessionTelemetry(
            message_count=len(messages),
            turns=usage.get("turns", 0),
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            total_tokens=usage.get("total_tokens", 0),
            context_tokens=message_tokens(messages),
            context_window=service.context.context_tokens,
        ),
    )


@router.delete("/{session_id}", status_code=204, response_class=Response, responses=documented(400, 401, 404, 503))
async def delete_session(session_id: SessionId, request: Request, service: ServiceDep) -> Response:
    """Forget a session (its messages and checkpoints)."""
    check_session_id(session_id)
    thread = session_thread(key_of(request.scope), session_id)
    try:
        if not await service.saver.has_thread(thread):
            raise ServiceError(404, f"No session {session_id!r}", "session_not_found")
        await service.saver.adelete_thread(thread)
    except REDIS_ERRORS as exc:
        raise service.redis_down(exc) from exc
    return Response(status_code=204)
