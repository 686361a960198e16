"""``cairn serve`` (the service and what it starts), ``cairn model serve`` and ``cairn sessions``."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cairn.errors import UnsafeBind
from cairn.processes import in_background
from cli.app import IndexOption, RepoOption, _reports_errors, _settings, app, err, out
from config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


@app.command()
@_reports_errors
def serve(
    index: IndexOption = None,
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            help="The default repository, which the model cairn-agent answers about "
            "(default: CAIRN_DEFAULT_REPO); every repository is served as cairn/<name>.",
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: CAIRN_SERVE_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: CAIRN_SERVE_PORT, 8000).")] = None,
    start_redis: Annotated[
        bool, typer.Option(help="Start a local redis-server when none answers at CAIRN_REDIS_URL.")
    ] = True,
    watch: Annotated[
        bool | None,
        typer.Option(
            "--watch/--no-watch",
            help="Follow file changes in every served repository's source folder and re-index them "
            "(default: CAIRN_WATCH).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes (default: CAIRN_WORKERS, 1); they share sessions and rate limits through Redis.",
        ),
    ] = None,
) -> None:
    """Serve the agent: OpenAI-compatible API, LangServe routes and playground, sessions in Redis."""
    from models.embedded import embedded_model
    from serving.redis_server import local_redis

    settings = _serve_settings(_settings(index, repo), host=host, port=port, watch=watch, workers=workers)
    banner = _banner(settings)  # a malformed model or retriever setting is reported before anything starts
    building = _building(settings)
    with local_redis(settings, autostart=start_redis, supervise=True), embedded_model(settings, supervise=True):
        app = building.result()
        err.print(banner, highlight=False, soft_wrap=True)
        # uvicorn shuts down gracefully on SIGTERM (systemd, docker stop, kill), then raises the signal
        # again; without a handler of ours that would end the process before the blocks above stop
        # the Redis and model server they started (seen: both left running after `kill`).
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        _run(settings, app)


def _serve_settings(
    settings: Settings, *, host: str | None, port: int | None, watch: bool | None, workers: int | None
) -> Settings:
    """Return the settings with the command's options applied, refusing an unsafe access setting (exit 11)."""
    from serving.keys import is_loopback, parse_keys

    parse_keys(k.get_secret_value() for k in settings.api_keys)  # an empty, blank or repeated key: exit 11
    settings = settings.model_copy(
        update={"serve_host": host or settings.serve_host, "serve_port": port or settings.serve_port,
                "watch": settings.watch if watch is None else watch, "workers": workers or settings.workers}
    )  # fmt: skip
    if not is_loopback(settings.serve_host) and not settings.api_keys:
        raise UnsafeBind(
            f"Refusing to serve on {settings.serve_host} without an API key: anyone who can reach it could "
            "read your code through the agent",
            "set CAIRN_API_KEYS=<a long random key> (clients send 'Authorization: Bearer <key>'), or bind 127.0.0.1",
        )
    return settings


def _banner(settings: Settings) -> str:
    """Return what `cairn serve` prints once it is up: where everything is, and a request to try."""
    from graphs.agent.context import Context

    context = Context.from_settings(settings)
    served = context.index_dir if context.repo is None else f"repository {context.repo} ({context.data_dir})"
    names = context.repositories().names()
    models = "cairn-agent" + "".join(f", cairn/{n}" for n in names) + (", cairn/*" if len(names) > 1 else "")
    base = f"http://{settings.serve_host}:{settings.serve_port}"
    auth = ' -H "Authorization: Bearer $CAIRN_KEY"' if settings.api_keys else ""
    watching = "  watching        every served repository's source folder (re-indexed as files change)\n"
    return (
        f"\n[bold]Cairn is serving[/] {served}\n"
        f"  page            {base}/\n"
        f"  playground      {base}/agent/playground/\n"
        f"  OpenAI base URL {base}/v1   (models: {models})\n"
        f"  API docs        {base}/docs\n"
        f"  readiness       {base}/ready\n"
        + (watching if settings.watch else "")
        + (f"  workers         {settings.workers} processes\n" if settings.workers > 1 else "")
        + f"  try:  curl -s {base}/v1/chat/completions{auth} -H 'Content-Type: application/json' "
        '-d \'{"model": "cairn-agent", "messages": [{"role": "user", "content": '
        '"How does the LRU cache evict entries?"}]}\'\n'
        "  Ctrl-C stops the service and what it started.\n"
    )


def _building(settings: Settings) -> concurrent.futures.Future[FastAPI | None]:
    """Build the app (one worker: in this process) in a thread while Redis and the embedded model start.

    They are other processes, so the wait for them and the imports and index loading of the app
    overlap (docs/benchmarks.md "Start-up"). Several workers each build their own app; then there
    is nothing to build here.
    """

    def build() -> FastAPI | None:
        if settings.workers > 1:
            return None
        from serving.app import create_app

        return create_app(settings)

    # a daemon: if Redis or the model fails to start, `serve` exits with its error without waiting for this
    return in_background(build, "cairn-build")


