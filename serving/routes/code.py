"""The code API at /api: hybrid search, exact navigation (definitions, references), files as highlighted lines.

Cairn's page uses it, and so can any HTTP client (MCP's tools answer the same questions); its response
models are in `serving/schemas.py`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query
from langchain_core.tools import ToolException
from pydantic import WithJsonSchema

from cairn.errors import CairnError
from graphs.agent.resources import load_indexes
from retrievers import AcrossReposRetriever, available_retrievers, check_retriever, load_search_index, make_retriever
from retrievers.navigation import (
    REFERENCES_LIMIT,
    caller_record,
    definition_record,
    find_definition,
    find_references,
    symbol_graph,
)
from serving.errors import ServiceError, documented
from serving.schemas import (
    Definitions,
    FileExcerpt,
    FileLine,
    References,
    RetrieverList,
    SearchResult,
    SearchResults,
)
from serving.service import ServiceDep
from serving.web.code_view import excerpt_window, highlighted_file
from tools import confine, tool_context_for

router = APIRouter(prefix="/api", tags=["page"])

#: Lines of a chunk a search result shows.
SNIPPET_LINES = 8

RepoQuery = Annotated[
    str | None,
    Query(description="A repository's name, or * for all of them (paths then start with the name); "
          "default: the service's default repository (CAIRN_DEFAULT_REPO)."),
]  # fmt: skip


@router.get("/retrievers", response_model=RetrieverList, responses=documented(401))
async def list_retrievers(service: ServiceDep) -> RetrieverList:
    """The retrievers a search may use, plugins included, and the agent's own."""
    return RetrieverList(modes=available_retrievers(), default=service.context.retriever)


@router.get("/search", response_model=SearchResults, responses=documented(400, 401, 404, 503))
async def search(
    service: ServiceDep,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="What to look for.")],
    mode: Annotated[
        str,
        Query(
            description="A retriever: hybrid, dense, keyword or a plugin's.",
            json_schema_extra={"enum": available_retrievers()},
        ),
    ] = "hybrid",
    k: Annotated[int, Query(ge=1, le=50, description="How many results.")] = 8,
    path: Annotated[list[str] | None, Query(description="Only files matching these globs (gitignore style).")] = None,
    language: Annotated[list[str] | None, Query(description="Only these languages, e.g. python.")] = None,
    repo: RepoQuery = None,
) -> SearchResults:
    """Search the index as `cairn search` does: ranked chunks with citation, symbol, snippet and score.

    An unknown `repo` is a 404 listing the repositories.
    """
    try:
        check_retriever(mode)
    except CairnError as exc:
        raise ServiceError(400, f"{exc.message}; {exc.hint}", "unknown_retriever") from exc
    context = service.context_for_repo(repo)
    await service.require_index(context)
    indexes = await asyncio.to_thread(load_indexes, context)
    options = {"k": k, "depth": context.fusion_depth, "rrf_k": context.rrf_k}
    retrievers = {name: make_retriever(mode, index, **options) for name, index in indexes.items()}
    retriever = (
        AcrossReposRetriever(retrievers=retrievers, k=k, rrf_k=context.rrf_k)
        if context.spans_repos
        else next(iter(retrievers.values()))
    )
    filters = {name: value for name, value in (("path_glob", path), ("language", language)) if value}
    documents = await asyncio.to_thread(retriever.invoke, q, None, **filters)  # no config; the filters are kwargs
    results = []
    for document in documents:
        meta = document.metadata
        results.append(
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
        )
    return SearchResults(query=q, mode=mode, results=results)


SymbolQuery = Annotated[
    str,
    Query(min_length=1, max_length=500, description="A symbol: a plain name (put) or a qualified one (Store.put)."),
]


