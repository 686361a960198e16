"""Start a local Redis for the service when none answers (what `make run` and `cairn serve` rely on)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from config import Settings
from serving.security import is_loopback


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@contextlib.contextmanager
def local_redis(settings: Settings, *, autostart: bool = True) -> Iterator[subprocess.Popen[bytes] | None]:
    """Make sure Redis answers at CAIRN_REDIS_URL while the block runs, starting one if it can.

    Only a loopback URL is started here (Debian's ``redis-server``, appendonly persistence in
    DATA_DIR/redis); one already answering is reused and left running; one started here is stopped
    (and flushed to disk) on exit.
    """
    url = urlparse(settings.redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if _answers(host, port) or not autostart:
        yield None
        return
    binary = shutil.which("redis-server")
    if not is_loopback(host) or url.scheme != "redis" or binary is None:
        why = "redis-server is not installed" if binary is None else f"{host} is not this machine"
        print(f"cairn: Redis at {settings.redis_url} does not answer and {why}; sessions are unavailable "
              "until it does (stateless requests work)", file=sys.stderr)  # fmt: skip
        yield None
        return
    data = Path(settings.data_dir) / "redis"
    data.mkdir(parents=True, exist_ok=True)
    print(f"cairn: starting redis-server on {host}:{port} (data in {data})", file=sys.stderr)
    process = subprocess.Popen(
        [binary, "--bind", host, "--port", str(port), "--dir", str(data.resolve()), "--appendonly", "yes",
         "--save", "", "--protected-mode", "yes", "--logfile", str((data / "redis.log").resolve())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _answers(host, port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {data / 'redis.log'}")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