def _run(settings: Settings, app: FastAPI | None) -> None:
    """Run uvicorn: ``app`` in this process, or N worker processes that each build it from CAIRN_*."""
    import uvicorn

    if app is not None:
        uvicorn.run(app, host=settings.serve_host, port=settings.serve_port, log_level="info", access_log=False)
        return
    with _watching_for_workers(settings):
        # Each worker process builds its own app from CAIRN_* (set here to what this command resolved).
        _export_for_workers(settings)
        uvicorn.run("serving.app:create_app", factory=True, workers=settings.workers, host=settings.serve_host,
                    port=settings.serve_port, log_level="info", access_log=False)  # fmt: skip


def _export_for_workers(settings: Settings) -> None:
    """Put what `cairn serve` resolved from its options into the environment its worker processes read."""
    if settings.index_dir is None:
        os.environ.pop("CAIRN_INDEX_DIR", None)
    else:
        os.environ["CAIRN_INDEX_DIR"] = str(settings.index_dir)
    if settings.default_repo:
        os.environ["CAIRN_DEFAULT_REPO"] = settings.default_repo
    os.environ["CAIRN_WORKERS"] = str(settings.workers)
    os.environ["CAIRN_WATCH"] = "false"  # one watcher, in this process, writes the indexes; workers read them


@contextlib.contextmanager
def _watching_for_workers(settings: Settings) -> Iterator[None]:
    """With several workers and --watch, follow the sources once, here: each new generation is read by
    every worker on its next question (they check the index's CURRENT pointer)."""
    if not settings.watch:
        yield
        return
    from ingest.watch import WatchGroup
    from retrievers import cached_embedder

    group = WatchGroup(settings, embedder_factory=lambda: cached_embedder(settings)).start()
    try:
        yield
    finally:
        group.stop()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """End `cairn serve` on SIGTERM through its ``finally`` blocks, with the conventional status 143."""
    raise SystemExit(128 + signum)


model_app = typer.Typer(help="The embedded model server (llama.cpp on the bundled SmolLM2-135M).")
app.add_typer(model_app, name="model")


@model_app.command("serve")
@_reports_errors
def model_serve(
    port: Annotated[int | None, typer.Option(help="Port (default: CAIRN_EMBEDDED_PORT).")] = None,
) -> None:
    """Run the embedded model's OpenAI-compatible server on loopback until Ctrl-C."""
    from models.embedded import EmbeddedServer

    settings = Settings()
    if port:
        settings = settings.model_copy(update={"embedded_port": port})
    server = EmbeddedServer(settings)
    server.start()
    out.print(f"Embedded model serving at {server.base_url} (model 'smollm2-135m'); Ctrl-C stops it.")
    try:
        assert server.process is not None
        server.process.wait()
    except KeyboardInterrupt:
        return
    finally:
        failure = server.failure()
        server.stop()
    if failure is not None:
        raise failure


sessions_app = typer.Typer(help="The service's sessions in Redis (CAIRN_REDIS_URL, CAIRN_REDIS_PREFIX).")
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("migrate")
@_reports_errors
def sessions_migrate() -> None:
    """Move sessions stored before Redis Cluster support into the hash-tagged key layout (safe to run again)."""
    import asyncio

    from cairn.errors import RedisUnavailable
    from serving.checkpoint import RedisCheckpointSaver
    from serving.checkpoint_migration import migrate as migrate_old_layout
    from serving.errors import REDIS_ERRORS

    settings = Settings()

    async def migrate() -> tuple[str | None, int, int]:
        saver = await RedisCheckpointSaver.connect(
            settings.redis_url, prefix=settings.redis_prefix, ttl=settings.session_ttl
        )
        try:
            moved = await migrate_old_layout(saver)
            return saver.mode, moved, await saver.reindex()
        finally:
            await saver.aclose()

    try:
        mode, moved, listed = asyncio.run(migrate())
    except REDIS_ERRORS as exc:
        raise RedisUnavailable(
            f"Redis at {settings.redis_url} does not answer ({type(exc).__name__}: {exc})",
            "start redis-server (cairn serve starts one on loopback), or check CAIRN_REDIS_URL",
        ) from exc
    out.print(f"Migrated {moved} session(s) to the hash-tagged layout ({mode} Redis at {settings.redis_url}, "
              f"prefix {settings.redis_prefix!r}); {listed} session(s) in all.", highlight=False)  # fmt: skip


@app.command()
@_reports_errors
def mcp(index: IndexOption = None, repo: RepoOption = None) -> None:
    """Serve Cairn's tools over MCP on stdin and stdout, for clients that launch a command.

    Claude Code, Cursor, Continue and Zed start it themselves (see docs/mcp.md). It logs to stderr only,
    and starts nothing it does not need: the embedded model server only when `ask` is first called
    (and stops it on exit). Sessions of `ask` need Redis at CAIRN_REDIS_URL; everything else works
    without it.
    """
    import logging
    import sys

    from models.embedded import EmbeddedServer, is_serving, uses_embedded
    from serving.mcp_server import CairnMCP
    from serving.service import Service

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="cairn mcp: %(levelname)s %(message)s")
    settings = _settings(index, repo)
    service = Service.build(settings)
    service.load_index()  # a missing index is each tool's error to report, not the server's end
    started: list[EmbeddedServer] = []

    def model_on_demand() -> None:
        if not started and uses_embedded(settings) and not is_serving(settings):
            server = EmbeddedServer(settings)
            server.start()
            started.append(server)

    service.model_on_demand = model_on_demand
    try:
        CairnMCP(service).run("stdio")
    finally:
        for server in started:
            server.stop()
