"""A long session's older turns, moved out of the state every turn loads.

A session's state keeps its newest turns as messages: what the history policy (``budget.History``)
may give a prompt word for word. When a turn on a session ends, the turns older than that window
move out (``move_out``), each to two places:

- ``digest``: its line of the policy's summary (the question and the citations its answer used),
  only as many lines as the history budget could ever hold;
- the session's transcript: its older messages as JSON lines, which only the session's views
  (``aconversation``) read and no turn parses.

Where the transcript goes depends on the checkpointer. One that keeps a transcript log
(``TranscriptLog``: the service's Redis saver) is given each turn's moved-out lines as one entry
of an append-only log beside the checkpoints, which no turn reads; the state keeps only which entry
is its latest (``logged``) and how many answers its entries hold (``logged_answers``). Each entry
names the one before it in its session, so a state's conversation is its own chain of entries: an
entry of a turn that was taken back, or that lost to another turn on the same session at the same
time, is in no state's chain. So nothing a turn loads or writes grows with the session. Any other
checkpointer keeps the lines in the state's ``transcript`` string, read and written with each
checkpoint.

So the messages a turn deserialises, copies and fits stay bounded however long the session runs,
and a turn's prompts are the same as if it had kept them all: a moved turn is one the policy would
only have summarised or left out. The fields are part of the checkpoint, so they are written and
taken back (a turn that does not finish) together with the rest of the session.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, RemoveMessage, SystemMessage

from graphs.agent.budget import (
    VERBATIM_TURNS,
    History,
    digest_line,
    fit_history,
    text_tokens,
    turn_tokens,
    turns_of,
)

#: The most turns a session's messages keep: the most the policy gives word for word; older ones move out.
KEPT_TURNS = VERBATIM_TURNS
#: The fewest turns kept, even when they alone are over the history budget (follow-ups read the last).
MIN_KEPT_TURNS = 2

_ROLES: dict[str, type[BaseMessage]] = {"human": HumanMessage, "ai": AIMessage, "system": SystemMessage}

log = logging.getLogger("cairn.agent")


class TranscriptUnavailable(Exception):
    """A transcript log could not take or give an entry (its store is unreachable)."""


@runtime_checkable
class TranscriptLog(Protocol):
    """A checkpointer that keeps each session's transcript as an append-only log beside its checkpoints.

    An entry is a string; the log only appends and reads. What links a state to its entries
    (``into_log``) is in the entries themselves, so the log needs no trimming and no transaction
    with the checkpoint.
    """

    async def aappend_transcript(self, thread_id: str, entry: str) -> int:
        """Append ``entry`` to the thread's log; return its position (0 first). Raises ``TranscriptUnavailable``."""
        ...

    async def aread_transcript(self, thread_id: str, count: int) -> list[str]:
        """Return the first ``count`` entries of the thread's log (fewer where entries were lost)."""
        ...


