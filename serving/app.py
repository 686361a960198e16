"""The Cairn service: LangServe routes, an OpenAI-compatible chat API, sessions in Redis, health checks.

``create_app()`` builds the FastAPI app; its lifespan loads the index once, builds the model clients
and the Redis checkpointer, and closes them on shutdown. Settings come from ``CAIRN_*`` (see README).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph.state import CompiledStateGraph
from starlette.exceptions import HTTPException as StarletteHTTPException

from cairn import __version__
from cairn.errors import CairnError
from config import Settings, get_settings
from graphs.agent.context import Context
from graphs.agent.graph import build_graph
from models import probe_url
from models.errors import ModelUnreachable, translate_model_error
from serving.checkpoint import RedisCheckpointSaver
from serving.openai_api import (
    DONE,
    MODEL_ID,
    ChatCompletionRequest,
    TokenUsage,
    completion_body,
    completion_id,
    models_body,
    new_turn,
    stream_chunks,
    to_langchain,
)
from serving.security import AccessMiddleware

log = logging.getLogger("cairn.serving")

SESSION_HEADER = "x-session-id"
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class ServiceError(Exception):
    """An error with an HTTP status and an OpenAI-style body."""

    def __init__(self, status: int, message: str, code: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind


def error_response(status: int, message: str, code: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


@dataclass
class Service:
    """What the lifespan builds once and every request shares."""

    settings: Settings
    saver: RedisCheckpointSaver
    graph: CompiledStateGraph
    session_graph: CompiledStateGraph
    index_error: str | None = None
    index_summary: dict[str, Any] = field(default_factory=dict)
    http: httpx.AsyncClient | None = None

    def load_index(self) -> None:
        """Load (or reload) the index; remember why it failed instead of crashing the service."""
        from retrievers import load_search_index

        try:
            index = load_search_index(self.settings)
        except CairnError as exc:
            self.index_error = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            self.index_summary = {}
            return
        self.index_error = None
        self.index_summary = {
            "path": str(self.settings.resolved_index_dir),
            "chunks": len(index),
            "generation": index.generation.path.name,
        }

    def context(self, body: ChatCompletionRequest | None = None) -> Context:
        index_dir = str(self.settings.resolved_index_dir)
        if body is None:
            return Context(index_dir=index_dir)
        return Context(
            index_dir=index_dir,
            temperature=body.temperature,
            max_tokens=body.max_completion_tokens or body.max_tokens,
            stop=body.stop_list(),
        )


def service_of(request: Request) -> Service:
    return request.app.state.cairn


def create_app(settings: Settings | None = None) -> FastAPI:
    """Return the Cairn FastAPI app (settings default to the process-wide CAIRN_* ones)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service: Service = app.state.cairn
        service.load_index()
        if service.index_error:
            log.warning("index not loaded: %s", service.index_error)
        else:
            from graphs.agent.deps import resolve

            resolve(service.context())  # build the model clients (and the tools) once, up front
        try:
            await service.saver.ping()
        except REDIS_ERRORS as exc:
            log.warning("Redis at %s is not answering (%s); sessions unavailable until it is", settings.redis_url, exc)
        service.http = httpx.AsyncClient(timeout=2.0)
        try:
            yield
        finally:
            await service.http.aclose()
            await service.saver.aclose()

    saver = RedisCheckpointSaver.from_url(settings.redis_url, prefix=settings.redis_prefix, ttl=settings.session_ttl)
    builder = build_graph()
    service = Service(
        settings=settings,
        saver=saver,
        graph=builder.compile(name="cairn-agent"),
        session_graph=builder.compile(checkpointer=saver, name="cairn-agent"),
    )
    app = FastAPI(
        title="Cairn",
        version=__version__,
        description="Ask questions about an indexed repository; answers cite path:start-end.",
        lifespan=lifespan,
    )
    app.state.cairn = service
    _add_error_handlers(app)
    _add_routes(app)
    _add_langserve(app, service)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Session-Id"],
        )
    app.add_middleware(
        AccessMiddleware,
        keys=[k.get_secret_value() for k in settings.api_keys],
        max_body_bytes=settings.max_body_bytes,
        rate_limit=settings.rate_limit,
    )
    return app


# ---------------------------------------------------------------- errors


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return error_response(400, "Invalid request: " + "; ".join(problems), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), f"http_{exc.status_code}")

    @app.exception_handler(ModelUnreachable)
    async def _model(request: Request, exc: ModelUnreachable) -> JSONResponse:
        return error_response(exc.http_status, f"{exc.message} ({exc.hint})", "model_unavailable", "server_error")


# ---------------------------------------------------------------- routes


