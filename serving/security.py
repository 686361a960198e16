"""Access control for the service: API keys, a request-body limit and a per-key rate limit (pure ASGI).

A request that passes the key check carries its key's identity in ``scope["state"]["cairn_key"]``
(``request.state.cairn_key``): the key's name for logs and metrics, and its ``owner``, the hash that
sessions are kept under so one key never sees another's.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis.exceptions
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn.telemetry import trace_id_of
from serving.errors import ServiceError
from serving.keys import ApiKey

log = logging.getLogger("cairn.serving")

#: Paths that never need a key: liveness probes run without credentials, and the web page and its
#: assets hold no secrets (the page asks for a key when the API answers 401).
OPEN_PATHS = frozenset({"/health", "/"})
OPEN_PREFIXES = ("/static/",)


def is_open(path: str, also: frozenset[str] = frozenset()) -> bool:
    """Whether ``path`` is served without a key (``also``: paths the settings open, e.g. /metrics)."""
    return path in OPEN_PATHS or path in also or path.startswith(OPEN_PREFIXES)


#: Where a request's key identity is kept on its ASGI scope (``request.state.cairn_key``).
STATE_KEY = "cairn_key"


def key_of(scope: Scope) -> ApiKey | None:
    """Return the key a request was let in with (None when the service has no keys)."""
    return scope.get("state", {}).get(STATE_KEY)


#: Between a session's owner (its key's hash) and its id in the thread it is kept as. Session ids
#: never hold it (control characters are refused), so one key's sessions cannot be named by another.
OWNER_SEPARATOR = "\x1f"
#: What a session id may be: 1 to 200 characters, none of them a control character (the OpenAPI schema says so too).
SESSION_ID_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)


def check_session_id(session: str) -> None:
    """Refuse (400) a session id that is empty, over 200 characters, or holds control characters."""
    if not _SESSION_ID.match(session):
        raise ServiceError(400, "A session id must be 1 to 200 printable characters", "invalid_session_id")


def session_thread(key: ApiKey | None, session: str) -> str:
    """Return the thread a session is kept as: its own id without keys, its key's owner id and its id with them."""
    return session if key is None else f"{key.owner}{OWNER_SEPARATOR}{session}"


def session_of(key: ApiKey | None, thread: str) -> str | None:
    """Return the session id a thread is for ``key``, or None when it is not that key's session."""
    owner, sep, session = thread.partition(OWNER_SEPARATOR)
    if key is None:
        return None if sep else thread
    return session if sep and hmac.compare_digest(owner, key.owner) else None


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

    def take(self, who: str, cost: int = 1) -> float:
        """Take ``cost`` tokens from ``who``'s bucket; return 0, or the seconds until they are there."""
        now = self.clock()
        needed = min(cost, self.capacity)  # more than a bucket holds would never pass
        with self._lock:
            if now - self._swept >= 60.0:
                self._sweep(now)
            tokens, last = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.per_second)
            if tokens < needed:
                self._buckets[who] = (tokens, now)
                return (needed - tokens) / self.per_second
            self._buckets[who] = (tokens - needed, now)
            return 0.0

    def _sweep(self, now: float) -> None:
        self._swept = now
        full_after = self.capacity / self.per_second  # seconds for an empty bucket to refill
        self._buckets = {who: b for who, b in self._buckets.items() if now - b[1] < full_after}


