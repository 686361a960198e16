"""Sessions: list them, read one's messages and telemetry, forget one.

With API keys, a key sees only the sessions it created: they are kept under its hash, so another
key's session is listed nowhere and reads as a 404, like one that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from graphs.agent.sessions import REPO_KEY, TITLE_KEY, title_of
from graphs.agent.transcript import aconversation, history_of
from serving.errors import REDIS_ERRORS, ServiceError, documented
from serving.schemas import SessionDetail, SessionList, SessionMessage, SessionSummary, SessionTelemetry
from serving.security import SESSION_ID_PATTERN, check_session_id, key_of, session_of, session_thread
from serving.service import ServiceDep
from serving.session_usage import session_usage

router = APIRouter(prefix="/sessions", tags=["sessions"])
log = logging.getLogger("cairn.serving")

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session's id (X-Session-Id).")]


#: The most recent sessions a text search reads (of the caller's own).
SEARCH_SCAN = 500
#: Sessions read from Redis at once while searching.
READ_AHEAD = 16
#: Sessions from before titles were recorded get theirs from their messages, this many per listing.
UNTITLED_READS = 20
SNIPPET_CHARS = 160


@router.get("", response_model=SessionList, responses=documented(401, 503))
async def list_sessions(
    request: Request,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many sessions.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Skip this many (most recent first).")] = 0,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only sessions whose messages hold every word of this "
            f"(any case); the {SEARCH_SCAN} most recent are searched, each match with a snippet.",
        ),
    ] = None,
) -> SessionList:
    """The caller's sessions, most recently used first, each with its title (first question) and repository."""
    key = key_of(request.scope)
    words = q.split() if q is not None else []
    mine = lambda thread: session_of(key, thread) is not None  # noqa: E731
    try:
        if words:
            threads = await service.saver.thread_ids(limit=SEARCH_SCAN, where=mine)
            found = await _search(service, threads, words, key)
            return SessionList(sessions=found[offset : offset + limit])
        threads = await service.saver.thread_ids(limit=limit, offset=offset, where=mine)
        recorded = await service.saver.latest_metadata([thread for thread, _ in threads])
        listed = []
        untitled = UNTITLED_READS
        for (thread, updated), metadata in zip(threads, recorded, strict=True):
            title, repo = metadata.get(TITLE_KEY), metadata.get(REPO_KEY)
            if title is None and untitled > 0:  # written before titles were recorded: read its first question
                untitled -= 1
                messages, _ = await _digest(service, thread)
                title = _title(messages)
            listed.append(SessionSummary(id=session_of(key, thread) or thread, updated_at=updated,
                                         title=title, repo=str(repo) if repo is not None else None))  # fmt: skip
        return SessionList(sessions=listed)
    except REDIS_ERRORS as exc:
        raise service.redis_down(exc) from exc


async def _search(service: Any, threads: Sequence[tuple[str, float]], words: Sequence[str], key: Any) -> list:
    """Return the sessions among ``threads`` whose messages hold every word, a few read at a time, keeping
    only each match's title and snippet."""
    found = []
    for start in range(0, len(threads), READ_AHEAD):
        batch = threads[start : start + READ_AHEAD]
        digests = await asyncio.gather(*(_digest(service, thread) for thread, _ in batch))
        for (thread, updated), (messages, repo) in zip(batch, digests, strict=True):
            if (snippet := _match(messages, words)) is not None:
                found.append(SessionSummary(id=session_of(key, thread) or thread, updated_at=updated,
                                            title=_title(messages), repo=repo, snippet=snippet))  # fmt: skip
    return found


async def _digest(service: Any, thread: str) -> tuple[list[BaseMessage], str | None]:
    """Return a thread's messages and repository from its latest checkpoint (none when it cannot be read)."""
    try:
        found = await service.saver.aget_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
    except REDIS_ERRORS:
        raise
    except Exception:  # one unreadable session is left out, the others still listed
        log.warning("could not read a checkpoint of %s", thread)
        return [], None
    if found is None:
        return [], None
    messages = await aconversation(service.saver, thread, found.checkpoint.get("channel_values") or {})
    repo = (found.metadata or {}).get(REPO_KEY)
    return messages, str(repo) if repo is not None else None


def _title(messages: Sequence[BaseMessage]) -> str | None:
    first = next((m for m in messages if isinstance(m, HumanMessage)), None)
    return title_of(first.text) if first is not None else None


def _match(messages: Sequence[BaseMessage], words: Sequence[str]) -> str | None:
    """Return a snippet around the first word's first match when the messages hold every word, else None."""
    texts = [" ".join(m.text.split()) for m in messages if isinstance(m, HumanMessage | AIMessage)]
    patterns = [re.compile(re.escape(word), re.IGNORECASE) for word in words]
    if not all(any(p.search(text) for text in texts) for p in patterns):
        return None
    for text in texts:
        if (hit := patterns[0].search(text)) is not None:
            start = max(0, hit.start() - SNIPPET_CHARS // 3)
            if start and (space := text.find(" ", start, hit.start())) >= 0:  # begin at a word
                start = space + 1
            clip = text[start : start + SNIPPET_CHARS]
            return ("…" if start else "") + clip + ("…" if start + SNIPPET_CHARS < len(text) else "")
    return None


@router.get("/{session_id}", response_model=SessionDetail, responses=documented(400, 401, 404, 503))
async def get_session(session_id: SessionId, request: Request, service: ServiceDep) -> SessionDetail:
    """A session's messages and telemetry: message count, tokens used, context size."""
    check_session_id(session_id)
    thread = session_thread(key_of(request.scope), session_id)
    try:
        snapshot = await service.session_graph.aget_state({"configurable": {"thread_id": thread}})
        usage = await session_usage(service.saver, thread)
        values = snapshot.values if snapshot and snapshot.values else {}
        messages = await aconversation(service.saver, thread, values)
    except REDIS_ERRORS as exc:
        raise service.redis_down(exc) from exc
    if not messages:
        raise ServiceError(404, f"No session {session_id!r}", "session_not_found")
    repo = (snapshot.metadata or {}).get(REPO_KEY)
    # what the next turn would be given
    history = history_of(values.get("messages") or [], service.context.history_tokens, values)
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
            context_tokens=history.tokens,
            history=history.as_dict(),
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
