"""What the service builds once and every request shares: settings, the run context, graphs, Redis."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from langgraph.graph.state import CompiledStateGraph

from cairn.errors import CairnError
from cairn.telemetry import ContentPolicy
from config import Node, Settings
from graphs.agent.context import Context
from graphs.agent.graph import GRAPH_NAME, build_graph
from graphs.agent.telemetry import RunTelemetry
from models import probe_url
from retrievers import load_search_index
from serving.checkpoint import RedisCheckpointSaver
from serving.errors import REDIS_ERRORS, ServiceError, redis_down, translate
from serving.observability import ServiceMetrics

log = logging.getLogger("cairn.serving")


@dataclass
class Service:
    """The shared state of one app: its settings resolved into a Context once, the graphs, the saver."""

    settings: Settings
    context: Context
    saver: RedisCheckpointSaver
    graph: CompiledStateGraph
    session_graph: CompiledStateGraph
    index_error: str | None = None
    index_summary: dict[str, Any] = field(default_factory=dict)
    http: httpx.AsyncClient | None = None
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    content: ContentPolicy = field(default_factory=ContentPolicy)

    @classmethod
    def build(cls, settings: Settings) -> Service:
        """Resolve the settings into the service's Context and build its graphs and session store."""
        context = Context.from_settings(settings)
        saver = RedisCheckpointSaver.from_url(
            settings.redis_url, prefix=settings.redis_prefix, ttl=settings.session_ttl
        )
        builder = build_graph()
        return cls(
            settings=settings,
            context=context,
            saver=saver,
            graph=builder.compile(name=GRAPH_NAME),
            session_graph=builder.compile(checkpointer=saver, name=GRAPH_NAME),
            content=ContentPolicy(settings.trace_content),
        )

    def run_telemetry(self, session: str | None = None) -> RunTelemetry:
        """Return the callback that traces one agent run and feeds the service's metrics."""
        return RunTelemetry(content=self.content, metrics=self.metrics.agent, conversation=session)

    # ------------------------------------------------------------ the index

    def load_index(self) -> None:
        """Load (or reload) the index; remember why it failed instead of crashing the service."""
        try:
            index = load_search_index(self.context.index_spec())
        except CairnError as exc:
            self.index_error = str(exc)
            self.index_summary = {}
            return
        self.index_error = None
        self.metrics.index_chunks.set(len(index))
        self.index_summary = {
            "path": self.context.index_dir,
            "chunks": len(index),
            "generation": index.generation.path.name,
        }

    async def require_index(self) -> None:
        """Raise a 503 unless the index is loaded (an index built after start-up is picked up here)."""
        if self.index_error:
            await asyncio.to_thread(self.load_index)
            if self.index_error:
                raise ServiceError(503, f"No index is loaded: {self.index_error}", "index_unavailable", "server_error")

    # ------------------------------------------------------------ errors

    def redis_down(self, exc: BaseException) -> ServiceError:
        """Return the 503 for a session request while Redis is unavailable."""
        return redis_down(self.settings.redis_url, exc)

    def translate(self, exc: BaseException, context: Context | None = None) -> ServiceError:
        """Return the HTTP error for an exception raised while answering with ``context``."""
        context = context or self.context
        return translate(
            exc, model=context.node_model(Node.ANSWER), timeout=context.model_timeout, redis_url=self.settings.redis_url
        )

    # ------------------------------------------------------------ readiness

    async def check_model(self) -> dict[str, Any]:
        """Whether the endpoint of the model that answers (or its fallback) is reachable."""
        spec = self.context.node_model(Node.ANSWER)
        url = probe_url(spec, self.context.embedded_url)
        if url is None:
            return {"ok": True, "model": spec, "note": "this provider has no reachability probe"}
        assert self.http is not None
        try:
            await self.http.get(url)
        except httpx.HTTPError as exc:
            fallback = self.context.fallback_model
            fallback_url = probe_url(fallback, self.context.embedded_url) if fallback else None
            if fallback_url:
                try:
                    await self.http.get(fallback_url)
                    return {"ok": True, "model": spec, "warning": f"primary unreachable; fallback {fallback} answers"}
                except httpx.HTTPError:
                    pass
            return {
                "ok": False,
                "model": spec,
                "error": f"{url} unreachable ({type(exc).__name__})",
                "hint": "start the model server (cairn model serve, ollama serve, vllm serve)",
            }
        return {"ok": True, "model": spec, "endpoint": url}

    async def check_redis(self) -> dict[str, Any]:
        """Whether Redis answers a PING within two seconds."""
        try:
            await asyncio.wait_for(self.saver.ping(), timeout=2.0)
        except (TimeoutError, *REDIS_ERRORS) as exc:
            return {
                "ok": False,
                "url": self.settings.redis_url,
                "error": f"{type(exc).__name__}: {exc}",
                "hint": "start redis-server, or check CAIRN_REDIS_URL",
            }
        return {"ok": True, "url": self.settings.redis_url}

    def check_index(self) -> dict[str, Any]:
        """Whether the index is loaded, with its path, chunks and generation."""
        if self.index_error:
            self.load_index()
        if self.index_error:
            return {"ok": False, "error": self.index_error}
        return {"ok": True, **self.index_summary}


def service_of(request: Request) -> Service:
    """Return the app's Service (FastAPI dependency)."""
    return request.app.state.cairn


ServiceDep = Annotated[Service, Depends(service_of)]
