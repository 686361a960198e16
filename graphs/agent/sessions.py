"""Which repository a conversation is about, and its title: recorded in its checkpoints' metadata.

A session answers about one repository (or all of them, ``*``): the first turn records it, and a
later turn that asks about another is refused rather than silently answered from the wrong code or
the right code with the wrong history. Sessions from before repositories had names record nothing
and accept any.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver

from graphs.agent.context import Context
from graphs.agent.transcript import aconversation

#: The checkpoint metadata key that holds the session's repository (LangGraph copies it from the
#: run config's ``metadata`` into every checkpoint the run writes).
REPO_KEY = "cairn_repo"
#: The metadata key of the session's title: its first question, so a list of sessions reads no messages.
TITLE_KEY = "cairn_title"
TITLE_CHARS = 80


def title_of(question: str) -> str:
    """Return a session's title from its first question: one line, at most ``TITLE_CHARS`` characters."""
    return " ".join(question.split())[:TITLE_CHARS]


def session_metadata(context: Context, title: str | None = None) -> dict[str, Any]:
    """Return the run config's ``metadata`` that records the run's repository (and title) in its session."""
    return {REPO_KEY: context.repo_label, **({TITLE_KEY: title} if title else {})}


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a session's latest checkpoint says about it (all None for a new session)."""

    repo: str | None = None
    title: str | None = None


async def recorded(saver: BaseCheckpointSaver, session: str) -> Recorded:
    """Return the repository and title a session recorded; an older session's title is its first question."""
    latest = await saver.aget_tuple({"configurable": {"thread_id": session, "checkpoint_ns": ""}})
    if latest is None:
        return Recorded()
    metadata = latest.metadata or {}
    repo, title = metadata.get(REPO_KEY), metadata.get(TITLE_KEY)
    if title is None:  # recorded before titles were: its first question
        messages = await aconversation(saver, session, latest.checkpoint.get("channel_values") or {})
        first = next((m for m in messages if isinstance(m, HumanMessage)), None)
        title = title_of(first.text) if first is not None else None
    return Recorded(str(repo) if repo is not None else None, str(title) if title is not None else None)


def repo_mismatch(recorded: str | None, context: Context, session: str) -> str | None:
    """Return why a turn may not continue the session (it asks about another repository), or None."""
    if recorded is None or recorded == context.repo_label:
        return None
    return (
        f"The session {session!r} is about {_named(recorded)}, and this turn asks about "
        f"{_named(context.repo_label)}; a session keeps to one repository"
    )


def _named(label: str) -> str:
    return "all repositories" if label == "*" else f"{label!r}"
