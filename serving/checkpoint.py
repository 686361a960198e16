"""A LangGraph checkpointer on core Redis commands (Redis >= 6.2, Valkey; no modules), clustered or not.

``langgraph-checkpoint-redis`` needs RedisJSON and RediSearch, which plain Redis servers (Debian's,
most managed offerings, Valkey) do not have. This saver uses hashes, sorted sets and MULTI/EXEC only.

Layout (``P`` = the key prefix, ``T`` and ``N`` the URL-quoted thread id and namespace)::

    P:sessions             zset   thread id -> time of its last write: the sessions list (an index, see below)
    P:{T}:at               string time of the thread's last write (the thread exists while this key does)
    P:{T}:ns               set    the thread's checkpoint namespaces
    P:{T}:N:ids            zset   checkpoint ids (score 0: ordered by id, which is time-ordered)
    P:{T}:N:cp:ID          hash   checkpoint, metadata, parent id, run id (serialized by ``serde``)
    P:{T}:N:wr:ID          hash   "task_id|idx" -> pending write
    P:{T}:usage            hash   tokens the session's turns used (``serving/session_usage.py``)
    P:{T}:log              list   the session's transcript log: its older messages, one entry per turn
                                  that moved some out, each naming the one before it; a checkpoint's
                                  state names its latest (``graphs.agent.transcript``)

``{T}`` is a Redis Cluster hash tag: every key of one thread hashes to one slot, so each write of a
checkpoint is still one MULTI/EXEC transaction on a cluster (a killed service leaves either the whole
checkpoint or none of it). Quoting keeps ``{``, ``}`` and ``:`` out of ``T``. Each checkpoint is stored
whole (channel values included), so it never depends on another key to be read back. With a TTL, every
key of a thread is given the TTL again on each write (one script, in the thread's slot), so a session
expires that long after its last turn, all at once.

``P:sessions`` is the one key that spans threads, so it is never written in a thread's transaction:
a thread is added to it *before* its checkpoint is written and removed *after* the thread is deleted.
Listing checks each entry against its thread's ``at`` key and drops the dead ones (deleted, expired,
or a write that never happened), so a lost index write never lists a session that is gone; a failed
add is rebuilt from a SCAN of the ``at`` keys (``reindex``) on the next listing.

Whether the server is a cluster is asked of it (``INFO cluster``) on first use: on a cluster node the
saver switches to redis-py's cluster client (``redis.asyncio.cluster.RedisCluster``), which follows the
cluster's slots and failovers. Data in the layout before hash tags (``P:threads``, ``P:t:T:...``) is
not read; ``serving/checkpoint_migration.py`` (``cairn sessions migrate``) moves it into this one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote, unquote

import ormsgpack
import redis.exceptions
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from graphs.agent.transcript import TranscriptUnavailable

log = logging.getLogger("cairn.serving")

T = TypeVar("T")

#: The two kinds of server the saver tells apart (``INFO cluster``'s ``cluster_enabled``).
Mode = Literal["standalone", "cluster"]

#: A sessions-list entry younger than this whose thread has no ``at`` key yet is a write under way: kept.
INDEX_GRACE_S = 60.0

#: Errors of a cluster that answers but cannot serve a slot right now (a master down, a failover under way).
CLUSTER_ERRORS = (redis.exceptions.ClusterError, redis.exceptions.RedisClusterException)

# Refresh the TTL of every key of one thread (KEYS[1] = its namespace set; ARGV = thread base, ttl).
# Every key it touches carries the thread's hash tag, so on a cluster they all live in KEYS[1]'s slot.
_TOUCH = """
local ttl = tonumber(ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', ARGV[1] .. 'usage', ttl)
redis.call('EXPIRE', ARGV[1] .. 'at', ttl)
redis.call('EXPIRE', ARGV[1] .. 'log', ttl)
for _, ns in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local base = ARGV[1] .. ns .. ':'
  redis.call('EXPIRE', base .. 'ids', ttl)
  for _, id in ipairs(redis.call('ZRANGE', base .. 'ids', 0, -1)) do
    redis.call('EXPIRE', base .. 'cp:' .. id, ttl)
    redis.call('EXPIRE', base .. 'wr:' .. id, ttl)
  end
end
return 1
"""

#: Forget a thread's checkpoints older than the one a run started from, once that one is another run's:
#: KEYS[1] the namespace's ids, ARGV: its key base, the parent checkpoint's id, the writing run's id, and
#: the id just written (never forgotten, even when a worker's clock put it before its parent).
_FORGET_OLDER = """
local run = redis.call('HGET', ARGV[1] .. 'cp:' .. ARGV[2], 'run_id')
if not run or run == ARGV[3] then return 0 end
local forgotten = 0
for _, id in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[2])) do
  if id ~= ARGV[4] then
    redis.call('DEL', ARGV[1] .. 'cp:' .. id, ARGV[1] .. 'wr:' .. id)
    redis.call('ZREM', KEYS[1], id)
    forgotten = forgotten + 1
  end
