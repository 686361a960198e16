"""The embedded server counts as started only when it completes a token; its death is named, and restarted.

Driven by a stand-in server (``fake_model_server.py``) that lists its model and dies at a chosen
completion with a chosen signal, as an AMX build of llama.cpp does inside a VM (SIGILL).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cairn.errors import EmbeddedModelError, ExitCode
from cairn.processes import ChildProcess, Supervisor, describe_exit, free_port, read_status
from config import Settings
from models import embedded
from models.embedded import EmbeddedServer, embedded_failure, embedded_model, status_path

FAKE = Path(__file__).with_name("fake_model_server.py")


def _settings(tmp_path: Path, port: int | None = None) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", index_dir=tmp_path / "index",
                    embedded_port=port or free_port(), model="embedded")  # fmt: skip


@pytest.fixture
def fake_llama(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Make EmbeddedServer start the stand-in; the list it yields holds the stand-in's extra options."""
    options: list[str] = []

    def command(self: EmbeddedServer) -> list[str]:
        return [sys.executable, str(FAKE), "--port", str(self.settings.embedded_port),
                "--count-file", str(tmp_path / "completions"), *options]  # fmt: skip

    monkeypatch.setattr(EmbeddedServer, "command", command)
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: object())
    yield options


def test_exits_are_named_in_words() -> None:
    assert describe_exit(-4) == "died with SIGILL (illegal instruction)"
    assert describe_exit(-9).startswith("died with SIGKILL (killed; often the kernel's out-of-memory killer")
    assert describe_exit(3) == "exited with code 3"


def test_a_server_that_lists_models_but_dies_at_its_first_token_does_not_start(
    fake_llama: list[str], tmp_path: Path
) -> None:
    server = EmbeddedServer(_settings(tmp_path))
    with pytest.raises(EmbeddedModelError) as raised:
        server.start(timeout=20)
    error = raised.value
    assert error.message.startswith("The embedded model server died with SIGILL (illegal instruction): ")
    assert "CPU instructions this machine cannot run" in error.message
    assert "make rebuild-model" in error.hint and str(server.log_path) in error.hint
    assert error.exit_code == ExitCode.EMBEDDED_MODEL


def test_other_deaths_say_what_to_check(fake_llama: list[str], tmp_path: Path) -> None:
    fake_llama += ["--signal", "KILL"]
    with pytest.raises(EmbeddedModelError) as raised:
        EmbeddedServer(_settings(tmp_path)).start(timeout=20)
    assert "died with SIGKILL" in raised.value.message and "dmesg" in raised.value.hint


def test_cairn_ask_names_the_death_with_exit_code_9(
    fake_llama: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_index
) -> None:
    from cli import app

    index = sample_index.generation.path.parent
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CAIRN_EMBEDDED_PORT", str(free_port()))
    monkeypatch.setenv("CAIRN_MODEL", "embedded")
    result = CliRunner().invoke(app, ["ask", "How does the LRU cache evict?", "--index", str(index)])
    assert result.exit_code == ExitCode.EMBEDDED_MODEL, result.output
    assert "died with SIGILL (illegal instruction)" in result.output
    assert "hint: make rebuild-model" in result.output


def test_a_death_in_the_middle_of_a_command_is_named_not_called_a_connection_error(
    fake_llama: list[str], tmp_path: Path
) -> None:
    fake_llama += ["--die-at", "2"]  # the start-up token passes; the first real request kills it
    settings = _settings(tmp_path)
    with pytest.raises(EmbeddedModelError) as raised, embedded_model(settings, announce=False) as server:
        assert server is not None
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{server.base_url}/chat/completions", json={}, timeout=5)
        server.process.wait(5)
        raise ConnectionError("Connection error.")  # what the model client says
    assert "died with SIGILL" in raised.value.message


def test_the_supervisor_restarts_once_then_reports_the_death(fake_llama: list[str], tmp_path: Path) -> None:
    fake_llama += ["--die-at", "3,5"]  # start-up token (1) passes, (3) kills, restart's start-up (4) passes
    settings = _settings(tmp_path)
    server = EmbeddedServer(settings)
    server.start(timeout=20)
    supervisor = server.supervise(backoff=0.2)
    try:
        assert read_status(status_path(settings)).state == "running"
        assert embedded_failure(settings) is None
        _complete(server)  # completion 2 passes
        _complete(server, dies=True)  # completion 3 kills it
        status = _wait_for(settings, lambda s: s.state == "running" and s.restarts == 1)
        assert status.cause == "died with SIGILL (illegal instruction)"
        _complete(server, dies=True)  # completion 5 kills it again, within a minute: not restarted
        status = _wait_for(settings, lambda s: s.state == "failed")
        failure = embedded_failure(settings)
        assert failure is not None and "died with SIGILL" in failure.message and "rebuild-model" in failure.hint
    finally:
        supervisor.stop()
    assert read_status(status_path(settings)).state == "stopped"


