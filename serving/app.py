"""The Cairn service: its web page, an OpenAI-compatible chat API, LangServe routes, sessions in Redis, health.

``create_app(settings)`` builds the FastAPI app from the settings it is given (default: the
``CAIRN_*`` environment); they are resolved into the agent's Context once, here, and every request
starts from that. The lifespan loads the index, builds the model clients, opens the Redis
checkpointer, and closes them on shutdown. The routes live in ``serving/routes/``, the chat
orchestration in ``serving/chat.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cairn import __version__
from config import Settings
from graphs.agent.resources import resources_for
from serving.errors import REDIS_ERRORS, add_error_handlers
from serving.routes import api, health, openai, sessions, web
from serving.routes.langserve import add_langserve
from serving.security import AccessMiddleware
from serving.service import Service

log = logging.getLogger("cairn.serving")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Return the Cairn FastAPI app for ``settings`` (default: read from CAIRN_* and .env now)."""
    settings = settings or Settings()
    service = Service.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(service.load_index)
        if service.index_error:
            log.warning("index not loaded: %s", service.index_error)
        else:
            await asyncio.to_thread(resources_for, service.context)  # build the model clients and tools up front
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

    app = FastAPI(
        title="Cairn",
        version=__version__,
        description="Ask questions about an indexed repository; answers cite path:start-end.",
        lifespan=lifespan,
    )
    app.state.cairn = service
    add_error_handlers(app)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(sessions.router)
    app.include_router(api.router)
    app.include_router(web.router)
    app.mount(web.STATIC_PREFIX, web.static_assets(), name="static")
    add_langserve(app, service)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Session-Id", "X-Cairn-Events"],
        )
    app.add_middleware(
        AccessMiddleware,
        keys=[k.get_secret_value() for k in settings.api_keys],
        max_body_bytes=settings.max_body_bytes,
        rate_limit=settings.rate_limit,
    )
    return app
