"""Cairn as an MCP server: its code intelligence as tools any agentic client can call.

Tools (each with a JSON schema from its signature, a description a model can act on, and structured
output, ``structuredContent``, beside a readable text form): ``search``, ``definition``,
``references``, ``importers``, ``read_file``, ``repo_map``, ``list_repositories`` and ``ask`` (the
agent; its steps arrive as progress notifications, the cited answer at the end; cancellable). Indexed
files are resources, ``cairn://REPO/PATH`` (read-only). The answers are the code API's
(``serving/code_queries.py``), so a tool and its ``/api`` route never disagree, and the files a tool
reads are confined to what the index holds, exactly as ``/api/files`` is.

Two transports: streamable HTTP at ``/mcp`` in the service (``http_endpoint``, loaded after start-up by
``serving/mcp_endpoint.py``), behind the same API keys, rate limit, traces and ``/metrics`` as every
route (a call's identity is its HTTP request's, so ``ask`` keeps a key's sessions its own); and stdio
(``cairn mcp``), for clients that launch a command.
Errors are tool errors (``isError``) carrying the same one-line message and hint as the CLI's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, Resource, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from cairn import __version__
from cairn.errors import CairnError
from cairn.telemetry import span
from graphs.agent.citations import sources_block
from graphs.agent.turn import Final, Session, Step, Token, Turn, describe_step
from retrievers.navigation import REFERENCES_LIMIT
from serving import code_queries
from serving.errors import ServiceError
from serving.schemas import (
    Definitions,
    FileText,
    Importers,
    References,
    RepoMap,
    Repositories,
    SearchResults,
)
from serving.security import Busy, check_session_id, client_of, key_of, session_thread
from serving.service import Service

log = logging.getLogger("cairn.mcp")

M = TypeVar("M", bound=BaseModel)

INSTRUCTIONS = (
    "Cairn answers questions about the user's indexed code repositories, offline, citing path:start-end. "
    "Use `search` to find code by meaning or keywords, `definition`/`references`/`importers` for exact "
    "navigation by name, `read_file` to read lines of a cited file, `repo_map` for an overview, "
    "`list_repositories` to see what is indexed, and `ask` for a complete cited answer from Cairn's own agent "
    "(slower: it searches, reads and writes an answer)."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
Repo = Annotated[
    str | None,
    Field(description="A repository's name (see list_repositories), or '*' for all of them; default: the default one."),
]


class Answer(BaseModel):
    """The agent's cited answer."""

    answer: str = Field(description="The answer text, citing path:start-end.")
    citations: list[str] = Field(description="The citations in the answer that retrieved code supports.")
    sources: list[dict[str, Any]] = Field(description="The code the answer was given: citation, symbol, score.")
    session_id: str | None = Field(default=None, description="The session the turn was kept in, if any.")


def _result(model: BaseModel, text: str) -> CallToolResult:
    """Return a tool result: ``text`` for people and models, ``model`` as its ``structuredContent``."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


async def _answering(tool: str, call: Callable[[], Awaitable[CallToolResult]]) -> CallToolResult:
    """Run a tool in a span of its own; a Cairn error becomes a tool error with its message and hint, never a crash."""
    with span(f"mcp {tool}", **{"cairn.mcp.tool": tool}) as current:
        try:
            return await call()
        except CairnError as exc:
            message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        except ServiceError as exc:
            message = exc.message
        except Busy as exc:
            message = exc.message
        current.set_attribute("cairn.mcp.error", message)
        return _error(message)


def _request_scope(ctx: Context | None) -> dict[str, Any] | None:
    """The HTTP request's ASGI scope of a call over HTTP (its key, its client), None over stdio."""
    if ctx is None:
        return None
    request = getattr(ctx.request_context, "request", None)
    return getattr(request, "scope", None)


