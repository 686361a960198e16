"""Start a local Redis for the service when none answers (what `make run` and `cairn serve` rely on)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

from cairn.errors import RedisUnavailable
from cairn.processes import ChildProcess
from config import Settings
from serving.security import is_loopback


def redis_answers(host: str, port: int) -> bool:
    """Return True when a Redis server answers PING on host:port (a password-protected one counts)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def redis_command(port: int, data_dir: Path, *, host: str = "127.0.0.1", extra: Sequence[str] = ()) -> list[str]:
    """Return the command line of a redis-server on host:port, appendonly, with its data in ``data_dir``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server is not installed", "run 'make install' (apt-get install redis-server)")
    return [binary, "--bind", host, "--port", str(port), "--dir", str(data_dir.resolve()), "--appendonly", "yes",
            "--save", "", "--protected-mode", "yes", "--logfile", "", *extra]  # fmt: skip


def start_redis(port: int, data_dir: Path, *, host: str = "127.0.0.1", extra: Sequence[str] = ()) -> ChildProcess:
    """Start a redis-server and wait until it answers; its log is DATA_DIR/redis.log."""
    data_dir.mkdir(parents=True, exist_ok=True)
    process = ChildProcess(
        redis_command(port, data_dir, host=host, extra=extra), name="redis-server", log_path=data_dir / "redis.log"
    )
    return process.start(lambda: redis_answers(host, port), timeout=10, error=RedisUnavailable)


@contextlib.contextmanager
def local_redis(settings: Settings, *, autostart: bool = True) -> Iterator[ChildProcess | None]:
    """Make sure Redis answers at CAIRN_REDIS_URL while the block runs, starting one if it can.

    Only a loopback URL is started here (Debian's ``redis-server``, appendonly persistence in
    DATA_DIR/redis); one already answering is reused and left running; one started here is stopped
    (and flushed to disk) on exit.
    """
    url = urlparse(settings.redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if redis_answers(host, port) or not autostart:
        yield None
        return
    if not is_loopback(host) or url.scheme != "redis" or shutil.which("redis-server") is None:
        why = "redis-server is not installed" if shutil.which("redis-server") is None else f"{host} is not this machine"
        print(f"cairn: Redis at {settings.redis_url} does not answer and {why}; sessions are unavailable "
              "until it does (stateless requests work)", file=sys.stderr)  # fmt: skip
        yield None
        return
    data = Path(settings.data_dir) / "redis"
    print(f"cairn: starting redis-server on {host}:{port} (data in {data})", file=sys.stderr)
    process = start_redis(port, data, host=host)
    try:
        yield process
    finally:
        process.stop()
