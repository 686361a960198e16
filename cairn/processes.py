"""Child processes Cairn starts and owns (the llama.cpp server, redis-server, services in tests).

One way to do it everywhere: start the process in its own session with its output in a log file,
wait until a readiness check passes (or the process dies, or time runs out, each reported with the
log's tail), and stop it with SIGTERM to its whole process group, then SIGKILL after a grace period.

A long-running owner (``cairn serve``, ``cairn model serve``) hands the process to a ``Supervisor``:
it reaps the process when it exits, names why (the signal or exit code, in words), restarts it with
backoff, and writes where things stand to a small JSON file that any process on the machine can read
(``read_status``), so a service worker can answer "the model server died with SIGILL" instead of
"Connection error".
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from cairn.errors import CairnError

T = TypeVar("T")


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


#: What a signal that ends a process usually means, for the one-line report of its death.
SIGNAL_MEANINGS = {
    signal.SIGILL: "illegal instruction",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "arithmetic error",
    signal.SIGABRT: "aborted",
    signal.SIGKILL: "killed; often the kernel's out-of-memory killer",
    signal.SIGTERM: "terminated",
    signal.SIGINT: "interrupted",
}


def in_background(work: Callable[[], T], name: str) -> concurrent.futures.Future[T]:
    """Run ``work`` in a daemon thread of its own and return the future of its result (or exception).

    A daemon, so a process that exits meanwhile (an error elsewhere, Ctrl-C) does not wait for it.
    """
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(work())
        except BaseException as exc:  # raised where the future's result is asked for
            done.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


def describe_exit(returncode: int) -> str:
    """Return how a process ended, in words: ``died with SIGILL (illegal instruction)``, ``exited with code 1``."""
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"died with signal {-returncode}"
        meaning = SIGNAL_MEANINGS.get(sig)
        return f"died with {sig.name}" + (f" ({meaning})" if meaning else "")
    return f"exited with code {returncode}"


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
        #: Set by ``stop()``: the process ended because its owner asked, not of its own accord.
        self.stopped = False

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited (negative: the signal that ended it), else None."""
        return self.process.poll() if self.process is not None else None

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
        self.stopped = False
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output: IO[bytes] | int = self.log_path.open("ab")
        else:
            output = subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.command,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own group: Ctrl-C in a terminal reaches us, not it
            )
        except OSError as exc:
            raise error(f"Could not start {self.name}: {exc}", hint) from exc
        finally:
            if not isinstance(output, int):  # the child holds its own copy of the log file
                output.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise error(
                    f"{self.name} {describe_exit(self.process.returncode)}{self._log_tail()}",
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
            self.stopped = True
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

    def log_tail(self, lines: int = 3) -> str:
        """The log's last lines, joined on one line ("" without a log)."""
        return self._log_tail(lines).removeprefix(": ")

    def _log_tail(self, lines: int = 3) -> str:
        """The log's last lines, on one line (an error message stays one line)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = [line.strip() for line in self.log_path.read_text(errors="replace")[-4000:].splitlines() if line.strip()]
        return f": {' | '.join(tail[-lines:])}" if tail else ""

    def _see_log(self) -> str | None:
        return f"see {self.log_path}" if self.log_path is not None else None


# ---------------------------------------------------------------- supervision


@dataclass
class ChildStatus:
    """Where a supervised process stands, as its status file records it."""

    name: str
    #: ``running``; ``restarting`` (it died, a restart is pending); ``failed`` (it died and will not be
    #: restarted again, or a restart did not get ready); ``stopped`` (its owner stopped it).
    state: str = "running"
    pid: int | None = None
    #: The supervising process (a status whose owner is gone is stale).
    owner: int = field(default_factory=os.getpid)
    restarts: int = 0
    #: How it last ended, in words (``died with SIGILL (illegal instruction)``), and the log's last lines.
    cause: str | None = None
    log_tail: str | None = None
    since: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the process is up."""
        return self.state == "running"


def write_status(path: Path, status: ChildStatus) -> None:
    """Write ``status`` to ``path`` atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(status)) + "\n")
    os.replace(tmp, path)


def read_status(path: Path) -> ChildStatus | None:
    """Return the status a live supervisor wrote to ``path``; None when there is none or its owner is gone."""
    try:
        data = json.loads(path.read_text())
        status = ChildStatus(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not _alive(status.owner):
        return None
    return status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    """Keep a started ``ChildProcess`` running: reap it when it exits, say why, restart it with backoff.

    After a death it waits ``backoff`` seconds (doubling each time) and starts the process again, at
    most ``max_restarts`` times in a row; a process that then stays up ``healthy_after`` seconds earns
    its restarts back. Past the limit the state is ``failed`` and stays so (the cause is kept for
    whoever asks). Every change is written to ``status_path`` and passed to ``on_change``.
    """

    def __init__(
        self,
        child: ChildProcess,
        ready: Callable[[], bool],
        *,
        status_path: Path | None = None,
        max_restarts: int = 1,
        backoff: float = 1.0,
        healthy_after: float = 60.0,
        start_timeout: float = 60.0,
        poll: float = 0.2,
        details: Mapping[str, Any] | None = None,
        on_change: Callable[[ChildStatus], None] | None = None,
    ) -> None:
        self.child = child
        self.ready = ready
        self.status_path = status_path
        self.max_restarts = max_restarts
        self.backoff = backoff
        self.healthy_after = healthy_after
        self.start_timeout = start_timeout
        self.poll = poll
        self.on_change = on_change
        self.status = ChildStatus(name=child.name, pid=child.pid, details=dict(details or {}))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = time.monotonic()
        self._in_a_row = 0

    def start(self) -> Supervisor:
        """Start watching (the child must be running already)."""
        self._publish()
        self._thread = threading.Thread(target=self._watch, name=f"supervise {self.child.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and stop the child."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.start_timeout + 15)
        self.child.stop()
        self._set(state="stopped", pid=None)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stop.is_set():
            code = self.child.returncode
            if code is None:
                if self._in_a_row and time.monotonic() - self._started_at >= self.healthy_after:
                    self._in_a_row = 0
                self._stop.wait(self.poll)
                continue
            if self._stop.is_set() or self.child.stopped:  # stopped by its owner, not dead
                return
            self._died(code)

    def _died(self, code: int) -> None:
        cause, tail = describe_exit(code), self.child.log_tail()
        if self._in_a_row >= self.max_restarts:
            self._set(state="failed", pid=None, cause=cause, log_tail=tail)
            self._stop.wait()  # nothing more to do until the owner stops
            return
        self._in_a_row += 1
        delay = self.backoff * 2 ** (self._in_a_row - 1)
        self._set(state="restarting", pid=None, cause=cause, log_tail=tail)
        if self._stop.wait(delay):
            return
        try:
            self.child.start(self.ready, timeout=self.start_timeout)
        except CairnError as exc:
            restart_code = self.child.returncode
            # the restart itself died: name that death (and count it); otherwise it never got ready
            if restart_code is not None and self._in_a_row < self.max_restarts:
                return self._died(restart_code)
            cause = describe_exit(restart_code) if restart_code is not None else exc.message
            self._set(state="failed", pid=None, cause=cause, log_tail=self.child.log_tail())
            self._stop.wait()
            return
        self._started_at = time.monotonic()
        self._set(state="running", pid=self.child.pid, restarts=self.status.restarts + 1)

    def _set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.status, key, value)
        self.status.since = time.time()
        self._publish()

    def _publish(self) -> None:
        if self.status_path is not None:
            with contextlib.suppress(OSError):
                write_status(self.status_path, self.status)
        if self.on_change is not None:
            self.on_change(self.status)
