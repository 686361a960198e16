"""The agent's nodes: plan → retrieve → analyze → (refine → retrieve)* → answer.

Judgements (plan, analyze, refine) are schemas the model is constrained to by its provider's own
mechanism (``graphs/agent/judgements.py``, ``models/structured.py``); each still has a deterministic
fallback, recorded in state, for a reply that does not fit. Nodes read their settings from the run's
Context (``run_context``) and the clients it resolves to (``resources_for``), nothing else, and report
their steps on LangGraph's custom stream (``step``) for whoever streams with ``"custom"``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from itertools import zip_longest
from typing import Any, Literal

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.config import get_config
from langgraph.constants import CONFIG_KEY_CHECKPOINTER
from langgraph.runtime import Runtime

from config import Node
from graphs.agent.budget import fit_budget
from graphs.agent.citations import check_citations, markdown_safe, render_answer, source_of
from graphs.agent.context import Context, run_context
from graphs.agent.judgements import about, content_words, copies_example, key_words, points_back
from graphs.agent.resources import Resources, resources_for
from graphs.agent.state import AgentState, ToolCallRecord
from graphs.agent.transcript import history_of, into_log, move_out
from ingest.tokens import identifiers_in
from models import Judgement
from models.reasoning import split_thinking
from prompts.agent import ANALYZE, ANALYZE_WITH_TOOLS, ANSWER, EMPTY_ANSWER, HYDE, NOTHING_FOUND, PLAN, REFINE
from retrievers import in_repo
from retrievers.navigation import Lookup, lookup_documents, lookups_in
from retrievers.rerank import Reranked, rerank_with
from retrievers.walk import Trail, described_in, described_kind, hops_for, relation_in, walk
from tools.history import history_documents

log = logging.getLogger("cairn.agent")

MAX_QUERIES = 4
#: The most of a HyDE snippet that is searched (a query, not a document).
HYDE_CHARS = 600
_FENCED = re.compile(r"```[\w+-]*\n(.*?)(?:```|$)", re.DOTALL)
#: Whether a question's ranking also fuses in what the best chunk calls. Off: on the eval sets it gained
#: on two and lost more than 0.01 MRR on two (docs/benchmarks.md, bench_walk.py's agent-callees).
CALLEES_OF_TOP = False
MAX_TOOL_CALLS = 4
EXCERPT_CHARS = 600  # of each chunk shown to analyze, which only judges relevance


def _question_of(messages: Sequence[BaseMessage]) -> str:
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


def step(runtime: Runtime[Context] | None, node: str, status: str, **data: Any) -> None:
    """Report a step on the run's custom stream: the node, running or done, and what it found."""
    if runtime is not None:
        runtime.stream_writer({"node": node, "status": status, **data})


def _judged(runtime: Runtime[Context] | None, node: str, judgement: Judgement) -> None:
    """Report a judgement's thinking (a reasoning model's) as a step; it goes nowhere else."""
    if judgement.thinking:
        step(runtime, node, "thinking", thinking=judgement.thinking)


# ---------------------------------------------------------------- plan


