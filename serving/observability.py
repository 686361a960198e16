"""What the service tells an operator: Prometheus metrics at /metrics, and a trace id on every response.

Metric names follow vLLM's where they mean the same thing (``cairn:time_to_first_token_seconds`` as
``vllm:time_to_first_token_seconds``, ``cairn:prompt_tokens_total`` as ``vllm:prompt_tokens_total``,
``cairn:num_requests_running`` …), so dashboards built for a vLLM server read a Cairn service too.
Durations are in seconds, with buckets from 5 ms to minutes (a CPU model's answer takes tens of
seconds). Each app has its own registry.

Every response carries the W3C ``traceresponse`` header (``00-<trace id>-<span id>-01``) of the
request's server span, so a slow or wrong answer can be found in the trace viewer; error bodies carry
the same trace id.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn.telemetry import current_traceresponse
from graphs.agent.telemetry import SECONDS, AgentMetrics
from serving.request_log import log_request

__all__ = ["CONTENT_TYPE_LATEST", "ObservabilityMiddleware", "ServiceMetrics"]

TRACE_HEADER = b"traceresponse"


class ServiceMetrics:
    """Everything /metrics exposes for one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.agent = AgentMetrics(self.registry)
        self.requests = Counter("cairn:http_requests", "HTTP requests answered, by route and status.",
                                ("method", "route", "status"), registry=self.registry)  # fmt: skip
        self.duration = Histogram("cairn:http_request_duration_seconds", "HTTP request time, to the last byte.",
                                  ("method", "route", "status"), buckets=SECONDS, registry=self.registry)  # fmt: skip
        self.running = Gauge("cairn:num_requests_running", "HTTP requests being answered now.",
                             registry=self.registry)  # fmt: skip
        self.index_chunks = Gauge("cairn:index_chunks", "Chunks in the loaded index.", registry=self.registry)

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        return generate_latest(self.registry)


#: Probes and assets: counted in /metrics, not written to the log (a load balancer polls /ready every few seconds).
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics", "/favicon.ico"})
QUIET_PREFIXES = ("/static/",)


class ObservabilityMiddleware:
    """Count and time every request by its route template, and stamp its trace id on the response."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        self.metrics.running.inc()
        traceresponse = current_traceresponse()  # the server span FastAPI opened around this request

        async def stamped_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if traceresponse:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (TRACE_HEADER, traceresponse.encode())]}  # fmt: skip
            await send(message)

        try:
            await self.app(scope, receive, stamped_send)
        finally:
            self.metrics.running.dec()
            elapsed = time.perf_counter() - started
            labels = (scope.get("method", ""), _route_of(scope), str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.duration.labels(*labels).observe(elapsed)
            path = scope.get("path", "")
            if path not in QUIET_PATHS and not path.startswith(QUIET_PREFIXES):
                headers = dict(scope.get("headers") or [])
                log_request(scope.get("method", ""), path, status, elapsed * 1000,
                            model=(scope.get("state") or {}).get("cairn_model"),
                            session=headers.get(b"x-session-id", b"").decode("latin-1")[:200] or None,
                            trace_id=traceresponse.split("-")[1] if traceresponse else None)  # fmt: skip


def _route_of(scope: Scope) -> str:
    """Return the route template a request matched, so ids do not make a label per request."""
    if (route := scope.get("route")) is not None:  # set by the router on the request's scope
        return getattr(route, "path", "") or "unmatched"
    app = scope.get("app")
    for route in getattr(getattr(app, "router", None), "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return getattr(route, "path", "") or "unmatched"
    return "unmatched"
