"""The agent's nodes: plan → retrieve → analyze → (refine → retrieve)* → answer.

Every model judgement has a deterministic fallback, so a tiny model whose output does not parse
degrades the answer but never breaks the graph. Nodes read their settings from the run's Context
(``run_context``) and the clients it resolves to (``resources_for``), nothing else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.runtime import Runtime

from config import Node
from graphs.agent.budget import fit_budget, trim_history
from graphs.agent.citations import check_citations, render_answer, source_of
from graphs.agent.context import Context, run_context
from graphs.agent.resources import Resources, resources_for
from graphs.agent.state import AgentState, ToolCallRecord
from prompts.agent import ANALYZE, ANALYZE_WITH_TOOLS, ANSWER, NOTHING_FOUND, PLAN, REFINE

log = logging.getLogger("cairn.agent")

MAX_QUERIES = 4
MAX_TOOL_CALLS = 4
EXCERPT_CHARS = 600  # of each chunk shown to analyze, which only judges relevance

_IDENTIFIER = re.compile(
    r"\b(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+"  # dotted.names
    r"|[a-z0-9]+_[a-z0-9_]+"  # snake_case
    r"|[A-Za-z][a-z0-9]+[A-Z][A-Za-z0-9]*"  # camelCase
    r"|[A-Z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*"  # CapWords with two capitals
    r"|[A-Za-z_]\w*\(\))"  # calls()
)


def parse_json_object(text: str) -> dict[str, Any]:
    """Return the first JSON object in a model reply (code fences and chatter around it allowed)."""
    start = text.find("{")
    while start != -1:
        depth = 0
        in_string = escaped = False
        for index in range(start, len(text)):
            char = text[index]
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
                continue
            if char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    try:
                        value = json.loads(text[start : index + 1])
                    except json.JSONDecodeError:
                        break
                    if isinstance(value, dict):
                        return value
                    break
        start = text.find("{", start + 1)
    raise ValueError("no JSON object in the reply")


def identifiers_in(text: str) -> list[str]:
    """Return code-like names in text: dotted.names, snake_case, camelCase, CapWords, calls()."""
    seen: list[str] = []
    for match in _IDENTIFIER.findall(text):
        name = match.rstrip("()")
        if name not in seen:
            seen.append(name)
    return seen


def _question_of(messages: Sequence[AnyMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    raise ValueError("the conversation has no user message")


def _dedupe(items: list[str], exclude: Sequence[str] = ()) -> list[str]:
    out: list[str] = []
    lowered = {e.strip().lower() for e in exclude}
    for item in items:
        key = item.strip().lower()
        if key and key not in lowered and key not in {o.lower() for o in out}:
            out.append(item.strip())
    return out


async def _resolve(runtime: Runtime[Context] | None) -> tuple[Context, Resources]:
    """Return the run's Context and its resources; off the event loop (the first call loads the index)."""
    context = run_context(runtime)
    return context, await asyncio.to_thread(resources_for, context)


# ---------------------------------------------------------------- plan


