"""A real Redis server for the serving tests (Debian's redis-server; `make test` installs it)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from config import get_settings
from models import register_provider
from tests.conftest import SAMPLE_REPO, free_port
from tests.fakes import InstantChatModel

FAKE = InstantChatModel()
register_provider("instant", lambda spec, settings: FAKE)


class RedisProcess:
    """A redis-server on loopback with its data in a temporary folder; can be stopped and restarted."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make test` (it installs Debian's redis-server)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


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
    from config import Settings
    from ingest.pipeline import ingest_repository

    base = tmp_path_factory.mktemp("service")
    settings = Settings(data_dir=base, index_dir=base / "index")
    ingest_repository(SAMPLE_REPO, settings, embedder_factory=lambda: real_embedder)
    return base / "index"


@contextlib.contextmanager
def cairn_env(index_dir: Path, redis_url: str, **extra: str) -> Iterator[dict[str, str]]:
    """Set CAIRN_* for a service (instant fake model, its own Redis key prefix) while the block runs."""
    env = {
        "CAIRN_DATA_DIR": str(index_dir.parent),
        "CAIRN_INDEX_DIR": str(index_dir),
        "CAIRN_MODEL": "instant/fake",
        "CAIRN_REDIS_URL": redis_url,
        "CAIRN_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
        **extra,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        from graphs.agent.deps import clear_model_cache

        clear_model_cache()
        try:
            yield env
        finally:
            get_settings.cache_clear()
            clear_model_cache()


@contextlib.contextmanager
def served(index_dir: Path, redis_url: str, **extra: str) -> Iterator[Server]:
    """Serve a fresh Cairn app with CAIRN_* set as cairn_env does."""
    from serving.app import create_app

    with cairn_env(index_dir, redis_url, **extra), Server(create_app()) as server:
        yield server
