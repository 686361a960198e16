"""Access control for the service: API keys, a request-body limit and a per-key rate limit (pure ASGI)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import threading
import time
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn.telemetry import trace_id_of

#: Paths that never need a key: liveness probes run without credentials, and the web page and its
#: assets hold no secrets (the page asks for a key when the API answers 401).
OPEN_PATHS = frozenset({"/health", "/"})
OPEN_PREFIXES = ("/static/",)


def is_open(path: str, also: frozenset[str] = frozenset()) -> bool:
    """Whether ``path`` is served without a key (``also``: paths the settings open, e.g. /metrics)."""
    return path in OPEN_PATHS or path in also or path.startswith(OPEN_PREFIXES)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _reply(send: Send, status: int, message: str, code: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    if trace_id := trace_id_of():  # the request's server span: the error can be found in the trace viewer
        error["trace_id"] = trace_id
    body = json.dumps({"error": error})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    """Return the key a request carries: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    auth = _header(scope, b"authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return _header(scope, b"x-api-key")


class TokenBuckets:
    """Per-client token buckets of ``per_minute`` requests; idle clients are forgotten.

    A bucket that has had time to refill completely holds nothing worth keeping (a new one starts
    full), so once a minute the buckets of clients idle that long are dropped: memory follows the
    clients active in the last minute, not every key or address ever seen.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # who -> (tokens, last refill)
        self._lock = threading.Lock()
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, who: str) -> float:
        """Take one token from ``who``'s bucket; return 0, or the seconds until a token is free."""
        now = self.clock()
        with self._lock:
            if now - self._swept >= 60.0:
                self._sweep(now)
            tokens, last = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.per_second)
            if tokens < 1:
                self._buckets[who] = (tokens, now)
                return (1 - tokens) / self.per_second
            self._buckets[who] = (tokens - 1, now)
            return 0.0

    def _sweep(self, now: float) -> None:
        self._swept = now
        full_after = self.capacity / self.per_second  # seconds for an empty bucket to refill
        self._buckets = {who: b for who, b in self._buckets.items() if now - b[1] < full_after}


class AccessMiddleware:
    """Check the API key (when keys are configured), rate-limit per key, and cap the request body."""

    def __init__(
        self, app: ASGIApp, *, keys: list[str], max_body_bytes: int, rate_limit: int, open_paths: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        self.keys = [k.encode() for k in keys]
        self.max_body_bytes = max_body_bytes
        self.rate_limit = rate_limit
        self.buckets = TokenBuckets(rate_limit) if rate_limit else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if scope.get("method") == "OPTIONS":  # CORS preflight carries no credentials
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        if self.keys and not is_open(path, self.open_paths):
            if key is None:
                await _reply(
                    send,
                    401,
                    "Missing API key: send 'Authorization: Bearer <key>'",
                    "missing_api_key",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            if not any(hmac.compare_digest(key.encode(), k) for k in self.keys):
                await _reply(send, 401, "Invalid API key", "invalid_api_key", [(b"www-authenticate", b"Bearer")])
                return
        if self.buckets is not None and not is_open(path, self.open_paths):
            client = scope.get("client") or ("?", 0)
            wait = self.buckets.take(f"key:{key}" if self.keys else f"ip:{client[0]}")
            if wait > 0:
                await _reply(
                    send,
                    429,
                    f"Rate limit of {self.rate_limit} requests per minute exceeded; retry in {math.ceil(wait)} s",
                    "rate_limit_exceeded",
                    [(b"retry-after", str(math.ceil(wait)).encode())],
                )
                return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _reply(
                send,
                413,
                f"Request body of {length} bytes is over the limit of {self.max_body_bytes}",
                "body_too_large",
            )
            return
        await self._capped(scope, receive, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the body as it arrives (chunked uploads have no Content-Length); past the cap, answer 413
        ourselves and tell the app the client went away."""
        seen = 0
        refused = False

        async def capped_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    refused = True
                    await _reply(send, 413, f"Request body is over the limit of {self.max_body_bytes} bytes",
                                 "body_too_large")  # fmt: skip
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not refused:
                raise
