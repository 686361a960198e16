"""The ``cairn`` command line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial, wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cairn import __version__, telemetry
from cairn.errors import CairnError, ExitCode, GateFailed, UnsafeBind
from config import Settings

app = typer.Typer(
    name="cairn",
    help="Cairn: index a code repository and search it (and, with a model, ask about it) offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

IndexOption = Annotated[
    Path | None,
    typer.Option("--index", help="Index folder (default: CAIRN_INDEX_DIR or CAIRN_DATA_DIR/index)."),
]
RepoOption = Annotated[
    str | None,
    typer.Option(
        "--repo",
        help="A repository by name (see cairn repos), or '*' for all of them (default: CAIRN_DEFAULT_REPO, "
        "the only one, or all).",
    ),
]


#: Commands traced as one trace each (a server's requests are traced one by one instead).
TRACED_COMMANDS = frozenset({"ingest", "search", "ask", "eval"})


def _reports_errors(func: F) -> F:
    """Turn Cairn's errors into one line on stderr and the error's exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if func.__name__.rstrip("_") not in TRACED_COMMANDS:
                return func(*args, **kwargs)
            telemetry.configure()  # one trace per command, exported where OTEL_EXPORTER_OTLP_ENDPOINT says
            try:
                with telemetry.span(f"cairn {func.__name__.rstrip('_')}"):
                    return func(*args, **kwargs)
            finally:
                telemetry.flush()  # the SDK shuts the provider down at exit
        except CairnError as exc:
            err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
            if exc.hint:
                err.print(f"  hint: {exc.hint}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; the index on disk is unchanged unless a new one was completed")
            raise typer.Exit(ExitCode.INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _settings(index: Path | None, repo: str | None = None) -> Settings:
    settings = Settings()
    if index is not None and repo is not None:
        raise CairnError("--index and --repo name two different indexes", "give one of them")
    if index is not None:
        settings = settings.model_copy(update={"index_dir": index})
    if repo is not None:  # a repository asked for by name is looked up under DATA_DIR, whatever INDEX_DIR says
        settings = settings.model_copy(update={"index_dir": None, "default_repo": repo})
    return settings


def _index_specs(settings: Settings) -> dict[str, Any]:
    """Return repository name → IndexSpec of what a command reads ("" for the index folder)."""
    from ingest.repos import Repositories, default_repo
    from retrievers import IndexSpec

    repo = default_repo(settings)
    if repo is None:
        return {"": IndexSpec.from_settings(settings)}
    paths = Repositories.of(settings).resolve(repo)
    return {name: IndexSpec.from_settings(settings, path) for name, path in paths.items()}


def _load_indexes(settings: Settings) -> dict[str, Any]:
    """Load what a command searches; across repositories, one that cannot serve is reported and left out."""
    from retrievers import load_search_index

    specs = _index_specs(settings)
    if len(specs) == 1:
        return {name: load_search_index(spec) for name, spec in specs.items()}
    loaded, errors = {}, []
    for name, spec in specs.items():
        try:
            loaded[name] = load_search_index(spec)
        except CairnError as exc:
            err.print(f"[yellow]warning:[/] repository {name} left out: {exc.message}", highlight=False)
            errors.append(exc)
    if not loaded:
        raise errors[0]
    return loaded


class _RichProgress:
    """Progress bars for ingest: files scanned, then chunks embedded with chunks/s and ETA."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._files: Any = None
        self._chunks: Any = None
        self._started = 0.0
        self._done = 0

    def files(self, total: int) -> None:
        self._files = self._progress.add_task("files", total=total, rate="")

    def file_done(self) -> None:
        self._progress.advance(self._files)

    def embedding(self, total: int) -> None:
        self._started = time.perf_counter()
        self._chunks = self._progress.add_task("chunks embedded", total=total, rate="")

    def embedded(self, count: int) -> None:
        self._done += count
        rate = self._done / max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(self._chunks, advance=count, rate=f"{rate:,.0f} chunks/s")


@app.command()
@_reports_errors
def ingest(
    path: Annotated[Path, typer.Argument(help="The repository folder to index.")],
    name: Annotated[
        str | None,
        typer.Option(help="The repository's name (default: the folder's name); its index is DATA_DIR/repos/NAME."),
    ] = None,
    index: IndexOption = None,
    rebuild: Annotated[bool, typer.Option(help="Ignore the existing index and build a new one.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="After indexing, follow file changes and re-index them (batched by CAIRN_WATCH_DEBOUNCE_MS) "
            "until Ctrl-C.",
        ),
    ] = False,
) -> None:
    """Index a repository (only what changed since the last ingest), then swap the new index in.

    Each repository gets its own index under DATA_DIR/repos/<name>; --index (or CAIRN_INDEX_DIR)
    writes one index folder instead, as before. --watch keeps it fresh afterwards.
    """
    from ingest.pipeline import ingest_repository
    from ingest.repos import Repositories, adopt_single_index, default_name

    if index is not None and name is not None:
        raise CairnError("--index and --name name two different indexes", "give one of them")
    settings = _settings(index)
    repo: str | None = None
    if index is None and (name is not None or settings.index_dir is None):
        claim = Repositories.of(settings).claim(name or default_name(path), path)
        if claim.moved_from:
            err.print(f"{claim.name}: the source moved from {claim.moved_from} to {path.expanduser().resolve()}")
        if name is None and adopt_single_index(settings, claim, path):
            err.print(f"moved the index at {Path(settings.data_dir) / 'index'} to {claim.index_dir}")
        repo = claim.name
        settings = settings.model_copy(update={"index_dir": claim.index_dir})
    columns = (
        TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
    )  # fmt: skip
    watcher = None
    if watch:
        from ingest.watch import Watcher

        watcher = Watcher(path, settings, name=repo or "", on_batch=partial(_print_batch, as_json=as_json))
    with Progress(*columns, console=err, disable=quiet or as_json, transient=False) as bars:
        result = ingest_repository(path, settings, rebuild=rebuild, progress=_RichProgress(bars),
                                   embedder_factory=watcher.embedder if watcher else None)  # fmt: skip
    summary = {
        "repo": repo,
        "index": str(result.index_dir),
        "generation": result.generation.name if result.generation else None,
        "files": result.files_total,
        "added": result.files_added,
        "changed": result.files_changed,
        "unchanged": result.files_unchanged,
        "deleted": result.files_deleted,
        "chunks": result.chunks_total,
        "embedded": result.chunks_embedded,
        "reused": result.chunks_reused,
        "skipped": dict(result.skipped),
        "secrets": result.secrets,
        "seconds": round(result.timings.get("total", 0.0), 3),
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    where = f"{result.index_dir} (repository {repo})" if repo else str(result.index_dir)
    if not result.changed_anything:
        out.print(f"Index {where} is up to date ({result.chunks_total} chunks).")
    else:
        out.print(
            f"Indexed {result.files_total} files into {result.chunks_total} chunks at {where} "
            f"in {summary['seconds']:.1f}s: {result.files_added} added, {result.files_changed} changed, "
            f"{result.files_deleted} deleted, {result.files_unchanged} unchanged; "
            f"{result.chunks_embedded} chunks embedded, {result.chunks_reused} reused."
        )
    if result.skipped:
        counts = result.skipped.most_common()
        parts = ", ".join(f"{n} that look like secrets" if why == "secret" else f"{n} {why}" for why, n in counts)
        out.print(f"Skipped: {parts}.")
        for why, examples in result.skipped_examples.items():
            if why in {"too large", "unreadable", "binary", "unparsable", "minified"}:
                out.print(f"  {why}: {', '.join(examples)}{' …' if result.skipped[why] > 3 else ''}")
        if result.secrets:
            listed = list(result.secrets.items())
            shown = ", ".join(f"{path} ({kind})" for path, kind in listed[:5])
            out.print(f"  secrets: {shown}{' …' if len(listed) > 5 else ''}")
            out.print("  A wrong guess? Let a path in with CAIRN_SECRETS_ALLOW (gitignore-style patterns).")
    if watcher is not None:
        _watch_until_interrupted(watcher, as_json=as_json)


def _watch_until_interrupted(watcher: Any, *, as_json: bool) -> None:
    """Follow changes until Ctrl-C (exit 0: the index on disk is always a complete generation)."""
    # catch_up: whatever changed between the ingest above and the observer's start is picked up
    watcher.start(catch_up=True)
    if not as_json:
        out.print(f"Watching {watcher.source} (Ctrl-C stops).", highlight=False)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()


def _print_batch(batch: Any, *, as_json: bool) -> None:
    """Print one watcher batch: what changed in the index, or why it failed (the watcher goes on)."""
    result = batch.result
    if as_json:
        record = {"files": len(batch.paths), "seconds": round(batch.seconds, 3), "error": batch.error}
        if result is not None:
            record |= {"generation": result.generation.name if result.generation else None,
                       "added": result.files_added, "changed": result.files_changed,
                       "deleted": result.files_deleted, "embedded": result.chunks_embedded,
                       "failed": result.failed}  # fmt: skip
        out.print(json.dumps(record), highlight=False, soft_wrap=True)
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(batch.started))
    if result is None:
        err.print(f"{stamp} [bold red]re-index failed[/] (the previous index stays live): {batch.error}",
                  highlight=False)  # fmt: skip
        return
    if result.changed_anything:
        out.print(
            f"{stamp} re-indexed in {batch.seconds:.2f}s: {result.files_added} added, {result.files_changed} changed, "
            f"{result.files_deleted} deleted; {result.chunks_embedded} chunks embedded ({result.chunks_total} in all)",
            highlight=False,
        )
    for path, why in result.failed.items():
        err.print(f"{stamp} [yellow]left out[/] {path}: could not be chunked ({why})", highlight=False)


@app.command()
@_reports_errors
def search(
    query: Annotated[str, typer.Argument(help="What to look for, in words or identifiers.")],
    index: IndexOption = None,
    repo: RepoOption = None,
    mode: Annotated[str, typer.Option(help="hybrid, dense, keyword, or a plugin retriever's name.")] = "hybrid",
    k: Annotated[int | None, typer.Option("-k", help="Number of results (default CAIRN_SEARCH_K).")] = None,
    path: Annotated[list[str] | None, typer.Option("--path", help="Only paths matching this glob.")] = None,
    language: Annotated[list[str] | None, typer.Option("--language", help="Only this language.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Search the index and print ranked citations (path:start-end) with snippets.

    Across repositories (--repo '*') the rankings are fused and paths start with the repository's name.
    """
    from ingest.repos import ALL, default_repo
    from retrievers import AcrossReposRetriever, available_retrievers, make_retriever

    settings = _settings(index, repo)
    if mode not in available_retrievers():
        raise CairnError(f"Unknown --mode {mode!r}", f"choose one of: {', '.join(available_retrievers())}")
    indexes = _load_indexes(settings)
    options = {"k": k or settings.search_k, "depth": settings.fusion_depth, "rrf_k": settings.rrf_k}
    retrievers = {name: make_retriever(mode, loaded, **options) for name, loaded in indexes.items()}
    retriever = (
        AcrossReposRetriever(retrievers=retrievers, k=options["k"], rrf_k=settings.rrf_k)
        if default_repo(settings) == ALL
        else next(iter(retrievers.values()))
    )
    if mode != "keyword":
        next(iter(indexes.values())).embedder  # noqa: B018  (load the model now, so the time printed is the search's)
    started = time.perf_counter()
    docs = retriever.invoke(query, path_glob=path, language=language)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if as_json:
        rows = [{**doc.metadata, "text": doc.page_content} for doc in docs]
        out.print_json(json.dumps({"query": query, "mode": mode, "ms": round(elapsed_ms, 2), "results": rows}))
        return
    if not docs:
        out.print("No results.")
        return
    for doc in docs:
        meta = doc.metadata
        symbol = f"  [dim]{meta['symbol']}[/]" if meta.get("symbol") else ""
        out.print(f"[bold]{meta['rank']:>2}. {meta['citation']}[/]{symbol}  [dim]{meta['score']:.4f}[/]")
        if copies := meta.get("copies"):
            more = f" and {len(copies) - 3} more" if len(copies) > 3 else ""
            out.print(f"      [dim]same code in {', '.join(copies[:3])}{more}[/]", highlight=False)
        snippet = [line for line in doc.page_content.splitlines() if line.strip()][:4]
        for line in snippet:
            out.print(f"      {line[:120]}", highlight=False, markup=False)
    err.print(f"{len(docs)} results in {elapsed_ms:.1f} ms ({mode})", style="dim")


def _navigate(settings: Settings, lookup: Callable[[Any], Any]) -> tuple[list[tuple[str, Any]], float]:
    """Run a symbol-graph lookup on each index a command reads; return (repository, result) pairs and ms.

    The repository is "" unless the command reads every repository (paths then start with its name).

    Across repositories a name missing from one is not an error as long as another has it.
    """
    from cairn.errors import SymbolNotFound
    from ingest.repos import ALL, default_repo
    from retrievers.navigation import symbol_graph

    spans = default_repo(settings) == ALL
    indexes = _load_indexes(settings)
    graphs = {name: symbol_graph(index) for name, index in indexes.items()}
    started = time.perf_counter()
    found, missing = [], None
    for name, graph in graphs.items():
        try:
            found.append((name if spans else "", lookup(graph)))
        except SymbolNotFound as exc:
            missing = exc
    elapsed_ms = (time.perf_counter() - started) * 1000
    if not found and missing is not None:
        raise missing
    return found, elapsed_ms


def _in_repo(record: dict[str, Any], repo: str) -> dict[str, Any]:
    """Prefix a navigation record's path and citation with its repository (across repositories)."""
    if not repo:
        return record
    record = dict(record)
    for key in ("path", "citation"):
        record[key] = f"{repo}/{record[key]}"
    if record.get("caller"):
        record["caller"] = _in_repo(record["caller"], repo)
    if "references" in record:
        record["references"] = [{**r, "citation": f"{repo}/{r['citation']}"} for r in record["references"]]
    return record


@app.command("def")
@_reports_errors
def def_(
    name: Annotated[str, typer.Argument(help="A symbol: a plain name (put) or a qualified one (Store.put).")],
    index: IndexOption = None,
    repo: RepoOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the definitions as JSON.")] = False,
) -> None:
    """Print where a function, class or method is defined (path:start-end), from the symbol graph.

    An ambiguous name lists every candidate with its qualified name; exit code 17 when there is none.
    """
    from retrievers.navigation import definition_record, find_definition

    found, elapsed_ms = _navigate(_settings(index, repo), lambda graph: find_definition(graph, name))
    records = [_in_repo(definition_record(site), repo_name) for repo_name, sites in found for site in sites]
    if as_json:
        payload = {"name": name, "ms": round(elapsed_ms, 2), "ambiguous": len(records) > 1, "definitions": records}
        out.print_json(json.dumps(payload))
        return
    if len(records) > 1:
        err.print(f"{name} is ambiguous: {len(records)} definitions", style="dim")
    for record in records:
        out.print(f"[bold]{record['citation']}[/]  {record['kind']} {record['qualified_name']}", highlight=False)
    err.print(f"{len(records)} definitions in {elapsed_ms:.1f} ms", style="dim")


@app.command()
@_reports_errors
def refs(
    name: Annotated[str, typer.Argument(help="A symbol: a plain name (put) or a qualified one (Store.put).")],
    index: IndexOption = None,
    repo: RepoOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="List at most this many uses.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the callers as JSON.")] = False,
) -> None:
    """Print the callers and other uses of a symbol, grouped by the definition that holds them.

    Exit code 17 when the name is neither defined nor used in the index.
    """
    from retrievers.navigation import caller_record, find_references

    found, elapsed_ms = _navigate(
        _settings(index, repo), lambda graph: (find_references(graph, name, limit), graph.count_references(name))
    )
    records = [_in_repo(caller_record(group), repo_name) for repo_name, (groups, _) in found for group in groups]
    uses = sum(len(record["references"]) for record in records)
    total = sum(count for _, (_, count) in found)
    if as_json:
        payload = {"name": name, "ms": round(elapsed_ms, 2), "uses": uses, "total": total, "callers": records}
        out.print_json(json.dumps(payload))
        return
    for record in records:
        caller = record["caller"]
        where = f"{caller['kind']} {caller['qualified_name']}" if caller else "top level"
        out.print(f"[bold]{record['citation']}[/]  {where}", highlight=False)
        lines = ", ".join(f"{r['line']} ({r['kind']})" for r in record["references"])
        out.print(f"      lines {lines}", highlight=False)
    listed = f" (the first {uses} listed; --limit for more)" if total > uses else ""
    err.print(f"{total} uses in {len(records)} places{listed} in {elapsed_ms:.1f} ms", style="dim")


