"""The Cairn service: its web page, an OpenAI-compatible chat API, LangServe routes, sessions in Redis, health.

``create_app(settings)`` builds the FastAPI app from the settings it is given (default: the
``CAIRN_*`` environment); they are resolved into the agent's Context once, here, and every request
starts from that. The lifespan loads the index, builds the model clients, opens the Redis
checkpointer, and closes them on shutdown. The routes live in ``serving/routes/``, the chat
orchestration in ``serving/chat.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import Scope

from cairn import __version__, telemetry
from cairn.processes import in_background
from config import Settings
from graphs.agent.resources import resources_for
from ingest.embedder import TextEmbedder
from ingest.watch import WatchBatch, WatchGroup
from retrievers import IndexSpec, cached_embedder, load_search_index, loaded_indexes
from serving import memory, request_log
from serving.contract import cairn_openapi, known_query_only
from serving.errors import REDIS_ERRORS, add_error_handlers
from serving.keys import ApiKey, is_loopback, parse_keys
from serving.mcp_endpoint import LazyMcp
from serving.observability import ObservabilityMiddleware
from serving.routes import code, health, metrics, openai, sessions, web
from serving.routes.langserve import add_langserve
from serving.security import AccessMiddleware, JsonGuard, RateLimit, RunLimiter, SharedRateLimit
from serving.service import Service

log = logging.getLogger("cairn.serving")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


#: Probes, scrapes and static files: answered without a trace of their own, so a liveness probe every
#: few seconds does not bury the traces of questions in the viewer.
UNTRACED_PATHS = frozenset({"/health", "/metrics", "/favicon.ico"})


def untraced(scope: Scope) -> bool:
    """Whether a request is left out of tracing (FastAPI's ``telemetry["exclude"]``)."""
    path = scope.get("path", "")
    return path in UNTRACED_PATHS or path.startswith(web.STATIC_PREFIX + "/")


def create_app(
    settings: Settings | None = None, *, embedder_factory: Callable[[], TextEmbedder] | None = None
) -> FastAPI:
    """Return the Cairn FastAPI app for ``settings`` (default: read from CAIRN_* and .env now).

    With ``settings.watch`` the lifespan also follows every served repository's source folder and
    re-indexes what changes (``ingest/watch.py``), embedding with ``embedder_factory`` (default:
    the model queries are embedded with, loaded once for both).
    """
    settings = settings or Settings()
    request_log.configure(settings.log_format)  # each worker builds its app: each logs the same way
    keys = parse_keys(k.get_secret_value() for k in settings.api_keys)  # an empty or repeated key: exit 11
    provider = telemetry.configure()  # exports only where OTEL_EXPORTER_OTLP_ENDPOINT says
    service = Service.build(settings)
    app = FastAPI(
        title="Cairn",
        version=__version__,
        description="Ask questions about an indexed repository; answers cite path:start-end.",
        lifespan=_lifespan(service, embedder_factory),
        dependencies=[Depends(known_query_only)],
        # FastAPI's own OpenTelemetry: the HTTP server span of each request (the parent of the agent's
        # spans, continuing an incoming `traceparent`); Cairn's metrics are its own, at /metrics.
        telemetry={
            "tracer_provider": provider,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "exclude": untraced,
        },
    )
    app.state.cairn = service
    # replacing the method is FastAPI's documented way to extend the schema; mypy refuses assigning to a method
    app.openapi = lambda: cairn_openapi(app)  # type: ignore[method-assign]
    add_error_handlers(app)
    for router in (health.router, metrics.router, openai.router, sessions.router, code.router, web.router):
        app.include_router(router)
    app.mount(web.STATIC_PREFIX, web.static_assets(), name="static")
    add_langserve(app, service)
    app.state.mcp = LazyMcp(service, loopback_only=is_loopback(settings.serve_host))
    app.router.routes.append(Route("/mcp", endpoint=app.state.mcp, methods=["GET", "POST", "DELETE"]))
    _add_middleware(app, service, keys)
    return app


def _lifespan(service: Service, embedder_factory: Callable[[], TextEmbedder] | None) -> Lifespan:
    """Return the app's lifespan: load the index and models, open Redis and the HTTP client, watch; then close."""
    settings = service.settings
    begun = [_start_warm_up(service)]  # the first start's, begun now; a later start (tests) warms up again

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.wrap_future(begun.pop() if begun else _start_warm_up(service))
        try:
            await service.saver.ping()
        except REDIS_ERRORS as exc:
            log.warning("Redis at %s is not answering (%s); sessions unavailable until it is", settings.redis_url, exc)
        service.http = httpx.AsyncClient(timeout=2.0)
        if settings.watch:
            await _start_watching(service, embedder_factory)
        # MCP's SDK loads after the rest, in the background: /ready does not wait for it (serving/mcp_endpoint.py)
        mcp = app.state.mcp.start()
        if settings.malloc_mmap_threshold_kb:  # large blocks mapped apart, back to the system when freed
            memory.map_large(settings.malloc_mmap_threshold_kb)
        trimming = []  # freed native memory back to the system every CAIRN_MALLOC_TRIM_S (serving/memory.py)
        if settings.malloc_trim_s:
            trimming.append(asyncio.create_task(memory.trimming(settings.malloc_trim_s), name="cairn-malloc-trim"))
        try:
            yield
        finally:
            app.state.mcp.stop()
            await _stop_background(stopping=[mcp], cancelled=trimming)
            if service.watchers is not None:
                await asyncio.to_thread(service.watchers.stop)
            await service.http.aclose()
            await service.saver.aclose()
            await asyncio.to_thread(telemetry.flush)

    return lifespan


async def _stop_background(
    *, stopping: list[asyncio.Task[None]], cancelled: list[asyncio.Task[None]], timeout: float = 10.0
) -> None:
    """End the lifespan's background tasks: wait for those told to stop (MCP's sessions) up to ``timeout``,
    cancel the rest, and log any that failed, so that the shutdown after this always runs."""
    for task in cancelled:
        task.cancel()
    done, pending = await asyncio.wait([*stopping, *cancelled], timeout=timeout)
    for task in pending:
        task.cancel()
    for task in done:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s failed: %s", task.get_name(), exc, exc_info=exc)


def _warm_up(service: Service) -> None:
    """Load the index, the model clients and tools, and run the embedding model once, before any question."""
    service.load_index()
    if service.index_error:
        log.warning("index not loaded: %s", service.index_error)
        return
    resources = resources_for(service.context)
    # the embedding model's first forward pass takes seconds (seen in a trace: 6.4 s of the first
    # question's `embed queries`); take it now rather than in a user's first question
    if resources.indexes:  # one embedding model serves every index
        next(iter(resources.indexes.values())).embed_queries(["warm up"])


def _start_warm_up(service: Service) -> concurrent.futures.Future[None]:
    """Begin ``_warm_up`` in a thread of its own; the lifespan waits for it before serving.

    Begun when the app is built, not when it starts: ONNX Runtime reads and optimises the embedding
    model with the GIL released, so that overlaps building the routes and starting uvicorn (0.2 s of
    a worker's start-up here, docs/benchmarks.md "Start-up").
    """
    return in_background(lambda: _warm_up(service), "cairn-warm-up")


async def _start_watching(service: Service, embedder_factory: Callable[[], TextEmbedder] | None) -> None:
    """Follow every served repository's source folder (``cairn serve --watch``), reloading what changes."""
    settings = service.settings

    def after_batch(batch: WatchBatch) -> None:
        _load_new_generation(settings, batch)
        if batch.result is not None and batch.result.generation is not None:
            service.load_index()  # /ready's generation and chunk count (loaded indexes: cheap)

    embed = embedder_factory or (lambda: cached_embedder(settings))
    service.watchers = await asyncio.to_thread(WatchGroup(settings, embedder_factory=embed, on_batch=after_batch).start)


def _add_middleware(app: FastAPI, service: Service, keys: list[ApiKey]) -> None:
    """Add CORS, the JSON checks, the run limits, access control and observability (outermost last)."""
    settings = service.settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Session-Id", "X-Cairn-Events"],
            expose_headers=["traceresponse"],
        )
    # kept in Redis: the limit holds across workers and replicas
    rate = None
    if settings.rate_limit:
        rate = RateLimit(settings.rate_limit, SharedRateLimit(settings.rate_limit, lambda: service.saver.client,
                                                              settings.redis_prefix))  # fmt: skip
    app.state.cairn_rate = rate  # a batch's extra inputs are counted against it (serving/routes/langserve.py)
    # innermost first: the JSON checks run after the key, the rate and the run limits let a request in
    app.add_middleware(JsonGuard)
    app.add_middleware(RunLimiter, slots=service.runs)
    app.add_middleware(AccessMiddleware, keys=keys, max_body_bytes=settings.max_body_bytes, rate=rate,
                       open_paths={"/metrics"} if settings.metrics_public else ())  # fmt: skip
    # outermost of Cairn's middleware: it counts every answer, a 401 or 429 included
    app.add_middleware(ObservabilityMiddleware, metrics=service.metrics)


def _load_new_generation(settings: Settings, batch: WatchBatch) -> None:
    """Load the generation a watcher just wrote, in its thread, so the next question does not wait for it.

    Only for an index this process has loaded already: loading one nobody asks about could unload,
    under CAIRN_INDEX_MEMORY_MB, one that is in use.
    """
    result = batch.result
    if result is None or result.generation is None:
        return
    index_dir = Path(result.index_dir).resolve()
    if index_dir in loaded_indexes():
        load_search_index(IndexSpec.from_settings(settings, index_dir))
