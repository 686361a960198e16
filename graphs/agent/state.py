"""The agent's state: what callers send (InputState) and what the nodes add (AgentState)."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # pydantic (LangServe) rejects typing.TypedDict on Python < 3.12


class InputState(TypedDict):
    """What a caller sends: the conversation, ending with the user's latest question."""

    messages: Annotated[list[AnyMessage], add_messages]
    """The conversation so far; add_messages appends (and replaces by id)."""


class AgentState(InputState, total=False):
    """The full state; every field below is reset by plan at the start of each turn (last write wins)."""

    question: str
    """The latest question rewritten to stand alone (plan)."""
    queries: list[str]
    """Search queries of the current round (plan, then refine)."""
    searched: list[str]
    """Every query searched this turn, so refine can avoid repeats."""
    documents: list[dict[str, Any]]
    """Retrieved chunks (citation, path, lines, symbol, text, score), de-duplicated, within the budget."""
    relevant: list[int]
    """Indexes into documents that analyze judged relevant."""
    sufficient: bool
    """Whether analyze judged the relevant documents enough to answer."""
    missing: str
    """What analyze said is still missing (feeds refine)."""
    rounds: int
    """Refine rounds taken this turn (bounded by max_rounds)."""
    answer: str
    """The final answer text, invented citations removed."""
    citations: list[str]
    """Valid citations (path:start-end) backing the answer."""
    dropped_citations: list[str]
    """Citations the model wrote that no retrieved chunk supports; removed from the answer."""
    fallbacks: list[str]
    """Nodes that used their deterministic fallback because the model's output did not parse."""
    tool_calls: list[dict[str, Any]]
    """Tools called by analyze: name, arguments, and whether they errored."""
