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
