"""Tools the agent may call: search_code, read_file, grep, outline, the navigation tools, and plugin tools."""

from tools import builtin as _builtin  # noqa: F401  (registers the built-in tools)
from tools import navigation as _navigation  # noqa: F401  (registers the navigation tools)
from tools.across_repos import across_repos
from tools.builtin import confine
from tools.registry import TOOLS, ToolContext, available_tools, load_tools, register_tool, tool_context_for

__all__ = [
    "TOOLS",
    "ToolContext",
    "across_repos",
    "available_tools",
    "confine",
    "load_tools",
    "register_tool",
    "tool_context_for",
]
