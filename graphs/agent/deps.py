"""Resolve a run's Context against the settings into the models, index and tools the nodes use."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool

from config import Settings, get_settings
from graphs.agent.context import Context
from models import build_chat_model
from retrievers import SearchIndex, load_search_index
from tools import load_tools, tool_context_for

NODES = ("plan", "analyze", "refine", "answer")


@dataclass(frozen=True, slots=True)
class Dependencies:
    """Everything a node needs, resolved once per distinct configuration."""

    settings: Settings
    models: dict[str, BaseChatModel]
    index: SearchIndex
    retriever: str
    k: int
    max_rounds: int
    use_tools: bool
    tools: tuple[BaseTool, ...]
    stop: tuple[str, ...] = ()

    @property
    def context_tokens(self) -> int:
        """Tokens of retrieved code that fit the answer prompt (window minus answer and overhead)."""
        window = self.settings.model_context_tokens
        return max(256, window - self.settings.model_max_tokens - 600 - window // 8)

    @property
    def history_tokens(self) -> int:
        """Tokens of earlier conversation kept for plan and answer."""
        return self.settings.model_context_tokens // 8


_models: dict[tuple[str, str | None, int, float], BaseChatModel] = {}
_lock = threading.Lock()
MAX_CACHED_MODELS = 64  # per-request temperature / max_tokens make variants; keep the cache bounded


def chat_model(spec: str, settings: Settings, max_tokens: int, temperature: float | None = None) -> BaseChatModel:
    """Return the (cached) chat model for a spec with the configured fallback."""
    temperature = settings.model_temperature if temperature is None else temperature
    key = (spec, settings.model_fallback, max_tokens, temperature)
    with _lock:
        if key not in _models:
            if len(_models) >= MAX_CACHED_MODELS:
                del _models[next(iter(_models))]
            tuned = settings.model_copy(update={"model_temperature": temperature})
            _models[key] = build_chat_model(spec, tuned, fallback=settings.model_fallback, max_tokens=max_tokens)
        return _models[key]


def clear_model_cache() -> None:
    """Forget built chat models (after settings or provider registrations change)."""
    with _lock:
        _models.clear()


_tools: weakref.WeakKeyDictionary[SearchIndex, dict[tuple[str, ...] | None, tuple[BaseTool, ...]]] = (
    weakref.WeakKeyDictionary()
)


def _tools_for(index: SearchIndex, enabled: list[str] | None) -> tuple[BaseTool, ...]:
    """Return the enabled tools over ``index``, built once per loaded index (not per node call)."""
    key = tuple(enabled) if enabled is not None else None
    with _lock:
        per_index = _tools.setdefault(index, {})
        if key not in per_index:
            per_index[key] = tuple(load_tools(tool_context_for(index), enabled))
        return per_index[key]


def resolve(context: Context | None, settings: Settings | None = None) -> Dependencies:
    """Return the dependencies of a run: Context values where set, CAIRN_* settings otherwise."""
    context = context or Context()
    settings = settings or get_settings()
    if context.index_dir:
        settings = settings.model_copy(update={"index_dir": context.index_dir})
    models = {
        node: chat_model(
            getattr(context, f"{node}_model") or context.model or settings.node_model(node),
            settings,
            (context.max_tokens or settings.model_max_tokens) if node == "answer" else settings.model_judge_max_tokens,
            context.temperature if node == "answer" else None,
        )
        for node in NODES
    }
    index = load_search_index(settings)
    use_tools = settings.agent_use_tools if context.use_tools is None else context.use_tools
    tools = _tools_for(index, settings.tools) if use_tools else ()
    return Dependencies(
        settings=settings,
        models=models,
        index=index,
        retriever=context.retriever or settings.agent_retriever,
        k=context.k or settings.agent_k,
        max_rounds=settings.agent_max_rounds if context.max_rounds is None else context.max_rounds,
        use_tools=use_tools,
        tools=tools,
        stop=tuple(context.stop or ()),
    )
