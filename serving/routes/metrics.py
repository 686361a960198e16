"""Prometheus metrics at /metrics (behind the API keys unless CAIRN_METRICS_PUBLIC opens it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from serving.observability import CONTENT_TYPE_LATEST
from serving.service import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(service: ServiceDep) -> Response:
    """The service's metrics in Prometheus' text format: requests, time to first token, nodes, model
    calls and tokens, searches, fallbacks, errors, index size."""
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
