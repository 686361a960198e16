"""A real Redis server and real service processes for the serving tests (Debian's redis-server)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from cairn.processes import ChildProcess, http_ok
from config import Settings
from serving.redis_server import free_cluster_ports, start_redis, start_redis_cluster
from tests.conftest import ROOT, SAMPLE_REPO, free_port

CAIRN = str(Path(sys.executable).with_name("cairn"))


class RedisProcess:
    """A redis-server on loopback with its data in a temporary folder; can be stopped and restarted."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed: run `make test` (it installs Debian's redis-server)")
        # fsync every write, so a restart in a test never loses one
        self.process = start_redis(self.port, self.data_dir, extra=["--appendfsync", "always"])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


class RedisClusterProcess:
    """A Redis Cluster on loopback: ``masters`` cluster-mode redis-servers (each with ``replicas`` replicas)."""

    def __init__(self, data_dir: Path, *, masters: int = 3, replicas: int = 0) -> None:
        self.data_dir = data_dir
        self.replicas = replicas
        self.ports = free_cluster_ports(masters * (1 + replicas))
        self.nodes: list[ChildProcess] = []

    @property
    def url(self) -> str:
        """The URL of one node, as an operator would point CAIRN_REDIS_URL at it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisClusterProcess:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            pytest.fail("redis-server is not installed: run `make test` (it installs Debian's redis-server)")
        # a short node timeout: a killed master is failed over in about two seconds
        self.nodes = start_redis_cluster(self.ports, self.data_dir, replicas=self.replicas, node_timeout_ms=1000)
        return self

    def node(self, port: int) -> ChildProcess:
        """The process of the node on ``port``."""
        return self.nodes[self.ports.index(port)]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def __enter__(self) -> RedisClusterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    """Three masters, no replicas, for the session (a test that kills a node starts a cluster of its own)."""
    with RedisClusterProcess(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    if redis_server.process is None:
        redis_server.start()
    return redis_server.url


class Server:
    """A Cairn app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def service_index(tmp_path_factory: pytest.TempPathFactory, real_embedder) -> Path:
    """The sample repository ingested with the real embedding model; returns the index folder."""
    from ingest.pipeline import ingest_repository

    base = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=base, index_dir=base / "index")
    ingest_repository(SAMPLE_REPO, settings, embedder_factory=lambda: real_embedder)
    return base / "index"


@pytest.fixture(scope="session")
def two_repos(tmp_path_factory: pytest.TempPathFactory, real_embedder) -> Path:
    """A data folder serving two repositories, the sample as 'tinykv' and 'billing', embedded with the real model."""
    from ingest.pipeline import ingest_repository
    from ingest.repos import Repositories
    from tests.repos import write_billing_repo

    base = tmp_path_factory.mktemp("two-repos")
    tinykv = base / "src" / "tinykv"
    shutil.copytree(SAMPLE_REPO, tinykv)
    settings = Settings(_env_file=None, data_dir=base / "data")
    for source in (tinykv, write_billing_repo(base / "src" / "billing")):
        claim = Repositories.of(settings).claim(source.name, source)
        ingest_repository(source, settings.model_copy(update={"index_dir": claim.index_dir}),
                          embedder_factory=lambda: real_embedder)  # fmt: skip
    return base / "data"


def service_settings(index_dir: Path, redis_url: str, **overrides: Any) -> Settings:
    """Settings of a test service: the index, the instant model, this Redis under a key prefix of its own."""
    values: dict[str, Any] = {
        "data_dir": index_dir.parent,
        "index_dir": index_dir,
        "model": "instant",
        "redis_url": redis_url,
        "redis_prefix": f"test-{uuid.uuid4().hex[:8]}",
        **overrides,
    }
    return Settings(_env_file=None, **values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The CAIRN_* environment that makes a child process read the same settings."""
    env = {}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if isinstance(value, list):
            value = ",".join(v.get_secret_value() if hasattr(v, "get_secret_value") else str(v) for v in value)
        elif hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"CAIRN_{name.upper()}"] = str(value)
    return env


@contextlib.contextmanager
def served(index_dir: Path, redis_url: str, **overrides: Any) -> Iterator[Server]:
    """Serve a fresh Cairn app (instant model, its own Redis key prefix) in this process."""
    from serving.app import create_app

    with Server(create_app(service_settings(index_dir, redis_url, **overrides))) as server:
        yield server


class ServiceProcess:
    """`cairn serve` as its own process (to kill it, or to leave the event loop to a real client)."""

    def __init__(self, settings: Settings, *args: str, log_path: Path) -> None:
        self.port = free_port()
        env = {**os.environ, **settings_env(settings)}
        command = [CAIRN, "serve", "--no-start-redis", "--port", str(self.port), *args]
        self.process = ChildProcess(command, name="cairn serve", log_path=log_path, env=env, cwd=ROOT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> ServiceProcess:
        self.process.start(lambda: http_ok(f"{self.url}/health"), timeout=timeout)
        return self

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.process.stop()