def _prefixed(record: dict, repo: str) -> dict:
    """Prefix a navigation record's paths with its repository (across repositories)."""
    record = {**record, "path": f"{repo}/{record['path']}", "citation": f"{repo}/{record['citation']}"}
    if record.get("caller"):
        record["caller"] = _prefixed(record["caller"], repo)
    if "references" in record:
        record["references"] = [{**r, "citation": f"{repo}/{r['citation']}"} for r in record["references"]]
    return record


async def _navigate(service, repo: str | None, lookup, to_record) -> list[dict]:
    """Run a symbol-graph lookup on the repository (or each of them) and return its records as JSON."""
    context = service.context_for_repo(repo)
    await service.require_index(context)
    indexes = await asyncio.to_thread(load_indexes, context)

    def run() -> list[dict]:
        records: list[dict] = []
        missing: CairnError | None = None
        for name, index in indexes.items():
            try:
                found = lookup(symbol_graph(index))
            except CairnError as exc:
                missing = exc
                continue
            records.extend(_prefixed(to_record(r), name) if context.spans_repos else to_record(r) for r in found)
        if not records and missing is not None:
            raise missing
        return records

    try:
        return await asyncio.to_thread(run)
    except CairnError as exc:
        raise ServiceError(exc.http_status, f"{exc.message} ({exc.hint})", type(exc).__name__) from exc


@router.get("/definitions", response_model=Definitions, responses=documented(400, 401, 404, 503))
async def definitions(service: ServiceDep, name: SymbolQuery, repo: RepoQuery = None) -> Definitions:
    """Where a symbol is defined, from the symbol graph, as `cairn def` prints it.

    An ambiguous name returns every candidate (`ambiguous: true`) with its qualified name; a name with
    no definition is a 404 (`SymbolNotFound`); a missing `name` is a 400.
    """
    records = await _navigate(service, repo, lambda graph: find_definition(graph, name), definition_record)
    return Definitions.model_validate({"name": name, "ambiguous": len(records) > 1, "definitions": records})


@router.get("/references", response_model=References, responses=documented(400, 401, 404, 503))
async def references(
    service: ServiceDep,
    name: SymbolQuery,
    limit: Annotated[int, Query(ge=1, le=10_000, description="List at most this many uses.")] = REFERENCES_LIMIT,
    repo: RepoQuery = None,
) -> References:
    """The callers and other uses of a symbol grouped by enclosing definition, as `cairn refs` prints them.

    A name neither defined nor used is a 404 (`SymbolNotFound`); a missing `name` is a 400.
    """
    total = 0

    def lookup(graph):
        nonlocal total
        total += graph.count_references(name)
        return find_references(graph, name, limit)

    records = await _navigate(service, repo, lookup, caller_record)
    uses = sum(len(record["references"]) for record in records)
    return References.model_validate({"name": name, "uses": uses, "total": total, "callers": records})


@router.get("/files/{path:path}", response_model=FileExcerpt, responses=documented(400, 401, 404, 503))
async def read_file(
    service: ServiceDep,
    path: Annotated[str, Path(description="A file of the index, relative to the repository root, as cited.")],
    start: Annotated[int, Query(ge=1, description="First line of the range (1-based).")] = 1,
    end: Annotated[
        int | None,
        Query(ge=1, description="Last line of the range (default: start)."),
        WithJsonSchema({"type": "integer", "minimum": 1}),  # absent means "start"; there is no null in a query
    ] = None,
    context: Annotated[int, Query(ge=0, le=200, description="Lines of context on each side.")] = 8,
    repo: RepoQuery = None,
) -> FileExcerpt:
    """Lines of an indexed file, highlighted, with the range marked and context around it.

    Confined like the agent's read_file tool: only files in the index (not ignored ones, not a
    `.env`), no absolute paths, `~` or `..`, no symlinks out of the repository; at most 400 lines.
    Across repositories (`repo=*`, or that default) the path starts with the repository's name, as
    citations across repositories do.
    """
    if end is not None and end < start:
        raise ServiceError(400, f"The range {start}-{end} ends before it starts", "invalid_range")
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