# One client's bucket in Redis, refilled and taken from atomically (KEYS[1]: the bucket; ARGV: capacity,
# tokens per second, the key's lifetime in ms, the tokens to take). The clock is the Redis server's, so
# replicas on several machines agree whatever their own clocks say. Returns the seconds to wait, as a
# string (Lua numbers come back truncated to integers otherwise); "0" when the tokens were taken.
_TAKE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis 5/6: TIME before a write
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local capacity, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4] or 1)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens < cost then wait = (cost - tokens) / rate else tokens = tokens - cost end
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

    async def take(self, who: str, cost: int = 1) -> float:
        """Take ``cost`` tokens from ``who``'s bucket; return 0, or the seconds until they are there."""
        client = self.client()
        if client is not self._client:
            self._client, self._script = client, client.register_script(_TAKE)
        cost = min(cost, self.capacity)
        try:
            wait = await self._script(keys=[self.key(who)], args=[self.capacity, self.per_second, self.ttl_ms, cost])
        except (redis.exceptions.RedisError, OSError) as exc:  # down or busy: limit in this process meanwhile
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning("rate limit: Redis is not answering (%s); limiting per process meanwhile", exc)
            return self.local.take(who, cost)
        return float(wait)


class RateLimit:
    """The service's per-client request limit: shared through Redis when it can be, else per process."""

    def __init__(self, per_minute: int, shared: SharedRateLimit | None = None) -> None:
        self.per_minute = per_minute
        self.shared = shared
        self.local = TokenBuckets(per_minute) if shared is None else None

    async def take(self, who: str, cost: int = 1) -> float:
        """Take ``cost`` requests from ``who``'s allowance; return 0, or the seconds to wait."""
        if self.shared is not None:
            return await self.shared.take(who, cost)
        assert self.local is not None
        return self.local.take(who, cost)

    def refusal(self, wait: float) -> ServiceError:
        """Return the 429 for a client that must wait ``wait`` seconds."""
        seconds = math.ceil(wait)
        return ServiceError(429, f"Rate limit of {self.per_minute} requests per minute exceeded; retry in {seconds} s",
                            "rate_limit_exceeded", headers={"Retry-After": str(seconds)})  # fmt: skip


def client_of(scope: Scope) -> str:
    """Return who a request counts against: its key's name with keys, its address without."""
    key = key_of(scope)
    if key is not None:
        return f"key:{key.name}"
    client = scope.get("client") or ("?", 0)
    return f"ip:{client[0]}"


class AccessMiddleware:
    """Check the API key (when keys are configured), rate-limit per key, and cap the request body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: list[ApiKey],
        max_body_bytes: int,
        rate: RateLimit | None = None,
        open_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.rate = rate

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
            found = next((k for k in self.keys if hmac.compare_digest(key.encode(), k.secret)), None)
            if found is None:
                await _reply(send, 401, "Invalid API key", "invalid_api_key", [(b"www-authenticate", b"Bearer")])
                return
            scope.setdefault("state", {})[STATE_KEY] = found
        if self.rate is not None and not is_open(path, self.open_paths):
            wait = await self.rate.take(client_of(scope))
            if wait > 0:
                refused = self.rate.refusal(wait)
                headers = [(k.lower().encode(), v.encode()) for k, v in refused.headers.items()]
                await _reply(send, 429, refused.message, refused.code, headers)
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


# ---------------------------------------------------------------- bounded work


#: The routes that run the agent: what the concurrency limits count.
RUN_ROUTES = frozenset({"/v1/chat/completions", "/v1/responses", "/agent/invoke", "/agent/batch", "/agent/stream",
                        "/agent/stream_log", "/agent/stream_events"})  # fmt: skip


class Busy(Exception):
    """No run slot is free for this client: the message says which bound, ``retry_after`` how long to wait."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


