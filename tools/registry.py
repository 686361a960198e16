"""The tool registry: built-in and plugin tools are registered and loaded the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from langchain_core.tools import BaseTool

from cairn.errors import CairnError
from cairn.registry import Registry
from retrievers import SearchIndex

ENTRY_POINT_GROUP = "cairn.tools"


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may use: the loaded index and the repository it was built from."""

    index: SearchIndex
    repo_root: Path
    indexed_files: frozenset[str]


ToolFactory = Callable[[ToolContext], BaseTool]
TOOLS: Registry[ToolFactory] = Registry(ENTRY_POINT_GROUP)


def register_tool(name: str, factory: ToolFactory) -> None:
    """Make a tool available under ``name``; ``factory(context)`` builds it for one index."""
    TOOLS.register(name, factory)


def available_tools() -> list[str]:
    """Return the names of every registered tool, plugins included."""
    return TOOLS.names()


def load_tools(context: ToolContext, enabled: list[str] | None = None) -> list[BaseTool]:
    """Build the enabled tools (all registered ones when ``enabled`` is None)."""
    names = available_tools() if enabled is None else enabled
    factories = {name: TOOLS.get(name) for name in names}
    unknown = [name for name, factory in factories.items() if factory is None]
    if unknown:
        raise CairnError(f"Unknown tool(s): {', '.join(unknown)}", f"choose from: {', '.join(available_tools())}")
    return [factory(context) for factory in factories.values() if factory is not None]


def tool_context_for(index: SearchIndex) -> ToolContext:
    """Return the ToolContext of a loaded SearchIndex."""
    files = frozenset(index.generation.manifest.files)
    return ToolContext(index=index, repo_root=Path(index.repo_root), indexed_files=files)
