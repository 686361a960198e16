"""Liveness, readiness, and the operator's status view."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cairn import __version__
from serving.errors import documented
from serving.schemas import Health, Readiness, ServiceStatus
from serving.service import ServiceDep
from serving.status import replica_of, service_status

router = APIRouter(tags=["health"])


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
    replica = replica_of(service)
    ready = all(check["ok"] for check in checks.values())
    body = Readiness.model_validate({"ready": ready, "checks": checks, "replica": replica})
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=200 if body.ready else 503)


@router.get("/api/status", response_model=ServiceStatus, responses=documented(401))
async def status(service: ServiceDep) -> ServiceStatus:
    """The operator's view: each repository (chunks, files, last ingest, freshness against its source
    folder), the model endpoint and its probe's latency, Redis, and this worker's last requests with
    their time to the answer's first token (route templates only: no ids, paths or keys)."""
    return await service_status(service)
