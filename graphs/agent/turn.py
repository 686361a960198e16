"""One chat turn, written once: the session's checks, the graph's stream, the answer's visible tokens, the end.

Every way in renders the same events: the OpenAI route turns them into ``chat.completion.chunk``
lines, ``cairn ask`` into a terminal, MCP's ``ask`` tool into progress notifications and a result.
What differs between them is only how they show a turn, never how it runs:

- ``Step``: a step of the agent (``{"node": "retrieve", "status": "done", ...}``), as the nodes report it;
- ``Token``: visible answer text, in order; a reasoning model's thinking is held out of it
  (``ThinkingFilter``), including the tail the filter holds back until the stream ends;
- ``Thinking``: that thinking, for whoever shows it as a step;
- ``Final``: the final state (answer, sources, citations), and whether any token was streamed.

A turn in a session checks that the session keeps to one repository, writes its checkpoint once
when it completes (``durability="exit"``), and, when it ends any other way (an error, a timeout,
its consumer leaving), takes back what it wrote if the checkpointer can (``rollback_run``): a
session holds whole turns only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Durability, StreamMode

from cairn.errors import SessionRepositoryMismatch
from config import Node
from graphs.agent.citations import MarkdownGuard
from graphs.agent.context import Context
from graphs.agent.sessions import recorded, repo_mismatch, session_metadata, title_of
from models.reasoning import ThinkingFilter

log = logging.getLogger("cairn.agent")


def describe_step(step: dict[str, Any]) -> str | None:
    """Return a step of the agent as a short line for people (None for steps not worth a line)."""
    node, status = step.get("node"), step.get("status")
    if status == "thinking":
        return f"{node}: thinking"
    if node == "plan":
        if status == "running":
            return "planning (rewriting the question)" if step.get("planned_by") == "model" else "planning"
        return None
    if node == "retrieve":
        if status == "walking":
            return str(step.get("trail", ""))
        if status == "warning":
            return str(step.get("warning", ""))
        if status == "running":
            return "searching " + ", ".join(f'"{q}"' for q in step.get("queries", []))
        exact = f" ({step['looked_up']} from the symbol graph)" if step.get("looked_up") else ""
        return f"found {step.get('found', 0)} chunks{exact}, kept {step.get('kept', 0)}"
    if node == "analyze":
        if status == "running":
            return f"reading {step.get('documents', 0)} chunks"
        return f"{step.get('relevant', 0)} relevant" + ("" if step.get("sufficient") else ", not enough")
    if node == "refine":
        return "searching again" if status == "running" else None
    if node == "answer" and status == "running":
        return "answering"
    return None


@dataclass(frozen=True, slots=True)
class Step:
    """A step of the agent, as its node reported it."""

    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Token:
    """Visible answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class Thinking:
    """A reasoning model's thinking, kept out of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """The turn's final state, and whether the answer was streamed token by token."""

    state: dict[str, Any]
    streamed: bool


TurnEvent = Step | Token | Thinking | Final


@dataclass(frozen=True, slots=True)
class Session:
    """Where a turn's conversation is kept: the checkpointer, the thread, and the id its user knows it by."""

    saver: BaseCheckpointSaver
    thread: str
    name: str


@runtime_checkable
class RollsBackRuns(Protocol):
    """A checkpointer that can delete what one run wrote to a thread (serving's ``RedisCheckpointSaver`` can)."""

    async def rollback_run(self, thread_id: str, run_id: str) -> int:
        """Delete the checkpoints ``run_id`` wrote to ``thread_id``; return how many."""
        ...