@app.command("map")
@_reports_errors
def map_(
    index: IndexOption = None,
    repo: RepoOption = None,
    tokens: Annotated[int, typer.Option("--tokens", min=16, help="Token budget of the map.")] = 1024,
    focus: Annotated[
        list[str] | None, typer.Option("--focus", help="Rank from these files' point of view (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ranked definitions as JSON.")] = False,
) -> None:
    """Print a map of the repository: its most used definitions, grouped by file, fitted to --tokens.

    Definitions are ranked by PageRank over the symbol graph's references between files (like aider's
    repo map); --focus personalises the ranking towards the named files and what they use.
    """
    from retrievers.navigation import definition_record, symbol_graph
    from retrievers.repo_map import repo_map

    indexes = _load_indexes(_settings(index, repo))
    if len(indexes) != 1:
        raise CairnError("cairn map draws one repository", "name it with --repo NAME")
    started = time.perf_counter()
    text, ranked = repo_map(symbol_graph(next(iter(indexes.values()))), tokens, focus)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if as_json:
        records = [definition_record(item.site) | {"score": round(item.score, 6)} for item in ranked]
        out.print_json(json.dumps({"tokens": tokens, "ms": round(elapsed_ms, 1), "definitions": records, "map": text}))
        return
    out.print(text or "(no definitions are used across files)", highlight=False, markup=False)
    err.print(f"{len(ranked)} definitions in {elapsed_ms:.0f} ms", style="dim")


