"""The operator's log: one line per request, warnings for what went wrong, as text or JSON lines.

``cairn serve`` configures the ``cairn`` loggers once (``configure``): ``CAIRN_LOG_FORMAT=text`` (the
default) writes ``2026-12-06T12:00:00Z INFO cairn.access POST /v1/chat/completions 200 812 ms
model=cairn-agent session=s1 trace=4bf9…``; ``json`` writes one JSON object per line with the same
fields (``ts``, ``level``, ``logger``, ``message`` and the request's ``method``, ``route``, ``status``,
``ms``, ``ttft_ms`` (to an agent answer's first token), ``model``, ``session``, ``trace_id``), for a log
shipper. The trace id is the request's OpenTelemetry trace (the ``traceresponse`` header's), so a line
leads to its trace. Warnings come from the agent (a judgement that took its fallback), the model
(unreachable, timed out, died) and Redis.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

access = logging.getLogger("cairn.access")
#: The request fields an access line carries, in this order.
FIELDS = ("method", "route", "status", "ms", "ttft_ms", "model", "session", "trace_id")


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        line = f"{stamp} {record.levelname} {record.name} {record.getMessage()}"
        return f"{line}\n{self.formatException(record.exc_info)}" if record.exc_info else line


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Send the ``cairn`` loggers to stderr as ``fmt`` ("text" or "json"); idempotent."""
    logger = logging.getLogger("cairn")
    for handler in list(logger.handlers):
        if getattr(handler, "_cairn", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._cairn = True  # type: ignore[attr-defined]
    handler.setFormatter(_Json() if fmt == "json" else _Text())
    logger.addHandler(handler)
    logger.setLevel(level)  # still propagated: a host's own handlers (pytest's, an embedding app's) see it too


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def _clean(value: Any) -> Any:
    """A client's value as a log may hold it: control characters escaped, at most 200 characters."""
    if not isinstance(value, str):
        return value
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", value)[:200]


def log_request(method: str, route: str, status: int, ms: float, **fields: Any) -> None:
    """Write a request's access line (a 5xx as a warning); what the client sent cannot forge a line."""
    known = {name: _clean(value) for name, value in fields.items() if value}
    route = _clean(route)
    details = " ".join(f"{name}={known[name]}" for name in ("ttft_ms", "model", "session", "trace_id") if name in known)
    level = logging.WARNING if status >= 500 else logging.INFO
    extra = {"method": method, "route": route, "status": status, "ms": round(ms, 1), **known}
    access.log(level, "%s %s %s %.0f ms%s", method, route, status, ms, f" {details}" if details else "", extra=extra)
