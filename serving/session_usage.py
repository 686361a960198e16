"""Each session's token counters, kept beside its checkpoints: ``P:{T}:usage``, a hash in the thread's slot.

The service adds a turn's tokens when the turn completes (``serving/chat.py``) and reads them for
``GET /sessions/{id}``; the key carries the thread's hash tag and TTL like every key of the session.
"""

from __future__ import annotations

from typing import Any, cast

from serving.checkpoint import RedisCheckpointSaver


async def record_usage(saver: RedisCheckpointSaver, thread_id: str, usage: dict[str, int]) -> None:
    """Add a turn's token counts to the session's totals."""
    await saver.ready()
    key = saver.thread_base(thread_id) + "usage"

    def fill(pipe: Any) -> None:
        for name, value in usage.items():
            pipe.hincrby(key, name, int(value))
        pipe.hincrby(key, "turns", 1)

    await saver.pipeline(fill, transaction=True)
    await saver.refresh_ttl(thread_id)


async def session_usage(saver: RedisCheckpointSaver, thread_id: str) -> dict[str, int]:
    """Return the session's token totals (prompt_tokens, completion_tokens, total_tokens, turns)."""
    await saver.ready()
    # bytes: the saver's clients are made without decode_responses (redis-py's hint says bytes | str)
    raw = cast(dict[bytes, bytes], await saver.client.hgetall(saver.thread_base(thread_id) + "usage"))
    return {k.decode(): int(v) for k, v in raw.items()}
