"""What a run's Context resolves to: model clients, the loaded index, its retriever and tools.

Each is cached by what determines it (a model client by its whole ``ModelConfig``, the index by its
folder and current generation, tools by index and selection), so resolving per node call costs a
few dictionary look-ups and one small file read.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from cairn.errors import CairnError
from config import MODEL_NODES, Node
from graphs.agent.context import Context
from graphs.agent.judgements import AnalyzeJudgement, PlanJudgement, RefineJudgement
from models import Judgement, chat_model, judge_model
from retrievers import AcrossReposRetriever, SearchIndex, load_search_index, make_retriever
from tools import across_repos, load_tools, tool_context_for
from tools.mcp import McpHub, hub_for, langchain_tool, parse_servers

log = logging.getLogger("cairn.agent")


@dataclass(frozen=True, slots=True)
class Resources:
    """The clients and index a run's nodes work with."""

    models: dict[str, Runnable]
    judges: dict[str, Runnable[Any, Judgement]]
    indexes: dict[str, SearchIndex]
    """Repository name → loaded index ("" for the context's index folder); several when the run spans them."""
    retriever: BaseRetriever
    tools: tuple[BaseTool, ...]
    mcp: McpHub | None = None
    """The configured MCP servers (CAIRN_MCP_SERVERS), or None: their tools, and git history lookups."""


#: The schema each judging node's reply must fit.
JUDGEMENTS = {Node.PLAN: PlanJudgement, Node.ANALYZE: AnalyzeJudgement, Node.REFINE: RefineJudgement}

_tools: weakref.WeakKeyDictionary[SearchIndex, dict[tuple[str, ...] | None, tuple[BaseTool, ...]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def _tools_for(index: SearchIndex, enabled: list[str] | None) -> tuple[BaseTool, ...]:
    """Return the enabled tools over ``index``, built once per loaded index (not per node call)."""
    key = tuple(enabled) if enabled is not None else None
    with _lock:
        per_index = _tools.setdefault(index, {})
        if key not in per_index:
            per_index[key] = tuple(load_tools(tool_context_for(index), enabled))
        return per_index[key]


def load_indexes(context: Context) -> dict[str, SearchIndex]:
    """Load the index(es) the run searches: one, or every repository that can serve when it spans them.

    Across repositories, one that cannot serve (built with another embedding model, damaged) is
    logged and left out, and the others answer; only when none can does its error reach the caller.
    """
    specs = context.index_specs()
    if not context.spans_repos:
        return {name: load_search_index(spec) for name, spec in specs.items()}
    indexes: dict[str, SearchIndex] = {}
    errors: list[CairnError] = []
    for name, spec in specs.items():
        try:
            indexes[name] = load_search_index(spec)
        except CairnError as exc:
            log.warning("repository %s left out of the search: %s", name, exc)
            errors.append(exc)
    if not indexes:
        raise errors[0]
    return indexes


def resources_for(context: Context) -> Resources:
    """Return the run's model clients, index(es), retriever and tools (loading indexes on first use)."""
    indexes = load_indexes(context)
    options = {"k": context.k, "depth": context.fusion_depth, "rrf_k": context.rrf_k}
    if context.spans_repos:
        retriever: BaseRetriever = AcrossReposRetriever(
            retrievers={name: make_retriever(context.retriever, index, **options) for name, index in indexes.items()},
            k=context.k,
            rrf_k=context.rrf_k,
        )
    else:
        retriever = make_retriever(context.retriever, next(iter(indexes.values())), **options)
    tools: tuple[BaseTool, ...] = ()
    hub = hub_for(parse_servers(context.mcp_servers))
    if context.use_tools:
        per_repo = {name: _tools_for(index, context.tools) for name, index in indexes.items()}
        tools = tuple(across_repos(per_repo)) if context.spans_repos else next(iter(per_repo.values()))
        if hub is not None:  # other servers' allowed tools, beside Cairn's own
            tools += tuple(langchain_tool(hub, remote) for remote in hub.tools())
    return Resources(
        models={node: chat_model(context.model_config(node)) for node in MODEL_NODES},
        judges={node: judge_model(context.model_config(node), schema) for node, schema in JUDGEMENTS.items()},
        indexes=indexes,
        retriever=retriever,
        tools=tools,
        mcp=hub,
    )
