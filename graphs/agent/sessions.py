"""Which repository a conversation is about: recorded in its checkpoints' metadata, checked every turn.

A session answers about one repository (or all of them, ``*``): the first turn records it, and a
later turn that asks about another is refused rather than silently answered from the wrong code or
the right code with the wrong history. Sessions from before repositories had names record nothing
and accept any.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from graphs.agent.context import Context

#: The checkpoint metadata key that holds the session's repository (LangGraph copies it from the
#: run config's ``metadata`` into every checkpoint the run writes).
REPO_KEY = "cairn_repo"


def session_metadata(context: Context) -> dict[str, Any]:
    """Return the run config's ``metadata`` that records the run's repository in its session."""
    return {REPO_KEY: context.repo_label}


async def recorded_repo(saver: BaseCheckpointSaver, session: str) -> str | None:
    """Return the repository a session recorded, or None for a new (or older) session."""
    latest = await saver.aget_tuple({"configurable": {"thread_id": session, "checkpoint_ns": ""}})
    if latest is None:
        return None
    value = (latest.metadata or {}).get(REPO_KEY)
    return str(value) if value is not None else None


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
