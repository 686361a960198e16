"""What a run's Context resolves to: model clients, the loaded index, its retriever and tools.

Each is cached by what determines it (a model client by its whole ``ModelConfig``, the index by its
folder and current generation, tools by index and selection), so resolving per node call costs a
few dictionary look-ups and one small file read.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

from config import MODEL_NODES, Node
from graphs.agent.context import Context
from graphs.agent.judgements import AnalyzeJudgement, PlanJudgement, RefineJudgement
from models import Judgement, chat_model, judge_model
from retrievers import SearchIndex, load_search_index, make_retriever
from tools import load_tools, tool_context_for


@dataclass(frozen=True, slots=True)
class Resources:
    """The clients and index a run's nodes work with."""

    models: dict[str, Runnable]
    judges: dict[str, Runnable[Any, Judgement]]
    index: SearchIndex
    retriever: BaseRetriever
    tools: tuple[BaseTool, ...]


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


def resources_for(context: Context) -> Resources:
    """Return the run's model clients, index, retriever and tools (loading the index on first use)."""
    index = load_search_index(context.index_spec())
    return Resources(
        models={node: chat_model(context.model_config(node)) for node in MODEL_NODES},
        judges={node: judge_model(context.model_config(node), schema) for node, schema in JUDGEMENTS.items()},
        index=index,
        retriever=make_retriever(
            context.retriever, index, k=context.k, depth=context.fusion_depth, rrf_k=context.rrf_k
        ),
        tools=_tools_for(index, context.tools) if context.use_tools else (),
    )
