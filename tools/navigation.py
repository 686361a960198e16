"""Exact navigation tools over the symbol graph: find_definition, find_references, imports, imported_by.

Where search_code finds code by meaning, these answer from the parse: every definition of a name,
every caller grouped by the function that calls, and which files import which, cited ``path:start-end``.
"""

from __future__ import annotations

from langchain_core.documents import Document
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, Field

from cairn.errors import CairnError
from ingest.languages import detect_language
from ingest.symbol_graph import ImportSite
from ingest.walker import decode_text
from retrievers import code_document
from retrievers.navigation import find_definition, find_references, symbol_graph
from tools.builtin import _tool, confine
from tools.registry import ToolContext, register_tool

MAX_DEFINITIONS = 20
MAX_CALLER_GROUPS = 40
#: Lines of each definition handed back as code (the agent reads more with read_file).
DEFINITION_LINES = 60


class NameArgs(BaseModel):
    name: str = Field(description="A symbol: a plain name ('put') or a qualified one ('Store.put').")


class FileArgs(BaseModel):
    path: str = Field(description="A file path relative to the repository root, as cited (e.g. 'src/app.py').")


def _graph(context: ToolContext):
    try:
        return symbol_graph(context.index)
    except CairnError as exc:
        raise ToolException(f"{exc.message} ({exc.hint})") from exc


def find_definition_tool(context: ToolContext) -> BaseTool:
    """Where a symbol is defined, with its code."""

    def find_definition_(name: str) -> tuple[str, list[Document]]:
        try:
            sites = find_definition(_graph(context), name)
        except CairnError as exc:
            raise ToolException(f"{exc.message} ({exc.hint})") from exc
        head = (
            f"{name!r} is ambiguous: {len(sites)} definitions; ask again with a qualified name"
            if len(sites) > 1
            else f"{name!r} is defined at"
        )
        lines = [head] + [f"[{s.citation}] {s.kind} {s.qualified}" for s in sites[:MAX_DEFINITIONS]]
        documents = []
        for site in sites[:3]:
            try:
                _, target = confine(context, site.path)
                text = decode_text(target.read_bytes()).split("\n")
            except (ToolException, OSError):
                continue
            end = min(site.end_line, site.start_line + DEFINITION_LINES - 1)
            documents.append(
                code_document(
                    "\n".join(text[site.start_line - 1 : end]),
                    path=site.path,
                    start_line=site.start_line,
                    end_line=end,
                    retriever="tool:find_definition",
                    language=detect_language(site.path),
                    symbol=site.qualified,
                )
            )
        return "\n".join(lines), documents

    return _tool(
        find_definition_,
        name="find_definition",
        description="Find where a function, class or method is defined (exact, from the parse); "
        "returns path:start-end for each definition.",
        args_schema=NameArgs,
    )


def find_references_tool(context: ToolContext) -> BaseTool:
    """The callers and other uses of a symbol, grouped by the definition that holds them."""

    def find_references_(name: str) -> tuple[str, list[Document]]:
        try:
            groups = find_references(_graph(context), name)
        except CairnError as exc:
            raise ToolException(f"{exc.message} ({exc.hint})") from exc
        if not groups:
            return f"{name!r} is defined but never used in the indexed files", []
        uses = sum(len(g.references) for g in groups)
        total = _graph(context).count_references(name)
        shown = f" (the first {uses} listed)" if total > uses else ""
        lines = [f"{total} uses of {name!r} in {len(groups)} places{shown}:"]
        for group in groups[:MAX_CALLER_GROUPS]:
            where = f"{group.scope.kind} {group.scope.qualified}" if group.scope else "top level"
            at = ", ".join(f"{r.line} ({r.kind})" for r in group.references[:10])
            lines.append(f"[{group.citation}] {where}: line {at}")
        if len(groups) > MAX_CALLER_GROUPS:
            lines.append(f"({len(groups) - MAX_CALLER_GROUPS} more places)")
        return "\n".join(lines), []

    return _tool(
        find_references_,
        name="find_references",
        description="Find the callers and uses of a function, class or method, grouped by the calling "
        "definition (exact, from the parse); returns path:start-end of each caller.",
        args_schema=NameArgs,
    )


def _import_lines(sites: list[ImportSite], *, show_target: bool) -> list[str]:
    lines = []
    for site in sites:
        what = f"from {site.module} import {site.name}" if site.name else f"import {site.module}"
        target = f" -> {site.resolved}" if show_target and site.resolved else ""
        lines.append(f"[{site.citation}] {what}{target}")
    return lines


def imports_tool(context: ToolContext) -> BaseTool:
    """What a file imports, resolved to indexed files where possible."""

    def imports(path: str) -> tuple[str, list[Document]]:
        rel, _ = confine(context, path)
        sites = _graph(context).imports(rel)
        return ("\n".join(_import_lines(sites, show_target=True)) if sites else f"{rel} imports nothing"), []

    return _tool(
        imports,
        name="imports",
        description="List what a file imports, with the indexed file each import resolves to.",
        args_schema=FileArgs,
    )


def imported_by_tool(context: ToolContext) -> BaseTool:
    """Which indexed files import a file."""

    def imported_by(path: str) -> tuple[str, list[Document]]:
        rel, _ = confine(context, path)
        sites = _graph(context).imported_by(rel)
        return ("\n".join(_import_lines(sites, show_target=False)) if sites else f"no indexed file imports {rel}"), []

    return _tool(
        imported_by,
        name="imported_by",
        description="List the files that import a file, citing each import statement.",
        args_schema=FileArgs,
    )


register_tool("find_definition", find_definition_tool)
register_tool("find_references", find_references_tool)
register_tool("imports", imports_tool)
register_tool("imported_by", imported_by_tool)
