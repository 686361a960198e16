"""Keep an index fresh: follow a repository's file changes and re-index them in batches.

A ``Watcher`` runs a watchdog observer on the source folder. Each event's path goes through the
walk's own rules (``IgnoreMatcher``: built-in excludes, ``CAIRN_EXCLUDE``, every ``.gitignore``), so
an ignored file never causes work. Kept paths are collected until the folder has been quiet for
``CAIRN_WATCH_DEBOUNCE_MS`` (or, while changes keep coming, ``CAIRN_WATCH_MAX_WAIT_MS`` after the
first of them); then one incremental ``ingest_repository`` runs in the watcher's worker thread. A
branch switch or a ``git pull`` that rewrites hundreds of files is therefore one ingest, which
re-embeds only the chunks that changed and swaps a new generation in atomically: readers (the
service) pick it up on their next search, and killing the watcher at any moment leaves the previous
generation live, as with any ingest (``ingest/store.py``).

On an index of ``CAIRN_INDEX_DELTA_FROM`` chunks or more a batch writes a *delta* generation: only
the changed files' rows, on the last whole generation, so a save on a large repository does not
rewrite hundreds of megabytes. Once the folder has been quiet for ``CAIRN_WATCH_MERGE_IDLE_MS`` the
watcher merges the delta into a whole generation, in its own thread, while readers go on reading.

A batch that fails (a file the chunker chokes on is left out and reported by the ingest itself; a
full disk, a locked index, another embedding model) is logged, kept in ``status()``, and the
watcher goes on: a locked index (a manual ``cairn ingest`` running) is retried after the next quiet
period. The walk of an incremental ingest re-reads only what changed (size and mtime), so a batch
costs a walk plus the changed files; ``benchmarks/bench_watch.py`` measures it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.errors import CairnError, IndexLocked
from config import Settings
from ingest.embedder import TextEmbedder
from ingest.pipeline import IngestResult, _default_embedder, ingest_repository
from ingest.repos import Repositories, live_manifest
from ingest.walker import BINARY_EXTENSIONS, IgnoreMatcher

log = logging.getLogger("cairn.watch")

#: What ``_next_batch`` returns for "merge the live delta" (no repository path looks like it).
MERGE = "\0merge"

#: Seconds between attempts while another ingest holds the index's lock (each attempt walks the folder).
LOCKED_RETRY_SECONDS = 2.0

#: The events that mean a file's content or presence changed; opening or reading a file (which
#: an ingest itself does) is not one of them.
CHANGE_EVENTS = frozenset({"created", "modified", "deleted", "moved", "closed"})


@dataclass(slots=True)
class WatchBatch:
    """One re-index: the changed paths that triggered it and what the ingest did (or its error)."""

    paths: list[str]
    started: float
    seconds: float = 0.0
    result: IngestResult | None = None
    error: str | None = None
    #: The batch merged a delta into a whole generation (no change triggered it).
    merge: bool = False


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """A source folder to follow and the index folder it keeps fresh (name "" for CAIRN_INDEX_DIR)."""

    name: str
    source: Path
    index_dir: Path


@dataclass(slots=True)
class _Pending:
    paths: set[str] = field(default_factory=set)
    first: float = 0.0
    last: float = 0.0


class Watcher:
    """Follow one source folder and re-index it into ``settings.resolved_index_dir`` batch by batch."""

    def __init__(
        self,
        source: Path,
        settings: Settings,
        *,
        name: str = "",
        embedder_factory: Callable[[], TextEmbedder] | None = None,
        on_batch: Callable[[WatchBatch], None] | None = None,
    ) -> None:
        self.source = Path(source).expanduser().resolve()
        self.settings = settings
        self.name = name
        self.index_dir = Path(settings.resolved_index_dir).resolve()
        self.debounce = settings.watch_debounce_ms / 1000
        self.max_wait = max(settings.watch_max_wait_ms / 1000, self.debounce)
        self.merge_idle = settings.watch_merge_idle_ms / 1000
        self._embedder_factory = embedder_factory
        self._embedder: TextEmbedder | None = None
        self._on_batch = on_batch
        self._matcher = IgnoreMatcher(self.source, settings.exclude, settings.secrets_allow)
        self._pending = _Pending()
        self._wake = threading.Condition()
        self._stopping = False
        self._observer: Any = None
        self._worker: threading.Thread | None = None
        self.batches = 0
        self.last_batch: WatchBatch | None = None
        self.last_error: str | None = None
        self.busy = False
        self.merges = 0
        self.last_merge_seconds: float | None = None
        self._not_before = 0.0
        self._merge_at: float | None = None  # when to merge the live delta, if the folder stays quiet

    # ------------------------------------------------------------ life cycle

    def start(self, *, catch_up: bool = False) -> Watcher:
        """Start following changes; ``catch_up`` runs one ingest at once for changes made while nobody watched."""
        from watchdog.observers import Observer

        self._observer = Observer()
        self._observer.daemon = True
        try:
            self._observer.schedule(_Handler(self), str(self.source), recursive=True)
            self._observer.start()
        except OSError as exc:  # ENOSPC: more subfolders than inotify watches allowed
            self._observer = None
            raise CairnError(
                f"Cannot watch {self.source}: {exc}",
                "raise the limit (sysctl fs.inotify.max_user_watches=524288) or exclude big folders",
            ) from exc
        with contextlib.suppress(CairnError):  # a delta left live by an earlier run is merged when quiet
            if (manifest := live_manifest(self.index_dir)) is not None and manifest.base is not None:
                self._merge_at = time.monotonic() + self.merge_idle
        self._worker = threading.Thread(target=self._run, name=f"cairn-watch-{self.name or 'index'}", daemon=True)
        self._worker.start()
        if catch_up:
            self.notify("")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop following changes; a batch under way finishes (or is abandoned after ``timeout``)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._worker is not None:
            self._worker.join(timeout)

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def embedder(self) -> TextEmbedder:
        """Return the embedding model, loaded once for every batch (loading it costs seconds)."""
        if self._embedder is None:
            if self._embedder_factory is not None:
                self._embedder = self._embedder_factory()
            else:
                self._embedder = _default_embedder(self.settings)
        return self._embedder

    def status(self) -> dict[str, Any]:
        """Return what the watcher is doing, for ``/ready`` and the CLI."""
        with self._wake:
            pending = len(self._pending.paths)
        status: dict[str, Any] = {
            "source": str(self.source),
            "watching": self._observer is not None and self._observer.is_alive() and not self._stopping,
            "batches": self.batches,
            "pending": pending,
            "busy": self.busy,
            "merges": self.merges,
            "delta": self._merge_at is not None,
        }
        if self.last_merge_seconds is not None:
            status["last_merge_seconds"] = round(self.last_merge_seconds, 3)
        if self.last_batch is not None:
            status["last_batch"] = {
                "files": len(self.last_batch.paths),
                "seconds": round(self.last_batch.seconds, 3),
                "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.last_batch.started)),
            }
            if self.last_batch.result is not None:
                result = self.last_batch.result
                status["last_batch"] |= {
                    "generation": result.generation.name if result.generation else None,
                    "chunks_embedded": result.chunks_embedded,
                    "delta": result.delta,
                }
        if self.last_error:
            status["error"] = self.last_error
        return status

    # ------------------------------------------------------------ events

    def notify(self, rel_path: str) -> None:
        """Record a changed path (repository-relative; "" for "look everywhere") and restart the quiet period."""
        now = time.monotonic()
        with self._wake:
            if not self._pending.paths:
                self._pending.first = now
            self._pending.paths.add(rel_path)
            self._pending.last = now
            self._wake.notify_all()

    def accepts(self, path: str, *, is_dir: bool = False) -> str | None:
        """Return the repository-relative path of an event worth re-indexing for, or None to ignore it."""
        absolute = Path(os.path.abspath(path))
        if absolute == self.index_dir or self.index_dir in absolute.parents:
            return None  # our own writes, when the index lives inside the source folder
        try:
            rel = absolute.relative_to(self.source).as_posix()
        except ValueError:
            return None
        if rel in {"", "."}:
            return None
        if absolute.name == ".gitignore":
            self._matcher.forget()  # what is ignored changed: re-read the rules, and re-index
            return rel
        if not is_dir and absolute.suffix.lower().lstrip(".") in BINARY_EXTENSIONS:
            return None
        if self._matcher.ignored(rel, is_dir=is_dir):
            return None
        return rel

    # ------------------------------------------------------------ batches

    def _run(self) -> None:
        try:  # load the model now, not on the first save (seconds the first change would wait)
            embedder = self.embedder()
            if (warm := getattr(embedder, "warm", None)) is not None:
                warm()  # an embedder that answers queries without the model loads it for documents
        except Exception as exc:  # e.g. the model cannot be loaded offline: each batch will say so
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("%s: the embedding model cannot be loaded: %s", self._label(), self.last_error)
            self._embedder = None
        while True:
            paths = self._next_batch()
            if paths is None:
                return
            if paths == [MERGE]:
                self._merge()
            else:
                self._ingest(paths)

    def _next_batch(self) -> list[str] | None:
        """Wait for changes, then for the folder to be quiet (or the longest wait); return their paths.

        With nothing pending and a delta live, ``[MERGE]`` once the folder has been quiet long enough.
        """
        with self._wake:
            while True:
                if self._stopping:
                    return None
                if not self._pending.paths:
                    if self._merge_at is None:
                        self._wake.wait()
                    elif (now := time.monotonic()) >= max(self._merge_at, self._not_before):
                        self.busy = True
                        return [MERGE]
                    else:
                        self._wake.wait(max(self._merge_at, self._not_before) - now)
                    continue
                now = time.monotonic()
                due = min(self._pending.last + self.debounce, self._pending.first + self.max_wait)
                due = max(due, self._not_before)
                if now >= due:
                    paths = sorted(self._pending.paths)
                    self._pending = _Pending()
                    self.busy = True
                    return paths
                self._wake.wait(due - now)

    def _ingest(self, paths: list[str]) -> None:
        batch = WatchBatch(paths=paths, started=time.time())
        clock = time.perf_counter()
        retry = False
        try:
            batch.result = ingest_repository(self.source, self.settings, embedder_factory=self.embedder, delta=True)
            self.last_error = None
        except IndexLocked as exc:  # a manual ingest is writing: try again after the next quiet period
            batch.error, retry = exc.message, True
            log.info("%s: another ingest is writing the index; trying again shortly", self._label())
        except CairnError as exc:
            batch.error = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        except Exception as exc:  # a watcher outlives any one batch; the previous index stays live
            batch.error = f"{type(exc).__name__}: {exc}"
        batch.seconds = time.perf_counter() - clock
        if retry:
            self._not_before = time.monotonic() + LOCKED_RETRY_SECONDS
            for path in paths:
                self.notify(path)
        elif batch.error:
            self.last_error = batch.error
            log.error("%s: re-index failed, the previous index stays live: %s", self._label(), batch.error)
        elif batch.result is not None and batch.result.failed:
            failed = ", ".join(sorted(batch.result.failed))
            self.last_error = f"left out, could not be chunked: {failed}"
            log.warning("%s: %s", self._label(), self.last_error)
        self.batches += 1
        self.last_batch = batch
        if batch.result is not None and batch.result.changed_anything:
            self._merge_at = time.monotonic() + self.merge_idle if batch.result.delta else None
        self._report(batch)
        self.busy = False

    def _report(self, batch: WatchBatch) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(batch)
            except Exception:  # a reporting callback must not stop the watcher
                log.exception("watch batch callback failed")

    def _merge(self) -> None:
        """Write the live delta and its base as one whole generation (picking up any change on the way).

        Reported to ``on_batch`` as a batch with ``merge`` set (no paths), so the service loads the
        whole generation in this thread, not in the next question."""
        batch = WatchBatch(paths=[], started=time.time(), merge=True)
        clock = time.perf_counter()
        try:
            batch.result = ingest_repository(self.source, self.settings, embedder_factory=self.embedder)
        except IndexLocked:  # a manual ingest is writing (and will write a whole generation): try again later
            self._not_before = time.monotonic() + LOCKED_RETRY_SECONDS
        except Exception as exc:  # the delta stays live and readable; the next batch or quiet period tries again
            log.warning("%s: merging the delta generation failed: %s", self._label(), exc)
            self._merge_at = time.monotonic() + self.merge_idle
        else:
            self._merge_at = None
            self.merges += 1
            batch.seconds = self.last_merge_seconds = time.perf_counter() - clock
            log.info("%s: merged the delta into %s in %.2f s", self._label(),
                     batch.result.generation.name if batch.result.generation else "the live generation",
                     self.last_merge_seconds)  # fmt: skip
            self._report(batch)
        finally:
            self.busy = False

    def _label(self) -> str:
        return f"watch {self.name}" if self.name else f"watch {self.source}"


class _Handler:
    """watchdog's event handler: filter each event and hand its paths to the watcher."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: Any) -> None:
        if event.event_type not in CHANGE_EVENTS:
            return
        if event.is_directory and event.event_type in {"modified", "closed"}:
            return  # a folder's own mtime: the files inside report themselves
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            rel = self._watcher.accepts(os.fsdecode(raw), is_dir=event.is_directory)
            if rel is not None:
                self._watcher.notify(rel)


