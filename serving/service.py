"""What the service builds once and every request shares: settings, the run context, graphs, Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from fastapi import Depends, Request
from langgraph.graph.state import CompiledStateGraph

from cairn.errors import CairnError, EmbeddedModelError
from cairn.telemetry import ContentPolicy
from config import Node, Settings
from graphs.agent.context import Context
from graphs.agent.graph import GRAPH_NAME, build_graph
from graphs.agent.resources import load_indexes
from graphs.agent.telemetry import RunTelemetry
from ingest.embedding_endpoints import shown
from ingest.repos import ALL, RepoInfo
from ingest.watch import WatchGroup
from models import answer_probe, parse_model_spec, probe_url
from models.embedded import embedded_failure, supervised_status
from serving.checkpoint import RedisCheckpointSaver
from serving.checkpoint_migration import old_layout_sessions
from serving.errors import REDIS_ERRORS, ServiceError, redis_down, translate
from serving.observability import ServiceMetrics
from serving.openai_compat import MODEL_ALIASES, MODEL_ID, PASSTHROUGH_MODEL_ID, REPO_MODEL_PREFIX
from serving.redis_server import supervised_status as redis_status
from serving.security import RunSlots
from tools.mcp import hub_for, parse_servers

log = logging.getLogger("cairn.serving")

#: How long /ready reuses its last one-token probe of the model: a probe every few seconds from a
#: load balancer costs the model one token per this many seconds, per worker.
MODEL_PROBE_TTL = 5.0
#: How long the probe waits for its token. A model busy with a long answer (llama.cpp's server runs one
#: request at a time) may not get to it in time; that is reported as busy, not down, once it has answered.
MODEL_PROBE_TIMEOUT = 5.0


@dataclass
class Service:
    """The shared state of one app: its settings resolved into a Context once, the graphs, the saver."""

    settings: Settings
    context: Context
    saver: RedisCheckpointSaver
    graph: CompiledStateGraph[Any, Context, Any, Any]
    session_graph: CompiledStateGraph[Any, Context, Any, Any]
    index_error: str | None = None
    index_summary: dict[str, Any] = field(default_factory=dict)
    http: httpx.AsyncClient | None = None
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    content: ContentPolicy = field(default_factory=ContentPolicy)
    #: Called (in a thread) before an agent run that needs the model: ``cairn mcp`` starts the embedded
    #: model server there, on first use, rather than at start-up.
    model_on_demand: Callable[[], None] | None = None
    #: How many agent runs this worker answers at once (the chat and LangServe routes, MCP's ask).
    runs: RunSlots = field(default_factory=lambda: RunSlots(32, 16))
    #: The watchers of ``cairn serve --watch`` (None when not watching).
    watchers: WatchGroup | None = None
    #: The last model probe (monotonic time, result), and whether the model ever answered one.
    _model_probe: tuple[float, dict[str, Any]] | None = None
    _model_answered: bool = False
    _model_probe_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def build(cls, settings: Settings) -> Service:
        """Resolve the settings into the service's Context and build its graphs and session store."""
        context = Context.from_settings(settings)
        saver = RedisCheckpointSaver.from_url(
            settings.redis_url, prefix=settings.redis_prefix, ttl=settings.session_ttl, keep_all=False
        )  # a session is its latest checkpoint (and the one its latest turn started from)
        builder = build_graph()
        return cls(
            settings=settings,
            context=context,
            saver=saver,
            graph=builder.compile(name=GRAPH_NAME),
            session_graph=builder.compile(checkpointer=saver, name=GRAPH_NAME),
            content=ContentPolicy(settings.trace_content),
            runs=RunSlots(settings.max_concurrent_runs, settings.max_concurrent_runs_per_key),
        )

    def run_telemetry(self, session: str | None = None, user: str | None = None) -> RunTelemetry:
        """Return the callback that traces one agent run (its session and end user) and feeds the metrics."""
        return RunTelemetry(content=self.content, metrics=self.metrics.agent, conversation=session, user=user)

    # ------------------------------------------------------------ repositories and models

    def model_ids(self) -> list[str]:
        """Return the model ids served: cairn-agent, cairn/<name> per repository, cairn/* when there are several."""
        names = self.context.repositories().names()
        spans = [f"{REPO_MODEL_PREFIX}{ALL}"] if len(names) > 1 else []
        return [MODEL_ID, *(f"{REPO_MODEL_PREFIX}{name}" for name in names), *spans, PASSTHROUGH_MODEL_ID]

    def context_for_model(self, model: str) -> Context:
        """Return the Context a model id answers with: cairn-agent the default, cairn/<name> that repository.

        Raises a 404 listing the model ids (and so the repositories) for any other id.
        """
        if model in MODEL_ALIASES or model == PASSTHROUGH_MODEL_ID:
            return self.context
        repo = model.removeprefix(REPO_MODEL_PREFIX) if model.startswith(REPO_MODEL_PREFIX) else None
        if repo and self._exists(repo):
            return self.context.override(repo=repo)
        ids = ", ".join(repr(i) for i in self.model_ids())
        why = f" (no repository named {repo!r}; {self._names()})" if repo else ""
        raise ServiceError(404, f"The model {model!r} does not exist{why}; the models are {ids} (GET /v1/models)",
                           "model_not_found")  # fmt: skip

    def context_for_repo(self, repo: str | None) -> Context:
        """Return the service's Context for a repository parameter (None: the default); 404 listing names."""
        if repo is None:
            return self.context
        if not self._exists(repo):
            raise ServiceError(404, f"No repository named {repo!r}; {self._names()}", "repository_not_found")
        return self.context.override(repo=repo)

    def _exists(self, repo: str) -> bool:
        """Whether a repository name (or ``*``, with at least one repository) can be served."""
        try:
            self.context.repositories().resolve(repo)
        except CairnError:  # an unknown name, or one that cannot be a name
            return False
        return True

    def _names(self) -> str:
        names = self.context.repositories().names()
        return f"the repositories are: {', '.join(names)}" if names else "there are no repositories (cairn ingest)"

    # ------------------------------------------------------------ the index

    def load_index(self) -> None:
        """Load (or reload) the default index(es); remember why it failed instead of crashing the service."""
        try:
            indexes = load_indexes(self.context)
        except CairnError as exc:
            self.index_error = str(exc)
            self.index_summary = {}
            return
        self.index_error = None
        chunks = sum(len(index) for index in indexes.values())
        self.metrics.index_chunks.set(chunks)
        if self.context.repo is None:
            index = indexes[""]
            self.index_summary = {"path": self.context.index_dir, "chunks": chunks,
                                  "generation": index.generation.path.name}  # fmt: skip
        else:
            self.index_summary = {"repo": self.context.repo, "chunks": chunks, "serving": sorted(indexes)}

    async def require_index(self, context: Context | None = None) -> None:
        """Raise an HTTP error unless the run's index(es) load (an index built after start-up is picked up here)."""
        if context is not None and context is not self.context:
            try:
                await asyncio.to_thread(load_indexes, context)
            except CairnError as exc:
                raise await self.translate(exc, context) from exc
            return
        if self.index_error:
            await asyncio.to_thread(self.load_index)
            if self.index_error:
                raise ServiceError(503, f"No index is loaded: {self.index_error}", "index_unavailable", "server_error")

    # ------------------------------------------------------------ errors

    def redis_down(self, exc: BaseException) -> ServiceError:
        """Return the 503 for a session request while Redis is unavailable."""
        return redis_down(self.settings.redis_url, exc)

    async def translate(self, exc: BaseException, context: Context | None = None) -> ServiceError:
        """Return the HTTP error for an exception raised while answering with ``context``.

        A model error while the embedded server is known to have died (or dies meanwhile: its
        supervisor notices within a poll) is the 503 that names the death, not "Connection error".
        """
        context = context or self.context
        error = translate(exc, model=context.node_model(Node.ANSWER), timeout=context.model_timeout,
                          redis_url=self.settings.redis_url, retries=context.model_max_retries)  # fmt: skip
        if error.code in ("model_unavailable", "internal_error") and (dead := await self._embedded_death()):
            error = ServiceError(503, f"{dead.message} ({dead.hint})", "model_crashed", "server_error")
        if error.status >= 500:  # model down, timed out or died; Redis down (a URL's password left out)
            log.warning("%s (%s)", shown(error.message), error.code)
        return error

    async def _embedded_death(self, wait: float = 1.5) -> EmbeddedModelError | None:
        """Return the embedded server's death, waiting up to ``wait`` s for a supervised one to be noticed."""
        deadline = time.monotonic() + wait
        while (dead := embedded_failure(self.settings)) is None:
            status = supervised_status(self.settings)
            if status is None or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)
        return dead

    # ------------------------------------------------------------ readiness

    async def check_model(self) -> dict[str, Any]:
        """Whether the model that answers (or its fallback) can answer: it completes one token.

        The probe's result is reused for ``MODEL_PROBE_TTL`` seconds. An embedded server that died is
        reported with how it died and whether it is being restarted, before any request is sent.
        """
        async with self._model_probe_lock:
            cached = self._model_probe
            if cached is not None and time.monotonic() - cached[0] < MODEL_PROBE_TTL:
                return cached[1]
            result = await self._probe_models()
            self._model_probe = (time.monotonic(), result)
            return result

    async def _probe_models(self) -> dict[str, Any]:
        spec = self.context.node_model(Node.ANSWER)
        if (dead := embedded_failure(self.settings)) is not None and parse_model_spec(spec).provider == "embedded":
            status = supervised_status(self.settings)
            return {"ok": False, "model": spec, "state": status.state if status else "failed",
                    "restarts": status.restarts if status else 0, "error": dead.message, "hint": dead.hint}  # fmt: skip
        check = await self._probe_one(spec)
        fallback = self.context.fallback_model
        if not check["ok"] and fallback and fallback != spec:
            second = await self._probe_one(fallback)
            if second["ok"]:
                return {**second, "model": spec, "warning": f"primary cannot answer ({check['error']}); "
                        f"fallback {fallback} answers"}  # fmt: skip
        return check

    async def _probe_one(self, spec: str) -> dict[str, Any]:
        """Ask ``spec``'s endpoint for one token (or, for providers without one, whether it is reachable)."""
        assert self.http is not None
        probe = answer_probe(spec, self.context.embedded_url)
        url = probe.url if probe is not None else probe_url(spec, self.context.embedded_url)
        if url is None:
            return {"ok": True, "model": spec, "note": "this provider has no readiness probe"}
        key = self.context.model_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        started = time.perf_counter()
        try:
            if probe is None:
                (await self.http.get(url)).raise_for_status()
            else:
                response = await self.http.post(url, json=probe.body, headers=headers, timeout=MODEL_PROBE_TIMEOUT)
                response.raise_for_status()
        except httpx.TimeoutException:
            if self._model_answered:
                return {"ok": True, "model": spec, "endpoint": url,
                        "warning": f"busy: no token within {MODEL_PROBE_TIMEOUT:g}s (it answered before)"}  # fmt: skip
            return {"ok": False, "model": spec, "endpoint": url,
                    "error": f"{url} did not complete one token within {MODEL_PROBE_TIMEOUT:g}s",
                    "hint": "check the model server's log; a first request may still be loading the model"}  # fmt: skip
        except httpx.HTTPStatusError as exc:
            return {"ok": False, "model": spec, "endpoint": url,
                    "error": f"{url} answered {exc.response.status_code}: {exc.response.text[:200]}",
                    "hint": "check the model name (CAIRN_MODEL) and key (CAIRN_MODEL_API_KEY)"}  # fmt: skip
        except httpx.HTTPError as exc:
            if (dead := embedded_failure(self.settings)) is not None:  # it died under the probe
                return {"ok": False, "model": spec, "error": dead.message, "hint": dead.hint}
            return {
                "ok": False,
                "model": spec,
                "error": f"{url} unreachable ({type(exc).__name__})",
                "hint": "start the model server (cairn model serve, ollama serve, vllm serve)",
            }
        if probe is not None:
            self._model_answered = True
        return {"ok": True, "model": spec, "endpoint": url, "ms": round((time.perf_counter() - started) * 1000, 1)}

    async def check_redis(self) -> dict[str, Any]:
        """Whether Redis answers a PING within two seconds, whether it is one server or a cluster (``mode``).

        Sessions still in the key layout before hash tags are reported as a warning (they are not read
        until ``cairn sessions migrate`` moves them).
        """
        supervised = redis_status(self.settings)
        try:
            await asyncio.wait_for(self.saver.ping(), timeout=2.0)
            old = await asyncio.wait_for(old_layout_sessions(self.saver), timeout=2.0)
        except (TimeoutError, *REDIS_ERRORS) as exc:
            down: dict[str, Any] = {
                "ok": False,
                "url": without_password(self.settings.redis_url),
                "error": f"{type(exc).__name__}: {exc}",
                "hint": "start redis-server (or every node of the cluster), or check CAIRN_REDIS_URL",
            }
            if supervised is not None and not supervised.ok:  # the one `cairn serve` started, dead
                down.update(state=supervised.state, restarts=supervised.restarts,
                            error=f"the redis-server Cairn started {supervised.cause}"
                            + ("; restarting it" if supervised.state == "restarting" else ""))  # fmt: skip
            return down
        check: dict[str, Any] = {"ok": True, "url": without_password(self.settings.redis_url), "mode": self.saver.mode}
        if supervised is not None and supervised.restarts:
            check["restarts"] = supervised.restarts
        if old:
            check["warning"] = f"{old} session(s) in the old key layout are not shown: run `cairn sessions migrate`"
        return check

    def check_mcp(self) -> dict[str, Any]:
        """Where each configured MCP server stands (connected, its allowed tools, the error); never fatal."""
        try:
            hub = hub_for(parse_servers(self.settings.mcp_servers))
        except CairnError as exc:
            return {"ok": True, "warning": exc.message, "hint": exc.hint}
        assert hub is not None
        servers = {name: status.as_dict() for name, status in hub.connect().items()}
        check: dict[str, Any] = {"ok": True, "servers": servers}
        if down := [name for name, status in servers.items() if not status["ok"]]:
            check["warning"] = f"MCP server(s) unavailable, their tools skipped: {', '.join(down)}"
        return check

    def check_index(self) -> dict[str, Any]:
        """Whether the default index is loaded (path, chunks, generation), and how each repository stands.

        A repository whose source folder is gone still serves (``source_exists`` false, with a
        warning); one that cannot serve (another embedding model, damaged) is reported with a hint,
        and the others keep serving.
        """
        if self.index_error:
            self.load_index()
        check: dict[str, Any] = {"ok": False, "error": self.index_error} if self.index_error else {"ok": True}
        check.update(self.index_summary)
        if self.watchers is not None:
            check["watch"] = self.watchers.status()
        repos = self.context.repositories().describe_all(self.context.embedding_model)
        if repos:
            check["repos"] = {info.name: _repo_check(info) for info in repos}
            problems = [f"{info.name}: {info.problem}" for info in repos if not info.ok]
            moved = [info.name for info in repos if info.ok and not info.source_exists]
            warnings = [*problems, *(f"{name}: source folder missing (the index still serves)" for name in moved)]
            if warnings:
                check["warning"] = "; ".join(warnings)
        return check


def without_password(url: str) -> str:
    """Return a URL with its password (``redis://:secret@host``) shown as ``***``, for /ready and the status view."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _repo_check(info: RepoInfo) -> dict[str, Any]:
    """Return a repository's entry in the readiness check."""
    entry: dict[str, Any] = {"ok": info.ok, "source": info.source, "source_exists": info.source_exists,
                             "chunks": info.chunks, "embedding_model": info.embedding_model}  # fmt: skip
    if info.problem:
        entry.update(error=info.problem, hint=info.hint)
    elif not info.source_exists:
        entry["warning"] = f"the source folder {info.source} is missing; the index still serves"
    return entry


def service_of(request: Request) -> Service:
    """Return the app's Service (FastAPI dependency)."""
    return request.app.state.cairn


ServiceDep = Annotated[Service, Depends(service_of)]