def _state_summary(state: dict[str, Any]) -> dict[str, Any]:
    keys = ("question", "queries", "lookups", "searched", "rounds", "relevant", "answer", "sources", "citations",
            "dropped_citations", "fallbacks", "tool_calls")  # fmt: skip
    summary = {key: state.get(key) for key in keys}
    summary["documents"] = [
        {k: d.metadata.get(k) for k in ("citation", "symbol", "score", "retriever")} for d in state.get("documents", [])
    ]
    summary["messages"] = [{"role": m.type, "content": m.content} for m in state.get("messages", [])]
    return summary


def describe_step(step: dict[str, Any]) -> str | None:
    """Return a step of the agent as a short line for people (None for steps not worth a line)."""
    node, status = step.get("node"), step.get("status")
    if status == "thinking":
        return f"{node}: thinking"
    if node == "plan":
        if status == "running":
            return "planning (rewriting the question)" if step.get("planned_by") == "model" else "planning"
        return None
    if node == "retrieve":
        if status == "running":
            return "searching " + ", ".join(f'"{q}"' for q in step.get("queries", []))
        exact = f" ({step['looked_up']} from the symbol graph)" if step.get("looked_up") else ""
        return f"found {step.get('found', 0)} chunks{exact}, kept {step.get('kept', 0)}"
    if node == "analyze":
        if status == "running":
            return f"reading {step.get('documents', 0)} chunks"
        return f"{step.get('relevant', 0)} relevant" + ("" if step.get("sufficient") else ", not enough")
    if node == "refine":
        return "searching again" if status == "running" else None
    if node == "answer" and status == "running":
        return "answering"
    return None