def _add_routes(app: FastAPI) -> None:
    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """The process is alive (no credentials needed)."""
        return {"status": "ok", "version": __version__}

    @app.get("/ready", tags=["health"])
    async def ready(request: Request) -> JSONResponse:
        """Whether the index is loaded and the model endpoint and Redis answer; says what is missing."""
        service = service_of(request)
        if service.index_error:
            service.load_index()  # an index built after start-up is picked up here
        checks = {
            "index": {"ok": True, **service.index_summary}
            if not service.index_error
            else {"ok": False, "error": service.index_error},
            "model": await _check_model(service),
            "redis": await _check_redis(service),
        }
        ok = all(check["ok"] for check in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @app.get("/v1/models", tags=["openai"])
    async def list_models() -> dict[str, Any]:
        """The agent, as the one model this API serves."""
        return models_body()

    @app.get("/v1/models/{model_id}", tags=["openai"])
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id != MODEL_ID:
            raise ServiceError(404, f"The model {model_id!r} does not exist; use {MODEL_ID!r}", "model_not_found")
        return models_body()["data"][0]

    @app.post("/v1/chat/completions", tags=["openai"], response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI-compatible chat completions, streaming or not; answers cite path:start-end.

        A conversation is kept server-side when the request names a session (``X-Session-Id`` header,
        or the ``user`` field); then only the new user turn is taken from ``messages``.
        """
        return await _chat(service_of(request), body, request)

    @app.get("/sessions", tags=["sessions"])
    async def list_sessions(request: Request, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Sessions, most recently used first."""
        service = service_of(request)
        limit = max(1, min(limit, 500))
        try:
            threads = await service.saver.thread_ids(limit=limit, offset=max(0, offset))
        except REDIS_ERRORS as exc:
            raise _redis_down(service, exc) from exc
        return {"sessions": [{"id": t, "updated_at": updated} for t, updated in threads]}

    @app.get("/sessions/{session_id}", tags=["sessions"])
    async def get_session(session_id: str, request: Request) -> dict[str, Any]:
        """A session's messages and telemetry: message count, tokens used, context size."""
        service = service_of(request)
        try:
            snapshot = await service.session_graph.aget_state({"configurable": {"thread_id": session_id}})
            usage = await service.saver.session_usage(session_id)
        except REDIS_ERRORS as exc:
            raise _redis_down(service, exc) from exc
        messages = snapshot.values.get("messages", []) if snapshot and snapshot.values else []
        if not messages:
            raise ServiceError(404, f"No session {session_id!r}", "session_not_found")
        from graphs.agent.nodes import approx_tokens

        return {
            "id": session_id,
            "messages": [
                {"role": "user" if isinstance(m, HumanMessage) else "assistant", "content": str(m.content)}
                for m in messages
                if isinstance(m, HumanMessage | AIMessage)
            ],
            "telemetry": {
                "message_count": len(messages),
                "turns": usage.get("turns", 0),
                "prompt_tokens": usage.get("prompt_tokens", 0),
                "completion_tokens": usage.get("completion_tokens", 0),
                "total_tokens": usage.get("total_tokens", 0),
                "context_tokens": sum(approx_tokens(str(m.content)) for m in messages),
                "context_window": service.settings.model_context_tokens,
            },
        }

    @app.delete("/sessions/{session_id}", tags=["sessions"], status_code=204)
    async def delete_session(session_id: str, request: Request) -> Response:
        """Forget a session (its messages and checkpoints)."""
        service = service_of(request)
        try:
            if not await service.saver.has_thread(session_id):
                raise ServiceError(404, f"No session {session_id!r}", "session_not_found")
            await service.saver.adelete_thread(session_id)
        except REDIS_ERRORS as exc:
            raise _redis_down(service, exc) from exc
        return Response(status_code=204)


def _redis_down(service: Service, exc: BaseException) -> ServiceError:
    return ServiceError(
        503,
        f"The session store (Redis at {service.settings.redis_url}) is unavailable: {exc}. "
        "Start Redis (make run starts one), or send the request without a session to use it statelessly.",
        "session_store_unavailable",
        "server_error",
    )


async def _check_model(service: Service) -> dict[str, Any]:
    spec = service.settings.node_model("answer")
    url = probe_url(spec, service.settings)
    if url is None:
        return {"ok": True, "model": spec, "note": "this provider has no reachability probe"}
    assert service.http is not None
    try:
        await service.http.get(url)
    except httpx.HTTPError as exc:
        fallback = service.settings.model_fallback
        fallback_url = probe_url(fallback, service.settings) if fallback else None
        if fallback_url:
            try:
                await service.http.get(fallback_url)
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


async def _check_redis(service: Service) -> dict[str, Any]:
    try:
        await asyncio.wait_for(service.saver.ping(), timeout=2.0)
    except (TimeoutError, *REDIS_ERRORS) as exc:
        return {
            "ok": False,
            "url": service.settings.redis_url,
            "error": f"{type(exc).__name__}: {exc}",
            "hint": "start redis-server, or check CAIRN_REDIS_URL",
        }
    return {"ok": True, "url": service.settings.redis_url}


# ---------------------------------------------------------------- chat


def _session_id(body: ChatCompletionRequest, request: Request) -> str | None:
    session = request.headers.get(SESSION_HEADER) or body.user
    if session is not None and not (0 < len(session) <= 200):
        raise ServiceError(400, "A session id must be 1 to 200 characters", "invalid_session_id")
    return session


async def _chat(service: Service, body: ChatCompletionRequest, request: Request) -> Response:
    if body.model not in {MODEL_ID, "cairn"}:
        raise ServiceError(
            404, f"The model {body.model!r} does not exist; use {MODEL_ID!r} (GET /v1/models)", "model_not_found"
        )
    if service.index_error:
        service.load_index()
        if service.index_error:
            raise ServiceError(503, f"No index is loaded: {service.index_error}", "index_unavailable", "server_error")
    session = _session_id(body, request)
    handler = TokenUsage()
    config: dict[str, Any] = {"callbacks": [handler], "run_name": "cairn-chat"}
    if session:
        graph = service.session_graph
        config["configurable"] = {"thread_id": session}
        messages = new_turn(body.messages)
        try:
            await service.saver.ping()
        except REDIS_ERRORS as exc:
            raise _redis_down(service, exc) from exc
    else:
        graph = service.graph
        messages = to_langchain(body.messages)
    context = service.context(body)
    created = int(time.time())
    # durability="exit": a session's turn is written once, when it completes (one Redis transaction per
    # turn instead of one per step); a turn killed midway leaves the session as it was before it.
    durability: dict[str, Any] = {"durability": "exit"} if session else {}

    if not body.stream:
        try:
            state = await graph.ainvoke({"messages": messages}, config, context=context, **durability)
        except Exception as exc:
            raise _translate(service, exc) from exc
        if session:
            await _record_usage(service, session, handler.as_openai())
        return JSONResponse(completion_body(completion_id(), created, state, handler, session))

    events = graph.astream(
        {"messages": messages}, config, context=context, stream_mode=["messages", "values"], **durability
    )
    chunks = stream_chunks(events, handler, session, bool(body.stream_options and body.stream_options.include_usage))
    # Hold the response until the answer starts (or the run fails), so a model or Redis failure before
    # the first token is a proper 503/504 rather than an error inside a 200 stream.
    first = await anext(chunks)  # the role chunk, sent without waiting
    try:
        second = await anext(chunks)
    except StopAsyncIteration:
        second = None
    except Exception as exc:
        await chunks.aclose()
        raise _translate(service, exc) from exc

    async def relay() -> AsyncIterator[str]:
        yield first
        if second is None:
            return
        yield second
        try:
            async for line in chunks:
                if line == DONE and session:  # count the turn's tokens before the client sees the end
                    await _record_usage(service, session, handler.as_openai())
                yield line
        except Exception as exc:  # after the first token: report inside the stream, then end it
            error = _translate(service, exc)
            log.warning("stream failed after the first token: %s", error.message)
            payload = {"error": {"message": error.message, "type": error.kind, "code": error.code}}
            yield f"data: {json.dumps(payload)}\n\n"

    return StreamingResponse(
        relay(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _record_usage(service: Service, session: str, usage: dict[str, int]) -> None:
    try:
        await service.saver.record_usage(session, usage)
    except REDIS_ERRORS as exc:  # the turn itself is checkpointed; only the counters are lost
        log.warning("could not record token usage for session %s: %s", session, exc)


def _translate(service: Service, exc: BaseException) -> ServiceError:
    if isinstance(exc, ServiceError):
        return exc
    model_error = translate_model_error(exc, service.settings)
    if model_error is not None:
        return ServiceError(
            model_error.http_status,
            f"{model_error.message} ({model_error.hint})",
            "model_timeout" if model_error.timed_out else "model_unavailable",
            "server_error",
        )
    if isinstance(exc, REDIS_ERRORS):
        return _redis_down(service, exc)
    if isinstance(exc, CairnError):
        return ServiceError(
            503, f"{exc.message} ({exc.hint})" if exc.hint else exc.message, "unavailable", "server_error"
        )
    log.exception("chat request failed", exc_info=exc)
    return ServiceError(500, f"Internal error: {type(exc).__name__}: {exc}", "internal_error", "server_error")


# ---------------------------------------------------------------- LangServe


def _add_langserve(app: FastAPI, service: Service) -> None:
    """The agent graph at /agent: invoke, batch, stream, stream_events, playground (stateless)."""
    from langserve import add_routes

    from graphs.agent.state import InputState

    async def with_index(config: dict[str, Any], request: Request) -> dict[str, Any]:
        configurable = dict(config.get("configurable") or {})
        configurable.setdefault("index_dir", str(service.settings.resolved_index_dir))
        return {**config, "configurable": configurable}

    add_routes(
        app,
        service.graph.with_types(input_type=InputState),
        path="/agent",
        per_req_config_modifier=with_index,
        enabled_endpoints=[
            "invoke",
            "batch",
            "stream",
            "stream_log",
            "stream_events",
            "playground",
            "input_schema",
            "output_schema",
            "config_schema",
        ],
    )