@dataclass
class Turn:
    """One turn of the agent: run it whole (``result``) or as events (``events``); see the module docstring."""

    graph: CompiledStateGraph[Any, Context, Any, Any]
    context: Context
    messages: Sequence[BaseMessage]
    session: Session | None = None
    callbacks: list[Any] = field(default_factory=list)
    run_name: str = "cairn-turn"
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: Set when the turn ran to its end (a consumer that stops early leaves it unset).
    completed: bool = False
    _checked: bool = False
    _title: str | None = None

    async def check(self) -> None:
        """Raise ``SessionRepositoryMismatch`` when the session is about another repository (once per turn)."""
        if self._checked or self.session is None:
            return
        found = await recorded(self.session.saver, self.session.thread)
        if mismatch := repo_mismatch(found.repo, self.context, self.session.name):
            raise SessionRepositoryMismatch(mismatch)
        question = next((m.text for m in reversed(self.messages) if isinstance(m, HumanMessage)), "")
        self._title = found.title or title_of(question) or None
        self._checked = True

    def _config(self) -> RunnableConfig:
        config = RunnableConfig(callbacks=list(self.callbacks), run_name=self.run_name)
        if self.session is not None:
            config["configurable"] = {"thread_id": self.session.thread}
            # the session remembers its repository; every checkpoint of this turn records its run id
            config["metadata"] = {**session_metadata(self.context, self._title), "run_id": self.run_id}
        return config

    def _durability(self) -> Durability | None:
        # a session's turn is written once, when it completes: one transaction per turn, not per step
        return "exit" if self.session is not None else None  # None: the graph's default

    async def result(self) -> dict[str, Any]:
        """Run the turn to its end and return the final state."""
        await self.check()
        try:
            state = await self.graph.ainvoke({"messages": list(self.messages)}, self._config(), context=self.context,
                                             durability=self._durability())  # fmt: skip
        except BaseException:
            await self.abandon()
            raise
        self.completed = True
        return state

    async def events(self, *, steps: bool = True) -> AsyncGenerator[TurnEvent, None]:
        """Run the turn, yielding its events (``Step`` only when ``steps``); ``Final`` comes last."""
        await self.check()
        modes: list[StreamMode] = ["messages", "values", "custom"] if steps else ["messages", "values"]
        # Pregel.astream is an async generator, declared AsyncIterator: closing it ends the graph's run
        stream = cast(AsyncGenerator[tuple[str, Any], None],
                      self.graph.astream({"messages": list(self.messages)}, self._config(), context=self.context,
                                         stream_mode=modes, durability=self._durability()))  # fmt: skip
        thinking = ThinkingFilter()
        markdown = MarkdownGuard()  # citations and identifiers as code spans, as the final answer has them
        final: dict[str, Any] = {}
        streamed = False
        try:
            async for mode, payload in stream:
                if mode == "values":
                    final = payload
                elif mode == "custom":
                    yield Step(payload)
                else:
                    chunk, meta = payload
                    if meta.get("langgraph_node") != Node.ANSWER or not isinstance(chunk, AIMessageChunk):
                        continue
                    if not chunk.content:
                        continue
                    visible, thought = thinking.feed(str(chunk.content))
                    if thought:
                        yield Thinking(thought)
                    # blank text before the first word is dropped: an answer of whitespace is no answer, and
                    # the reply then says so (answer: EMPTY_ANSWER) instead of sending a bare Sources list
                    if visible and (safe := markdown.feed(visible)) and (streamed or (safe := safe.lstrip())):
                        streamed = True
                        yield Token(safe)
            visible, thought = thinking.flush()  # the tail held back in case it began a tag
            if thought:
                yield Thinking(thought)
            safe = markdown.feed(visible) + markdown.flush()  # and the word held back until it ended
            if safe := safe if streamed else safe.lstrip():
                streamed = True
                yield Token(safe)
            self.completed = True
        finally:
            await stream.aclose()
            if not self.completed:
                await self.abandon()
        yield Final(final, streamed)

    async def abandon(self) -> None:
        """Take back what this turn wrote to its session; a cancelled caller leaves that to finish on its own."""
        if self.session is None or not isinstance(self.session.saver, RollsBackRuns):
            return
        await asyncio.shield(asyncio.ensure_future(self._rollback(self.session, self.session.saver)))

    async def _rollback(self, session: Session, saver: RollsBackRuns) -> None:
        try:
            removed = await saver.rollback_run(session.thread, self.run_id)
        except Exception as exc:  # the store is down: the turn is at worst half there, and logged
            log.warning("could not take back the unfinished turn of session %r: %s", session.name, exc)
            return
        if removed:
            log.info("took back an unfinished turn of session %r (%d checkpoint(s))", session.name, removed)
