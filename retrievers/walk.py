"""Resolve, then navigate: from the code a question describes to the code related to it, along the symbol graph.

"Which functions call the helper that encodes one log record?" names no symbol, so the symbol graph's
exact lookups (``retrievers.navigation.lookups_in``) have nothing to look up, and a search for the
words finds the helper itself, not its callers. Here the question's relation is read from its words
(``relation_in``: callers, callees, importers, subclasses), the search's best hits are resolved to the
definitions they hold, and the graph is followed from those: the definitions' callers, what they call,
the files that import them, the classes built on them. A walk is bounded in seeds, hops, documents and
time, and says what it followed (``Trail``: "following `encode_record` → 2 callers").

The documents it finds are the chunks that hold each found use or definition, cited ``path:start-end``
as search results are, with ``retriever`` ``walk:<relation>``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.documents import Document

from ingest.symbol_graph import DefinitionSite, SymbolGraph
from retrievers.langchain_retrievers import hit_to_document
from retrievers.search_index import Hit, SearchIndex

#: How a question asks about code related to what it describes. Checked in this order: "what does the
#: helper that ... call" is about callees though "call" would also read as callers.
_RELATIONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        (
            "callees",
            r"\bwhat\s+(?:other\s+)?(?:functions?|helpers?|methods?|code)?\s*(?:does|do)\b.+\b(?:call|use|"
            r"invoke|rely\s+on|depend\s+on|delegate\s+to)\b",
        ),
        (
            "callees",
            r"\b(?:which|what)\s+(?:functions?|helpers?|methods?)\s+(?:does|do|is|are)\b.+\b(?:call|use|"
            r"called|used)\s+by\b",
        ),
        ("importers", r"\b(?:which|what)\s+(?:other\s+)?(?:modules?|files?|packages?)\s+imports?\b"),
        ("importers", r"\bwhere\s+is\s+the\s+(?:module|file)\b.+\bimported\b"),
        ("subclasses", r"\b(?:which|what)\s+classes?\s+(?:inherit|derive|extend|subclass|implement|are\s+built\s+on)"),
        ("subclasses", r"\b(?:subclasses|implementations)\s+of\s+the\b"),
        ("callers", r"\b(?:which|what|who)\b.+\b(?:calls?|uses?|invokes?|references?)\s+the\b"),
        ("callers", r"\b(?:callers?|call\s+sites?|uses|usages?)\s+of\s+the\b"),
        ("callers", r"\bwhere\s+(?:is|are)\s+the\b.+\b(?:used|called|invoked|referenced)\b"),
        ("callers", r"\bwho\s+(?:calls|uses)\b"),
        ("callers", r"\b(?:which|what)\b.+\b(?:go(?:es)?\s+through|raises?|throws?)\s+the\b"),
    )
)
#: "the [shared Host-header parsing] helper [that] <what it does>": the description of the code asked about.
_DESCRIBED = re.compile(
    r"\bthe\s+((?:[\w'-]+\s+){0,3}?)(helpers?|functions?|methods?|class(?:es)?|utility|utilities|errors?|"
    r"exceptions?|renderers?|hooks?|routines?|code)\b\s*(?:that|which|for|used\s+to|to)?\s*(.*)",
    re.IGNORECASE,
)
_INDIRECT = re.compile(r"\b(?:indirectly|transitively|eventually|ultimately|anywhere)\b", re.IGNORECASE)

#: What a walk may cost: resolved seeds, documents found (besides the described one), seconds.
SEEDS = 2
#: How far down the ranking a definition of the kind the question names may be taken from.
WINDOW = 3
MAX_DOCUMENTS = 12
SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Trail:
    """One edge a walk followed: from which definition, along which relation, how many it found."""

    seed: str
    relation: str
    found: int

    def __str__(self) -> str:
        noun = {"callers": "caller", "callees": "callee", "importers": "importer", "subclasses": "subclass"}
        word = noun.get(self.relation, self.relation.rstrip("s"))
        return f"following `{self.seed}` → {self.found} {word}{'s' if self.found != 1 else ''}"


def relation_in(question: str) -> str | None:
    """Return the relation a question asks about ("callers", "callees", "importers", "subclasses"), or None."""
    for kind, pattern in _RELATIONS:
        if pattern.search(question):
            return kind
    return None


def described_in(question: str) -> str | None:
    """Return what a question says about the code it describes, as a search query, or None.

    "Which code calls the helper that crops or pads a string so it fills a number of cells?" → "crops or
    pads a string so it fills a number of cells": searched on its own, the words about the callers
    ("which code calls") do not pull the ranking towards other code that calls things.
    """
    match = _DESCRIBED.search(question)
    if match is None:
        return None
    described = " ".join(f"{match.group(1)} {match.group(3)}".split()).rstrip("?.! ")
    return described if len(described.split()) >= 2 else None


#: The kind of definition a noun names: "the helper that ..." is a function, "the method that ..." a method.
_KINDS = {"helper": "function", "function": "function", "utility": "function", "utilities": "function",
          "routine": "function", "method": "method", "class": "class", "error": "class",
          "exception": "class"}  # fmt: skip


def described_kind(question: str) -> str | None:
    """Return the kind of definition a question describes ("function", "method", "class"), or None."""
    match = _DESCRIBED.search(question)
    if match is None:
        return None
    noun = match.group(2).lower()
    return _KINDS.get(noun) or _KINDS.get(noun.removesuffix("es")) or _KINDS.get(noun.removesuffix("s"))


def hops_for(question: str) -> int:
    """Two hops when the question asks for indirect relations ("indirectly calls"), else one."""
    return 2 if _INDIRECT.search(question) else 1


def resolve(
    graph: SymbolGraph,
    documents: Sequence[Document],
    limit: int = SEEDS,
    *,
    kind: str | None = None,
    described: str = "",
) -> list[DefinitionSite]:
    """Return the definitions the best documents hold (their symbol, defined in their file), best first.

    With ``kind`` ("function", "method", "class": what the question calls it), a definition of that kind
    among the first ``WINDOW`` goes ahead of one of another kind: "the helper that ..." is not a method.
    A chunk holding a whole class stands for the method of it the ``described`` words name ("the method
    that appends a record" in ``class WriteAheadLog`` is ``WriteAheadLog.append``).
    """
    seeds: list[DefinitionSite] = []
    for document in documents:
        meta = document.metadata
        symbol, path = meta.get("symbol"), meta.get("path")
        if not symbol or not path:
            continue
        start, end = int(meta.get("start_line", 0)), int(meta.get("end_line", 0))
        for site in graph.definitions(str(symbol), limit=20):
            if site.path == path and site.start_line <= end and site.end_line >= start and site not in seeds:
                if kind and site.kind != kind:
                    site = _named_within(graph, site, kind, described) or site
                seeds.append(site)
                break
        if len(seeds) >= max(limit, WINDOW if kind else 0):
            break
    if kind:
        seeds[:WINDOW] = sorted(seeds[:WINDOW], key=lambda site: site.kind != kind)  # stable: rank kept otherwise
    return seeds[:limit]


def _named_within(graph: SymbolGraph, site: DefinitionSite, kind: str, described: str) -> DefinitionSite | None:
    """The definition of ``kind`` inside ``site`` whose name the description's words name ("appends" → append)."""
    words = {word[:5] for word in re.findall(r"[a-z]{3,}", described.lower())}
    for inner in graph.definitions_within(site.path, site.start_line + 1, site.end_line):
        parts = [part[:5] for part in re.findall(r"[a-z]{3,}", inner.name.lower())]
        if inner.kind == kind and parts and all(part in words for part in parts):
            return inner
    return None


def walk(
    index: SearchIndex,
    ranked: Sequence[Document],
    relation: str,
    *,
    hops: int = 1,
    kind: str | None = None,
    described: str = "",
    seeds: int = SEEDS,
    limit: int = MAX_DOCUMENTS,
    seconds: float = SECONDS,
) -> tuple[list[Document], list[Trail]]:
    """Follow ``relation`` in the symbol graph from the definitions the ``ranked`` documents hold.

    ``ranked`` is the search's ranking for what the question describes; ``kind`` the kind of definition
    it names (``described_kind``) and ``described`` what it says the code does (``described_in``).
    Returns the described definition, then the documents found from it (callers, callees, importers or
    subclasses, the nearest hop first), and the trail followed. Empty when the index has no symbol graph
    or nothing resolves.
    """
    graph = index.generation.symbols()
    if graph is None:
        return [], []
    deadline = time.monotonic() + seconds
    rows: list[int] = []
    trail: list[Trail] = []
    # The best hit's definition is what the question describes; the next one is tried only when the
    # first leads nowhere (its relatives would be another question's answer).
    for seed in resolve(graph, ranked, seeds, kind=kind, described=described):
        own_row = index.definition_row(seed)
        frontier = [seed]
        for _ in range(max(1, hops)):
            following: list[DefinitionSite] = []
            for site in frontier:
                if time.monotonic() > deadline or len(rows) >= limit:
                    break
                own = index.definition_row(site)  # the described code itself is not its own relative
                found = [row for row, _ in _neighbours(graph, index, site, relation) if row != own]
                new = [row for row in dict.fromkeys(found) if row not in rows]
                rows.extend(new[: limit - len(rows)])
                trail.append(Trail(site.qualified, relation, len(set(found))))
                following += [held for held in (_definition_at(graph, index, row) for row in new) if held is not None]
            frontier = following
            if not frontier:
                break
        if rows:
            # What the question describes leads, then what the walk found from it: "which functions call
            # the helper that ..." is answered by the helper and its callers together.
            if own_row is not None and own_row not in rows:
                rows.insert(0, own_row)
            documents = []
            for rank, row in enumerate(rows, start=1):
                document = hit_to_document(Hit(index.chunks[row], row, 1.0, rank), f"walk:{relation}")
                document.metadata["walk"] = (
                    f"described: {seed.qualified}" if row == own_row else f"{relation} of {seed.qualified}"
                )
                documents.append(document)
            return documents, trail
    return [], trail


def _neighbours(
    graph: SymbolGraph, index: SearchIndex, site: DefinitionSite, relation: str
) -> list[tuple[int, DefinitionSite | None]]:
    """The chunks related to one definition, each with the definition it holds when known."""
    found: list[tuple[int, DefinitionSite | None]] = []

    def add(row: int | None, held: DefinitionSite | None = None) -> None:
        if row is not None:
            found.append((row, held))

    if relation == "callers":
        for ref in graph.references(site.name):
            if ref.kind not in ("call", "use") or (
                ref.path == site.path and site.start_line <= ref.line <= site.end_line
            ):
                continue  # a recursive call, or the definition naming itself
            add(
                index.definition_row(ref.scope) if ref.scope is not None else index.row_at(ref.path, ref.line),
                ref.scope,
            )
    elif relation == "callees":
        for ref in graph.references_within(site.path, site.start_line, site.end_line):
            if ref.kind != "call" or ref.name == site.name:
                continue
            for callee in graph.definitions(ref.name, limit=2):
                add(index.definition_row(callee), callee)
    elif relation == "importers":
        for importer in graph.imported_by(site.path):
            add(index.row_at(importer.path, importer.line))
    elif relation == "subclasses":
        for ref in graph.references(site.name):
            scope = ref.scope
            if ref.kind == "class" and scope is not None and scope.kind == "class" and scope.start_line == ref.line:
                add(index.definition_row(scope), scope)
    return found


def _definition_at(graph: SymbolGraph, index: SearchIndex, row: int) -> DefinitionSite | None:
    """The definition a chunk is named after, for a second hop from it."""
    chunk = index.chunks[row]
    if not chunk.symbol:
        return None
    sites = [site for site in graph.definitions(chunk.symbol, limit=20) if site.path == chunk.path]
    return sites[0] if sites else None
