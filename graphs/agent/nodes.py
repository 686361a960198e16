"""The agent's nodes: plan → retrieve → analyze → (refine → retrieve)* → answer.

Every model judgement has a deterministic fallback, so a tiny model whose output does not parse
degrades the answer but never breaks the graph.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    trim_messages,
)
from langgraph.config import get_config
from langgraph.runtime import Runtime

from graphs.agent.citations import check_citations, find_citations
from graphs.agent.context import Context, context_from_config
from graphs.agent.deps import Dependencies, resolve
from graphs.agent.state import AgentState
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


def approx_tokens(text: str) -> int:
    """Estimate tokens (code runs about 3.5 characters a token); no tokenizer download needed."""
    return len(text) * 2 // 7 + 1


def _count_message_tokens(messages: list[BaseMessage]) -> int:
    return sum(approx_tokens(str(m.content)) + 4 for m in messages)


def trim_history(messages: list[AnyMessage], budget: int) -> list[BaseMessage]:
    """Return the most recent earlier turns that fit ``budget`` tokens, starting on a user turn."""
    earlier = [m for m in messages if isinstance(m, HumanMessage | AIMessage)]
    if not earlier:
        return []
    return trim_messages(
        earlier, max_tokens=budget, token_counter=_count_message_tokens, strategy="last", start_on="human"
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


def _question_of(messages: list[AnyMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text if hasattr(message, "text") else str(message.content)
    raise ValueError("the conversation has no user message")


def _dedupe(items: list[str], exclude: Sequence[str] = ()) -> list[str]:
    out: list[str] = []
    lowered = {e.strip().lower() for e in exclude}
    for item in items:
        key = item.strip().lower()
        if key and key not in lowered and key not in {o.lower() for o in out}:
            out.append(item.strip())
    return out


def _deps(runtime: Runtime[Context] | None) -> Dependencies:
    if runtime is not None and runtime.context is not None:
        return resolve(runtime.context)
    # No context= given (LangServe, Studio): the run's `configurable` carries the same fields.
    try:
        config = get_config()
    except RuntimeError:
        config = None
    return resolve(context_from_config(config))


async def _adeps(runtime: Runtime[Context] | None) -> Dependencies:
    """Resolve off the event loop: the first call loads the index, later ones stat its CURRENT file."""
    return await asyncio.to_thread(_deps, runtime)


# ---------------------------------------------------------------- plan


async def plan(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Rewrite the latest question to stand alone and choose search queries; reset per-turn fields."""
    deps = await _adeps(runtime)
    messages = state["messages"]
    question = _question_of(messages)
    history = trim_history(messages[:-1], deps.history_tokens)
    fallbacks: list[str] = []
    try:
        reply = await deps.models["plan"].ainvoke(PLAN.format_messages(history=history, question=question))
        data = parse_json_object(str(reply.content))
        standalone = str(data.get("question") or question).strip()
        planned = [str(q) for q in data["queries"] if isinstance(q, str | int | float)]
        if not planned:
            raise ValueError("no queries")
    except (ValueError, KeyError, TypeError):
        standalone, planned = question, []
        fallbacks.append("plan")
    # The user's own words are always searched: a small model's rewrite may lose what mattered.
    context_names = identifiers_in(_question_of(history)) if history else []
    queries = _dedupe([question, *planned, *identifiers_in(question), *context_names])[:MAX_QUERIES]
    if history and "plan" in fallbacks and context_names:
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
        "citations": [],
        "dropped_citations": [],
        "fallbacks": fallbacks,
        "tool_calls": [],
    }


# ---------------------------------------------------------------- retrieve


def _document(hit: Any) -> dict[str, Any]:
    chunk = hit.chunk
    return {
        "row": hit.row,
        "citation": chunk.citation,
        "path": chunk.path,
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "symbol": chunk.symbol,
        "language": chunk.language,
        "text": chunk.text,
        "score": hit.score,
    }


