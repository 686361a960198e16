"""What the service tells an operator: Prometheus metrics at /metrics, and a trace id on every response.

Metric names follow vLLM's where they mean the same thing (``cairn:time_to_first_token_seconds`` as
``vllm:time_to_first_token_seconds``, ``cairn:prompt_tokens_total`` as ``vllm:prompt_tokens_total``,
``cairn:num_requests_running`` …), so dashboards built for a vLLM server read a Cairn service too.
Durations are in seconds, with buckets from 5 ms to minutes (a CPU model's answer takes tens of
seconds). Each app has its own registry.

The last ``RECENT`` requests (route template, status, time, time to the answer's first token, model)
are kept for the page's status view (``GET /api/status``); they carry no ids, paths or keys.

Every response carries the W3C ``traceresponse`` header (``00-<trace id>-<span id>-01``) of the
request's server span, so a slow or wrong answer can be found in the trace viewer; error bodies carry
the same trace id.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn.telemetry import current_traceresponse
from graphs.agent.telemetry import SECONDS, AgentMetrics
from serving import memory
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
        self.registry.register(NativeHeap())
        #: The last requests this worker answered, newest last (the status view's "recent requests").
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        #: Requests being answered now (what the ``running`` gauge shows).
        self.in_flight = 0

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class NativeHeap(Collector):
    """``cairn:native_heap_bytes{state="in_use"|"free"}``: this worker's malloc heap, read at each scrape
    (absent outside glibc)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        heap = memory.heap()
        if heap is None:
            return
        about = "This worker's malloc heap: bytes in use and held free (CAIRN_MALLOC_TRIM_S gives the free back)."
        family = GaugeMetricFamily("cairn:native_heap_bytes", about, labels=["state"])
        for state, size in heap.items():
            family.add_metric([state], size)
        yield family


#: How many requests the status view lists.
RECENT = 50
#: HTTP methods listed as they are; any other a client sends is listed as OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Probes and assets: counted in /metrics, not written to the log (a load balancer polls /ready every few
#: seconds, the page's status view polls /api/status).
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics", "/favicon.ico", "/api/status"})
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
        self.metrics.in_flight += 1
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
            self.metrics.in_flight -= 1
            elapsed = time.perf_counter() - started
            route = _route_of(scope)
            labels = (scope.get("method", ""), route, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.duration.labels(*labels).observe(elapsed)
            path = scope.get("path", "")
            method = scope.get("method", "")
            method = method if method in METHODS else "OTHER"
            if path not in QUIET_PATHS and not path.startswith(QUIET_PREFIXES):
                state = scope.get("state") or {}
                model = state.get("cairn_model")
                ttft = _first_token_ms(state, started)
                known = isinstance(model, str) and status < 400  # a refused request's model is what the client wrote
                if status != 401:  # one without a key cannot fill the operator's list
                    self.metrics.recent.append({"at": time.time(), "method": method, "route": route, "status": status,
                                                "ms": round(elapsed * 1000, 1), "ttft_ms": ttft,
                                                "model": model if known else None})  # fmt: skip
                headers = dict(scope.get("headers") or [])
                log_request(scope.get("method", ""), path, status, elapsed * 1000, model=model, ttft_ms=ttft,
                            session=headers.get(b"x-session-id", b"").decode("latin-1")[:200] or None,
                            trace_id=traceresponse.split("-")[1] if traceresponse else None)  # fmt: skip


def _first_token_ms(state: dict[str, Any], started: float) -> float | None:
    """Milliseconds from the request's arrival to its answer's first token (an agent run's requests only)."""
    run = state.get("cairn_run")
    first = getattr(run, "first_answer_token", None)
    return round((first - started) * 1000, 1) if first is not None else None


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