def watch_targets(settings: Settings, names: list[str] | None = None) -> tuple[list[WatchTarget], list[str]]:
    """Return what ``cairn serve --watch`` follows: each repository's source folder, from its manifest.

    With CAIRN_INDEX_DIR set, its one index (name ""); else every repository under DATA_DIR/repos
    (or only ``names``), and the single-index layout's DATA_DIR/index when it exists. The second
    list says what cannot be followed and why (a source folder that is gone, a damaged manifest).
    """
    candidates: list[tuple[str, Path]] = []
    if settings.index_dir is not None:
        candidates.append(("", Path(settings.index_dir)))
    else:
        repos = Repositories.of(settings)
        candidates.extend((name, repos.index_dir(name)) for name in (names or repos.names()))
        single = Path(settings.data_dir) / "index"
        if (single / "CURRENT").is_file():
            candidates.append(("", single))
    targets, problems = [], []
    for name, index_dir in candidates:
        label = name or str(index_dir)
        try:
            manifest = live_manifest(index_dir)
        except CairnError as exc:
            problems.append(f"{label}: {exc.message}")
            continue
        if manifest is None:
            problems.append(f"{label}: no index yet")
        elif not Path(manifest.repo_root).is_dir():
            problems.append(f"{label}: the source folder {manifest.repo_root} is missing")
        else:
            targets.append(WatchTarget(name, Path(manifest.repo_root), index_dir))
    return targets, problems