class _Steps:
    """Show the agent's steps on stderr: one status line on a terminal, one line per step otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._status = err.status("starting") if enabled and err.is_terminal else None
        if self._status is not None:
            self._status.start()

    def show(self, step: dict[str, Any]) -> None:
        line = describe_step(step) if self.enabled else None
        if line is None:
            return
        if self._status is not None:
            self._status.update(line)
        else:
            err.print(f"· {line}", style="dim", highlight=False, markup=False)

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


async def _ask(question: str, settings: Settings, session: str | None, as_json: bool, context: Any) -> None:
    from langchain_core.messages import AIMessageChunk, HumanMessage
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from config import Node
    from graphs.agent.citations import sources_block
    from graphs.agent.graph import build_graph
    from graphs.agent.sessions import recorded_repo, repo_mismatch, session_metadata
    from models.reasoning import ThinkingFilter

    async with contextlib.AsyncExitStack() as stack:
        checkpointer = None
        if session:
            Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
            path = Path(settings.data_dir) / "sessions.sqlite"
            checkpointer = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
            if mismatch := repo_mismatch(await recorded_repo(checkpointer, session), context, session):
                raise CairnError(mismatch, "continue it with the --repo it started with, or start another --session")
        graph = build_graph().compile(checkpointer=checkpointer)
        config: dict[str, Any] = (
            {"configurable": {"thread_id": session}, "metadata": session_metadata(context)} if session else {}
        )
        final: dict[str, Any] = {}
        streamed = False
        steps = _Steps(enabled=not as_json)
        thinking = ThinkingFilter()
        try:
            async for mode, payload in graph.astream(
                {"messages": [HumanMessage(question)]},
                config,
                context=context,
                stream_mode=["messages", "values", "custom"],
            ):
                if mode == "values":
                    final = payload
                elif mode == "custom":
                    steps.show(payload)
                elif not as_json:
                    chunk, meta = payload
                    if meta.get("langgraph_node") != Node.ANSWER or not isinstance(chunk, AIMessageChunk):
                        continue
                    visible, _ = thinking.feed(str(chunk.content))
                    if visible:
                        if not streamed:
                            steps.stop()
                            out.print()
                        streamed = True
                        out.print(visible, end="", markup=False, highlight=False)
        finally:
            steps.stop()
    if as_json:
        out.print_json(json.dumps(_state_summary(final), default=str))
        return
    if not streamed:  # nothing found, answered without the model
        out.print(final.get("answer", ""), markup=False, highlight=False)
    else:
        out.print()
    if final.get("sources"):
        out.print("\n" + sources_block(final["sources"]), markup=False, highlight=False)
    if final.get("dropped_citations"):
        err.print(
            f"dropped {len(final['dropped_citations'])} citation(s) no retrieved code supports: "
            + ", ".join(final["dropped_citations"]),
            style="dim",
        )


@app.command()
@_reports_errors
def ask(
    question: Annotated[str, typer.Argument(help="Your question about the indexed code.")],
    index: IndexOption = None,
    repo: RepoOption = None,
    session: Annotated[
        str | None, typer.Option(help="Continue (or start) a named conversation, kept in DATA_DIR.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for every node (default: CAIRN_MODEL).")] = None,
    retriever: Annotated[str | None, typer.Option(help="hybrid, dense, keyword, or a plugin retriever's name.")] = None,
    max_rounds: Annotated[int | None, typer.Option(help="Refine rounds allowed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final state as JSON.")] = False,
) -> None:
    """Answer a question about the indexed code, streamed, with citations (path:start-end)."""
    import asyncio

    from graphs.agent.context import Context
    from graphs.agent.resources import load_indexes
    from models.embedded import embedded_model
    from models.errors import translate_model_error
    from retrievers import available_retrievers

    if not question.strip():
        raise CairnError("The question is empty", 'ask something, e.g. cairn ask "where is the config parsed?"')
    if retriever is not None and retriever not in available_retrievers():
        raise CairnError(f"Unknown --retriever {retriever!r}", f"choose one of: {', '.join(available_retrievers())}")
    settings = _settings(index, repo)
    if model:
        settings = settings.model_copy(update={"model": model})
    context = Context.from_settings(settings, retriever=retriever, max_rounds=max_rounds)
    load_indexes(context)  # fail fast (no index, wrong model, unknown repository) before starting anything
    with embedded_model(settings):
        try:
            asyncio.run(_ask(question, settings, session, as_json, context))
        except Exception as exc:
            translated = translate_model_error(exc, model=context.model, timeout=context.model_timeout,
                                               retries=context.model_max_retries)  # fmt: skip
            if translated is None:
                raise
            raise translated from exc


@app.command("eval")
@_reports_errors
def eval_(
    dataset: Annotated[
        str, typer.Argument(help="A JSONL dataset, or the name of one in evals/datasets (sample, httpx).")
    ] = "sample",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: DATA_DIR/evals/<dataset>).")
    ] = None,
    compare: Annotated[Path | None, typer.Option(help="An older report.json to print deltas against.")] = None,
    judge: Annotated[
        str | None, typer.Option(help="Model for RAGAS' LLM-judged metrics (default: CAIRN_EVAL_JUDGE).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of every node (0: repeatable).")] = 0.0,
    model: Annotated[str | None, typer.Option(help="Model for every node (default: CAIRN_MODEL).")] = None,
) -> None:
    """Run the agent over an eval dataset, score it (RAGAS + retrieval + citations), gate on thresholds.

    There is no --repo: a dataset pins its corpus (the sample repository, the installed httpx), which
    the eval ingests into DATA_DIR/eval-indexes itself, so its scores never depend on your repositories.
    """
    import asyncio

    from evals.datasets import resolve_dataset
    from evals.navigation import is_navigation_dataset
    from evals.report import compare as compare_reports
    from evals.runner import run_eval, write_report
    from models import parse_model_spec
    from models.embedded import embedded_model

    path = resolve_dataset(dataset)
    if is_navigation_dataset(path):
        _navigation_eval(path, out_dir or Path(Settings().data_dir) / "evals" / path.stem)
        return
    settings = Settings()
    if model:
        settings = settings.model_copy(update={"model": model})
    judge = judge or settings.eval_judge
    for spec in [*settings.model_specs(), *([judge] if judge else [])]:
        parse_model_spec(spec)  # a malformed setting is reported before anything starts
    target = out_dir or Path(settings.data_dir) / "evals" / path.stem

    def progress(row: dict[str, Any]) -> None:
        rank = row["rank"] if row["rank"] is not None else "-"
        err.print(f"  {row['id']:<8} rank {rank!s:>2}  ctx-recall {row['context_recall']:.2f}  "
                  f"rouge-L {row['rouge_l']:.2f}  {row['latency_s']:.1f}s", highlight=False)  # fmt: skip

    judged = settings.model_copy(update={"model": judge}) if judge else settings
    err.print(f"evaluating {path} with {settings.model} ...")
    with embedded_model(settings), embedded_model(judged):
        try:
            report = asyncio.run(
                run_eval(path, settings, temperature=temperature, judge=judge, limit=limit, on_question=progress)
            )
        except Exception as exc:
            from models.errors import translate_model_error

            translated = translate_model_error(exc, model=settings.model, timeout=settings.model_timeout)
            if translated is None:
                raise
            raise translated from exc
    paths = write_report(report, target)
    out.print()
    for name, value in report["summary"].items():
        out.print(f"  {name:<26} {value if value is not None else '–'}", highlight=False)
    out.print(f"\nreport: {paths['markdown']}  ({paths['json'].name}, {paths['plot'].name}); "
              f"{report['duration_s']} s", highlight=False)  # fmt: skip
    if compare is not None:
        out.print("\n" + compare_reports(report, compare), highlight=False, markup=False)
    gate = report["gate"]
    if not gate["passed"]:
        failed = ", ".join(f"{m} {v['value']} < {v['threshold']}" for m, v in gate["failed_metrics"].items())
        raise GateFailed(
            f"Eval gate failed: {failed}; questions: {', '.join(gate['failing_questions']) or '-'}",
            f"see {paths['markdown']}; thresholds are CAIRN_EVAL_MIN_*",
        )
    out.print("[green]gate passed[/]")


def _navigation_eval(path: Path, target: Path) -> None:
    """Score the symbol graph on a navigation dataset against Python's ast; gate on precision and recall."""
    from evals.navigation import run_navigation_eval

    err.print(f"evaluating {path} (symbol graph against Python's ast) ...")
    report = run_navigation_eval(path)
    target.mkdir(parents=True, exist_ok=True)
    (target / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    for kind, scores in report["kinds"].items():
        out.print(f"  {kind:<11} {scores['questions']:>3} questions  precision {scores['precision']}  "
                  f"recall {scores['recall']}  ({scores['answers']} answers)", highlight=False)  # fmt: skip
    out.print(f"\nreport: {target / 'report.json'}; graph {report['graph_s']} s, ast {report['ast_s']} s",
              highlight=False)  # fmt: skip
    if not report["gate"]["passed"]:
        failed = ", ".join(f"{m} {v['value']} < {v['threshold']}" for m, v in report["gate"]["failed_metrics"].items())
        raise GateFailed(f"Navigation eval gate failed: {failed}", f"see {target / 'report.json'}")
    out.print("[green]gate passed[/]")


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
    import uvicorn

    from models.embedded import embedded_model
    from serving.app import create_app
    from serving.redis_server import local_redis
    from serving.security import is_loopback, parse_keys

    settings = _settings(index, repo)
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
    from graphs.agent.context import Context

    context = Context.from_settings(settings)  # a malformed model or retriever setting is reported before anything
    served = context.index_dir if context.repo is None else f"repository {context.repo} ({context.data_dir})"
    names = context.repositories().names()
    models = "cairn-agent" + "".join(f", cairn/{n}" for n in names) + (", cairn/*" if len(names) > 1 else "")
    base = f"http://{settings.serve_host}:{settings.serve_port}"
    with local_redis(settings, autostart=start_redis, supervise=True), embedded_model(settings, supervise=True):
        auth = ' -H "Authorization: Bearer $CAIRN_KEY"' if settings.api_keys else ""
        err.print(
            f"\n[bold]Cairn is serving[/] {served}\n"
            f"  page            {base}/\n"
            f"  playground      {base}/agent/playground/\n"
            f"  OpenAI base URL {base}/v1   (models: {models})\n"
            f"  API docs        {base}/docs\n"
            f"  readiness       {base}/ready\n"
            + (
                "  watching        every served repository's source folder (re-indexed as files change)\n"
                if settings.watch
                else ""
            )
            + (f"  workers         {settings.workers} processes\n" if settings.workers > 1 else "")
            + f"  try:  curl -s {base}/v1/chat/completions{auth} -H 'Content-Type: application/json' "
            '-d \'{"model": "cairn-agent", "messages": [{"role": "user", "content": '
            '"How does the LRU cache evict entries?"}]}\'\n'
            "  Ctrl-C stops the service and what it started.\n",
            highlight=False,
            soft_wrap=True,
        )
        # uvicorn shuts down gracefully on SIGTERM (systemd, docker stop, kill), then raises the signal
        # again; without a handler of ours that would end the process before the blocks above stop
        # the Redis and model server they started (seen: both left running after `kill`).
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if settings.workers == 1:
            uvicorn.run(create_app(settings), host=settings.serve_host, port=settings.serve_port, log_level="info",
                        access_log=False)  # fmt: skip
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


@app.command()
@_reports_errors
def info(index: IndexOption = None, repo: RepoOption = None) -> None:
    """Describe the index: where it came from, the embedding model, counts."""
    from ingest.store import open_generation

    specs = _index_specs(_settings(index, repo))
    if len(specs) > 1:
        raise CairnError("cairn info describes one index", f"name one with --repo: {', '.join(specs)}")
    generation = open_generation(next(iter(specs.values())).index_dir)
    out.print_json(json.dumps({**generation.manifest.summary(), "generation": generation.path.name}))


repos_app = typer.Typer(help="The repositories under DATA_DIR/repos: list them, remove one.")
app.add_typer(repos_app, name="repos")


def _size(size: int) -> str:
    """Return a byte count for people: 812 B, 4.1 MB."""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


@repos_app.callback(invoke_without_command=True)
@_reports_errors
def repos(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the repositories as JSON.")] = False,
) -> None:
    """List the repositories: name, source folder, chunks, files, last ingest, embedding model, size on disk."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from ingest.repos import Repositories, default_repo

    settings = Settings()
    infos = Repositories.of(settings).describe_all(settings.embedding_model)
    default = default_repo(settings)  # None: the index folder (CAIRN_INDEX_DIR, or DATA_DIR/index)
    if as_json:
        out.print_json(json.dumps({"default": default, "repos": [info.as_dict() for info in infos]}))
        return
    if not infos:
        out.print(f"No repositories in {Repositories.of(settings).root}; add one with: cairn ingest PATH [--name NAME]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "source", "chunks", "files", "last ingest", "embedding model", "size"):
        numeric = column in {"chunks", "files", "size"}
        table.add_column(column, justify="right" if numeric else "left", overflow="fold", no_wrap=numeric)
    for info in infos:
        name = f"{info.name} (default)" if info.name == default else info.name
        source = info.source or "-"
        if info.source and not info.source_exists:
            source += " [red](missing)[/]"
        when = info.last_ingest.replace("T", " ")[:16] if info.last_ingest else "-"  # to the minute, UTC
        table.add_row(name, source, str(info.chunks or "-"), str(info.files or "-"), when,
                      info.embedding_model or "-", _size(info.size_bytes))  # fmt: skip
    out.print(table)
    if default is None:
        out.print(f"Commands without --repo use the index folder {settings.resolved_index_dir}.", highlight=False)
    elif default == "*":
        out.print("Commands without --repo, and the model cairn-agent, search all of them.")
    for info in infos:
        if not info.ok:
            out.print(f"[red]{info.name}[/]: {info.problem} (hint: {info.hint})", highlight=False)
        elif not info.source_exists:
            out.print(f"[yellow]{info.name}[/]: the source folder {info.source} is missing; the index still serves "
                      f"(hint: re-ingest it from where it moved: cairn ingest NEW_PATH --name {info.name})",
                      highlight=False)  # fmt: skip


@repos_app.command("remove")
@_reports_errors
def repos_remove(
    name: Annotated[str, typer.Argument(help="The repository to delete (its index; the source folder is untouched).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a repository's index from DATA_DIR/repos (asks first, unless --yes)."""
    from ingest.repos import Repositories

    repositories = Repositories.of(Settings())
    index_dir = repositories.get(name)  # an unknown name lists the ones there are
    if not yes:
        if not sys.stdin.isatty():
            raise CairnError(f"Not deleting repository {name!r} without a confirmation", "add --yes")
        if not typer.confirm(f"Delete the index of repository {name!r} ({index_dir})?"):
            err.print("nothing deleted")
            raise typer.Exit(ExitCode.OTHER)
    removed = repositories.remove(name)
    out.print(f"Removed repository {name} ({removed}); its source folder is untouched.")


sessions_app = typer.Typer(help="The service's sessions in Redis (CAIRN_REDIS_URL, CAIRN_REDIS_PREFIX).")
app.add_typer(sessions_app, name="sessions")


@sessions_app.command("migrate")
@_reports_errors
def sessions_migrate() -> None:
    """Move sessions stored before Redis Cluster support into the hash-tagged key layout (safe to run again)."""
    import asyncio

    from cairn.errors import RedisUnavailable
    from serving.checkpoint import RedisCheckpointSaver
    from serving.errors import REDIS_ERRORS

    settings = Settings()

    async def migrate() -> tuple[str | None, int, int]:
        saver = await RedisCheckpointSaver.connect(
            settings.redis_url, prefix=settings.redis_prefix, ttl=settings.session_ttl
        )
        try:
            moved = await saver.migrate()
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
def version() -> None:
    """Print Cairn's version."""
    out.print(__version__)


def main() -> None:  # pragma: no cover - console-script shim
    """Run the CLI."""
    sys.exit(app())


if __name__ == "__main__":
    main()
