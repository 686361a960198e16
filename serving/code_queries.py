"""The questions the code API answers, answered once for every way in: the page's `/api` routes and MCP's tools.

Each takes the service and the caller's parameters, resolves the repository (a name, ``*`` for all,
or the default one), and returns a response model of ``serving/schemas.py``; whatever goes wrong is a
``CairnError`` or ``ServiceError`` with a message and a hint, which each way in reports its own way
(an HTTP status, an MCP tool error). Files are confined to what the index holds, exactly as the
agent's ``read_file`` tool is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.tools import ToolException

from cairn.errors import CairnError, SymbolNotFound
from graphs.agent.resources import load_indexes
from ingest.repos import size_on_disk
from ingest.walker import decode_text
from retrievers import AcrossReposRetriever, check_retriever, load_search_index, make_retriever
from retrievers.navigation import (
    caller_record,
    definition_record,
    find_definition,
    find_references,
    import_record,
    module_path,
    symbol_graph,
)
from retrievers.repo_map import repo_map
from retrievers.rerank import Reranked, rerank_with
from serving.errors import ServiceError
from serving.schemas import (
    AgentTool,
    AgentTools,
    Definitions,
    FileExcerpt,
    FileLine,
    FileText,
    Importers,
    References,
    RepoMap,
    RepositoryStatus,
    SearchResult,
    SearchResults,
)
from serving.service import Service
from serving.web.code_view import MAX_LINES, excerpt_window, highlighted_file
from tools import confine, tool_context_for

#: Lines of a chunk a search result shows.
SNIPPET_LINES = 8


async def search(
    service: Service,
    query: str,
    *,
    mode: str = "hybrid",
    k: int = 8,
    path: list[str] | None = None,
    language: list[str] | None = None,
    repo: str | None = None,
    rerank: bool | None = None,
) -> SearchResults:
    """Search as `cairn search` does: ranked chunks with citation, symbol, snippet and score."""
    try:
        check_retriever(mode)
    except CairnError as exc:
        raise ServiceError(400, f"{exc.message}; {exc.hint}", "unknown_retriever") from exc
    context = service.context_for_repo(repo)
    await service.require_index(context)
    indexes = await asyncio.to_thread(load_indexes, context)
    reranking = context.rerank if rerank is None else rerank
    unset: list[str] = []
    if reranking and not context.rerank_model:
        if rerank:  # asked for by this request
            raise ServiceError(409, "rerank: no reranker is configured (set CAIRN_RERANK_MODEL)", "no_reranker")
        reranking, unset = False, ["not reranked: CAIRN_RERANK is on but CAIRN_RERANK_MODEL names no reranker"]
    wide = max(k, context.rerank_top_n) if reranking else k  # the reranker reads the fused top N, keeps k
    options = {"k": wide, "depth": context.fusion_depth, "rrf_k": context.rrf_k}
    retrievers = {name: make_retriever(mode, index, **options) for name, index in indexes.items()}
    retriever = (
        AcrossReposRetriever(retrievers=retrievers, k=wide, rrf_k=context.rrf_k)
        if context.spans_repos
        else next(iter(retrievers.values()))
    )
    filters = {name: value for name, value in (("path_glob", path), ("language", language)) if value}
    documents = await asyncio.to_thread(retriever.invoke, query, None, **filters)  # no config; the filters are kwargs
    warnings: list[str] = list(unset)
    if reranking:
        reranked = await asyncio.to_thread(_reranked, context, query, documents, k)
        documents, warnings = reranked.documents, [reranked.warning] if reranked.warning else []
    results = [
        SearchResult(
            citation=meta["citation"],
            path=meta["path"],
            start_line=meta["start_line"],
            end_line=meta["end_line"],
            language=meta.get("language", ""),
            symbol=meta.get("symbol"),
            kind=meta.get("kind", ""),
            score=float(meta.get("score", 0.0)),
            rank=int(meta.get("rank", 0)),
            snippet="\n".join(document.page_content.split("\n")[:SNIPPET_LINES]),
            copies=list(meta.get("copies", [])),
        )
        for document in documents
        for meta in (document.metadata,)
    ]
    return SearchResults(query=query, mode=mode, results=results, reranked=reranking and not warnings,
                         warnings=warnings)  # fmt: skip


def _reranked(context: Any, query: str, documents: list[Any], k: int) -> Reranked:
    key = context.rerank_api_key.get_secret_value() if context.rerank_api_key else None
    return rerank_with(str(context.rerank_model), key, query, documents, k=k, top_n=context.rerank_top_n)


def _prefixed(record: dict[str, Any], repo: str) -> dict[str, Any]:
    """Prefix a navigation record's paths with its repository (across repositories)."""
    record = {**record, "path": f"{repo}/{record['path']}", "citation": f"{repo}/{record['citation']}"}
    if record.get("caller"):
        record["caller"] = _prefixed(record["caller"], repo)
    if "references" in record:
        record["references"] = [{**r, "citation": f"{repo}/{r['citation']}"} for r in record["references"]]
    return record


