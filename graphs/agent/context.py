"""Run-time configuration of the agent: what LangGraph Studio shows and a caller may set per run."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal


@dataclass(kw_only=True)
class Context:
    """Per-run settings; None means 'use the CAIRN_* setting'."""

    model: str | None = field(
        default=None,
        metadata={"description": "Model for every node, e.g. 'ollama/qwen2.5-coder:7b' (default: CAIRN_MODEL)."},
    )
    plan_model: str | None = field(default=None, metadata={"description": "Model for plan."})
    analyze_model: str | None = field(default=None, metadata={"description": "Model for analyze."})
    refine_model: str | None = field(default=None, metadata={"description": "Model for refine."})
    answer_model: str | None = field(default=None, metadata={"description": "Model for answer."})
    retriever: Literal["hybrid", "dense", "keyword"] | None = field(
        default=None, metadata={"description": "Retriever to search with (default: CAIRN_AGENT_RETRIEVER)."}
    )
    k: int | None = field(default=None, metadata={"description": "Chunks retrieved per query."})
    max_rounds: int | None = field(default=None, metadata={"description": "Refine rounds allowed per question."})
    use_tools: bool | None = field(default=None, metadata={"description": "Let analyze call tools."})
    index_dir: str | None = field(default=None, metadata={"description": "Index folder to search."})
    temperature: float | None = field(
        default=None, metadata={"description": "Sampling temperature of the answer (default: CAIRN_MODEL_TEMPERATURE)."}
    )
    max_tokens: int | None = field(
        default=None, metadata={"description": "Longest answer, in tokens (default: CAIRN_MODEL_MAX_TOKENS)."}
    )
    stop: list[str] | None = field(default=None, metadata={"description": "Sequences that end the answer."})


def context_from_config(config: dict | None) -> Context:
    """Build a Context from a run config's ``configurable`` (how LangServe and Studio pass settings)."""
    configurable = (config or {}).get("configurable") or {}
    names = {f.name for f in fields(Context)}
    return Context(**{k: v for k, v in configurable.items() if k in names and v is not None})
