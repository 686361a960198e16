"""Exact navigation over an index's symbol graph: definitions, callers grouped by function, imports.

What the agent's tools, ``cairn def`` / ``cairn refs`` and ``/api/definitions`` / ``/api/references``
share: lookups that raise errors naming the fix, and references grouped by the definition that holds
them, each with a ``path:start-end`` citation.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document

from cairn.errors import IndexMissing, SymbolNotFound
from ingest.symbol_graph import DefinitionSite, ImportSite, ReferenceSite, SymbolGraph
from retrievers.langchain_retrievers import hit_to_document
from retrievers.search_index import Hit, SearchIndex


@dataclass(slots=True)
class CallerGroup:
    """The uses of a name inside one definition (or at one file's top level, ``scope`` None)."""

    path: str
    scope: DefinitionSite | None
    references: list[ReferenceSite] = field(default_factory=list)

    @property
    def citation(self) -> str:
        """Return the enclosing definition's ``path:start-end``, or the span of the uses at top level."""
        if self.scope is not None:
            return self.scope.citation
        lines = [r.line for r in self.references]
        return f"{self.path}:{min(lines)}-{max(lines)}"


def symbol_graph(index: SearchIndex) -> SymbolGraph:
    """Return the index's symbol graph, or say how to build one."""
    graph = index.generation.symbols()
    if graph is None:
        raise IndexMissing(
            f"The index at {index.generation.path.parent} has no symbol graph (it predates it)",
            "run 'cairn ingest PATH' once; only the graph is added, nothing is re-embedded",
        )
    return graph


def find_definition(graph: SymbolGraph, name: str) -> list[DefinitionSite]:
    """Return where ``name`` is defined; several sites when it is ambiguous. SymbolNotFound when none."""
    sites = graph.definitions(name)
    if not sites:
        raise SymbolNotFound(
            f"No definition of {name!r} in the symbol graph",
            "check the spelling (names are case-sensitive), or search for it with 'cairn search'",
        )
    return sites


#: How many uses a reference lookup lists by default (the total is counted apart).
REFERENCES_LIMIT = 200


def find_references(graph: SymbolGraph, name: str, limit: int = REFERENCES_LIMIT) -> list[CallerGroup]:
    """Return the first ``limit`` uses of ``name`` grouped by enclosing definition, in file and line order."""
    references = graph.references(name, limit=limit)
    if not references and not graph.definitions(name):
        raise SymbolNotFound(
            f"No definition or use of {name!r} in the symbol graph",
            "check the spelling (names are case-sensitive), or search for it with 'cairn search'",
        )
    groups: dict[tuple[str, str | None, int], CallerGroup] = {}
    for reference in references:
        scope = reference.scope
        key = (reference.path, scope.qualified if scope else None, scope.start_line if scope else 0)
        groups.setdefault(key, CallerGroup(reference.path, scope)).references.append(reference)
    return list(groups.values())


def definition_record(site: DefinitionSite) -> dict[str, Any]:
    """Return a definition as JSON (what ``cairn def --json`` and the API print)."""
    return {
        "name": site.name, "qualified_name": site.qualified, "kind": site.kind, "path": site.path,
        "start_line": site.start_line, "end_line": site.end_line, "citation": site.citation,
    }  # fmt: skip


def caller_record(group: CallerGroup) -> dict[str, Any]:
    """Return a group of references as JSON."""
    return {
        "path": group.path,
        "caller": definition_record(group.scope) if group.scope else None,
        "citation": group.citation,
        "references": [{"line": r.line, "kind": r.kind, "citation": r.citation} for r in group.references],
    }


def import_record(site: ImportSite) -> dict[str, Any]:
    """Return an import as JSON."""
    return {
        "path": site.path, "line": site.line, "module": site.module, "name": site.name,
        "resolved": site.resolved, "citation": site.citation,
    }  # fmt: skip


# ---------------------------------------------------------------- lookups the agent's plan makes

#: A symbol or module as a question writes it: ``fuse``, ``Store.put``, ``fuse()``, `` `fuse` ``, ``a/b.py``.
_NAME = r"`?(?P<name>[A-Za-z_][\w.]*(?:/[\w.]+)*)(?:\(\))?`?"
#: Words a pattern's name slot can catch that are never the symbol asked about.
_NOT_NAMES = frozenset(
    "a an the this that these those it its my our your their any each every function method class module "
    "file code variable constant".split()
)
_LOOKUP_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("references", rf"\b(?:what|who|which\s+\w+)\s+(?:else\s+)?(?:calls?|uses?|invokes?|references?)\s+{_NAME}"),
        ("references", rf"\b(?:callers?|call\s+sites?|usages?|uses|references)\s+(?:of|to|for)\s+{_NAME}"),
        ("references", rf"\bwhere\s+(?:is|are|does)\s+{_NAME}\s+(?:get\s+)?(?:used|called|invoked|referenced)"),
        ("references", rf"\b{_NAME}\s+(?:is|are|gets?)\s+(?:called|used|invoked)\s+(?:from|by|where)"),
        ("importers", rf"\b(?:what|who|which\s+\w+)\s+imports?\s+{_NAME}"),
        ("importers", rf"\bimporters\s+of\s+{_NAME}"),
        ("importers", rf"\b{_NAME}\s+(?:is|are)\s+imported\b"),
        ("definition", rf"\bwhere\s+(?:is|are)\s+{_NAME}\s+(?:defined|declared|implemented)"),
        ("definition", rf"\b(?:definition|implementation|source)\s+of\s+{_NAME}"),
        ("definition", rf"\bwhere\s+(?:is|are)\s+{_NAME}\s*\?"),
        # a file's history: answered from a git MCP server when one is configured (tools/history.py)
        (
            "history",
            rf"\b(?:when|why)\s+(?:was|were|did|has|have)\s+{_NAME}\s+(?:last\s+)?"
            r"(?:change|changed|modified|edited|touched|updated|rewritten)",
        ),
        ("history", rf"\b(?:who|which\s+commits?)\s+(?:last\s+)?(?:changed|modified|edited|touched|updated)\s+{_NAME}"),
        (
            "history",
            rf"\b(?:last|latest|recent|most\s+recent)\s+(?:changes?|commits?|edits?|modifications?)\s+"
            rf"(?:to|of|in|for|on|touching)\s+{_NAME}",
        ),
        ("history", rf"\b(?:history|git\s+log)\s+(?:of|for)\s+{_NAME}"),
        ("history", rf"\bwhat\s+changed\s+(?:in|about)\s+{_NAME}"),
    )
)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A symbol-graph lookup a question asks for: the definitions of a name, its uses, or a module's importers."""

    kind: str
    """"definition", "references", "importers", or "history" (answered from git, not the graph)."""
    target: str
    """A symbol (``fuse``, ``Store.put``) or, for importers, a module or file (``tinykv.store``, ``a/b.py``)."""