class CairnMCP(MCPServer):
    """Cairn's MCP server; ``list_resources`` lists every indexed file of every repository."""

    def __init__(self, service: Service) -> None:
        root = logging.getLogger()
        placeholder = logging.NullHandler() if not root.handlers else None
        if placeholder is not None:  # MCPServer calls logging.basicConfig; Cairn configures its own logging
            root.addHandler(placeholder)
        try:
            super().__init__("cairn", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")
        finally:
            if placeholder is not None:
                root.removeHandler(placeholder)
        self.service = service
        _add_tools(self, service)
        _add_resources(self, service)

    async def list_resources(self) -> list[Resource]:
        """Every indexed file, as ``cairn://REPO/PATH`` (REPO empty for a service on one index folder)."""
        from graphs.agent.resources import load_indexes

        listed = await super().list_resources()
        context = self.service.context_for_repo("*" if self.service.context.repositories().names() else None)
        try:
            indexes = load_indexes(context)
        except CairnError:
            return listed
        for repo, index in indexes.items():
            for path in index.chunks.paths:
                listed.append(Resource(uri=f"cairn://{repo}/{path}", name=f"{repo}/{path}" if repo else path,
                                       mime_type="text/plain"))  # fmt: skip
        return listed


def _add_tools(server: MCPServer, service: Service) -> None:  # noqa: C901 - one short function per tool
    @server.tool(annotations=READ_ONLY)
    async def search(
        query: Annotated[
            str,
            Field(
                description="What to look for: words, a description of behaviour, or identifiers.",
                min_length=1,
                max_length=2000,
            ),
        ],
        repo: Repo = None,
        mode: Annotated[
            str, Field(description="hybrid (default: keywords and meaning), dense, or keyword.")
        ] = "hybrid",
        k: Annotated[int, Field(description="How many results.", ge=1, le=50)] = 8,
        path: Annotated[list[str] | None, Field(description="Only files matching these gitignore-style globs.")] = None,
        language: Annotated[list[str] | None, Field(description="Only these languages, e.g. python.")] = None,
    ) -> Annotated[CallToolResult, SearchResults]:
        """Find code by what it does ("where are retries handled?", "find the checksum code"): hybrid search.

        Searches the indexed code by meaning and keywords; returns ranked chunks with path:start-end and a
        snippet. Use it when you do not know the name of what you look for.
        """

        async def run() -> CallToolResult:
            found = await code_queries.search(service, query, mode=mode, k=k, path=path, language=language, repo=repo)
            lines = [f"{r.rank}. {r.citation}" + (f" ({r.symbol})" if r.symbol else "") + f"\n{r.snippet}"
                     for r in found.results]  # fmt: skip
            return _result(found, "\n\n".join(lines) or f"Nothing found for {query!r}.")

        return await _answering("search", run)

    @server.tool(annotations=READ_ONLY)
    async def definition(
        name: Annotated[str, Field(description="A symbol: a plain name (put) or qualified (Store.put).", min_length=1)],
        repo: Repo = None,
    ) -> Annotated[CallToolResult, Definitions]:
        """Where is X defined? Finds the definition of a named function, class or method: path:start-end and kind.

        Exact, from the symbol graph; an ambiguous name lists every candidate.
        """

        async def run() -> CallToolResult:
            found = await code_queries.definitions(service, name, repo)
            lines = [f"{d.citation}  {d.kind} {d.qualified_name}" for d in found.definitions]
            head = f"{name} is ambiguous; the candidates:\n" if found.ambiguous else ""
            return _result(found, head + "\n".join(lines))

        return await _answering("definition", run)

    @server.tool(annotations=READ_ONLY)
    async def references(
        name: Annotated[str, Field(description="A symbol: a plain name or a qualified one.", min_length=1)],
        repo: Repo = None,
        limit: Annotated[int, Field(description="List at most this many uses.", ge=1, le=10_000)] = REFERENCES_LIMIT,
    ) -> Annotated[CallToolResult, References]:
        """Who calls X? Where is X used? Lists the callers and uses of a named symbol, each cited.

        Exact, from the symbol graph, grouped by the definition that holds each use.
        """

        async def run() -> CallToolResult:
            found = await code_queries.references(service, name, limit, repo)
            lines = [f"{c.citation}  {c.caller.qualified_name if c.caller else '(module level)'}: lines "
                     + ", ".join(str(r.line) for r in c.references) for c in found.callers]  # fmt: skip
            return _result(found, f"{found.uses} of {found.total} uses of {name}:\n" + "\n".join(lines))

        return await _answering("references", run)

    @server.tool(annotations=READ_ONLY)
    async def importers(
        module: Annotated[str, Field(description="A module (pkg.mod) or an indexed file (pkg/mod.py).", min_length=1)],
        repo: Repo = None,
    ) -> Annotated[CallToolResult, Importers]:
        """Which files import module X? Lists the import statements of a module or file, each cited (exact)."""

        async def run() -> CallToolResult:
            found = await code_queries.importers(service, module, repo)
            lines = [f"{i.citation}  import {i.module}" + (f" ({i.name})" if i.name else "") for i in found.importers]
            return _result(found, "\n".join(lines) or f"Nothing imports {module}.")

        return await _answering("importers", run)

    @server.tool(name="read_file", annotations=READ_ONLY)
    async def read_file_tool(
        path: Annotated[str, Field(description="An indexed file as cited, e.g. tinykv/store.py.", min_length=1)],
        start: Annotated[int, Field(description="First line (1-based).", ge=1)] = 1,
        end: Annotated[int | None, Field(description="Last line (default: 400 lines from start).", ge=1)] = None,
        repo: Repo = None,
    ) -> Annotated[CallToolResult, FileText]:
        """Show or read a file: returns lines start..end of an indexed file (at most 400 per call).

        Only files in the index can be read.
        """

        async def run() -> CallToolResult:
            found = await code_queries.file_text(service, path, start, end, repo)
            numbered = "\n".join(f"{n:>5}  {line}" for n, line in enumerate(found.text.split("\n"), found.start))
            return _result(found, f"{found.path}:{found.start}-{found.end} of {found.total_lines}\n{numbered}")

        return await _answering("read_file", run)

    @server.tool(annotations=READ_ONLY)
    async def repo_map(
        repo: Repo = None,
        tokens: Annotated[int, Field(description="Token budget of the map.", ge=16, le=32_768)] = 1024,
        focus: Annotated[list[str] | None, Field(description="Rank from these files' point of view.")] = None,
    ) -> Annotated[CallToolResult, RepoMap]:
        """Overview of the codebase's structure: one repository's most used classes and functions, by file.

        Ranked by PageRank over the symbol graph's references, fitted to a token budget.
        """

        async def run() -> CallToolResult:
            found = await code_queries.repository_map(service, repo, tokens, focus)
            return _result(found, found.map or "(no definitions are used across files)")

        return await _answering("repo_map", run)

    @server.tool(annotations=READ_ONLY)
    async def list_repositories() -> Annotated[CallToolResult, Repositories]:
        """Which repositories (projects) are indexed? Lists them with their source folders and sizes."""

        async def run() -> CallToolResult:
            found = Repositories(repositories=code_queries.repositories(service))
            lines = [f"{r.name or '(the index)'}{' (default)' if r.default else ''}: {r.chunks} chunks, {r.source}"
                     + ("" if r.ok else f" - cannot serve: {r.problem}") for r in found.repositories]  # fmt: skip
            return _result(found, "\n".join(lines) or "No repositories are indexed (cairn ingest PATH).")

        return await _answering("list_repositories", run)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def ask(
        question: Annotated[
            str, Field(description="A question about the code, in plain words.", min_length=1, max_length=4000)
        ],
        repo: Repo = None,
        session: Annotated[str | None, Field(description="Keep a conversation: the same id continues it.")] = None,
        ctx: Context | None = None,
    ) -> Annotated[CallToolResult, Answer]:
        """Explain how something works, with a written answer: Cairn's agent searches, reads and answers, citing code.

        Slower than search (seconds to minutes, by model); its steps arrive as progress. Prefer search,
        definition and references when you will read the code yourself.
        """
        return await _answering("ask", lambda: _ask(service, question, repo, session, ctx))


async def _ask(service: Service, question: str, repo: str | None, session: str | None, ctx: Context | None):
    """Run one turn of the agent (``graphs.agent.turn``), its steps reported as progress notifications."""
    from langchain_core.messages import HumanMessage

    scope = _request_scope(ctx) or {}
    context = service.context_for_repo(repo)
    await service.require_index(context)
    if service.model_on_demand is not None:
        await asyncio.to_thread(service.model_on_demand)
    callbacks = [service.run_telemetry(session)]
    turn_session = None
    if session:
        check_session_id(session)
        turn_session = Session(service.saver, session_thread(key_of(scope), session), session)
    graph = service.session_graph if turn_session else service.graph
    turn = Turn(graph, context, [HumanMessage(question)], session=turn_session, callbacks=callbacks,
                run_name="cairn-mcp-ask")  # fmt: skip
    final: dict[str, Any] = {}
    text: list[str] = []
    with service.runs.hold(client_of(scope) if scope else "stdio"):
        steps = 0
        try:
            async for event in turn.events():
                if isinstance(event, Step) and ctx is not None and (line := describe_step(event.data)):
                    steps += 1
                    await ctx.report_progress(steps, None, message=line)
                elif isinstance(event, Token):
                    text.append(event.text)
                elif isinstance(event, Final):
                    final = event.state
        except Exception as exc:
            raise await service.translate(exc, context) from exc
    answer = "".join(text) if text else final.get("answer", "")
    sources = final.get("sources", [])
    result = Answer(answer=answer, citations=final.get("citations", []), sources=sources, session_id=session)
    return _result(result, answer + (f"\n\n{sources_block(sources)}" if sources else ""))


def _add_resources(server: MCPServer, service: Service) -> None:
    described = "An indexed file (read-only); repo is empty for a service on one index folder."

    @server.resource("cairn://{repo}/{+path}", mime_type="text/plain", description=described)
    async def indexed_file(repo: str, path: str) -> str:
        try:
            found = await code_queries.file_text(service, path, 1, None, repo or None)
            text = found.text
            while found.end < found.total_lines:  # whole file, 400 lines at a time
                found = await code_queries.file_text(service, path, found.end + 1, None, repo or None)
                text += "\n" + found.text
        except (CairnError, ServiceError) as exc:
            raise ResourceNotFoundError(getattr(exc, "message", str(exc))) from exc
        return text


def http_endpoint(service: Service, *, loopback_only: bool) -> tuple[CairnMCP, Any]:
    """Return Cairn's MCP server and the ASGI app that serves it at ``/mcp`` (streamable HTTP); the
    caller runs ``server.session_manager.run()`` while it serves (``serving.mcp_endpoint.LazyMcp``).

    Stateless (every request carries its own key and needs no sticky worker, so any worker or replica
    answers) and streamed (progress and cancellation reach ``ask``). On a loopback-only service the
    SDK's DNS-rebinding check stays on (a web page cannot point its own host name at it); a service
    bound beyond loopback needs API keys, which guard it instead.
    """
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp

    server = CairnMCP(service)
    security = (
        TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                  allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                                  allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
        if loopback_only
        else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    )  # fmt: skip
    server.streamable_http_app(stateless_http=True, json_response=False, transport_security=security)
    return server, StreamableHTTPASGIApp(server.session_manager)
