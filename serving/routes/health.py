"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import os
import socket
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cairn import __version__
from serving.schemas import Health, Readiness, Replica
from serving.service import ServiceDep

router = APIRouter(tags=["health"])

#: When this worker process started (it imports this module once).
STARTED_AT = time.time()


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is alive (no credentials needed)."""
    return Health(version=__version__)


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
async def ready(service: ServiceDep) -> JSONResponse:
    """Whether the index is loaded and the model endpoint and Redis answer; says what is missing, and which
    replica and worker process answered. Configured MCP servers are listed under `mcp` (a server that is
    down is a warning there, not a reason to be unready: the agent answers without its tools)."""
    checks = {
        "index": await asyncio.to_thread(service.check_index),
        "model": await service.check_model(),
        "redis": await service.check_redis(),
    }
    if service.settings.mcp_servers:  # reported, never fatal: the agent skips a server that is down
        checks["mcp"] = await asyncio.to_thread(service.check_mcp)
    replica = Replica(host=socket.gethostname(), pid=os.getpid(), workers=service.settings.workers,
                      started_at=STARTED_AT, version=__version__)  # fmt: skip
    ready = all(check["ok"] for check in checks.values())
    body = Readiness.model_validate({"ready": ready, "checks": checks, "replica": replica})
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=200 if body.ready else 503)