end
return forgotten
"""


#: How long a request waits for a cluster to fail a lost master over to its replica before giving up.
#: Redis's failover starts after ``cluster-node-timeout`` (15 s by default; keep it lower with Cairn).
FAILOVER_WAIT_S = 20.0

#: What a failover looks like to a client: the old master refuses connections, its slots are briefly down.
FAILOVER_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
)


async def _through_failover(send: Callable[[], Awaitable[T]]) -> T:
    """Await ``send()``, again with backoff while a cluster fails over (up to ``FAILOVER_WAIT_S``)."""
    deadline = time.monotonic() + FAILOVER_WAIT_S
    delay = 0.05
    while True:
        try:
            return await send()
        except FAILOVER_ERRORS:
            if time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


class FailoverRedisCluster(RedisCluster):
    """redis-py's cluster client, waiting out a failover instead of failing at once.

    redis-py retries a command on a lost node right away (its ``retry`` sets only the count: no
    backoff, redis-py 8.1), so every retry lands before the replica is promoted (seconds later).
    """

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Run one command, through a failover."""
        run = super().execute_command
        return await _through_failover(lambda: run(*args, **kwargs))


def quote_key(text: str) -> str:
    return quote(text, safe="")


def _glob(text: str) -> str:
    """Escape a text for a SCAN MATCH pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


class RedisCheckpointSaver(BaseCheckpointSaver[str]):
    """Checkpoints and pending writes in Redis or a Redis Cluster, atomically per write, with an optional TTL.

    Use it from async code (the service does); the sync methods hop onto the saver's event loop
    from other threads, as LangGraph's own async savers do. ``client`` is the connection in use: the
    client it was given, or the cluster client it switched to on finding a cluster (see ``mode``). It
    changes once, at the first use (``ping``, which the service's start-up calls): read ``saver.client``
    when using it rather than keeping it, and keep each script or transaction to one hash slot.

    With ``keep_all=False`` (the service's sessions) a thread keeps only the checkpoints its latest
    run wrote and the one that run started from, which a run that does not finish falls back to
    (``rollback_run``): a run's write forgets those before its start, once that start is another
    run's. Checkpoints are stored whole, so the latest one is the session, and what Redis holds for
    a session grows with its length, not its square. LangGraph's history of a thread (every
    checkpoint, ``alist``) is kept with the default, ``keep_all=True``.

    It is also a ``graphs.agent.transcript.TranscriptLog``: a long session's older messages go to a
    list beside its checkpoints (``aappend_transcript``), which only the session's views read
    (``aread_transcript``), so its checkpoints do not grow with it.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = "cairn",
        ttl: int = 0,
        url: str | None = None,
        timeout: float = 5.0,
        keep_all: bool = True,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"the key prefix {prefix!r} has a brace: a session's hash tag must be its keys' first")
        super().__init__()
        self.client: Redis | RedisCluster = client
        self.prefix = prefix
        self.ttl = ttl
        #: "standalone" or "cluster" once the server was asked (None before the first use).
        self.mode: Mode | None = "cluster" if isinstance(client, RedisCluster) else None
        self._url = url
        self._timeout = timeout
        self.keep_all = keep_all
        self._detecting = asyncio.Lock()
        self._index_stale = False
        self._touch = client.register_script(_TOUCH)
        self._forget_older = client.register_script(_FORGET_OLDER)
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "cairn", ttl: int = 0, timeout: float = 5.0, keep_all: bool = True
    ) -> RedisCheckpointSaver:
        """Return a saver on a new connection pool for ``url`` (socket timeouts of ``timeout`` seconds).

        Nothing is sent yet: whether ``url`` is a cluster node is found on first use (or ``connect``).
        """
        # A restarted Redis leaves pooled connections dead; retry once on a fresh one instead of failing.
        client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
        return cls(client, prefix=prefix, ttl=ttl, url=url, timeout=timeout, keep_all=keep_all)

    @classmethod
    async def connect(
        cls, url: str, *, prefix: str = "cairn", ttl: int = 0, timeout: float = 5.0, keep_all: bool = True
    ) -> RedisCheckpointSaver:
        """Return a saver for ``url`` that has already found whether it talks to a cluster (raises if unreachable)."""
        saver = cls.from_url(url, prefix=prefix, ttl=ttl, timeout=timeout, keep_all=keep_all)
        await saver.ping()
        return saver

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def ready(self) -> None:
        """Ask the server once whether it is a cluster node; if so, switch ``client`` to the cluster client."""
        if self.mode is not None:
            return
        async with self._detecting:
            if self.mode is not None:
                return
            plain = self.client
            assert isinstance(plain, Redis), "a saver given a cluster client is in cluster mode from the start"
            info = await plain.info("cluster")
            if not info.get("cluster_enabled"):
                self.mode = "standalone"
                return
            self.client = self._cluster_client(plain)
            self._touch = self.client.register_script(_TOUCH)
            self._forget_older = self.client.register_script(_FORGET_OLDER)
            self.mode = "cluster"
            await plain.aclose()
            log.info("Redis at %s is a cluster node: using the cluster client", self._url or "the given client")

    def _cluster_client(self, plain: Redis) -> FailoverRedisCluster:
        """Return a cluster client that starts from the node the plain client talks to."""
        options: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
        }
        if self._url is not None:
            # from_url returns cls(...), which redis-py's hint calls a RedisCluster
            return cast(FailoverRedisCluster, FailoverRedisCluster.from_url(self._url, **options))
        given = plain.connection_pool.connection_kwargs
        return FailoverRedisCluster(
            host=given.get("host", "127.0.0.1"),
            port=given.get("port", 6379),
            username=given.get("username"),
            password=given.get("password"),
            **options,
        )

    async def pipeline(self, fill: Callable[[Any], object], *, transaction: bool) -> list[Any]:
        """Send the commands ``fill`` queues as one pipeline (MULTI/EXEC with ``transaction``); return the replies.

        On a cluster, a pipeline that fails because a master is down is sent again until its replica
        has taken over (``FAILOVER_WAIT_S``). Every pipeline here can be sent twice but the usage
        counters, which a reply lost after EXEC would count twice.
        """

        async def send() -> list[Any]:
            async with self.client.pipeline(transaction=transaction) as pipe:
                fill(pipe)
                return await pipe.execute()

        if self.mode == "cluster":
            return await _through_failover(send)
        return await send()

    # ------------------------------------------------------------------ keys

    def _index_key(self) -> str:
        return f"{self.prefix}:sessions"

    def thread_base(self, thread_id: str) -> str:
        return f"{self.prefix}:{{{quote_key(thread_id)}}}:"

    def _ns_key(self, thread_id: str) -> str:
        return self.thread_base(thread_id) + "ns"

    def at_key(self, thread_id: str) -> str:
        return self.thread_base(thread_id) + "at"

    def _log_key(self, thread_id: str) -> str:
        return self.thread_base(thread_id) + "log"

    def _base(self, thread_id: str, ns: str) -> str:
        return f"{self.thread_base(thread_id)}{quote_key(ns)}:"

    # ------------------------------------------------------------------ reads
    # Replies are bytes: the clients are made without ``decode_responses``. redis-py's hints cannot know that
    # (they say ``bytes | str``) and give ZRANGE one type with and without scores, so reads cast to what comes.

    async def _namespaces(self, thread_id: str) -> list[str]:
        raw = cast(set[bytes], await self.client.smembers(self._ns_key(thread_id)))
        return sorted(unquote(n.decode()) for n in raw)

    async def _ids(self, thread_id: str, ns: str) -> list[str]:
        """Return the checkpoint ids of a thread/namespace, newest first."""
        raw = cast(list[bytes], await self.client.zrevrange(self._base(thread_id, ns) + "ids", 0, -1))
        return [i.decode() for i in raw]

    async def _load(self, thread_id: str, ns: str, checkpoint_ids: Sequence[str]) -> list[CheckpointTuple | None]:
        if not checkpoint_ids:
            return []
        base = self._base(thread_id, ns)

        def fill(pipe: Any) -> None:
            for cid in checkpoint_ids:
                pipe.hgetall(f"{base}cp:{cid}")
                pipe.hgetall(f"{base}wr:{cid}")

        raw = await self.pipeline(fill, transaction=False)
        out: list[CheckpointTuple | None] = []
        for n, cid in enumerate(checkpoint_ids):
            record, writes = raw[2 * n], raw[2 * n + 1]
            out.append(self._tuple(thread_id, ns, cid, record, writes) if record else None)
        return out

    def _tuple(
        self, thread_id: str, ns: str, checkpoint_id: str, record: dict[bytes, bytes], writes: dict[bytes, bytes]
    ) -> CheckpointTuple:
        parent = record.get(b"parent", b"").decode()
        rows = []
        for key, packed in writes.items():
            task_id, channel, type_, value, task_path = ormsgpack.unpackb(packed)
            idx = int(key.decode().rpartition("|")[2])
            rows.append((writes_sort_key(task_path, task_id, idx), task_id, channel, type_, value))
        rows.sort(key=lambda row: row[0])
        pending = [(task_id, channel, self.serde.loads_typed((t, v))) for _, task_id, channel, t, v in rows]
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}},
            checkpoint=self.serde.loads_typed((record[b"type"].decode(), record[b"checkpoint"])),
            metadata=self.serde.loads_typed((record[b"mtype"].decode(), record[b"metadata"])),
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent}}
                if parent
                else None
            ),
            pending_writes=pending,
        )

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Return the checkpoint the config names, or the thread's latest in its namespace."""
        await self.ready()
        configurable = config["configurable"]
        thread_id, ns = str(configurable["thread_id"]), configurable.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            found = await self._load(thread_id, ns, [checkpoint_id])
            return found[0] if found else None
        for cid in await self._ids(thread_id, ns):  # newest first; skip one whose keys expired
            found = await self._load(thread_id, ns, [cid])
            if found and found[0] is not None:
                return found[0]
        return None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Yield checkpoints newest first, by thread/namespace when given, filtered on metadata."""
        await self.ready()
        if config is not None:
            threads = [str(config["configurable"]["thread_id"])]
        else:
            threads = await self._indexed_threads()
        ns_wanted = config["configurable"].get("checkpoint_ns") if config is not None else None
        before_id = get_checkpoint_id(before) if before else None
        remaining = limit
        for thread_id in threads:
            namespaces = [ns_wanted] if ns_wanted is not None else await self._namespaces(thread_id)
            candidates: list[tuple[str, str]] = []
            for ns in namespaces:
                candidates.extend((cid, ns) for cid in await self._ids(thread_id, ns))
            candidates.sort(reverse=True)
            for cid, ns in candidates:
                if before_id is not None and cid >= before_id:
                    continue
                found = (await self._load(thread_id, ns, [cid]))[0]
                if found is None:
                    continue
                if filter and not all(found.metadata.get(k) == v for k, v in filter.items()):
                    continue
                yield found
                if remaining is not None:
                    remaining -= 1
                    if remaining <= 0:
                        return

    # ------------------------------------------------------------------ writes

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint (whole, in one transaction) and return the config that names it (see ``keep_all``)."""
        await self.ready()
        configurable = config["configurable"]
        thread_id, ns = str(configurable["thread_id"]), configurable.get("checkpoint_ns", "")
        parent = configurable.get("checkpoint_id") or ""
        type_, blob = self.serde.dumps_typed(checkpoint)
        full_metadata = get_serializable_checkpoint_metadata(config, metadata)
        mtype, mblob = self.serde.dumps_typed(full_metadata)
        record = {
            "type": type_,
            "checkpoint": blob,
            "mtype": mtype,
            "metadata": mblob,
            "parent": parent,
            "run_id": str(full_metadata.get("run_id") or ""),
        }
        now = time.time()
        await self.index_thread(thread_id, now)
        base = self._base(thread_id, ns)

        def fill(pipe: Any) -> None:
            pipe.hset(f"{base}cp:{checkpoint['id']}", mapping=record)
            pipe.zadd(f"{base}ids", {checkpoint["id"]: 0})
            pipe.sadd(self._ns_key(thread_id), quote_key(ns))
            pipe.set(self.at_key(thread_id), repr(now))

        await self.pipeline(fill, transaction=True)
        if parent and not self.keep_all:
            try:
                await self._forget_older(keys=[f"{base}ids"], args=[base, parent, record["run_id"], checkpoint["id"]])
            except (redis.exceptions.RedisError, *CLUSTER_ERRORS, OSError) as exc:  # the turn is written: keep it
                log.warning("could not forget the older checkpoints of session %r (%s); the next turn will", thread_id,
                            exc)  # fmt: skip
        await self.refresh_ttl(thread_id)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes; a regular write already stored is kept, special ones replaced."""
        await self.ready()
        configurable = config["configurable"]
        thread_id, ns = str(configurable["thread_id"]), configurable.get("checkpoint_ns", "")
        key = f"{self._base(thread_id, ns)}wr:{configurable['checkpoint_id']}"
        rows = []
        for idx, (channel, value) in enumerate(writes):
            slot = WRITES_IDX_MAP.get(channel, idx)
            type_, blob = self.serde.dumps_typed(value)
            rows.append((f"{task_id}|{slot}", ormsgpack.packb([task_id, channel, type_, blob, task_path]), slot >= 0))

        def fill(pipe: Any) -> None:
            for field, packed, keep in rows:
                if keep:
                    pipe.hsetnx(key, field, packed)
                else:
                    pipe.hset(key, field, packed)

        await self.pipeline(fill, transaction=True)
        await self.refresh_ttl(thread_id)

    async def aappend_transcript(self, thread_id: str, entry: str) -> int:
        """Append ``entry`` to a thread's transcript log and return its position (see ``TranscriptLog``)."""
        key = self._log_key(str(thread_id))

        def fill(pipe: Any) -> None:
            pipe.rpush(key, entry.encode())
            if self.ttl > 0:  # as the checkpoint's write does: an entry no checkpoint counts expires too
                pipe.expire(key, self.ttl)

        try:
            await self.ready()
            length, *_ = await self.pipeline(fill, transaction=True)
        except (redis.exceptions.RedisError, *CLUSTER_ERRORS, OSError) as exc:
            raise TranscriptUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return int(length) - 1

    async def aread_transcript(self, thread_id: str, count: int) -> list[str]:
        """Return the first ``count`` entries of a thread's transcript log (fewer where entries were lost)."""
        if count <= 0:
            return []
        await self.ready()
        raw = cast(list[bytes], await self.client.lrange(self._log_key(str(thread_id)), 0, count - 1))
        return [entry.decode() for entry in raw]

    async def refresh_ttl(self, thread_id: str) -> None:
        if self.ttl > 0:
            await self._touch(keys=[self._ns_key(thread_id)], args=[self.thread_base(thread_id), self.ttl])

    async def _thread_keys(self, thread_id: str) -> list[str]:
        """Return every key of a thread (all in its hash slot)."""
        keys = [self._ns_key(thread_id), self.at_key(thread_id), self.thread_base(thread_id) + "usage",
                self._log_key(thread_id)]  # fmt: skip
        for ns in await self._namespaces(thread_id):
            base = self._base(thread_id, ns)
            keys.append(f"{base}ids")
            for cid in await self._ids(thread_id, ns):
                keys.extend((f"{base}cp:{cid}", f"{base}wr:{cid}"))
        return keys

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread (one transaction), then its sessions-list entry."""
        await self.ready()
        thread_id = str(thread_id)
        keys = await self._thread_keys(thread_id)
        await self.pipeline(lambda pipe: pipe.delete(*keys), transaction=True)
        await self.client.zrem(self._index_key(), thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the given runs created, in every thread."""
        await self.ready()
        wanted = {str(r) for r in run_ids}
        if not wanted:
            return
        for thread_id in await self._indexed_threads():
            for ns in await self._namespaces(thread_id):
                if doomed := await self._written_by(thread_id, ns, wanted):
                    await self._delete_checkpoints(thread_id, ns, doomed)

    async def _written_by(self, thread_id: str, ns: str, run_ids: set[str]) -> list[str]:
        """Return the ids of the checkpoints of a thread/namespace that one of ``run_ids`` wrote."""
        base = self._base(thread_id, ns)
        ids = await self._ids(thread_id, ns)
        runs = await self.pipeline(
            lambda pipe: [pipe.hget(f"{base}cp:{cid}", "run_id") for cid in ids], transaction=False
        )
        return [cid for cid, run in zip(ids, runs, strict=True) if run and run.decode() in run_ids]

    async def _delete_checkpoints(self, thread_id: str, ns: str, checkpoint_ids: Sequence[str]) -> None:
        base = self._base(thread_id, ns)

        def fill(pipe: Any) -> None:
            for cid in checkpoint_ids:
                pipe.delete(f"{base}cp:{cid}", f"{base}wr:{cid}")
            pipe.zrem(f"{base}ids", *checkpoint_ids)

        await self.pipeline(fill, transaction=True)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread to another (one transaction, in the target's slot)."""
        await self.ready()
        source, target = str(source_thread_id), str(target_thread_id)
        namespaces = await self._namespaces(source)
        if not namespaces:
            return
        now = time.time()
        await self.index_thread(target, now)
        copies: list[tuple[str, str, dict[bytes, bytes], dict[bytes, bytes]]] = []  # (ns, id, record, writes)
        for ns in namespaces:
            src = self._base(source, ns)
            for cid in await self._ids(source, ns):
                record = cast(dict[bytes, bytes], await self.client.hgetall(f"{src}cp:{cid}"))  # bytes: see reads
                if record:
                    writes = cast(dict[bytes, bytes], await self.client.hgetall(f"{src}wr:{cid}"))
                    copies.append((ns, cid, record, writes))
        transcript = cast(list[bytes], await self.client.lrange(self._log_key(source), 0, -1))

        def fill(pipe: Any) -> None:
            pipe.delete(self._log_key(target))
            if transcript:
                pipe.rpush(self._log_key(target), *transcript)
            for ns, cid, record, writes in copies:
                dst = self._base(target, ns)
                pipe.hset(f"{dst}cp:{cid}", mapping=record)
                if writes:
                    pipe.hset(f"{dst}wr:{cid}", mapping=writes)
                pipe.zadd(f"{dst}ids", {cid: 0})
            pipe.sadd(self._ns_key(target), *map(quote_key, namespaces))
            pipe.set(self.at_key(target), repr(now))

        await self.pipeline(fill, transaction=True)
        await self.refresh_ttl(target)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint (``keep_latest``) or delete all (``delete``).

        Checkpoints are stored whole, so the latest one stands on its own after pruning.
        """
        if strategy not in {"keep_latest", "delete"}:
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        await self.ready()
        for thread_id in map(str, thread_ids):
            if strategy == "delete":
                await self.adelete_thread(thread_id)
                continue
            for ns in await self._namespaces(thread_id):
                older = (await self._ids(thread_id, ns))[1:]
                if older:
                    await self._delete_checkpoints(thread_id, ns, older)

    # ------------------------------------------------------------------ the sessions list

    async def index_thread(self, thread_id: str, when: float) -> None:
        """Add a thread to the sessions list before its write; a failure is repaired by the next listing."""
        try:
            await self.client.zadd(self._index_key(), {thread_id: when})
        except (redis.exceptions.RedisError, *CLUSTER_ERRORS, OSError) as exc:
            # the index can live on another node than the thread: its loss must not lose the turn
            self._index_stale = True
            log.warning("could not add session %r to %s (%s); it is rebuilt on the next listing",
                        thread_id, self._index_key(), exc)  # fmt: skip

    async def _indexed_threads(self) -> list[str]:
        if self._index_stale:
            await self.reindex()
        return [t.decode() for t in cast(list[bytes], await self.client.zrevrange(self._index_key(), 0, -1))]

    async def _alive(self, thread_ids: Sequence[str]) -> list[bool]:
        """Whether each thread still has its ``at`` key (on a cluster, one request per node)."""
        found = await self.pipeline(
            lambda pipe: [pipe.exists(self.at_key(thread_id)) for thread_id in thread_ids], transaction=False
        )
        return [bool(n) for n in found]

    async def reindex(self) -> int:
        """Rebuild the sessions list from a SCAN of every thread's ``at`` key (every master of a cluster).

        Returns how many sessions it lists. Entries of threads that are gone are dropped by the next listing.
        """
        await self.ready()
        self._index_stale = False
        pattern = f"{_glob(self.prefix)}:{{*}}:at"
        start = len(self.prefix) + 2
        found: dict[str, float] = {}
        async for raw in self.client.scan_iter(match=pattern, count=1000):
            key = raw.decode()
            tag = key[start : -len("}:at")]
            if "}" in tag:  # not a thread's key (the prefix itself ends in a pattern that matched)
                continue
            when = await self.client.get(key)
            if when is not None:
                found[unquote(tag)] = float(when)
        if found:
            await self.client.zadd(self._index_key(), found)
        return len(found)

    async def thread_ids(
        self, limit: int = 100, offset: int = 0, where: Callable[[str], bool] | None = None
    ) -> list[tuple[str, float]]:
        """Return (thread id, last write time) pairs, most recent first; expired and deleted threads are dropped.

        With ``where``, only threads it accepts count (``offset`` and ``limit`` apply to those): the
        sessions of one API key, say.
        """
        await self.ready()
        if self._index_stale:  # an add was lost: rebuild before listing
            await self.reindex()
        if self.ttl > 0:
            await self.client.zremrangebyscore(self._index_key(), "-inf", time.time() - self.ttl)
        # unfiltered, the page asked for is read directly; filtered, from the top until enough pass
        start, skip = (offset, 0) if where is None else (0, offset)
        page_size = limit if where is None else max(200, limit)
        found: list[tuple[str, float]] = []
        while len(found) < skip + limit:
            raw = cast(  # bytes: see reads
                list[tuple[bytes, float]],
                await self.client.zrevrange(self._index_key(), start, start + page_size - 1, withscores=True),
            )
            if not raw:
                break
            page = [(t.decode(), score) for t, score in raw]
            alive = await self._alive([t for t, _ in page])
            settled = time.time() - INDEX_GRACE_S
            dead = [t for (t, score), ok in zip(page, alive, strict=True) if not ok and score < settled]
            if dead:
                await self.client.zrem(self._index_key(), *dead)  # then read the page again, without them
                continue
            found += [entry for entry, ok in zip(page, alive, strict=True) if ok and (where is None or where(entry[0]))]
            start += page_size
        return found[skip : skip + limit]

    async def rollback_run(self, thread_id: str, run_id: str) -> int:
        """Delete what one run wrote to a thread (a turn that did not complete); return how many checkpoints.

        A thread left with no checkpoint at all (a first turn that failed) is deleted whole, so it is
        not listed as an empty session.
        """
        await self.ready()
        thread_id, removed = str(thread_id), 0
        for ns in await self._namespaces(thread_id):
            if doomed := await self._written_by(thread_id, ns, {str(run_id)}):
                await self._delete_checkpoints(thread_id, ns, doomed)
                removed += len(doomed)
        if removed and not any([await self._ids(thread_id, ns) for ns in await self._namespaces(thread_id)]):
            await self.adelete_thread(thread_id)
        return removed

    async def latest_metadata(self, thread_ids: Sequence[str], ns: str = "") -> list[dict[str, Any]]:
        """Return each thread's latest checkpoint metadata ({} when none or unreadable), in two round trips.

        Lists sessions by what their metadata records (repository, title) without reading their messages.
        """
        await self.ready()
        if not thread_ids:
            return []
        newest = await self.pipeline(
            lambda pipe: [pipe.zrevrange(self._base(t, ns) + "ids", 0, 0) for t in thread_ids], transaction=False
        )
        found = [(n, thread, ids[0].decode()) for n, (thread, ids) in enumerate(zip(thread_ids, newest, strict=True))
                 if ids]  # fmt: skip
        records = await self.pipeline(
            lambda pipe: [pipe.hmget(f"{self._base(t, ns)}cp:{cid}", "mtype", "metadata") for _, t, cid in found],
            transaction=False,
        )
        out: list[dict[str, Any]] = [{} for _ in thread_ids]
        for (n, _thread, _cid), (mtype, blob) in zip(found, records, strict=True):
            if mtype is None or blob is None:
                continue
            try:
                out[n] = dict(self.serde.loads_typed((mtype.decode(), blob)) or {})
            except Exception:
                log.warning("could not read the metadata of a checkpoint of %s", _thread)
        return out

    async def has_thread(self, thread_id: str) -> bool:
        """Whether the thread has anything stored."""
        await self.ready()
        return bool(await self.client.exists(self.at_key(thread_id)))

    async def ping(self) -> None:
        """Raise if Redis does not answer; find whether it is a cluster; remember the event loop for sync methods."""
        self._loop = asyncio.get_running_loop()
        await self.ready()
        await self.client.ping()

    # ------------------------------------------------------------------ sync

    def _run(self, coro: Any) -> Any:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or loop.is_closed() or running is loop:
            coro.close()
            raise RuntimeError(
                "RedisCheckpointSaver is async: use its a* methods (graph.ainvoke/astream); the sync ones work "
                "only from another thread while the saver's event loop runs"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._run(collect())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._run(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(self.aprune(thread_ids, strategy=strategy))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Return a version string that sorts after ``current`` (as LangGraph's own savers do)."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{time.time_ns() % 1_000_000:06}"