def lookups_in(question: str) -> list[Lookup]:
    """Return the navigation lookups a question asks for ("what calls X", "where is X defined", ...).

    Found by phrase, not by a model: the name is the word the phrase names (``fuse``, `` `Store.put` ``,
    ``encode()``). A name the index does not know yields nothing at lookup time, so a false match is harmless.
    """
    lookups: list[Lookup] = []
    for kind, pattern in _LOOKUP_PATTERNS:
        for match in pattern.finditer(question):
            name = match.group("name").rstrip(".")
            if name.lower() in _NOT_NAMES or len(name) < 2:
                continue
            lookup = Lookup(kind, name)
            if lookup not in lookups:
                lookups.append(lookup)
    return lookups


def module_path(graph: SymbolGraph, index: SearchIndex, target: str) -> str | None:
    """Return the indexed file a module name (``pkg.mod``) or path (``pkg/mod.py``) means, or None.

    A name is tried whole, then without its leading packages (``transformers.trainer_utils`` in an
    index built from inside the package is its ``trainer_utils.py``).
    """
    if target in index.chunks.paths:
        return target
    stem = posixpath.splitext(target)[0] if "/" in target else target.replace(".", "/")
    parts = stem.strip("/").split("/")
    for start in range(len(parts)):
        rest = "/".join(parts[start:])
        if found := graph.resolve(rest) or graph.resolve(f"/{rest}"):  # a suffix, or rooted at the index
            return found
    return None


def lookup_documents(index: SearchIndex, lookup: Lookup, limit: int) -> list[Document]:
    """Return the chunks that answer a lookup, best first, as Documents citing ``path:start-end``.

    A definition lookup gives the chunk of each definition (the first ``limit`` of an ambiguous name);
    a references lookup gives the name's definition (when it has exactly one) and then the chunk around
    each use; an importers lookup gives the chunk holding each import statement. Empty when the index
    has no graph or no answer.
    """
    graph = index.generation.symbols()
    if graph is None:
        return []
    rows: list[int] = []
    method = f"graph:{lookup.kind}"

    def add(row: int | None) -> None:
        if row is not None and row not in rows:
            rows.append(row)

    if lookup.kind == "definition":  # every site, up to the limit: an ambiguous name shows its candidates
        for site in graph.definitions(lookup.target, limit=limit):
            add(index.definition_row(site))
    elif lookup.kind == "references":
        sites = graph.definitions(lookup.target, limit=2)
        if len(sites) == 1:  # the definition first, when the name has one
            add(index.definition_row(sites[0]))
        for reference in graph.references(lookup.target, limit=REFERENCES_LIMIT):
            if len(rows) >= limit:
                break
            add(index.row_at(reference.path, reference.line))
    elif lookup.kind == "importers":
        path = module_path(graph, index, lookup.target)
        for importer in graph.imported_by(path) if path else []:
            if len(rows) >= limit:
                break
            add(index.row_at(importer.path, importer.line))
    documents = []
    for rank, row in enumerate(rows[:limit], start=1):
        document = hit_to_document(Hit(index.chunks[row], row, 1.0, rank), method)
        document.metadata["lookup"] = f"{lookup.kind} {lookup.target}"
        documents.append(document)
    return documents
