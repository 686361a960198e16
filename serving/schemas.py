"""Response models of the service's own routes, so /docs shows each one: health, readiness and sessions; the
code API (search, definitions, references, files) that the page and any HTTP client use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Health(BaseModel):
    """The process is alive."""

    status: Literal["ok"] = "ok"
    version: str


class Check(BaseModel):
    """One readiness check: ``ok``, and what it found (or the error and a hint)."""

    model_config = ConfigDict(extra="allow")

    ok: bool
    error: str | None = None
    hint: str | None = None


class Replica(BaseModel):
    """Which process answered: behind a load balancer, /ready is asked of each replica and worker."""

    host: str = Field(description="The machine's host name.")
    pid: int = Field(description="The worker process.")
    workers: int = Field(description="Worker processes of this replica (CAIRN_WORKERS).")
    started_at: float = Field(description="When this worker started (Unix time).")
    version: str


class Readiness(BaseModel):
    """Whether the service can answer: the index, the model endpoint and Redis, each checked."""

    ready: bool
    replica: Replica | None = None
    checks: dict[str, Check] = Field(
        description="index (with `repos`: each repository's state, a missing source folder included), model and redis"
    )


class SessionSummary(BaseModel):
    """A session in the list: its id, when its last turn was written (Unix seconds), what it is about."""

    id: str
    updated_at: float
    title: str | None = Field(default=None, description="Its first question, up to 80 characters.")
    repo: str | None = Field(default=None, description="The repository its turns are about (* for all of them).")
    snippet: str | None = Field(default=None, description="With `q`: the text around the first match.")


class SessionList(BaseModel):
    """Sessions, most recently used first."""

    sessions: list[SessionSummary]


class SessionMessage(BaseModel):
    """One message of a session."""

    role: Literal["user", "assistant"]
    content: str


class SessionTelemetry(BaseModel):
    """What a session has used: messages, turns, tokens, and its context size against the window."""

    message_count: int
    turns: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    context_tokens: int = Field(
        description="Estimated tokens of the conversation as the next turn would see it "
        "(after the history policy: recent turns word for word, older ones summarised)."
    )
    history: dict[str, Any] = Field(
        default_factory=dict,
        description="How the next turn's history is fitted: "
        "turns `verbatim`, `summarised` and `dropped`, its `tokens` and `budget`.",
    )
    context_window: int = Field(description="The model's context window (CAIRN_MODEL_CONTEXT_TOKENS).")


class SessionDetail(BaseModel):
    """A session's messages and telemetry."""

    id: str
    repo: str | None = Field(
        default=None,
        description="What the session is about: a repository's name, * for all of them, or the index folder.",
    )
    messages: list[SessionMessage]
    telemetry: SessionTelemetry


# ---------------------------------------------------------------- the code API (serving/routes/code.py)


class SearchResult(BaseModel):
    """One retrieved chunk: where it is, what it defines, a snippet and its score."""

    citation: str = Field(description="path:start-end")
    path: str
    start_line: int
    end_line: int
    language: str
    symbol: str | None
    kind: str
    score: float = Field(description="The retriever's score (cosine for dense, BM25 for keyword, RRF for hybrid).")
    rank: int = Field(description="1-based rank under that retriever.")
    snippet: str = Field(description="The chunk's first lines.")
    copies: list[str] = Field(
        default_factory=list,
        description="Other places (path:start-end) the search met holding exactly the same text: it is listed once.",
    )


class SearchResults(BaseModel):
    """The ranked results of a search."""

    query: str
    mode: str = Field(description="The retriever that ranked them.")
    results: list[SearchResult]
    reranked: bool = Field(default=False, description="Whether the reranker reordered them (CAIRN_RERANK_MODEL).")
    warnings: list[str] = Field(default_factory=list, description="What did not go as asked, e.g. a reranker down.")


class RetrieverList(BaseModel):
    """The retrievers a search may use (built-ins and plugins), and the agent's own."""

    modes: list[str]
    default: str = Field(description="The agent's retriever (CAIRN_AGENT_RETRIEVER).")


class FileLine(BaseModel):
    """One line of a file, highlighted."""

    number: int
    html: str = Field(description="The line as HTML: Pygments' token spans, text escaped.")
    cited: bool = Field(description="Whether the line lies in the requested range.")


class FileExcerpt(BaseModel):
    """Lines of an indexed file around a requested range, highlighted on the server."""

    path: str
    language: str = Field(description="The lexer Pygments chose for the file.")
    total_lines: int
    start: int = Field(description="The requested range's first line (clamped to the file).")
    end: int = Field(description="The requested range's last line (clamped to the file).")
    lines: list[FileLine] = Field(description="The range and its context, at most 400 lines.")
    truncated: bool = Field(description="Whether the range was longer than the cap and was cut.")