def test_the_service_answers_503_naming_the_death_and_ready_shows_it(
    fake_llama: list[str], tmp_path: Path, sample_index
) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    fake_llama += ["--die-at", "3"]
    index = sample_index.generation.path.parent
    settings = _settings(tmp_path).model_copy(
        update={"index_dir": index, "redis_url": f"redis://127.0.0.1:{free_port()}/0", "model_max_retries": 0}
    )
    server = EmbeddedServer(settings)
    server.start(timeout=20)
    supervisor = server.supervise(max_restarts=0)
    try:
        with TestClient(create_app(settings)) as client:
            ready = client.get("/ready").json()
            assert ready["checks"]["model"]["ok"], ready  # completion 2: it answers a token
            question = {"model": "cairn-agent", "messages": [{"role": "user", "content": "How does the cache evict?"}]}
            reply = client.post("/v1/chat/completions", json=question)  # completion 3 kills it
            assert reply.status_code == 503, reply.text
            error = reply.json()["error"]
            assert error["code"] == "model_crashed"
            assert (
                "died with SIGILL (illegal instruction)" in error["message"]
                and "make rebuild-model" in error["message"]
            )
            _wait_for(settings, lambda s: s.state == "failed")
            client.app.state.cairn._model_probe = None  # past the probe's cache
            model = client.get("/ready").json()["checks"]["model"]
            assert not model["ok"] and model["state"] == "failed" and "SIGILL" in model["error"]
    finally:
        supervisor.stop()


def test_ready_reuses_its_probe_for_a_few_seconds(fake_llama: list[str], tmp_path: Path, sample_index) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    fake_llama += ["--die-at", "0"]
    index = sample_index.generation.path.parent
    settings = _settings(tmp_path).model_copy(
        update={"index_dir": index, "redis_url": f"redis://127.0.0.1:{free_port()}/0"}
    )
    counter = tmp_path / "completions"
    with ChildProcess(EmbeddedServer(settings).command(), name="fake") as fake:
        fake.start(lambda: embedded.is_serving(settings), timeout=20)
        with TestClient(create_app(settings)) as client:
            for _ in range(5):
                assert client.get("/ready").json()["checks"]["model"]["ok"]
    assert counter.read_text() == "1"  # five readiness checks, one token asked for


def test_supervisor_counts_a_restart_that_dies_again(tmp_path: Path) -> None:
    """A restart that itself dies (the same bad build) is named, not retried past the limit."""
    port = free_port()
    command = [sys.executable, str(FAKE), "--port", str(port), "--die-at", "1"]
    child = ChildProcess(command, name="fake", log_path=tmp_path / "fake.log")
    child.start(lambda: embedded.http_ok(f"http://127.0.0.1:{port}/v1/models"), timeout=20)

    def ready() -> bool:
        return embedded.completes_a_token(f"http://127.0.0.1:{port}/v1", timeout=5)

    supervisor = Supervisor(child, ready, status_path=tmp_path / "status.json", max_restarts=2, backoff=0.1,
                            start_timeout=20, details={"port": port}).start()  # fmt: skip
    try:
        ready()  # kills it
        deadline = time.monotonic() + 30
        while (status := read_status(tmp_path / "status.json")).state != "failed":
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert status.cause == "died with SIGILL (illegal instruction)" and status.restarts == 0
    finally:
        supervisor.stop()


def _complete(server: EmbeddedServer, dies: bool = False) -> None:
    try:
        httpx.post(f"{server.base_url}/chat/completions", json={}, timeout=5).raise_for_status()
    except httpx.HTTPError:
        assert dies
    else:
        assert not dies


def _wait_for(settings: Settings, condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(status_path(settings))
        if status is not None and condition(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_beside_a_service_the_model_leaves_a_core_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.embedded import default_threads

    assert [default_threads(n, beside_service=True) for n in (1, 2, 16)] == [1, 1, 15]
    assert [default_threads(n, beside_service=False) for n in (1, 2, 16)] == [1, 2, 16]
    monkeypatch.setattr(embedded.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(embedded, "bundled_gguf", lambda: FAKE)  # any file that exists
    command = EmbeddedServer(_settings(tmp_path), beside_service=True).command()
    assert command[command.index("--n_threads") + 1] == "7"
    pinned = _settings(tmp_path).model_copy(update={"embedded_threads": 3})
    command = EmbeddedServer(pinned, beside_service=True).command()
    assert command[command.index("--n_threads") + 1] == "3"
