"""Exact navigation over an index's symbol graph: definitions, callers grouped by function, imports.

What the agent's tools, ``cairn def`` / ``cairn refs`` and ``/api/definitions`` / ``/api/references``
share: lookups that raise errors naming the fix, and references grouped by the definition that holds
them, each with a ``path:start-end`` citation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cairn.errors import IndexMissing, SymbolNotFound
from ingest.symbol_graph import DefinitionSite, ImportSite, ReferenceSite, SymbolGraph
from retrievers.search_index import SearchIndex


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
