"""Sessions stored before hash tags (``P:threads``, ``P:t:T:...``), counted and moved into today's layout.

``cairn sessions migrate`` runs ``migrate``; until it has, ``/ready`` warns that those sessions are
not shown (``old_layout_sessions``). The layout today is in ``serving/checkpoint.py``.
"""

from __future__ import annotations

from typing import Any, cast

from serving.checkpoint import RedisCheckpointSaver, quote_key


def old_base(saver: RedisCheckpointSaver, thread_id: str) -> str:
    """Return the key prefix of a thread in the layout before hash tags (``P:t:T:``)."""
    return f"{saver.prefix}:t:{quote_key(thread_id)}:"


async def old_layout_sessions(saver: RedisCheckpointSaver) -> int:
    """Return how many sessions are still in the layout before hash tags (``cairn sessions migrate``)."""
    await saver.ready()
    return int(await saver.client.zcard(f"{saver.prefix}:threads"))


async def migrate(saver: RedisCheckpointSaver) -> int:
    """Move every session of the layout before hash tags into this one; return how many were moved.

    Per session: its keys are copied in one transaction (a session already in the new layout is
    left as it is), then the old keys are deleted, then it leaves the old list. Safe to run again
    after an interruption, and while the service runs.
    """
    await saver.ready()
    old_index = f"{saver.prefix}:threads"
    moved = 0
    # Replies are bytes: the saver's clients are made without decode_responses. redis-py's hints cannot know
    # that (they say bytes | str) and give ZRANGE one type with and without scores, so reads cast to what comes.
    threads = cast(list[tuple[bytes, float]], await saver.client.zrange(old_index, 0, -1, withscores=True))
    for raw, when in threads:
        thread_id = raw.decode()
        old = old_base(saver, thread_id)
        old_keys = [f"{old}ns", f"{old}usage"]
        spaces = [n.decode() for n in cast(set[bytes], await saver.client.smembers(f"{old}ns"))]
        copy: list[tuple[str, dict[bytes, bytes]]] = []
        ids: dict[str, list[str]] = {}
        for quoted in spaces:
            base = f"{old}{quoted}:"
            ids[quoted] = [i.decode() for i in cast(list[bytes], await saver.client.zrange(f"{base}ids", 0, -1))]
            old_keys.append(f"{base}ids")
            for cid in ids[quoted]:
                for kind in ("cp", "wr"):
                    old_keys.append(f"{base}{kind}:{cid}")
                    record = cast(dict[bytes, bytes], await saver.client.hgetall(f"{base}{kind}:{cid}"))
                    copy.append((f"{saver.thread_base(thread_id)}{quoted}:{kind}:{cid}", record))
        usage = cast(dict[bytes, bytes], await saver.client.hgetall(f"{old}usage"))
        if not await saver.client.exists(saver.at_key(thread_id)):
            await saver.index_thread(thread_id, when)
            new = saver.thread_base(thread_id)

            def fill(pipe: Any, new: str = new, ids: dict = ids, copy: list = copy, usage: dict = usage,
                     when: float = when) -> None:  # fmt: skip
                for key, mapping in copy:
                    if mapping:
                        pipe.hset(key, mapping=mapping)
                for quoted, cids in ids.items():
                    if cids:
                        pipe.zadd(f"{new}{quoted}:ids", dict.fromkeys(cids, 0))
                    pipe.sadd(f"{new}ns", quoted)
                if usage:
                    pipe.hset(f"{new}usage", mapping=usage)
                pipe.set(f"{new}at", repr(when))

            await saver.pipeline(fill, transaction=True)
            await saver.refresh_ttl(thread_id)
            moved += 1
        for key in old_keys:  # one by one: the old keys of one session span slots
            await saver.client.delete(key)
        await saver.client.zrem(old_index, thread_id)
    return moved