async def _navigate(
    service: Service, repo: str | None, lookup: Callable[[Any, Any], list[Any]], to_record: Callable[[Any], dict]
) -> list[dict[str, Any]]:
    """Run a symbol-graph lookup ``lookup(graph, index)`` on the repository (or each) and return its records."""
    context = service.context_for_repo(repo)
    await service.require_index(context)
    indexes = await asyncio.to_thread(load_indexes, context)

    def run() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        missing: CairnError | None = None
        for name, index in indexes.items():
            try:
                found = lookup(symbol_graph(index), index)
            except CairnError as exc:
                missing = exc
                continue
            records.extend(_prefixed(to_record(r), name) if context.spans_repos else to_record(r) for r in found)
        if not records and missing is not None:
            raise missing
        return records

    return await asyncio.to_thread(run)


async def definitions(service: Service, name: str, repo: str | None = None) -> Definitions:
    """Where a symbol is defined, as `cairn def` prints it (every candidate of an ambiguous name)."""
    records = await _navigate(service, repo, lambda graph, _: find_definition(graph, name), definition_record)
    return Definitions.model_validate({"name": name, "ambiguous": len(records) > 1, "definitions": records})


async def references(service: Service, name: str, limit: int, repo: str | None = None) -> References:
    """The callers and other uses of a symbol grouped by enclosing definition, as `cairn refs` prints them."""
    total = 0

    def lookup(graph: Any, _: Any) -> list[Any]:
        nonlocal total
        total += graph.count_references(name)
        return find_references(graph, name, limit)

    records = await _navigate(service, repo, lookup, caller_record)
    uses = sum(len(record["references"]) for record in records)
    return References.model_validate({"name": name, "uses": uses, "total": total, "callers": records})


async def importers(service: Service, module: str, repo: str | None = None) -> Importers:
    """The import statements that import a module (``pkg.mod``) or file (``pkg/mod.py``), each cited."""

    def lookup(graph: Any, index: Any) -> list[Any]:
        path = module_path(graph, index, module)
        if path is None:
            raise SymbolNotFound(f"No module or file {module!r} in the index",
                                 "name it as imported (pkg.mod) or by its path (pkg/mod.py)")  # fmt: skip
        return graph.imported_by(path)

    records = await _navigate(service, repo, lookup, import_record)
    return Importers.model_validate({"module": module, "importers": records})


async def _confined(service: Service, path: str, repo: str | None) -> tuple[str, Path, str]:
    """Return an indexed file's relative path, its place on disk and the repository prefix of its citation.

    Across repositories (``repo=*``, or that default) the path starts with the repository's name, as
    citations across repositories do. Refused: anything the index does not hold (a 400 for a path that
    may never be read, a 404 for one that is not there).
    """
    run = service.context_for_repo(repo)
    prefix = ""
    if run.spans_repos:
        prefix, _, path = path.partition("/")
        run = service.context_for_repo(prefix)
    await service.require_index(run)
    index = await asyncio.to_thread(load_search_index, run.index_spec())
    try:
        rel, target = confine(tool_context_for(index), path)
    except ToolException as exc:
        message = str(exc)
        status = 400 if message.startswith("refused") else 404
        raise ServiceError(status, message, "file_refused" if status == 400 else "file_not_found") from exc
    return rel, target, prefix


