"""The agent's state: what callers send (InputState) and what the nodes add (AgentState)."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.documents import Document
from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # pydantic (LangServe) rejects typing.TypedDict on Python < 3.12


class Source(TypedDict):
    """A piece of code the answer was given: its citation, symbol, retrieval score, and whether analyze chose it."""

    citation: str
    symbol: str | None
    score: float
    relevant: bool


class ToolCallRecord(TypedDict):
    """A tool analyze called: its name, arguments, and the error it returned (None when it worked)."""

    name: str
    args: dict[str, Any]
    error: str | None


class InputState(TypedDict):
    """What a caller sends: the conversation, ending with the user's latest question."""

    messages: Annotated[list[AnyMessage], add_messages]
    """The conversation so far; add_messages appends (and replaces by id)."""


class AgentState(InputState, total=False):
    """The full state; plan sets every field below at the start of each turn (last write wins): the
    five that a long session's older turns move to (``graphs.agent.transcript``) as they were, the
    others afresh."""

    digest: list[str]
    """The history policy's lines for the turns moved out of messages, oldest first, within the history budget."""
    moved: int
    """How many turns have moved out of messages."""
    transcript: str
    """The messages moved out of messages, as JSON lines ``{"type", "content"}``: read by the session's views only.

    Empty where the checkpointer keeps them in its transcript log instead (see ``logged``)."""
    logged: int
    """Where this state's latest entry is in the checkpointer's transcript log: its position + 1 (0: none)."""
    logged_answers: int
    """How many answers this state's entries in the log hold."""

    question: str
    """The latest question rewritten to stand alone (plan)."""
    queries: list[str]
    """Search queries of the current round (plan, then refine)."""
    lookups: list[dict[str, str]]
    """Symbol-graph lookups the question asks for (plan): ``{"kind": "references", "target": "fuse"}``."""
    walk: str
    """The relation a question asks about what it describes (plan: "callers", "callees", "importers",
    "subclasses"), followed in the symbol graph from the search's best hits (retrieve); "" when none."""
    walked: list[str]
    """What the walk followed this turn ("following `encode_record` → 2 callers")."""
    planned_by: str
    """Who chose the first queries: "model" (a standalone rewrite) or "question" (the question as asked)."""
    searched: list[str]
    """Every query searched this turn, so refine can avoid repeats."""
    documents: list[Document]
    """Retrieved code (``retrievers.code_document``: text, citation, symbol, score), de-duplicated, in budget."""
    relevant: list[int]
    """Indexes into documents that analyze judged relevant."""
    sufficient: bool
    """Whether analyze judged the relevant documents enough to answer."""
    missing: str
    """What analyze said is still missing (feeds refine)."""
    rounds: int
    """Refine rounds taken this turn (bounded by max_rounds)."""
    answer: str
    """The answer's text, citations that no retrieved code supports removed; the sources are apart."""
    sources: list[Source]
    """The code given to the answer model (the answer's "Sources"), the ones analyze chose first."""
    citations: list[str]
    """The answer's citations (path:start-end) that retrieved code supports, in order of first use."""
    dropped_citations: list[str]
    """Citations the model wrote that no retrieved chunk supports; removed from the answer."""
    empty_answer: bool
    """Whether the model wrote no answer text (the answer then says so and lists the relevant places)."""
    history: dict[str, Any]
    """How the earlier conversation was fitted to its budget (plan): turns kept word for word,
    summarised and left out, its tokens and budget (``graphs.agent.budget.History``)."""
    judged: list[str]
    """Each model judgement asked this turn, by node (plan, analyze, refine), in order."""
    fallbacks: list[str]
    """Each judgement that took its deterministic fallback because the reply did not fit, by node."""
    tool_calls: list[ToolCallRecord]
    """Tools called by analyze: name, arguments, and the error each returned."""