async def plan(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Rewrite the latest question to stand alone and choose search queries; reset per-turn fields."""
    context, resources = await _resolve(runtime)
    messages = state["messages"]
    question = _question_of(messages)
    history = trim_history(messages[:-1], context.history_tokens)
    fallbacks: list[str] = []
    try:
        reply = await resources.models[Node.PLAN].ainvoke(PLAN.format_messages(history=history, question=question))
        data = parse_json_object(str(reply.content))
        standalone = str(data.get("question") or question).strip()
        planned = [str(q) for q in data["queries"] if isinstance(q, str | int | float)]
        if not planned:
            raise ValueError("no queries")
    except (ValueError, KeyError, TypeError):
        standalone, planned = question, []
        fallbacks.append(Node.PLAN)
    # The user's own words are always searched: a small model's rewrite may lose what mattered.
    context_names = identifiers_in(_question_of(history)) if history else []
    queries = _dedupe([question, *planned, *identifiers_in(question), *context_names])[:MAX_QUERIES]
    if history and Node.PLAN in fallbacks and context_names:
        standalone = f"{question} (earlier: {', '.join(context_names[:3])})"
    return {
        "question": standalone,
        "queries": queries,
        "searched": [],
        "documents": [],
        "relevant": [],
        "sufficient": False,
        "missing": "",
        "rounds": 0,
        "answer": "",
        "sources": [],
        "citations": [],
        "dropped_citations": [],
        "fallbacks": fallbacks,
        "tool_calls": [],
    }


# ---------------------------------------------------------------- retrieve


def _key(document: Document) -> tuple[str, int, int]:
    meta = document.metadata
    return meta["path"], meta["start_line"], meta["end_line"]


async def retrieve(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Search each query, merge results round-robin by rank, de-duplicate, trim to the token budget."""
    context, resources = await _resolve(runtime)
    queries = state.get("queries", [])
    # Embedding the queries and searching are CPU work: off the event loop, so a service stays responsive.
    rankings: list[list[Document]] = await asyncio.to_thread(resources.retriever.batch, queries) if queries else []
    previous = state.get("documents", [])
    relevant = set(state.get("relevant", []))
    ordered = [d for i, d in enumerate(previous) if i in relevant] + [
        d for i, d in enumerate(previous) if i not in relevant
    ]
    seen = {_key(d) for d in ordered}
    for rank in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if rank < len(ranking) and _key(ranking[rank]) not in seen:
                seen.add(_key(ranking[rank]))
                ordered.append(ranking[rank])
    return {
        "documents": fit_budget(ordered, context.document_tokens),
        "relevant": [],
        "searched": [*state.get("searched", []), *queries],
    }


# ---------------------------------------------------------------- analyze


def _excerpts(documents: Sequence[Document]) -> str:
    def head(d: Document) -> str:
        symbol = d.metadata.get("symbol")
        return f"{d.metadata['citation']}{' ' + symbol if symbol else ''}"

    return "\n\n".join(f"[{n}] {head(d)}\n{d.page_content[:EXCERPT_CHARS]}" for n, d in enumerate(documents, start=1))


def score_fallback(documents: Sequence[Document], k: int) -> list[int]:
    """Return the documents whose retrieval score is at least half the best one (at most k)."""
    if not documents:
        return []
    scores = [float(d.metadata.get("score") or 0.0) for d in documents]
    best = max(scores)
    ranked = sorted(range(len(documents)), key=lambda i: -scores[i])
    return sorted(i for i in ranked[:k] if scores[i] >= best * 0.5)


async def _gather_with_tools(
    resources: Resources, question: str, documents: list[Document]
) -> tuple[list[Document], list[ToolCallRecord]]:
    """Let a tool-calling model fetch more code; tool errors are recorded (ToolMessage status), never raised."""
    calls: list[ToolCallRecord] = []
    try:
        model = resources.models[Node.ANALYZE].bind_tools(list(resources.tools))  # type: ignore[attr-defined]
    except (NotImplementedError, AttributeError, TypeError) as exc:
        log.info("analyze: model cannot call tools (%s); continuing without", exc)
        return documents, calls
    by_name = {tool.name: tool for tool in resources.tools}
    messages: list[BaseMessage] = ANALYZE_WITH_TOOLS.format_messages(question=question, excerpts=_excerpts(documents))
    reply = await model.ainvoke(messages)
    added: list[Document] = []
    for call in (getattr(reply, "tool_calls", None) or [])[:MAX_TOOL_CALLS]:
        record = ToolCallRecord(name=call["name"], args=call.get("args", {}), error=None)
        tool = by_name.get(call["name"])
        if tool is None:
            record["error"] = f"no tool named {call['name']!r}"
        else:
            try:
                result: ToolMessage = await tool.ainvoke({**call, "type": "tool_call"})
            except Exception as exc:  # a broken plugin tool must not break the answer
                record["error"] = f"{type(exc).__name__}: {exc}"
            else:
                if result.status == "error":
                    record["error"] = str(result.content)
                else:
                    added.extend(result.artifact or [])
        calls.append(record)
    return documents + added, calls


async def analyze(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Judge which documents are relevant and whether they suffice (model first, scores as fallback)."""
    context, resources = await _resolve(runtime)
    documents = list(state.get("documents", []))
    question = state["question"]
    fallbacks = list(state.get("fallbacks", []))
    tool_calls = list(state.get("tool_calls", []))
    if context.use_tools and resources.tools:
        documents, calls = await _gather_with_tools(resources, question, documents)
        tool_calls.extend(calls)
    if not documents:
        return {"documents": documents, "relevant": [], "sufficient": False, "missing": question,
                "tool_calls": tool_calls}  # fmt: skip
    try:
        reply = await resources.models[Node.ANALYZE].ainvoke(
            ANALYZE.format_messages(question=question, excerpts=_excerpts(documents))
        )
        data = parse_json_object(str(reply.content))
        relevant = sorted({int(n) - 1 for n in data["relevant"] if 1 <= int(n) <= len(documents)})
        sufficient = bool(data.get("sufficient")) and bool(relevant)
        missing = str(data.get("missing") or "")
        if not relevant and data.get("sufficient"):
            raise ValueError("claims sufficiency with nothing relevant")
    except (ValueError, KeyError, TypeError):
        fallbacks.append(Node.ANALYZE)
        relevant = score_fallback(documents, context.k)
        sufficient, missing = bool(relevant), ""
    return {
        "documents": documents,
        "relevant": relevant,
        "sufficient": sufficient,
        "missing": missing,
        "fallbacks": fallbacks,
        "tool_calls": tool_calls,
    }


async def route_after_analyze(state: AgentState, runtime: Runtime[Context]) -> Literal["refine", "answer"]:
    """Refine while context is insufficient and rounds remain; otherwise answer."""
    if state.get("sufficient") or state.get("rounds", 0) >= run_context(runtime).max_rounds:
        return "answer"
    return "refine"


# ---------------------------------------------------------------- refine


async def refine(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write new queries for what is missing, then search again."""
    _, resources = await _resolve(runtime)
    question, missing = state["question"], state.get("missing") or state["question"]
    searched = state.get("searched", [])
    fallbacks = list(state.get("fallbacks", []))
    try:
        reply = await resources.models[Node.REFINE].ainvoke(
            REFINE.format_messages(question=question, searched="; ".join(searched), missing=missing)
        )
        queries = _dedupe([str(q) for q in parse_json_object(str(reply.content))["queries"]], searched)
        if not queries:
            raise ValueError("no new queries")
    except (ValueError, KeyError, TypeError):
        fallbacks.append(Node.REFINE)
        words = [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", f"{missing} {question}")]
        queries = _dedupe([missing, *identifiers_in(missing), " ".join(words[:8])], searched) or [
            f"{question} {state.get('rounds', 0) + 1}"
        ]
    return {"queries": queries[:MAX_QUERIES], "rounds": state.get("rounds", 0) + 1, "fallbacks": fallbacks}


# ---------------------------------------------------------------- answer


async def answer(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer from the relevant documents with checked citations, or say plainly that nothing was found."""
    context, resources = await _resolve(runtime)
    documents = state.get("documents", [])
    relevant = [documents[i] for i in state.get("relevant", []) if i < len(documents)]
    if not relevant:
        return {"messages": [AIMessage(NOTHING_FOUND)], "answer": NOTHING_FOUND, "sources": [], "citations": [],
                "dropped_citations": []}  # fmt: skip
    excerpts = "\n\n".join(
        f"[{d.metadata['citation']}]{' ' + d.metadata['symbol'] if d.metadata.get('symbol') else ''}\n{d.page_content}"
        for d in relevant
    )
    history = trim_history(state["messages"][:-1], context.history_tokens)
    reply = await resources.models[Node.ANSWER].ainvoke(
        ANSWER.format_messages(history=history, context=excerpts, question=state["question"]),
        stop=context.stop or None,
    )
    text, valid, dropped = check_citations(str(reply.content), documents)
    sources = [source_of(d) for d in relevant]
    usage = getattr(reply, "usage_metadata", None) or {}
    metadata = reply.response_metadata or {}
    finish = metadata.get("finish_reason") or metadata.get("done_reason") or "stop"
    message = AIMessage(render_answer(text, sources), response_metadata={"usage": dict(usage), "finish_reason": finish})
    return {"messages": [message], "answer": text, "sources": sources, "citations": valid, "dropped_citations": dropped}
