"""A long session's older turns, moved out of the state every turn loads.

A session's state keeps its newest turns as messages: what the history policy (``budget.History``)
may give a prompt word for word. When a turn on a session ends, the turns older than that window
move out (``move_out``), each to two places:

- ``digest``: its line of the policy's summary (the question and the citations its answer used),
  only as many lines as the history budget could ever hold;
- ``transcript``: the conversation's older messages as JSON lines, one string that the session's
  views (``conversation``) read and no turn parses.

So the messages a turn deserialises, copies and fits stay bounded however long the session runs,
and a turn's prompts are the same as if it had kept them all: a moved turn is one the policy would
only have summarised or left out. ``digest``, ``moved`` and ``transcript`` are part of the
checkpoint, so they are written, taken back (a turn that does not finish) and deleted together
with the rest of the session.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

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


def conversation(values: Mapping[str, Any]) -> list[BaseMessage]:
    """Return a session's whole conversation from its state: the moved-out messages, then the kept ones."""
    moved = [_ROLES[entry["type"]](entry["content"]) for entry in map(json.loads, _lines(values))]
    return [*moved, *(values.get("messages") or [])]


def answered(values: Mapping[str, Any]) -> int:
    """Return how many answers a session's state holds, moved out or kept, without parsing its transcript."""
    kept = sum(isinstance(m, AIMessage) for m in values.get("messages") or [])
    # each line opens with its type (``_line``); a quote inside a message is escaped, so only they match
    return kept + values.get("transcript", "").count('{"type": "ai"')


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


def _lines(values: Mapping[str, Any]) -> list[str]:
    # "\n" only: JSON leaves U+2028, U+2029 and U+0085 in a string as they are, and splitlines() splits at them
    return [line for line in str(values.get("transcript") or "").split("\n") if line]