async def file_excerpt(
    service: Service, path: str, start: int = 1, end: int | None = None, context: int = 8, repo: str | None = None
) -> FileExcerpt:
    """Lines of an indexed file, highlighted, with the range marked and context around it (the page's)."""
    if end is not None and end < start:
        raise ServiceError(400, f"The range {start}-{end} ends before it starts", "invalid_range")
    rel, target, prefix = await _confined(service, path, repo)
    try:
        language, lines = await asyncio.to_thread(highlighted_file, target, rel)
    except OSError as exc:
        raise ServiceError(404, f"Cannot read {rel}: {exc.strerror or exc}", "file_not_found") from exc
    rel = f"{prefix}/{rel}" if prefix else rel
    total = len(lines)
    if total == 0:
        return FileExcerpt(path=rel, language=language, total_lines=0, start=0, end=0, lines=[], truncated=False)
    start, end, first, last, truncated = excerpt_window(total, start, end, context)
    return FileExcerpt(
        path=rel,
        language=language,
        total_lines=total,
        start=start,
        end=end,
        lines=[FileLine(number=n, html=lines[n - 1], cited=start <= n <= end) for n in range(first, last + 1)],
        truncated=truncated,
    )


async def file_text(
    service: Service, path: str, start: int = 1, end: int | None = None, repo: str | None = None
) -> FileText:
    """Lines ``start``..``end`` of an indexed file as plain text (at most 400), for a model or a tool."""
    if end is not None and end < start:
        raise ServiceError(400, f"The range {start}-{end} ends before it starts", "invalid_range")
    rel, target, prefix = await _confined(service, path, repo)
    try:
        data = await asyncio.to_thread(target.read_bytes)
    except OSError as exc:
        raise ServiceError(404, f"Cannot read {rel}: {exc.strerror or exc}", "file_not_found") from exc
    all_lines = decode_text(data).split("\n")
    total = len(all_lines) - (1 if all_lines and all_lines[-1] == "" else 0)
    last = min(total, end if end is not None else start + MAX_LINES - 1, start + MAX_LINES - 1)
    first = min(start, max(total, 1))
    rel = f"{prefix}/{rel}" if prefix else rel
    return FileText(path=rel, total_lines=total, start=first, end=last, text="\n".join(all_lines[first - 1 : last]),
                    truncated=end is not None and end > last and last < total)  # fmt: skip


async def repository_map(
    service: Service, repo: str | None = None, tokens: int = 1024, focus: list[str] | None = None
) -> RepoMap:
    """The most used definitions of one repository, grouped by file, fitted to ``tokens`` (as `cairn map`)."""
    context = service.context_for_repo(repo)
    await service.require_index(context)
    indexes = await asyncio.to_thread(load_indexes, context)
    if len(indexes) != 1:
        raise ServiceError(400, "A repository map draws one repository: name it with repo", "one_repository")
    index = next(iter(indexes.values()))
    started = time.perf_counter()
    text, ranked = await asyncio.to_thread(repo_map, symbol_graph(index), tokens, focus)
    records = [definition_record(item.site) | {"score": round(item.score, 6)} for item in ranked]
    return RepoMap.model_validate({"tokens": tokens, "ms": round((time.perf_counter() - started) * 1000, 1),
                                   "map": text, "definitions": records})  # fmt: skip


def repositories(service: Service) -> list[RepositoryStatus]:
    """Every repository the service answers about, with its state (as `cairn repos` lists them).

    A service on one index folder (``--index``) answers about that one, named ``""``.
    """
    infos = service.context.repositories().describe_all(service.context.embedding_model)
    default = service.context.repo
    if not infos and service.context.repo is None:
        try:
            manifest = load_search_index(service.context.index_spec()).generation.manifest
        except CairnError as exc:
            return [RepositoryStatus(name="", source=None, source_exists=False, chunks=None, ok=False,
                                     problem=exc.message, default=True)]  # fmt: skip
        source = manifest.repo_root
        return [RepositoryStatus(name="", source=source, source_exists=bool(source) and Path(source).is_dir(),
                                 chunks=manifest.counts.chunks, ok=True, default=True, files=manifest.counts.files,
                                 last_ingest=manifest.created_at or None,
                                 size_bytes=size_on_disk(Path(service.context.index_dir)))]  # fmt: skip
    return [
        RepositoryStatus(
            name=info.name,
            source=info.source,
            source_exists=info.source_exists,
            chunks=info.chunks,
            ok=info.ok,
            problem=info.problem,
            default=info.name == default,
            files=info.files,
            last_ingest=info.last_ingest,
            size_bytes=info.size_bytes,
        )
        for info in infos
    ]


def agent_tools(service: Service) -> AgentTools:
    """The agent's tools: Cairn's own, then each configured MCP server's allowed ones (connecting to list them)."""
    from tools.mcp import agent_tools as listed

    rows, servers = listed(service.settings.mcp_servers)
    return AgentTools(tools=[AgentTool.model_validate(row) for row in rows], mcp_servers=servers)
