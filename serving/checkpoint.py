"""A LangGraph checkpointer on core Redis commands (Redis >= 6.2, Valkey; no modules).

``langgraph-checkpoint-redis`` needs RedisJSON and RediSearch, which plain Redis servers (Debian's,
most managed offerings, Valkey) do not have. This saver uses hashes, sorted sets and MULTI/EXEC only.

Layout (``P`` = the key prefix, ``T`` and ``N`` the URL-quoted thread id and namespace)::

    P:threads              zset   thread id -> time of its last write (the sessions list)
    P:t:T:ns               set    the thread's checkpoint namespaces
    P:t:T:N:ids            zset   checkpoint ids (score 0: ordered by id, which is time-ordered)
    P:t:T:N:cp:ID          hash   checkpoint, metadata, parent id, run id (serialized by ``serde``)
    P:t:T:N:wr:ID          hash   "task_id|idx" -> pending write
    P:t:T:usage            hash   tokens the session's turns used (the service adds them)

Each checkpoint is stored whole (channel values included), so a checkpoint never depends on another
key to be read back. Every write of a checkpoint happens in one MULTI/EXEC transaction: a killed
service leaves either the whole checkpoint or none of it. With a TTL, every key of a thread is given
the TTL again on each write, so a session expires that long after its last turn, all at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
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
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

# Refresh the TTL of every key of one thread (KEYS[1] = its namespace set; ARGV = thread base, ttl).
_TOUCH = """
local ttl = tonumber(ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', ARGV[1] .. 'usage', ttl)
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


def _q(text: str) -> str:
    return quote(text, safe="")


class RedisCheckpointSaver(BaseCheckpointSaver[str]):
    """Checkpoints and pending writes in Redis, atomically per write, with an optional TTL.

    Use it from async code (the service does); the sync methods hop onto the saver's event loop
    from other threads, as LangGraph's own async savers do.
    """

    def __init__(self, client: Redis, *, prefix: str = "cairn", ttl: int = 0) -> None:
        super().__init__()
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self._touch = client.register_script(_TOUCH)
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "cairn", ttl: int = 0, timeout: float = 5.0) -> RedisCheckpointSaver:
        """Return a saver on a new connection pool for ``url`` (socket timeouts of ``timeout`` seconds)."""
        # A restarted Redis leaves pooled connections dead; retry once on a fresh one instead of failing.
        client = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
        return cls(client, prefix=prefix, ttl=ttl)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    # ------------------------------------------------------------------ keys

    def _threads_key(self) -> str:
        return f"{self.prefix}:threads"

    def _thread_base(self, thread_id: str) -> str:
        return f"{self.prefix}:t:{_q(thread_id)}:"

    def _ns_key(self, thread_id: str) -> str:
        return self._thread_base(thread_id) + "ns"

    def _base(self, thread_id: str, ns: str) -> str:
        return f"{self._thread_base(thread_id)}{_q(ns)}:"

    # ------------------------------------------------------------------ reads

    async def _namespaces(self, thread_id: str) -> list[str]:
        raw = await self.client.smembers(self._ns_key(thread_id))
        return sorted(unquote(n.decode()) for n in raw)

    async def _ids(self, thread_id: str, ns: str) -> list[str]:
        """Return the checkpoint ids of a thread/namespace, newest first."""
        raw = await self.client.zrevrange(self._base(thread_id, ns) + "ids", 0, -1)
        return [i.decode() for i in raw]

    async def _load(self, thread_id: str, ns: str, checkpoint_ids: Sequence[str]) -> list[CheckpointTuple | None]:
        if not checkpoint_ids:
            return []
        base = self._base(thread_id, ns)
        async with self.client.pipeline(transaction=False) as pipe:
            for cid in checkpoint_ids:
                pipe.hgetall(f"{base}cp:{cid}")
                pipe.hgetall(f"{base}wr:{cid}")
            raw = await pipe.execute()
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
        if config is not None:
            threads = [str(config["configurable"]["thread_id"])]
        else:
            threads = [t.decode() for t in await self.client.zrevrange(self._threads_key(), 0, -1)]
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
        """Store a checkpoint (whole, in one transaction) and return the config that names it."""
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
        base = self._base(thread_id, ns)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(f"{base}cp:{checkpoint['id']}", mapping=record)
            pipe.zadd(f"{base}ids", {checkpoint["id"]: 0})
            pipe.sadd(self._ns_key(thread_id), _q(ns))
            pipe.zadd(self._threads_key(), {thread_id: time.time()})
            await pipe.execute()
        await self._refresh_ttl(thread_id)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes; a regular write already stored is kept, special ones replaced."""
        configurable = config["configurable"]
        thread_id, ns = str(configurable["thread_id"]), configurable.get("checkpoint_ns", "")
        key = f"{self._base(thread_id, ns)}wr:{configurable['checkpoint_id']}"
        async with self.client.pipeline(transaction=True) as pipe:
            for idx, (channel, value) in enumerate(writes):
                slot = WRITES_IDX_MAP.get(channel, idx)
                type_, blob = self.serde.dumps_typed(value)
                packed = ormsgpack.packb([task_id, channel, type_, blob, task_path])
                field = f"{task_id}|{slot}"
                if slot >= 0:
                    pipe.hsetnx(key, field, packed)
                else:
                    pipe.hset(key, field, packed)
            await pipe.execute()
        await self._refresh_ttl(thread_id)

    async def _refresh_ttl(self, thread_id: str) -> None:
        if self.ttl > 0:
            await self._touch(keys=[self._ns_key(thread_id)], args=[self._thread_base(thread_id), self.ttl])

    async def _thread_keys(self, thread_id: str) -> list[str]:
        keys: list[str] = []
        for ns in await self._namespaces(thread_id):
            base = self._base(thread_id, ns)
            keys.append(f"{base}ids")
            for cid in await self._ids(thread_id, ns):
                keys.extend((f"{base}cp:{cid}", f"{base}wr:{cid}"))
        return keys

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread, in one transaction."""
        thread_id = str(thread_id)
        keys = await self._thread_keys(thread_id)
        async with self.client.pipeline(transaction=True) as pipe:
            if keys:
                pipe.delete(*keys)
            pipe.delete(self._ns_key(thread_id), self._thread_base(thread_id) + "usage")
            pipe.zrem(self._threads_key(), thread_id)
            await pipe.execute()

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that the given runs created, in every thread."""
        wanted = {str(r) for r in run_ids}
        if not wanted:
            return
        for raw in await self.client.zrange(self._threads_key(), 0, -1):
            thread_id = raw.decode()
            for ns in await self._namespaces(thread_id):
                base = self._base(thread_id, ns)
                ids = await self._ids(thread_id, ns)
                async with self.client.pipeline(transaction=False) as pipe:
                    for cid in ids:
                        pipe.hget(f"{base}cp:{cid}", "run_id")
                    runs = await pipe.execute()
                doomed = [cid for cid, run in zip(ids, runs, strict=True) if run and run.decode() in wanted]
                if doomed:
                    await self._delete_checkpoints(thread_id, ns, doomed)

    async def _delete_checkpoints(self, thread_id: str, ns: str, checkpoint_ids: Sequence[str]) -> None:
        base = self._base(thread_id, ns)
        async with self.client.pipeline(transaction=True) as pipe:
            for cid in checkpoint_ids:
                pipe.delete(f"{base}cp:{cid}", f"{base}wr:{cid}")
            pipe.zrem(f"{base}ids", *checkpoint_ids)
            await pipe.execute()

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread to another (one transaction)."""
        source, target = str(source_thread_id), str(target_thread_id)
        namespaces = await self._namespaces(source)
        if not namespaces:
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for ns in namespaces:
                src, dst = self._base(source, ns), self._base(target, ns)
                ids = await self._ids(source, ns)
                for cid in ids:
                    record = await self.client.hgetall(f"{src}cp:{cid}")
                    writes = await self.client.hgetall(f"{src}wr:{cid}")
                    if not record:
                        continue
                    pipe.hset(f"{dst}cp:{cid}", mapping=record)
                    if writes:
                        pipe.hset(f"{dst}wr:{cid}", mapping=writes)
                    pipe.zadd(f"{dst}ids", {cid: 0})
                pipe.sadd(self._ns_key(target), _q(ns))
            pipe.zadd(self._threads_key(), {target: time.time()})
            await pipe.execute()
        await self._refresh_ttl(target)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint (``keep_latest``) or delete all (``delete``).

        Checkpoints are stored whole, so the latest one stands on its own after pruning.
        """
        if strategy not in {"keep_latest", "delete"}:
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in map(str, thread_ids):
            if strategy == "delete":
                await self.adelete_thread(thread_id)
                continue
            for ns in await self._namespaces(thread_id):
                older = (await self._ids(thread_id, ns))[1:]
                if older:
                    await self._delete_checkpoints(thread_id, ns, older)

    # ------------------------------------------------------------------ sessions

    async def thread_ids(self, limit: int = 100, offset: int = 0) -> list[tuple[str, float]]:
        """Return (thread id, last write time) pairs, most recent first; expired threads are dropped."""
        if self.ttl > 0:
            await self.client.zremrangebyscore(self._threads_key(), "-inf", time.time() - self.ttl)
        raw = await self.client.zrevrange(self._threads_key(), offset, offset + limit - 1, withscores=True)
        return [(t.decode(), score) for t, score in raw]

    async def record_usage(self, thread_id: str, usage: dict[str, int]) -> None:
        """Add a turn's token counts to the session's totals."""
        key = self._thread_base(thread_id) + "usage"
        async with self.client.pipeline(transaction=True) as pipe:
            for name, value in usage.items():
                pipe.hincrby(key, name, int(value))
            pipe.hincrby(key, "turns", 1)
            await pipe.execute()
        await self._refresh_ttl(thread_id)

    async def session_usage(self, thread_id: str) -> dict[str, int]:
        """Return the session's token totals (prompt_tokens, completion_tokens, total_tokens, turns)."""
        raw = await self.client.hgetall(self._thread_base(thread_id) + "usage")
        return {k.decode(): int(v) for k, v in raw.items()}

    async def has_thread(self, thread_id: str) -> bool:
        """Whether the thread has anything stored."""
        return await self.client.zscore(self._threads_key(), thread_id) is not None

    async def ping(self) -> None:
        """Raise if Redis does not answer; remember the event loop for the sync methods."""
        self._loop = asyncio.get_running_loop()
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
