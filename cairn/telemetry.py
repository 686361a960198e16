"""OpenTelemetry for Cairn: one tracer for every part, the standard OTEL_* switches, content redaction.

Nothing leaves the machine unless the user says so: spans are recorded (so responses can carry their
trace id), but exported only when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) names an OTLP/HTTP receiver, such as the local Phoenix that
``make traces`` starts. Sampling follows ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, and
``OTEL_SERVICE_NAME`` names the service, as everywhere else in OpenTelemetry.

What text reaches a span is the ``CAIRN_TRACE_CONTENT`` setting's call, and ``ContentPolicy`` is the
one place that applies it: ``none`` records no text of users, models or code (only counts, citations,
scores, tokens and times); ``metadata`` adds the questions and search queries; ``full`` adds the
prompts and answers. Whatever is recorded is redacted first (keys, tokens, passwords).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.trace import Span, Tracer

TRACER_NAME = "cairn"
ContentLevel = Literal["none", "metadata", "full"]

_configured = threading.Lock()
_provider: Any = None

# Secrets that text sent to a model can carry; replaced before any attribute is set.
_SECRETS = [
    (re.compile(r"(?i)\b(bearer|token|api[_-]?key|secret|password|passwd|pwd)\b(\s*[:=]\s*|\s+)([^\s'\"]{6,})"),
     r"\1\2[REDACTED]"),
    (re.compile(r"\b(sk|pk|rk|ghp|gho|ghs|glpat|xox[abpr])[-_][A-Za-z0-9_\-]{10,}"), "[REDACTED]"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "[REDACTED]"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
     "[REDACTED PRIVATE KEY]"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]+):([^\s@/]+)@"), r"\1:[REDACTED]@"),
]  # fmt: skip
MAX_TEXT_ATTRIBUTE = 8_000


def redact(text: str) -> str:
    """Return ``text`` with keys, tokens, passwords and private keys replaced, capped in length."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text if len(text) <= MAX_TEXT_ATTRIBUTE else text[:MAX_TEXT_ATTRIBUTE] + "…"


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    """Which text a span may carry (CAIRN_TRACE_CONTENT), redacted before it is set."""

    level: ContentLevel = "metadata"

    @property
    def queries(self) -> bool:
        """Whether questions and search queries are recorded."""
        return self.level in ("metadata", "full")

    @property
    def messages(self) -> bool:
        """Whether prompts and answers are recorded."""
        return self.level == "full"

    def text(self, value: str, *, kind: Literal["query", "message"]) -> str | None:
        """Return the redacted text when this policy records that kind of text, else None."""
        allowed = self.queries if kind == "query" else self.messages
        return redact(value) if allowed else None


def configure(service_name: str = "cairn") -> Any:
    """Install the process's tracer provider once: spans always get ids, and export where OTEL_* says.

    Returns the SDK tracer provider (tests add an in-memory exporter to it). Safe to call again; a
    provider someone else installed first (an embedding application) is left as it is.
    """
    global _provider
    with _configured:
        if _provider is not None:
            return _provider
        current = trace.get_tracer_provider()
        if type(current).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider"):
            _provider = current
            return _provider
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
        resource = Resource.create(attributes).merge(OTELResourceDetector().detect())
        provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
        if exporter := _otlp_exporter():
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider


def _otlp_exporter() -> Any:
    """Return an OTLP/HTTP span exporter when the standard environment names an endpoint, else None."""
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # reads the endpoint, headers, timeout and compression from OTEL_* itself


def flush(timeout_millis: int = 5_000) -> None:
    """Send the spans recorded so far (a service's last ones before it stops)."""
    provider = _provider
    if provider is not None and hasattr(provider, "force_flush"):
        provider.force_flush(timeout_millis)


def tracer() -> Tracer:
    """Return Cairn's tracer (a no-op one until ``configure`` installs a provider).

    One proxy tracer for the process: it follows the provider installed later, and saves the SDK
    building a tracer per span (measured: 0.7 ms of a 29 ms agent run).
    """
    return _TRACER


_TRACER = trace.get_tracer(TRACER_NAME)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """Run the block in a new current span; an exception marks it failed and is recorded on it."""
    with tracer().start_as_current_span(name, record_exception=True, set_status_on_exception=True) as current:
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})
        yield current


def trace_id_of(current: Span | None = None) -> str | None:
    """Return the 32-hex-digit trace id of a span (default: the current one), or None outside a trace."""
    context = (current or trace.get_current_span()).get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def current_traceresponse() -> str | None:
    """Return the W3C ``traceresponse`` value of the current span (``00-<trace>-<span>-<flags>``), if any."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