def move_out(messages: Sequence[AnyMessage], budget: int, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the state update that moves the turns out of ``messages`` that the policy cannot give word for word.

    ``messages`` is the session's conversation after this turn's answer, ``budget`` the history
    budget and ``values`` the state (its ``digest``, ``moved`` and ``transcript`` so far). Turns stay,
    newest first, while they fit the budget (at least ``MIN_KEPT_TURNS``, at most ``KEPT_TURNS``).
    Returns {} when none moves.
    """
    starts = [i for i, message in enumerate(messages) if isinstance(message, HumanMessage)]
    turns = turns_of(messages)  # one per human message, in the same order
    kept, used = 0, 0
    for question, answer in reversed(turns):
        cost = turn_tokens(question, answer)
        if kept >= KEPT_TURNS or (kept >= MIN_KEPT_TURNS and used + cost > budget):
            break
        kept, used = kept + 1, used + cost
    if kept == len(turns):
        return {}
    cut = starts[len(turns) - kept]
    leaving = list(messages[:cut])
    lines = [*values.get("digest", ()), *(digest_line(q, a) for q, a in turns[: len(turns) - kept])]
    return {
        "messages": [RemoveMessage(id=str(message.id)) for message in leaving],
        "digest": _within(lines, budget),
        "moved": values.get("moved", 0) + len(turns) - kept,
        "transcript": values.get("transcript", "") + "".join(_line(m) for m in leaving if m.type in _ROLES),
    }


async def into_log(
    checkpointer: object, thread_id: str, values: Mapping[str, Any], update: dict[str, Any]
) -> dict[str, Any]:
    """Return a ``move_out`` update with its transcript lines moved into the checkpointer's log, when it keeps one.

    ``update["transcript"]`` (the state's lines, then this turn's) becomes one entry, which names the
    entry before it: the last one ``values`` covers (``logged``, its position + 1; 0 for none). The
    update then covers the new entry instead. So each state reads back its own chain of entries: an
    entry of a turn that was taken back, or of a turn that ran at the same time on the same session
    and lost, is in no state's chain. Where the log cannot take it, the lines stay in the state.
    """
    text = update.get("transcript", "")
    if not text or not isinstance(checkpointer, TranscriptLog):
        return update
    after = values.get("logged", 0)
    try:
        position = await checkpointer.aappend_transcript(thread_id, f"{after}\n{text}")
    except TranscriptUnavailable as exc:  # the turn is answered: its lines stay in the state, the log takes the next
        log.warning("could not append to the transcript log of session %r (%s); kept in its state", thread_id, exc)
        return update
    answers = values.get("logged_answers", 0) + _answers(text)
    return {**update, "transcript": "", "logged": position + 1, "logged_answers": answers}


async def aconversation(checkpointer: object, thread_id: str, values: Mapping[str, Any]) -> list[BaseMessage]:
    """Return a session's whole conversation: its chain of logged entries, the state's moved-out lines, its messages."""
    at = values.get("logged", 0)
    entries: list[str] = []
    if at and isinstance(checkpointer, TranscriptLog):
        entries = await checkpointer.aread_transcript(thread_id, at)
    chain: list[str] = []
    while 0 < at <= len(entries):
        after, _, text = entries[at - 1].partition("\n")
        chain.append(text)
        at = int(after) if after.isdigit() and int(after) < at else -1
    if at:
        log.warning("session %r's transcript log is missing entries; showing what is there", thread_id)
    return conversation(values, "".join(reversed(chain)))


def conversation(values: Mapping[str, Any], logged: str = "") -> list[BaseMessage]:
    """Return a session's conversation from its state (and its log's ``logged`` lines, see ``aconversation``)."""
    lines = _lines(logged) + _lines(str(values.get("transcript") or ""))
    moved = [_ROLES[entry["type"]](entry["content"]) for entry in map(json.loads, lines)]
    return [*moved, *(values.get("messages") or [])]


def answered(values: Mapping[str, Any]) -> int:
    """Return how many answers a session's state holds, moved out or kept, without reading its transcript."""
    kept = sum(isinstance(m, AIMessage) for m in values.get("messages") or [])
    return kept + _answers(values.get("transcript", "")) + values.get("logged_answers", 0)


def history_of(messages: Sequence[AnyMessage], budget: int, values: Mapping[str, Any]) -> History:
    """Return the history policy's fit of ``messages`` with the turns the session moved out of them."""
    return fit_history(messages, budget, values.get("digest", ()), values.get("moved", 0))


def _within(lines: list[str], budget: int) -> list[str]:
    """Return the newest ``lines`` whose tokens fit ``budget`` (older ones the policy would leave out)."""
    room, start = budget, len(lines)
    while start and (cost := text_tokens(lines[start - 1])) <= room:
        room, start = room - cost, start - 1
    return lines[start:]


def _line(message: BaseMessage) -> str:
    return json.dumps({"type": message.type, "content": message.text}, ensure_ascii=False) + "\n"


def _answers(text: str) -> int:
    # each line opens with its type (``_line``); a quote inside a message is escaped, so only they match
    return text.count('{"type": "ai"')


def _lines(text: str) -> list[str]:
    # "\n" only: JSON leaves U+2028, U+2029 and U+0085 in a string as they are, and splitlines() splits at them
    return [line for line in text.split("\n") if line]