class WatchGroup:
    """The watchers of a service: one per served repository, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder_factory: Callable[[], TextEmbedder] | None = None,
        on_batch: Callable[[WatchBatch], None] | None = None,
    ) -> None:
        self.settings = settings
        self._embedder_factory = embedder_factory
        self._on_batch = on_batch
        self.watchers: dict[str, Watcher] = {}
        self.problems: list[str] = []

    def start(self, *, catch_up: bool = True) -> WatchGroup:
        """Start a watcher per repository that has a source folder; report the others in ``problems``."""
        targets, self.problems = watch_targets(self.settings)
        for problem in self.problems:
            log.warning("not watching %s", problem)
        for target in targets:
            settings = self.settings.model_copy(update={"index_dir": target.index_dir})
            watcher = Watcher(target.source, settings, name=target.name,
                              embedder_factory=self._embedder_factory, on_batch=self._on_batch)  # fmt: skip
            try:
                self.watchers[target.name or str(target.index_dir)] = watcher.start(catch_up=catch_up)
            except CairnError as exc:  # e.g. the inotify watch limit
                self.problems.append(f"{target.name or target.index_dir}: {exc}")
                log.warning("not watching %s", self.problems[-1])
        return self

    def stop(self) -> None:
        """Stop every watcher."""
        for watcher in self.watchers.values():
            watcher.stop()

    def status(self) -> dict[str, Any]:
        """Return each watcher's status, and what is not watched."""
        status: dict[str, Any] = {name: watcher.status() for name, watcher in self.watchers.items()}
        if self.problems:
            status["not_watched"] = self.problems
        return status
