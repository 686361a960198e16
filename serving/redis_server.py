"""Start a local Redis for the service when none answers (what `make run` and `cairn serve` rely on)."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

from cairn.errors import RedisUnavailable
from cairn.processes import ChildProcess, ChildStatus, Supervisor, read_status, wait_until
from config import Settings
from serving.keys import is_loopback


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


def free_cluster_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` ports free on ``host`` whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < count:
        port = rng.randrange(20000, 45000)
        if port not in ports and _bindable(host, port) and _bindable(host, port + 10000):
            ports.append(port)
    return ports


def _bindable(host: str, port: int) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, port))
    except OSError:
        return False
    return True


def start_redis_cluster(
    ports: Sequence[int], data_dir: Path, *, replicas: int = 0, host: str = "127.0.0.1", node_timeout_ms: int = 2000
) -> list[ChildProcess]:
    """Start one cluster-mode redis-server per port and join them (``redis-cli --cluster create``).

    A cluster node also listens on its port + 10000 (the cluster bus), so ports are at most 55535
    (``free_cluster_ports`` picks such ports).

    With ``replicas`` R, every R+1 ports make one master and R replicas (so 6 ports and 1 replica:
    3 masters, 3 replicas). Each node keeps its data and ``nodes.conf`` in DATA_DIR/PORT. Returns the
    processes, in port order; stop them all to stop the cluster. Every write is fsynced: this is the
    cluster of the tests and ``make bench-cluster`` (docs/deploy.md#redis-cluster sets up a real one).
    """
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RedisUnavailable("redis-cli is not installed", "run 'make install' (apt-get install redis-server)")
    extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(node_timeout_ms), "--appendfsync", "always"]  # fmt: skip
    nodes: list[ChildProcess] = []
    try:
        for port in ports:
            nodes.append(start_redis(port, data_dir / str(port), host=host, extra=extra))
        create = [cli, "--cluster", "create", *(f"{host}:{port}" for port in ports),
                  "--cluster-replicas", str(replicas), "--cluster-yes"]  # fmt: skip
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise RedisUnavailable(f"redis-cli --cluster create failed: {(done.stdout + done.stderr)[-500:]}")
        if not wait_until(lambda: all(_cluster_ok(cli, host, port) for port in ports), timeout=30):
            raise RedisUnavailable(f"the cluster on {host}:{ports[0]}.. did not report cluster_state:ok")
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def _cluster_ok(cli: str, host: str, port: int) -> bool:
    """Whether a cluster node reports ``cluster_state:ok`` and, for a replica, has synced with its master.

    A replica killed before its first sync has no data to take over with: it never fails over.
    """

    def ask(*command: str) -> str:
        return subprocess.run([cli, "-h", host, "-p", str(port), *command], capture_output=True, text=True,
                              timeout=5, check=False).stdout  # fmt: skip

    replication = ask("info", "replication")
    synced = "role:slave" not in replication or "master_link_status:up" in replication
    return synced and "cluster_state:ok" in ask("cluster", "info")


def status_path(settings: Settings) -> Path:
    """Return the file where the supervisor of a Redis that `cairn serve` started records its state."""
    return Path(settings.data_dir) / "redis-server.json"


def supervised_status(settings: Settings) -> ChildStatus | None:
    """Return what the live supervisor of the local Redis records (None when Cairn did not start it)."""
    status = read_status(status_path(settings))
    return status if status is not None and status.details.get("url") == settings.redis_url else None


@contextlib.contextmanager
def local_redis(
    settings: Settings, *, autostart: bool = True, supervise: bool = False
) -> Iterator[ChildProcess | None]:
    """Make sure Redis answers at CAIRN_REDIS_URL while the block runs, starting one if it can.

    Only a loopback URL is started here (Debian's ``redis-server``, appendonly persistence in
    DATA_DIR/redis); one already answering is reused and left running; one started here is stopped
    (and flushed to disk) on exit. With ``supervise``, one that dies meanwhile is reaped and started
    again with backoff (its appendonly file brings the sessions back), and DATA_DIR/redis-server.json
    says how it stands for ``/ready``.
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
    supervisor = (
        Supervisor(process, lambda: redis_answers(host, port), status_path=status_path(settings), max_restarts=5,
                   backoff=0.5, start_timeout=10, details={"url": settings.redis_url}).start()
        if supervise
        else None
    )  # fmt: skip
    try:
        yield process
    finally:
        if supervisor is not None:
            supervisor.stop()
        process.stop()
