"""The code API at /api: hybrid search, exact navigation (definitions, references), files as highlighted lines.

Cairn's page uses it, and so can any HTTP client (MCP's tools answer the same questions); its response
models are in `serving/schemas.py`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import WithJsonSchema

from retrievers import available_retrievers
from retrievers.navigation import REFERENCES_LIMIT
from serving import code_queries
from serving.errors import documented
from serving.schemas import (
    AgentTools,
    Definitions,
    FileExcerpt,
    Importers,
    References,
    Repositories,
    RetrieverList,
    SearchResults,
)
from serving.service import ServiceDep

router = APIRouter(prefix="/api", tags=["page"])

RepoQuery = Annotated[
    str | None,
    Query(description="A repository's name, or * for all of them (paths then start with the name); "
          "default: the service's default repository (CAIRN_DEFAULT_REPO)."),
]  # fmt: skip


@router.get("/retrievers", response_model=RetrieverList, responses=documented(401))
async def list_retrievers(service: ServiceDep) -> RetrieverList:
    """The retrievers a search may use, plugins included, and the agent's own."""
    return RetrieverList(modes=available_retrievers(), default=service.context.retriever)


@router.get("/repositories", response_model=Repositories, responses=documented(401))
async def list_repositories(service: ServiceDep) -> Repositories:
    """The repositories the service answers about (each one's model is ``cairn/<name>``), and the default."""
    return Repositories(repositories=await asyncio.to_thread(code_queries.repositories, service))


@router.get("/tools", response_model=AgentTools, responses=documented(401))
async def list_tools(service: ServiceDep) -> AgentTools:
    """The tools the agent may use: Cairn's own and the allowed tools of the MCP servers configured."""
    return await asyncio.to_thread(code_queries.agent_tools, service)


@router.get("/search", response_model=SearchResults, responses=documented(400, 401, 404, 409, 503))
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
    rerank: Annotated[bool, Query(description="Rerank with CAIRN_RERANK_MODEL (on anyway with CAIRN_RERANK).")] = False,
) -> SearchResults:
    """Search the index as `cairn search` does: ranked chunks with citation, symbol, snippet and score.

    An unknown `repo` is a 404 listing the repositories. With `rerank` and no reranker configured, a 409;
    a reranker that fails leaves the fused order, said in `warnings`.
    """
    return await code_queries.search(service, q, mode=mode, k=k, path=path, language=language, repo=repo,
                                     rerank=rerank or None)  # fmt: skip


SymbolQuery = Annotated[
    str,
    Query(min_length=1, max_length=500, description="A symbol: a plain name (put) or a qualified one (Store.put)."),
]


@router.get("/definitions", response_model=Definitions, responses=documented(400, 401, 404, 503))
async def definitions(service: ServiceDep, name: SymbolQuery, repo: RepoQuery = None) -> Definitions:
    """Where a symbol is defined, from the symbol graph, as `cairn def` prints it.

    An ambiguous name returns every candidate (`ambiguous: true`) with its qualified name; a name with
    no definition is a 404 (`SymbolNotFound`); a missing `name` is a 400.
    """
    return await code_queries.definitions(service, name, repo)


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
    return await code_queries.references(service, name, limit, repo)


@router.get("/importers", response_model=Importers, responses=documented(400, 401, 404, 503))
async def importers(
    service: ServiceDep,
    module: Annotated[
        str, Query(min_length=1, max_length=500, description="A module (pkg.mod) or an indexed file (pkg/mod.py).")
    ],
    repo: RepoQuery = None,
) -> Importers:
    """The import statements that import a module or file, each cited; a module the index lacks is a 404."""
    return await code_queries.importers(service, module, repo)


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
    secret), no absolute paths, `~` or `..`, no symlinks out of the repository; at most 400 lines.
    Across repositories (`repo=*`, or that default) the path starts with the repository's name, as
    citations across repositories do.
    """
    return await code_queries.file_excerpt(service, path, start, end, context, repo)
