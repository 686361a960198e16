"""Child processes Cairn starts and owns (the llama.cpp server, redis-server, services in tests).

One way to do it everywhere: start the process in its own session with its output in a log file,
wait until a readiness check passes (or the process dies, or time runs out, each reported with the
log's tail), and stop it with SIGTERM to its whole process group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cairn.errors import CairnError


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_ok(url: str, timeout: float = 0.5) -> bool:
    """Return True when a GET of ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until it returns True or ``timeout`` seconds pass; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class ChildProcess:
    """A process started in its own session, logged to a file, stopped with its whole group."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        name: str,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = [str(part) for part in command]
        self.name = name
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return self.process.pid if self.process is not None else None

    def start(
        self,
        ready: Callable[[], bool],
        *,
        timeout: float = 60.0,
        error: type[CairnError] = CairnError,
        hint: str | None = None,
    ) -> ChildProcess:
        """Start the process and wait until ``ready()``; raise ``error`` if it exits or never gets ready."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output: int | object = self.log_path.open("ab")
        else:
            output = subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.command,
                stdout=output,  # type: ignore[arg-type]
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own group: Ctrl-C in a terminal reaches us, not it
            )
        except OSError as exc:
            raise error(f"Could not start {self.name}: {exc}", hint) from exc
        finally:
            if output is not subprocess.DEVNULL:
                output.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise error(
                    f"{self.name} exited with code {self.process.returncode}{self._log_tail()}",
                    hint or self._see_log(),
                )
            if ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise error(f"{self.name} did not get ready within {timeout:.0f}s{self._log_tail()}", hint or self._see_log())

    def stop(self, grace: float = 10.0) -> int | None:
        """Stop the process group (SIGTERM, then SIGKILL after ``grace`` seconds); return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit and return its exit code (``subprocess.TimeoutExpired`` past ``timeout``)."""
        assert self.process is not None, "not started"
        return self.process.wait(timeout)

    def kill(self) -> None:
        """Kill the process group at once (SIGKILL), as a crash would."""
        if self.running:
            self.signal(signal.SIGKILL)
            assert self.process is not None
            self.process.wait()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log_tail(self, lines: int = 3) -> str:
        """The log's last lines, on one line (an error message stays one line)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = [line.strip() for line in self.log_path.read_text(errors="replace")[-4000:].splitlines() if line.strip()]
        return f": {' | '.join(tail[-lines:])}" if tail else ""

    def _see_log(self) -> str | None:
        return f"see {self.log_path}" if self.log_path is not None else None