def fit_budget(documents: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """Keep documents in order while their text fits ``budget`` tokens."""
    kept, used = [], 0
    for document in documents:
        cost = approx_tokens(document["text"]) + 20
        if used + cost > budget:
            continue  # a later, shorter chunk may still fit
        kept.append(document)
        used += cost
    return kept


async def retrieve(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Search each query, merge results round-robin by rank, de-duplicate, trim to the token budget."""
    deps = await _adeps(runtime)
    queries = state.get("queries", [])
    # Embedding the queries and searching are CPU work: off the event loop, so a service stays responsive.
    rankings = await asyncio.to_thread(deps.index.search_many, queries, deps.k, mode=deps.retriever)
    previous = state.get("documents", [])
    relevant = set(state.get("relevant", []))
    ordered = [d for i, d in enumerate(previous) if i in relevant] + [
        d for i, d in enumerate(previous) if i not in relevant
    ]
    seen = {d["row"] for d in ordered}
    for rank in range(max((len(r) for r in rankings), default=0)):
        for ranking in rankings:
            if rank < len(ranking) and ranking[rank].row not in seen:
                seen.add(ranking[rank].row)
                ordered.append(_document(ranking[rank]))
    return {
        "documents": fit_budget(ordered, deps.context_tokens),
        "relevant": [],
        "searched": [*state.get("searched", []), *queries],
    }


# ---------------------------------------------------------------- analyze


def _excerpts(documents: list[dict[str, Any]]) -> str:
    return "\n\n".join(
        f"[{n}] {d['citation']}{' ' + d['symbol'] if d.get('symbol') else ''}\n{d['text'][:EXCERPT_CHARS]}"
        for n, d in enumerate(documents, start=1)
    )


def score_fallback(documents: list[dict[str, Any]], k: int) -> list[int]:
    """Return the documents whose retrieval score is at least half the best one (at most k)."""
    if not documents:
        return []
    best = max(d["score"] for d in documents)
    ranked = sorted(range(len(documents)), key=lambda i: -documents[i]["score"])
    return sorted(i for i in ranked[:k] if documents[i]["score"] >= best * 0.5)


async def _gather_with_tools(
    deps: Dependencies, question: str, documents: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Let a tool-calling model fetch more code; tool errors are recorded, never raised."""
    calls: list[dict[str, Any]] = []
    try:
        model = deps.models["analyze"].bind_tools(list(deps.tools))
    except (NotImplementedError, AttributeError, TypeError) as exc:
        log.info("analyze: model cannot call tools (%s); continuing without", exc)
        return documents, calls
    by_name = {tool.name: tool for tool in deps.tools}
    messages: list[BaseMessage] = ANALYZE_WITH_TOOLS.format_messages(question=question, excerpts=_excerpts(documents))
    reply = await model.ainvoke(messages)
    added: list[dict[str, Any]] = []
    for call in (getattr(reply, "tool_calls", None) or [])[:MAX_TOOL_CALLS]:
        tool = by_name.get(call["name"])
        record = {"name": call["name"], "args": call.get("args", {}), "error": None}
        try:
            if tool is None:
                raise LookupError(f"no tool named {call['name']!r}")
            output = await tool.ainvoke(call.get("args", {}))
            text = output.content if isinstance(output, ToolMessage) else str(output)
            if text.startswith(("refused", "Error", "invalid pattern")) or "is not an indexed file" in text:
                record["error"] = text
            else:
                added.extend(_documents_from_tool(call["name"], text))
        except Exception as exc:  # a broken tool must not break the answer
            record["error"] = f"{type(exc).__name__}: {exc}"
        calls.append(record)
    return documents + added, calls


def _documents_from_tool(name: str, text: str) -> list[dict[str, Any]]:
    """Turn a tool's output into citable documents when it names line ranges."""
    citations = find_citations(text.split("\n", 1)[0])
    if not citations:
        return []
    _, citation = citations[0]
    return [
        {
            "row": -1,
            "citation": str(citation),
            "path": citation.path,
            "start_line": citation.start,
            "end_line": citation.end,
            "symbol": f"({name})",
            "language": "",
            "text": text,
            "score": 0.0,
        }
    ]


async def analyze(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Judge which documents are relevant and whether they suffice (model first, scores as fallback)."""
    deps = await _adeps(runtime)
    documents = state.get("documents", [])
    question = state["question"]
    fallbacks = list(state.get("fallbacks", []))
    tool_calls = list(state.get("tool_calls", []))
    if deps.use_tools and deps.tools:
        documents, calls = await _gather_with_tools(deps, question, documents)
        tool_calls.extend(calls)
    if not documents:
        return {"documents": documents, "relevant": [], "sufficient": False, "missing": question,
                "tool_calls": tool_calls}  # fmt: skip
    try:
        reply = await deps.models["analyze"].ainvoke(
            ANALYZE.format_messages(question=question, excerpts=_excerpts(documents))
        )
        data = parse_json_object(str(reply.content))
        relevant = sorted({int(n) - 1 for n in data["relevant"] if 1 <= int(n) <= len(documents)})
        sufficient = bool(data.get("sufficient")) and bool(relevant)
        missing = str(data.get("missing") or "")
        if not relevant and data.get("sufficient"):
            raise ValueError("claims sufficiency with nothing relevant")
    except (ValueError, KeyError, TypeError):
        fallbacks.append("analyze")
        relevant = score_fallback(documents, deps.k)
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
    deps = await _adeps(runtime)
    if state.get("sufficient") or state.get("rounds", 0) >= deps.max_rounds:
        return "answer"
    return "refine"


# ---------------------------------------------------------------- refine


async def refine(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Write new queries for what is missing, then search again."""
    deps = await _adeps(runtime)
    question, missing = state["question"], state.get("missing") or state["question"]
    searched = state.get("searched", [])
    fallbacks = list(state.get("fallbacks", []))
    try:
        reply = await deps.models["refine"].ainvoke(
            REFINE.format_messages(question=question, searched="; ".join(searched), missing=missing)
        )
        queries = _dedupe([str(q) for q in parse_json_object(str(reply.content))["queries"]], searched)
        if not queries:
            raise ValueError("no new queries")
    except (ValueError, KeyError, TypeError):
        fallbacks.append("refine")
        words = [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", f"{missing} {question}")]
        queries = _dedupe([missing, *identifiers_in(missing), " ".join(words[:8])], searched) or [
            f"{question} {state.get('rounds', 0) + 1}"
        ]
    return {"queries": queries[:MAX_QUERIES], "rounds": state.get("rounds", 0) + 1, "fallbacks": fallbacks}


# ---------------------------------------------------------------- answer


async def answer(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer from the relevant documents with checked citations, or say plainly that nothing was found."""
    deps = await _adeps(runtime)
    documents = state.get("documents", [])
    relevant = [documents[i] for i in state.get("relevant", []) if i < len(documents)]
    if not relevant:
        return {"messages": [AIMessage(NOTHING_FOUND)], "answer": NOTHING_FOUND, "citations": [],
                "dropped_citations": []}  # fmt: skip
    context = "\n\n".join(
        f"[{d['citation']}]{' ' + d['symbol'] if d.get('symbol') else ''}\n{d['text']}" for d in relevant
    )
    history = trim_history(state["messages"][:-1], deps.history_tokens)
    reply = await deps.models["answer"].ainvoke(
        ANSWER.format_messages(history=history, context=context, question=state["question"]),
        stop=list(deps.stop) or None,
    )
    text, valid, dropped = check_citations(str(reply.content), documents)
    sources = [d["citation"] for d in relevant]
    listing = "\n".join(f"- {d['citation']}{' (' + d['symbol'] + ')' if d.get('symbol') else ''}" for d in relevant)
    final = f"{text}\n\nSources:\n{listing}" if text else f"Sources:\n{listing}"
    usage = getattr(reply, "usage_metadata", None) or {}
    finish = (reply.response_metadata or {}).get("finish_reason") or (reply.response_metadata or {}).get("done_reason")
    return {
        "messages": [AIMessage(final, response_metadata={"usage": dict(usage), "finish_reason": finish or "stop"})],
        "answer": final,
        "citations": valid + [c for c in sources if c not in valid],
        "dropped_citations": dropped,
    }
