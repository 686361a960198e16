"""Response models of the page's API (search, file lines, retrievers), so /docs shows each one."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
