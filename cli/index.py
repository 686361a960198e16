"""Index and read: ``cairn ingest``, ``search``, ``def``, ``refs`` and ``map``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cairn.errors import CairnError
from cli.app import IndexOption, RepoOption, _load_indexes, _reports_errors, _settings, app, err, out
from config import Settings


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

    if index is not None and name is not None:
        raise CairnError("--index and --name name two different indexes", "give one of them")
    settings, repo = _ingest_target(path, name, _settings(index), index is not None)
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
    _print_ingest(result, repo, as_json=as_json)
    if watcher is not None:
        _watch_until_interrupted(watcher, as_json=as_json)


def _ingest_target(path: Path, name: str | None, settings: Settings, index_given: bool) -> tuple[Settings, str | None]:
    """Return the settings that point at the index to write, and the repository's name (None: an --index folder).

    A repository gets DATA_DIR/repos/<name> (claimed for this source folder; a single index from
    before names existed is adopted on the way).
    """
    from ingest.repos import Repositories, adopt_single_index, default_name

    if index_given or (name is None and settings.index_dir is not None):
        return settings, None
    claim = Repositories.of(settings).claim(name or default_name(path), path)
    if claim.moved_from:
        err.print(f"{claim.name}: the source moved from {claim.moved_from} to {path.expanduser().resolve()}")
    if name is None and adopt_single_index(settings, claim, path):
        err.print(f"moved the index at {Path(settings.data_dir) / 'index'} to {claim.index_dir}")
    return settings.model_copy(update={"index_dir": claim.index_dir}), claim.name


def _print_ingest(result: Any, repo: str | None, *, as_json: bool) -> None:
    """Print what an ingest did: one summary line and what it skipped (or the summary as JSON)."""
    summary = {
        "repo": repo, "index": str(result.index_dir),
        "generation": result.generation.name if result.generation else None,
        "files": result.files_total, "added": result.files_added, "changed": result.files_changed,
        "unchanged": result.files_unchanged, "deleted": result.files_deleted, "chunks": result.chunks_total,
        "embedded": result.chunks_embedded, "reused": result.chunks_reused, "skipped": dict(result.skipped),
        "secrets": result.secrets, "seconds": round(result.timings.get("total", 0.0), 3),
    }  # fmt: skip
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
        _print_skipped(result)


def _print_skipped(result: Any) -> None:
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
        record = {"files": len(batch.paths), "seconds": round(batch.seconds, 3), "error": batch.error,
                  "merge": batch.merge}  # fmt: skip
        if result is not None:
            record |= {"generation": result.generation.name if result.generation else None,
                       "added": result.files_added, "changed": result.files_changed,
                       "deleted": result.files_deleted, "embedded": result.chunks_embedded,
                       "failed": result.failed}  # fmt: skip
        out.print(json.dumps(record), highlight=False, soft_wrap=True)
        return
    stamp = time.strftime("%H:%M:%S", time.localtime(batch.started))
    if batch.merge:
        out.print(f"{stamp} merged the delta into a whole generation in {batch.seconds:.2f}s", highlight=False)
        return
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
    rerank: Annotated[
        bool | None, typer.Option("--rerank/--no-rerank", help="Rerank with CAIRN_RERANK_MODEL (default CAIRN_RERANK).")
    ] = None,
) -> None:
    """Search the index and print ranked citations (path:start-end) with snippets.

    Across repositories (--repo '*') the rankings are fused and paths start with the repository's name.
    """
    from ingest.repos import ALL, default_repo
    from retrievers import AcrossReposRetriever, available_retrievers, make_retriever
    from retrievers.rerank import rerank as rerank_documents

    settings = _settings(index, repo)
    if mode not in available_retrievers():
        raise CairnError(f"Unknown --mode {mode!r}", f"choose one of: {', '.join(available_retrievers())}")
    indexes = _load_indexes(settings)
    options = {"k": k or settings.search_k, "depth": settings.fusion_depth, "rrf_k": settings.rrf_k}
    reranking = settings.rerank if rerank is None else rerank
    # a reranker reads the fused ranking's top N, so that many are retrieved and it keeps k
    wide = {**options, "k": max(options["k"], settings.rerank_top_n)} if reranking else options
    retrievers = {name: make_retriever(mode, loaded, **wide) for name, loaded in indexes.items()}
    retriever = (
        AcrossReposRetriever(retrievers=retrievers, k=wide["k"], rrf_k=settings.rrf_k)
        if default_repo(settings) == ALL
        else next(iter(retrievers.values()))
    )
    if mode != "keyword":
        next(iter(indexes.values())).embedder  # noqa: B018  (load the model now, so the time printed is the search's)
    reranker = _reranker(settings, asked=bool(rerank)) if reranking else None
    started = time.perf_counter()
    docs = retriever.invoke(query, path_glob=path, language=language)
    warning = None
    if reranker is not None:
        reranked = rerank_documents(reranker, query, docs, k=options["k"], top_n=settings.rerank_top_n)
        docs, warning = reranked.documents, reranked.warning
    docs = docs[: options["k"]]  # retrieved wide for a reranker that could not be had: the fused top k
    elapsed_ms = (time.perf_counter() - started) * 1000
    if warning:
        err.print(f"warning: {warning}", style="yellow", highlight=False)
    if as_json:
        rows = [{**doc.metadata, "text": doc.page_content} for doc in docs]
        found = {"query": query, "mode": mode, "ms": round(elapsed_ms, 2), "results": rows}
        out.print_json(json.dumps({**found, "warnings": [warning] if warning else []}))
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


def _reranker(settings: Settings, *, asked: bool) -> Any:
    """The reranker CAIRN_RERANK_MODEL names; None (with a warning) when it cannot be loaded, or none is set and
    only the setting turned reranking on (an error when --rerank asked for it)."""
    from cairn.errors import RerankUnavailable
    from retrievers.rerank import make_reranker

    if not settings.rerank_model:
        if not asked:
            err.print("warning: not reranked: CAIRN_RERANK is on but CAIRN_RERANK_MODEL is not set", style="yellow")
            return None
        raise CairnError("Reranking needs a reranker", "set CAIRN_RERANK_MODEL (docs/models.md#reranking)")
    key = settings.rerank_api_key.get_secret_value() if settings.rerank_api_key else None
    try:
        return make_reranker(settings.rerank_model, key)
    except RerankUnavailable as exc:
        err.print(f"warning: not reranked: {exc.message}", style="yellow", highlight=False)
        return None


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
