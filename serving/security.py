"""Access control for the service: API keys, a request-body limit and a per-key rate limit (pure ASGI)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.exceptions
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn.telemetry import trace_id_of

log = logging.getLogger("cairn.serving")

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


# One client's bucket in Redis, refilled and taken from atomically (KEYS[1]: the bucket; ARGV: capacity,
# tokens per second, the key's lifetime in ms). The clock is the Redis server's, so replicas on several
# machines agree whatever their own clocks say. Returns the seconds to wait, as a string (Lua numbers
# come back truncated to integers otherwise); "0" when a token was taken.
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis 5/6: TIME before a write
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tostring(wait)
"""


class SharedRateLimit:
    """Per-client token buckets kept in Redis, so the limit holds across workers and replicas.

    Each bucket is one key (``PREFIX:rl:WHO``), updated by one Lua script: atomic, and on a Redis
    Cluster a single slot. A bucket expires once it would have refilled completely, so idle clients
    cost nothing. API keys are stored as a hash, never as themselves. While Redis does not answer,
    each process limits on its own (``TokenBuckets``) rather than refusing every request.
    """

    def __init__(self, per_minute: int, client: Callable[[], Any], prefix: str = "cairn") -> None:
        self.capacity = per_minute
        self.per_second = per_minute / 60.0
        self.client = client  # read on each call: the session store may swap in a cluster client
        self.prefix = prefix
        self.ttl_ms = 61_000  # a bucket is full again after a minute; then it is no different from a new one
        self.local = TokenBuckets(per_minute)
        self._client: Any = None  # the client the script below was registered with
        self._script: Any = None
        self._warned = 0.0

    def key(self, who: str) -> str:
        """Return the Redis key of a client's bucket (an API key appears only as its SHA-256)."""
        kind, _, value = who.partition(":")
        if kind == "key":
            value = hashlib.sha256(value.encode()).hexdigest()[:32]
        return f"{self.prefix}:rl:{kind}:{value}"

    async def take(self, who: str) -> float:
        """Take one token from ``who``'s bucket; return 0, or the seconds until a token is free."""
        client = self.client()
        if client is not self._client:
            self._client, self._script = client, client.register_script(_TAKE)
        try:
            wait = await self._script(keys=[self.key(who)], args=[self.capacity, self.per_second, self.ttl_ms])
        except (redis.exceptions.RedisError, OSError) as exc:  # down or busy: limit in this process meanwhile
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning("rate limit: Redis is not answering (%s); limiting per process meanwhile", exc)
            return self.local.take(who)
        return float(wait)


class AccessMiddleware:
    """Check the API key (when keys are configured), rate-limit per key, and cap the request body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: list[str],
        max_body_bytes: int,
        rate_limit: int,
        open_paths: Iterable[str] = (),
        limiter: SharedRateLimit | None = None,
    ) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        self.keys = [k.encode() for k in keys]
        self.max_body_bytes = max_body_bytes
        self.rate_limit = rate_limit
        #: the shared limiter (Redis) when the app has one, else buckets in this process
        self.limiter = limiter
        self.buckets = TokenBuckets(rate_limit) if rate_limit and limiter is None else None

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
        if self.rate_limit and not is_open(path, self.open_paths):
            client = scope.get("client") or ("?", 0)
            who = f"key:{key}" if self.keys else f"ip:{client[0]}"
            wait = await self.limiter.take(who) if self.limiter is not None else self.buckets.take(who)
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