async def plan(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Choose the turn's search queries (and a standalone question); reset the per-turn fields.

    The model rewrites the question when the plan setting asks for it: by default only for a
    follow-up, which needs the conversation folded in; a first question is searched as it is,
    together with the identifiers it names, and the model call is saved.
    """
    context, resources = await _resolve(runtime)
    messages = state["messages"]
    question = _question_of(messages)
    fitted = history_of(messages[:-1], context.history_tokens, state)  # the policy: graphs.agent.budget.History
    history = fitted.messages
    ask_model = context.plan == "model" or (context.plan == "auto" and bool(history))
    step(runtime, Node.PLAN, "running", planned_by="model" if ask_model else "question")
    fallbacks: list[str] = []
    standalone = question
    planned: list[str] = []
    earlier = _question_of(messages[:-1]) if history else ""
    if ask_model:
        judgement = await resources.judges[Node.PLAN].ainvoke(PLAN.format_messages(history=history, question=question))
        _judged(runtime, Node.PLAN, judgement)
        standalone, planned = _checked_plan(judgement, question, earlier)
        if standalone == question and not planned:
            fallbacks.append(Node.PLAN)  # no reply that fit, or one copying the prompt's example: the question
    # The user's own words are always searched: a small model's rewrite may lose what mattered.
    context_names = identifiers_in(earlier) if history else []
    follow_up = [f"{' '.join(key_words(earlier))} {question}"] if history and points_back(question) else []
    # "Which functions call the helper that ...": a relation of something described, not named: walked
    # in the symbol graph from what the search finds (retrieve), which searches the description alone too.
    walk = relation_in(question) or relation_in(standalone) or ""
    described = [d for d in (described_in(question),) if d] if walk else []
    hyde = [snippet] if context.hyde and (snippet := await _hypothetical(resources, standalone)) else []
    queries = _dedupe([question, *described, *hyde, *planned, *identifiers_in(question), *context_names, *follow_up])
    queries = queries[:MAX_QUERIES]
    # A follow-up the model did not make standalone (no rewrite, or one still saying "it") carries the
    # question it follows, so analyze and answer know what "it" is.
    if history and (standalone == question or points_back(standalone)) and (context_names or points_back(question)):
        standalone = f"{standalone} (follow-up to: {earlier})"
    # "What calls X", "where is X defined", "which modules import X": answered from the symbol graph too.
    lookups = [{"kind": lookup.kind, "target": lookup.target} for lookup in lookups_in(question)]
    if not lookups and standalone != question:
        lookups = [{"kind": lookup.kind, "target": lookup.target} for lookup in lookups_in(standalone)]
    walk = "" if lookups else walk  # a named target is looked up exactly instead
    step(runtime, Node.PLAN, "done", queries=queries, question=standalone, lookups=lookups, walk=walk, hyde=bool(hyde),
         history=fitted.as_dict())  # fmt: skip
    return {
        "question": standalone,
        "queries": queries,
        "lookups": lookups,
        "walk": walk,
        "walked": [],
        "planned_by": "model" if ask_model else "question",
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
        "judged": [Node.PLAN] if ask_model else [],
        "fallbacks": fallbacks,
        "tool_calls": [],
        "history": fitted.as_dict(),
        # a long session's moved-out turns (graphs.agent.transcript) as they were: present in every run's output
        "digest": state.get("digest", []),
        "moved": state.get("moved", 0),
        "transcript": state.get("transcript", ""),
        "logged": state.get("logged", 0),
        "logged_answers": state.get("logged_answers", 0),
    }


async def _hypothetical(resources: Resources, question: str) -> str:
    """HyDE: a snippet the model imagines answers the question (its code only, at most HYDE_CHARS), or ""."""
    reply = await resources.models[Node.PLAN].ainvoke(HYDE.format_messages(question=question))
    visible, _thinking = split_thinking(str(reply.content))
    fenced = _FENCED.search(visible)
    snippet = (fenced.group(1) if fenced else visible).strip()[:HYDE_CHARS]
    if not snippet or copies_example(snippet):
        log.info("plan: no hypothetical snippet from the model (HyDE)")
        return ""
    return snippet


def _checked_plan(judgement: Judgement, question: str, earlier: str) -> tuple[str, list[str]]:
    """Return the model's standalone question and queries, without what copies the prompt's example or is
    about nothing in the conversation (each counted in the log); the question itself when nothing is left."""
    parsed = judgement.parsed
    if parsed is None:
        return question, []
    conversation = f"{earlier}\n{question}"
    planned = [q for q in parsed.queries if not copies_example(q) and about(q, conversation)]
    rewrite = parsed.question.strip()
    # A rewrite must keep what the latest question adds: a small model often repeats the earlier question
    # ("And where is its capacity set?" -> "How does the LRU cache evict entries?").
    new_words = content_words(question) - content_words(earlier)
    keeps_question = not earlier or not new_words or bool(content_words(rewrite) & new_words)
    fits = rewrite and keeps_question and not copies_example(rewrite) and about(rewrite, conversation)
    standalone = rewrite if fits else question
    rejected = [q for q in parsed.queries if q not in planned] + ([rewrite] if standalone != rewrite else [])
    if rejected:
        log.info("plan: rejected %s (the prompt's example, or not about the question)", rejected)
    return standalone, planned


# ---------------------------------------------------------------- retrieve


def _key(document: Document) -> tuple[str, int, int]:
    meta = document.metadata
    return meta["path"], meta["start_line"], meta["end_line"]


def fuse_rankings(rankings: Sequence[Sequence[Document]], rrf_k: int) -> list[Document]:
    """Fuse the rankings of several queries by reciprocal rank fusion (a chunk several queries find rises)."""
    scores: dict[tuple[str, int, int], float] = {}
    first_seen: dict[tuple[str, int, int], Document] = {}
    for ranking in rankings:
        for rank, document in enumerate(ranking, start=1):
            key = _key(document)
            scores[key] = scores.get(key, 0.0) + 1.0 / (rrf_k + rank)
            first_seen.setdefault(key, document)
    return [first_seen[key] for key in sorted(scores, key=lambda key: -scores[key])]


async def retrieve(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Search each query, fuse the rankings, keep the best k new chunks (after the relevant ones kept).

    The chunks analyze judged relevant in an earlier round stay, first; the rest of a round is the k
    best chunks of its queries, fused by reciprocal rank fusion, then everything is trimmed to the
    token budget. k chunks a round is what a single retrieval would give the model, so the judgement
    costs no more prompt than answering straight away would.
    """
    context, resources = await _resolve(runtime)
    queries = state.get("queries", [])
    lookups = [Lookup(**lookup) for lookup in state.get("lookups", [])] if not state.get("rounds") else []
    step(runtime, Node.RETRIEVE, "running", queries=queries)
    # Embedding the queries and searching are CPU work: off the event loop, so a service stays responsive.
    rankings: list[list[Document]] = await asyncio.to_thread(resources.retriever.batch, queries) if queries else []
    exact = await asyncio.to_thread(_looked_up, resources, lookups, context.k) if lookups else []
    walked: list[str] = []
    if state.get("walk") and not state.get("rounds") and rankings:
        asked = _question_of(state["messages"])
        # Seeds come from the ranking for the description alone ("crops or pads a string ...") when it was
        # searched: the words about the relation ("which code calls") pull other code up.
        described = described_in(asked)
        seeding = [rankings[queries.index(described)]] if described in queries else rankings
        target = (described_kind(asked), described or "")
        found, trail = await asyncio.to_thread(
            _walked, resources, seeding, state["walk"], hops_for(asked), target, context
        )
        exact, walked = [*found, *exact], [str(t) for t in trail]
        for line in walked:
            step(runtime, Node.RETRIEVE, "walking", trail=line)
    previous = state.get("documents", [])
    kept_before = [d for i, d in enumerate(previous) if i in set(state.get("relevant", []))]
    seen = {_key(d) for d in kept_before}
    exact = [d for d in exact if _key(d) not in seen]
    seen |= {_key(d) for d in exact}
    if not state.get("walk") and not lookups and not state.get("rounds") and rankings and CALLEES_OF_TOP:
        # "How does X work": the definitions the best chunk calls as one more ranking (the helper doing the work).
        rankings = [*rankings, await asyncio.to_thread(_callees_of_top, resources, rankings, context)]
    found = [d for d in fuse_rankings(rankings, context.rrf_k) if _key(d) not in seen]
    if context.rerank and context.rerank_model and found:
        asked = state.get("question") or _question_of(state["messages"])
        reranked = await asyncio.to_thread(_reranked, context, asked, found)
        found = reranked.documents
        if reranked.warning:
            step(runtime, Node.RETRIEVE, "warning", warning=reranked.warning)
    # The graph's answers first (up to k), then search's best to fill k: never fewer than two of those.
    searched = found[: max(context.k - len(exact), min(2, len(found)))]
    kept = fit_budget([*kept_before, *exact, *searched], context.document_tokens)
    step(runtime, Node.RETRIEVE, "done", found=len(found) + len(exact), looked_up=len(exact), kept=len(kept))
    return {"documents": kept, "relevant": [], "searched": [*state.get("searched", []), *queries],
            "walked": [*state.get("walked", []), *walked]}  # fmt: skip


def _walked(
    resources: Resources,
    rankings: list[list[Document]],
    relation: str,
    hops: int,
    target: tuple[str | None, str],
    context: Context,
) -> tuple[list[Document], list[Trail]]:
    """Follow the question's relation in the symbol graph from the search's best hits, per index.

    ``target`` is the kind of definition the question describes and its description (``described_kind``,
    ``described_in``). The described definition comes first, then what the walk found from it (callers,
    callees, importers or subclasses); they go ahead of the search's other hits.
    """
    fused = fuse_rankings(rankings, context.rrf_k)
    spans_repos = len(resources.indexes) > 1
    documents: list[Document] = []
    trail: list[Trail] = []
    for name, index in resources.indexes.items():
        mine = [d for d in fused if d.metadata.get("repo", "") == name] if spans_repos else fused
        if spans_repos:  # across repositories the hits carry the repository's prefix; the graph does not
            mine = [_unprefixed(d, name) for d in mine]
        found, followed = walk(index, mine, relation, hops=hops, kind=target[0], described=target[1])
        documents += [in_repo(d, name) if spans_repos and name else d for d in found]
        trail += followed
    return documents[: context.k], trail


def _reranked(context: Context, question: str, found: list[Document]) -> Reranked:
    """The fused ranking reordered by the reranker (CAIRN_RERANK): the fused order, with a warning, if it fails."""
    key = context.rerank_api_key.get_secret_value() if context.rerank_api_key else None
    return rerank_with(str(context.rerank_model), key, question, found, k=len(found), top_n=context.rerank_top_n)


def _callees_of_top(resources: Resources, rankings: list[list[Document]], context: Context) -> list[Document]:
    """The definitions the fused search's best chunk calls, as one more ranking to fuse (none across repositories)."""
    if len(resources.indexes) != 1:
        return []
    (index,) = resources.indexes.values()
    found, _ = walk(index, fuse_rankings(rankings, context.rrf_k)[:1], "callees", seeds=1, limit=3)
    return [d for d in found if not str(d.metadata.get("walk", "")).startswith("described")]


def _unprefixed(document: Document, repo: str) -> Document:
    """A hit across repositories with its path as its own repository's graph knows it (no ``repo/``)."""
    meta = {**document.metadata, "path": str(document.metadata["path"]).removeprefix(f"{repo}/")}
    return Document(page_content=document.page_content, metadata=meta)


def _looked_up(resources: Resources, lookups: Sequence[Lookup], k: int) -> list[Document]:
    """Run plan's lookups (the symbol graph's; a file's history from git) on every index searched.

    Up to k documents, the lookups interleaved.
    """
    per_lookup: list[list[Document]] = []
    spans_repos = len(resources.indexes) > 1
    for lookup in lookups:
        documents: list[Document] = []
        for name, index in resources.indexes.items():
            if lookup.kind == "history":  # from a git MCP server, when one is configured
                found = history_documents(resources.mcp, index, lookup.target) if resources.mcp else []
            else:
                found = lookup_documents(index, lookup, k)
            documents.extend(in_repo(document, name) if spans_repos and name else document for document in found)
        per_lookup.append(documents)
    merged: dict[tuple[str, int, int], Document] = {}
    for each_lookup in zip_longest(*per_lookup):  # the first of every lookup's chunks, then the seconds, ...
        for document in each_lookup:
            if document is not None:
                merged.setdefault(_key(document), document)
    return list(merged.values())[:k]


# ---------------------------------------------------------------- analyze


def excerpts(documents: Sequence[Document], *, max_chars: int | None = None) -> str:
    """Number the documents as the prompts show them: ``[n] [path:start-end] symbol`` then the code.

    The same documents always give the same text, byte for byte: that is what lets analyze's and
    answer's prompts share a prefix the model server keeps in its KV cache.
    """

    def one(n: int, d: Document) -> str:
        symbol = d.metadata.get("symbol")
        text = d.page_content if max_chars is None else d.page_content[:max_chars]
        return f"({n}) [{d.metadata['citation']}]{' ' + symbol if symbol else ''}\n{text}"

    return "\n\n".join(one(n, d) for n, d in enumerate(documents, start=1))


def _analyze_excerpts(context: Context, documents: Sequence[Document]) -> str:
    return excerpts(documents, max_chars=EXCERPT_CHARS if context.prompt_layout == "compact" else None)


def score_fallback(documents: Sequence[Document], k: int) -> list[int]:
    """Return the documents whose retrieval score is at least half the best one (at most k)."""
    if not documents:
        return []
    scores = [float(d.metadata.get("score") or 0.0) for d in documents]
    best = max(scores)
    ranked = sorted(range(len(documents)), key=lambda i: -scores[i])
    return sorted(i for i in ranked[:k] if scores[i] >= best * 0.5)


async def _gather_with_tools(
    context: Context, resources: Resources, question: str, documents: list[Document]
) -> tuple[list[Document], list[ToolCallRecord]]:
    """Let a tool-calling model fetch more code; tool errors are recorded (ToolMessage status), never raised."""
    calls: list[ToolCallRecord] = []
    try:
        # a Runnable declares no bind_tools: chat models (and their with_fallbacks chains) have it, others raise below
        model = resources.models[Node.ANALYZE].bind_tools(list(resources.tools))  # type: ignore[attr-defined]
    except (NotImplementedError, AttributeError, TypeError) as exc:
        log.info("analyze: model cannot call tools (%s); continuing without", exc)
        return documents, calls
    by_name = {tool.name: tool for tool in resources.tools}
    messages: list[BaseMessage] = ANALYZE_WITH_TOOLS.format_messages(
        question=question, excerpts=_analyze_excerpts(context, documents)
    )
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
    step(runtime, Node.ANALYZE, "running", documents=len(documents))
    if context.use_tools and resources.tools:
        documents, calls = await _gather_with_tools(context, resources, question, documents)
        tool_calls.extend(calls)
    if not documents:
        step(runtime, Node.ANALYZE, "done", relevant=0, sufficient=False)
        return {"documents": documents, "relevant": [], "sufficient": False, "missing": question,
                "tool_calls": tool_calls}  # fmt: skip
    judgement = await resources.judges[Node.ANALYZE].ainvoke(
        ANALYZE.format_messages(question=question, excerpts=_analyze_excerpts(context, documents))
    )
    _judged(runtime, Node.ANALYZE, judgement)
    verdict = judgement.parsed
    relevant = sorted({n - 1 for n in verdict.relevant if n <= len(documents)}) if verdict is not None else []
    if verdict is None or (verdict.sufficient and not relevant):  # unparsed, or "enough" with nothing relevant
        fallbacks.append(Node.ANALYZE)
        relevant = score_fallback(documents, context.k)
        sufficient, missing = bool(relevant), ""
    else:
        sufficient, missing = verdict.sufficient and bool(relevant), verdict.missing
    step(runtime, Node.ANALYZE, "done", relevant=len(relevant), sufficient=sufficient)
    return {
        "documents": documents,
        "relevant": relevant,
        "sufficient": sufficient,
        "missing": missing,
        "judged": [*state.get("judged", []), Node.ANALYZE],
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
    step(runtime, Node.REFINE, "running", missing=missing)
    judgement = await resources.judges[Node.REFINE].ainvoke(
        REFINE.format_messages(question=question, searched="; ".join(searched), missing=missing)
    )
    _judged(runtime, Node.REFINE, judgement)
    queries = _dedupe(list(judgement.parsed.queries), searched) if judgement.parsed is not None else []
    if not queries:
        fallbacks.append(Node.REFINE)
        words = [w for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", f"{missing} {question}")]
        queries = _dedupe([missing, *identifiers_in(missing), " ".join(words[:8])], searched) or [
            f"{question} {state.get('rounds', 0) + 1}"
        ]
    queries = queries[:MAX_QUERIES]
    step(runtime, Node.REFINE, "done", queries=queries)
    return {
        "queries": queries,
        "rounds": state.get("rounds", 0) + 1,
        "judged": [*state.get("judged", []), Node.REFINE],
        "fallbacks": fallbacks,
    }


# ---------------------------------------------------------------- answer


def answer_prompt(
    shown: Sequence[Document], chosen: Sequence[Document], question: str, history: Sequence[BaseMessage] = ()
) -> list[BaseMessage]:
    """Return the answer's prompt: the ``shown`` excerpts, then the task naming the ``chosen`` ones.

    Naming the excerpts by their citations, and one of them as the example, shows a small model the
    exact form to cite (measured on httpx: SmolLM2 wrote "(2)" and "Excerpt 1" when they were named by
    number, and its answers cited a valid path in 2 of 12 questions instead of 6).
    """
    return ANSWER.format_messages(
        history=list(history),
        excerpts=excerpts(shown),
        use=f"the excerpt{'s' if len(chosen) > 1 else ''} {_named(chosen)}",
        example=f"[{chosen[0].metadata['citation']}]",
        question=question,
    )


def _named(documents: Sequence[Document]) -> str:
    """Name excerpts by their citations, as the answer should cite them: "[a.py:1-9] and [b.py:3-4]"."""
    names = [f"[{d.metadata['citation']}]" for d in documents]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


async def answer(state: AgentState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Answer from the relevant documents with checked citations, or say plainly that nothing was found."""
    context, resources = await _resolve(runtime)
    documents = state.get("documents", [])
    chosen = [i for i in state.get("relevant", []) if i < len(documents)]
    relevant = [documents[i] for i in chosen]
    if not relevant:
        step(runtime, Node.ANSWER, "done", citations=[], sources=[])
        return await _answer_update(state, context, AIMessage(NOTHING_FOUND), answer=NOTHING_FOUND, sources=[],
                                    citations=[], dropped_citations=[])  # fmt: skip
    step(runtime, Node.ANSWER, "running", sources=len(relevant))
    # shared: the excerpts analyze read, byte for byte (a KV-cache hit), the chosen ones named in the task
    shown = documents if context.prompt_layout == "shared" else relevant
    history = history_of(state["messages"][:-1], context.history_tokens, state).messages
    prompt = answer_prompt(shown, relevant, state["question"], history)
    reply = await resources.models[Node.ANSWER].ainvoke(prompt, stop=context.stop or None)
    visible, _thinking = split_thinking(str(reply.content))  # a reasoning model's thinking stays out
    text, valid, dropped = check_citations(visible, documents)
    empty = not text.strip()
    text = EMPTY_ANSWER if empty else markdown_safe(text)  # never a bare Sources list
    sources = [source_of(d) for d in relevant]
    if context.prompt_layout == "shared":  # it was shown every excerpt: all are its sources, chosen ones first
        sources += [source_of(d, relevant=False) for i, d in enumerate(documents) if i not in set(chosen)]
    usage = getattr(reply, "usage_metadata", None) or {}
    metadata = reply.response_metadata or {}
    finish = metadata.get("finish_reason") or metadata.get("done_reason") or "stop"
    message = AIMessage(render_answer(text, sources), response_metadata={"usage": dict(usage), "finish_reason": finish})
    step(runtime, Node.ANSWER, "done", citations=valid, dropped_citations=dropped, sources=sources, empty=empty)
    return await _answer_update(state, context, message, answer=text, sources=sources, citations=valid,
                                dropped_citations=dropped, empty_answer=empty)  # fmt: skip


async def _answer_update(state: AgentState, context: Context, message: AIMessage, **update: Any) -> dict[str, Any]:
    """Return the answer's update; on a session, older turns move out of its messages (``graphs.agent.transcript``)."""
    try:  # a run that keeps its state: a checkpointer, and a thread to keep it on
        configurable = get_config().get("configurable", {})
    except RuntimeError:  # called outside a run
        configurable = {}
    checkpointer, thread = configurable.get(CONFIG_KEY_CHECKPOINTER), configurable.get("thread_id")
    moving = {}
    if checkpointer is not None and thread is not None:
        moving = move_out([*state["messages"], message], context.history_tokens, state)
        moving = await into_log(checkpointer, str(thread), state, moving)
    return {**update, **moving, "messages": [*moving.get("messages", ()), message]}
