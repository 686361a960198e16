"""The tools of a run that spans every repository: each tool once, taking the repository as a parameter.

The tools of each repository are built as usual (over its own index); here each is wrapped into one
tool with a ``repo`` argument that picks whose to call. Code it returns is cited as
``<repo>/<path>:start-end``, like the code the across-repositories retriever returns, so the
answer's citations are checked the same way. Plugin tools join too, when their arguments are a
pydantic model.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.documents import Document
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field, create_model

from retrievers import in_repo

# A cited range as the tools write it, [path:start-end], the path with a "." or a "/" (not code's a[i:2]).
_CITED = re.compile(r"\[([^\[\]\s:]*[./][^\[\]\s:]*):(\d+-\d+)\]")
# grep's result lines, path:line: text
_GREP_LINE = re.compile(r"^([^\s:]+):(\d+): ", re.MULTILINE)


def _prefixed_text(tool: str, text: str, repo: str) -> str:
    """Prefix the paths a tool's text cites (``[path:start-end]``, grep's ``path:line:``) with ``repo/``."""
    text = _CITED.sub(lambda m: f"[{repo}/{m.group(1)}:{m.group(2)}]", text)
    return _GREP_LINE.sub(lambda m: f"{repo}/{m.group(1)}:{m.group(2)}: ", text) if tool == "grep" else text


def _in_repo_tool(name: str, per_repo: Mapping[str, BaseTool]) -> BaseTool | None:
    """Return one tool named ``name`` that calls the named repository's own, or None if it cannot be wrapped."""
    first = next(iter(per_repo.values()))
    schema = first.args_schema
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return None
    repos = tuple(per_repo)
    repo_type: Any = Literal[repos]  # the names are known only at run time: a checker cannot follow this Literal
    args_schema = create_model(
        f"{schema.__name__}InRepo",
        __base__=schema,
        repo=(repo_type, Field(description=f"The repository: one of {', '.join(repos)}.")),
    )

    def call(repo: str, **args: Any) -> tuple[str, list[Document]]:
        tool_call = {"type": "tool_call", "id": uuid.uuid4().hex, "name": name, "args": args}
        result: ToolMessage = per_repo[repo].invoke(tool_call)
        if result.status == "error":
            raise ToolException(f"{repo}: {result.content}")
        return _prefixed_text(name, str(result.content), repo), [in_repo(d, repo) for d in (result.artifact or [])]

    return StructuredTool.from_function(
        call,
        name=name,
        description=f"{first.description} Name the repository with `repo`; cite paths as <repo>/<path>.",
        args_schema=args_schema,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=True,
    )


def across_repos(tools_by_repo: Mapping[str, Sequence[BaseTool]]) -> list[BaseTool]:
    """Return each tool once, with a ``repo`` argument choosing which repository's tool answers."""
    if not tools_by_repo:
        return []
    names = [tool.name for tool in next(iter(tools_by_repo.values()))]
    wrapped = []
    for name in names:
        per_repo = {repo: {t.name: t for t in tools}[name] for repo, tools in tools_by_repo.items()}
        tool = _in_repo_tool(name, per_repo)
        if tool is not None:
            wrapped.append(tool)
    return wrapped