class RunSlots:
    """How many agent runs one worker answers at once: overall, and per key (per address without keys).

    Shared by every way a run starts (the chat and LangServe routes, MCP's ``ask``). A run past either
    bound is refused at once (``Busy``) with a ``retry_after`` of about one typical run (an average of
    the last runs' durations), rather than queued behind the model where its client cannot tell waiting
    from hanging.
    """

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.running = 0
        self.by_client: dict[str, int] = {}
        self.typical_s = 5.0  # until runs have been timed

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one run."""
        return max(1, math.ceil(self.typical_s))

    @contextlib.contextmanager
    def hold(self, who: str) -> Iterator[None]:
        """Hold a slot for ``who`` while the block runs; raise ``Busy`` when there is none."""
        mine = self.by_client.get(who, 0) >= self.per_client
        if mine or self.running >= self.total:
            what = f"{self.per_client} agent runs at once per client" if mine else f"{self.total} agent runs at once"
            wait = self.retry_after()
            raise Busy(f"Busy: this service answers at most {what}; retry in {wait} s", wait)
        self.running += 1
        self.by_client[who] = self.by_client.get(who, 0) + 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            if (left := self.by_client[who] - 1) > 0:
                self.by_client[who] = left
            else:
                del self.by_client[who]
            self.typical_s = 0.8 * self.typical_s + 0.2 * (time.monotonic() - started)


class RunLimiter:
    """Bound the agent runs of the HTTP routes that start one (``RUN_ROUTES``) by the service's ``RunSlots``.

    A refused run is a 429 ``too_many_runs`` with ``Retry-After``. A slot is held until the response is
    sent whole, a stream's last byte included, or the client leaves.
    """

    def __init__(self, app: ASGIApp, *, slots: RunSlots, routes: frozenset[str] = RUN_ROUTES) -> None:
        self.app, self.slots, self.routes = app, slots, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.routes:
            await self.app(scope, receive, send)
            return
        try:
            with self.slots.hold(client_of(scope)):
                await self.app(scope, receive, send)
        except Busy as busy:
            await _reply(send, 429, busy.message, "too_many_runs", [(b"retry-after", str(busy.retry_after).encode())])


#: How deep a JSON body may nest. A chat request is about 6 levels deep, a tool schema a few more;
#: Python's parser and pydantic recurse, and 100,000 levels ended in a RecursionError (a 500).
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_SURROGATE = re.compile(rb"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")


def json_problem(body: bytes) -> str | None:
    """Return why a JSON body must be refused before it is parsed (too deep, a lone surrogate), or None."""
    outside = _JSON_STRING.sub(b"", body) if b'"' in body else body
    depth = deepest = 0
    for bracket in _BRACKETS.findall(outside):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
    if b"\\u" in body:
        # (where the escape starts, where it ends, whether it is a high surrogate), escapes only: after
        # an odd run of backslashes ("\\\\ud800" is a backslash and the text "ud800")
        escapes = [
            (match.start() + len(match.group(1)) - 1, match.end(), match.group(2)[1:2].lower() in b"89ab")
            for match in _SURROGATE.finditer(body)
            if len(match.group(1)) % 2 == 1
        ]
        i = 0
        while i < len(escapes):
            _, end, high = escapes[i]
            paired = high and i + 1 < len(escapes) and not escapes[i + 1][2] and escapes[i + 1][0] == end
            if not paired:
                return "the JSON body has a lone surrogate (\\ud800-\\udfff without its pair); send valid Unicode"
            i += 2
    return None


class JsonGuard:
    """Refuse (400) a JSON body too deep to parse safely or holding a lone surrogate, before any route parses it.

    The body is read whole (its size is already capped by ``AccessMiddleware``), checked, and handed
    on unchanged. A lone surrogate (``"\\ud800"``) is valid JSON but not Unicode: it broke the
    tokenizer with a TypeError deep inside a run.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left (or the body was refused as too large)
                await self.app(scope, _replay(b"", message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and (problem := json_problem(body)) is not None:
            await _reply(send, 400, f"Invalid request: {problem}", "invalid_json")
            return
        await self.app(scope, _replay(body, None, receive), send)


def _replay(body: bytes, last: Message | None, receive: Receive) -> Receive:
    """Return a ``receive`` that gives the body read already (or ``last``), then what the client sends next.

    After the body, ``receive`` itself is awaited: a streaming response listens on it for the client
    leaving, so it must block until that happens, not report a disconnect at once.
    """
    pending: list[Message] = [last] if last is not None else [{"type": "http.request", "body": body,
                                                                 "more_body": False}]  # fmt: skip

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
