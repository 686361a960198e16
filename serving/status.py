"""The operator's status view (``GET /api/status``): what ``/ready`` and ``/metrics`` know, on one screen.

Per repository: chunks, files, size, last ingest and freshness (the indexed files changed or gone
since, by one stat each, at most every ``FRESHNESS_TTL`` seconds), and its watcher with ``--watch``;
the model endpoint and the latency of its last one-token probe; Redis; and this worker's last
requests with their time to first token (``ServiceMetrics.recent``: route templates, no ids or keys).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

from cairn import __version__
from cairn.errors import CairnError
from ingest.repos import freshness, live_manifest
from ingest.store import CURRENT
from serving import code_queries
from serving.schemas import Check, Freshness, RecentRequest, Replica, RepositoryStatus, ServiceStatus
from serving.service import Service

#: Seconds a repository's freshness is reused: the page polls every few seconds.
FRESHNESS_TTL = 10.0
_checked: dict[str, tuple[float, str, Freshness | None]] = {}


#: When this worker process started (it imports this module once).
STARTED_AT = time.time()


def replica_of(service: Service) -> Replica:
    """Say which process answers: behind a load balancer each replica and worker answers for itself."""
    return Replica(host=socket.gethostname(), pid=os.getpid(), workers=service.settings.workers,
                   started_at=STARTED_AT, version=__version__)  # fmt: skip


def _index_dir(service: Service, name: str) -> Path:
    """Return a listed repository's index folder (``""`` is the service's one index folder)."""
    return Path(service.context.index_dir) if name == "" else service.context.repositories().get(name)


def _freshness(index_dir: Path) -> Freshness | None:
    """Return how the index stands against its source, reusing a check younger than ``FRESHNESS_TTL``."""
    pointer = index_dir / CURRENT
    try:
        generation = pointer.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    key = str(index_dir)
    cached = _checked.get(key)
    if cached is not None and cached[1] == generation and time.monotonic() - cached[0] < FRESHNESS_TTL:
        return cached[2]
    try:
        manifest = live_manifest(index_dir)
    except CairnError:
        manifest = None
    found = Freshness.model_validate(freshness(manifest).as_dict()) if manifest is not None else None
    _checked[key] = (time.monotonic(), generation, found)
    return found


#: Seconds the repositories' part of the view is reused (each poll would walk every index folder).
STATUS_TTL = 5.0
_status_lock = threading.Lock()
_status: dict[int, tuple[float, list[RepositoryStatus]]] = {}


def repository_status(service: Service) -> list[RepositoryStatus]:
    """Every repository with its freshness and watcher, reused for ``STATUS_TTL`` seconds (one reader at a time)."""
    with _status_lock:
        cached = _status.get(id(service))
        if cached is not None and time.monotonic() - cached[0] < STATUS_TTL:
            return cached[1]
        found = _repository_status(service)
        _status[id(service)] = (time.monotonic(), found)
        return found


def _repository_status(service: Service) -> list[RepositoryStatus]:
    """Every repository with its freshness and, when watched, its watcher's state."""
    watched = service.watchers.status() if service.watchers is not None else {}
    listed = []
    for repo in code_queries.repositories(service):
        try:
            index_dir = _index_dir(service, repo.name)
        except CairnError:
            listed.append(repo)
            continue
        fresh = _freshness(index_dir) if repo.ok and repo.source_exists else None
        watch = watched.get(repo.name) or watched.get(str(index_dir))
        listed.append(repo.model_copy(update={"freshness": fresh, "watch": watch}))
    return listed


async def service_status(service: Service) -> ServiceStatus:
    """Return the status view's document."""
    repositories, model, redis = await asyncio.gather(
        asyncio.to_thread(repository_status, service), service.check_model(), service.check_redis()
    )
    recent = [RecentRequest.model_validate(entry) for entry in reversed(service.metrics.recent)]
    return ServiceStatus(
        repositories=repositories,
        model=Check.model_validate(model),
        redis=Check.model_validate(redis),
        replica=replica_of(service),
        running=max(0, service.metrics.in_flight - 1),  # not counting this request
        requests=recent,
    )