class Definition(BaseModel):
    """Where a symbol is defined, from the symbol graph."""

    name: str
    qualified_name: str = Field(description="The name with its enclosing classes, e.g. Store.put.")
    kind: str = Field(description="class, function, method, constant, interface, type, ...")
    path: str
    start_line: int
    end_line: int
    citation: str = Field(description="path:start-end")


class Definitions(BaseModel):
    """Every definition of a name; more than one when it is ambiguous."""

    name: str
    ambiguous: bool = Field(description="True when several definitions match: pick by qualified_name.")
    definitions: list[Definition]


class ReferenceLine(BaseModel):
    """One use of a name."""

    line: int
    kind: str = Field(description="call, class (a base class), type, or use (a class-like name).")
    citation: str = Field(description="path:line-line")


class Caller(BaseModel):
    """The uses of a name inside one definition, or at a file's top level (caller null)."""

    path: str
    caller: Definition | None = Field(description="The definition that holds these uses.")
    citation: str = Field(description="The caller's path:start-end (the uses' span at top level).")
    references: list[ReferenceLine]


class References(BaseModel):
    """The uses of a name grouped by the definition that holds them."""

    name: str
    uses: int = Field(description="How many uses are listed (at most `limit`).")
    total: int = Field(description="How many uses the symbol graph holds.")
    callers: list[Caller]


class Importer(BaseModel):
    """One import statement that imports the module asked about."""

    path: str
    line: int
    module: str = Field(description="The module as the import statement names it.")
    name: str | None = Field(default=None, description="The name imported from it (from m import name), if any.")
    resolved: str | None = Field(default=None, description="The indexed file the import resolves to.")
    citation: str


class Importers(BaseModel):
    """Every import of a module (or file) in the index."""

    module: str
    importers: list[Importer]


class FileText(BaseModel):
    """Lines of an indexed file as plain text."""

    path: str
    total_lines: int
    start: int = Field(description="The first line returned (1-based).")
    end: int = Field(description="The last line returned.")
    text: str = Field(description="Lines start..end, joined by newlines (at most 400).")
    truncated: bool = Field(description="Whether the range asked for was longer than 400 lines and was cut.")


class RankedDefinition(Definition):
    """A definition of the repository map, with its PageRank score."""

    score: float


class RepoMap(BaseModel):
    """A repository's most used definitions, grouped by file, fitted to a token budget (as `cairn map`)."""

    tokens: int = Field(description="The budget the map was fitted to.")
    ms: float = Field(description="How long ranking and rendering took.")
    map: str = Field(description="The map as text: each file, then its definitions with their lines.")
    definitions: list[RankedDefinition]


class Repository(BaseModel):
    """A repository the service answers about."""

    name: str = Field(description="Its name (a model is cairn/<name>; `repo` parameters take it).")
    source: str | None = Field(description="The folder it was indexed from.")
    source_exists: bool
    chunks: int | None
    ok: bool = Field(description="Whether its index can serve.")
    problem: str | None = Field(default=None, description="Why it cannot serve, when it cannot.")
    default: bool = Field(description="Whether questions without a repository are about it.")


class Repositories(BaseModel):
    """The repositories Cairn answers about."""

    repositories: Sequence[Repository]


class Freshness(BaseModel):
    """An index against its source folder now: indexed files changed or gone since the ingest (by stat)."""

    fresh: bool
    checked: int
    changed: int
    missing: int
    complete: bool = Field(description="Whether every indexed file was looked at.")


class RepositoryStatus(Repository):
    """A repository as the operator's status view shows it."""

    files: int | None = None
    last_ingest: str | None = Field(default=None, description="When its live index was written (ISO 8601).")
    size_bytes: int | None = Field(default=None, description="Its index folder on disk, every generation kept.")
    freshness: Freshness | None = None
    watch: dict[str, Any] | None = Field(default=None, description="Its watcher, with `cairn serve --watch`.")


class RecentRequest(BaseModel):
    """One request this worker answered: no ids, paths or keys, only its route template."""

    at: float = Field(description="When it ended (Unix time).")
    method: str
    route: str
    status: int
    ms: float
    ttft_ms: float | None = Field(default=None, description="To the answer's first token, for agent answers.")
    model: str | None = None


class ServiceStatus(BaseModel):
    """What an operator wants on one screen: each repository, the model endpoint, Redis, recent requests."""

    repositories: list[RepositoryStatus]
    model: Check
    redis: Check
    replica: Replica
    running: int = Field(description="Requests this worker is answering now, besides this one.")
    requests: list[RecentRequest] = Field(description="This worker's last requests, newest first.")


class AgentTool(BaseModel):
    """A tool the agent may use: Cairn's own, or an allowed tool of a configured MCP server."""

    name: str
    source: str = Field(description="cairn, or mcp:<server>.")
    read_only: bool
    description: str = ""


class AgentTools(BaseModel):
    """The agent's tools, and where each configured MCP server stands."""

    tools: list[AgentTool]
    mcp_servers: dict[str, dict[str, Any]] = Field(default_factory=dict)
