"""``/mcp`` of the service, with the MCP SDK loaded after start-up rather than before it.

Importing the SDK (``mcp`` and its ``mcp_types``) and building Cairn's MCP server takes about half a
second here, about a fifth of a worker's start-up (docs/benchmarks.md, "Start-up"). The page, the OpenAI
API and the LangServe routes do not need it, so the lifespan starts this endpoint in the background
once the rest is loaded: ``/ready`` does not wait for it, and a request to ``/mcp`` that arrives in
that half second waits for it rather than failing. If the SDK cannot be loaded, ``/mcp`` answers 503
(the log says why) and the rest of the service goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from serving.errors import error_response
from serving.service import Service

log = logging.getLogger("cairn.serving")

#: How long a request to /mcp waits for the endpoint to load before a 503 (it takes ~0.5 s).
LOAD_WAIT_S = 60.0


class LazyMcp:
    """The ASGI app at ``/mcp``: Cairn's MCP server (``serving.mcp_server``), built by ``start``."""

    def __init__(self, service: Service, *, loopback_only: bool) -> None:
        self.service, self.loopback_only = service, loopback_only
        self.server: Any = None  # the CairnMCP while it serves
        self._endpoint: Any = None
        self._failure: str | None = None
        self._loaded = asyncio.Event()  # set once the endpoint serves, or has failed to start
        self._stop = asyncio.Event()

    def start(self) -> asyncio.Task[None]:
        """Begin building the server; return the task that holds its sessions until ``stop`` (each start
        of the app's lifespan builds a fresh one)."""
        self.server = self._endpoint = self._failure = None
        self._loaded, self._stop = asyncio.Event(), asyncio.Event()
        return asyncio.create_task(self._serve(self._loaded, self._stop), name="cairn-mcp")

    async def _serve(self, loaded: asyncio.Event, stop: asyncio.Event) -> None:
        try:
            server, endpoint = await asyncio.to_thread(self._build)  # mostly the SDK's import: off the event loop
        except Exception as exc:  # any failure leaves /mcp answering 503, the rest serving
            log.exception("the MCP endpoint could not start")
            self._failure = type(exc).__name__
            loaded.set()
            return
        try:
            async with server.session_manager.run():  # the streamable-HTTP sessions of /mcp
                self.server, self._endpoint = server, endpoint
                loaded.set()
                await stop.wait()
        finally:
            self.server = self._endpoint = None
            loaded.set()

    def _build(self) -> tuple[Any, Any]:
        from serving.mcp_server import http_endpoint

        return http_endpoint(self.service, loopback_only=self.loopback_only)

    def stop(self) -> None:
        """End the task ``start`` returned (the lifespan's shutdown)."""
        self._stop.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loaded = self._loaded
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loaded.wait(), LOAD_WAIT_S)
        endpoint = self._endpoint
        if endpoint is None:
            why = f"it could not start ({self._failure}; the service's log says why)" if self._failure else (
                "it is not running (the service is starting or stopping)")  # fmt: skip
            response = error_response(503, f"The MCP endpoint is unavailable: {why}", "mcp_unavailable", "server_error")
            await response(scope, receive, send)
            return
        await endpoint(scope, receive, send)
