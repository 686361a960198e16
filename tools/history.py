"""A file's history from a git MCP server: the commits that last changed it, as documents citing the commit.

"When did tinykv/cache.py last change, and why?" is not in the code; it is in git. With a server in
``CAIRN_MCP_SERVERS`` that offers ``git_log`` and ``git_show`` (the reference ``mcp-server-git``),
plan's history lookup (``retrievers.navigation.lookups_in``) is answered here: the recent commits are
listed, and each is shown until the ones that touched the file are found (newest first, bounded in
commits and time). Each becomes a document whose text is the commit (sha, author, date, message) and
the file's part of its diff, cited ``commit <sha12>``, so any model, tool calling or not, answers from
it and the Sources name the commit.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from langchain_core.documents import Document

from cairn.errors import CairnError
from retrievers import SearchIndex
from retrievers.navigation import module_path
from tools.mcp import McpHub, result_text

log = logging.getLogger("cairn.tools.history")

GIT_LOG, GIT_SHOW = "git_log", "git_show"
#: How far back a history lookup looks, and for how long.
SCAN_COMMITS = 40
SCAN_SECONDS = 8.0
#: The most of one file's diff a document carries.
DIFF_CHARS = 3000

_COMMIT = re.compile(r"^Commit: (?P<sha>[0-9a-f]{7,40})\s*$", re.MULTILINE)
#: A file's part of a unified diff starts with its two names (``--- a/path`` / ``+++ b/path``; /dev/null when
#: the file is new or deleted), as git_show writes them.
_DIFF_FILE = re.compile(r"^--- (?:a/(?P<a>\S+)|/dev/null)\n\+\+\+ (?:b/(?P<b>\S+)|/dev/null)$", re.MULTILINE)


def git_server(hub: McpHub | None) -> str | None:
    """Return the first configured server that offers both ``git_log`` and ``git_show``, or None."""
    if hub is None:
        return None
    for tool in hub.tools():
        if tool.name == GIT_LOG and any(t.server == tool.server and t.name == GIT_SHOW for t in hub.tools()):
            return tool.server
    return None


def resolve_file(index: SearchIndex, target: str) -> str | None:
    """Return the indexed file a history question names: a path, a module, or a symbol's defining file."""
    if target in index.chunks.paths:
        return target
    graph = index.generation.symbols()
    if graph is None:
        return None
    if found := module_path(graph, index, target):
        return found
    sites = graph.definitions(target, limit=1)
    return sites[0].path if sites else None


def _commits(log_text: str) -> list[tuple[str, str]]:
    """Return (sha, the commit's header: author, date, message) for each commit of a ``git_log`` reply."""
    matches = list(_COMMIT.finditer(log_text))
    out = []
    for match, following in zip(matches, [*matches[1:], None], strict=False):
        end = following.start() if following is not None else len(log_text)
        out.append((match.group("sha"), log_text[match.start() : end].strip()))
    return out


def _file_diff(show_text: str, path: str) -> str | None:
    """Return the part of a commit's diff (``git_show`` reply) that changes ``path``, or None when it does not."""
    heads = list(_DIFF_FILE.finditer(show_text))
    for head, following in zip(heads, [*heads[1:], None], strict=False):
        names = [name for name in (head.group("a"), head.group("b")) if name]
        if any(name == path or name.endswith("/" + path) for name in names):
            end = following.start() if following is not None else len(show_text)
            return show_text[head.start() : end].strip()
    return None


def _message_of(header: str) -> str:
    found = re.search(r"^Message: (.*)$", header, re.MULTILINE)
    return found.group(1).strip() if found else ""


def history_documents(hub: McpHub, index: SearchIndex, target: str, limit: int = 2) -> list[Document]:
    """Return up to ``limit`` documents for the newest commits that changed the file ``target`` names."""
    server = git_server(hub)
    path = resolve_file(index, target)
    if server is None or path is None:
        return []
    repo = str(index.repo_root)
    started = time.monotonic()
    try:
        listed = hub.call(server, GIT_LOG, {"repo_path": repo, "max_count": SCAN_COMMITS})
        if listed.is_error:
            log.info("history of %s: %s", path, result_text(listed)[:200])
            return []
        found: list[Document] = []
        for sha, header in _commits(result_text(listed)):
            if len(found) >= limit or time.monotonic() - started > SCAN_SECONDS:
                break
            shown = hub.call(server, GIT_SHOW, {"repo_path": repo, "revision": sha})
            if shown.is_error or (diff := _file_diff(result_text(shown), path)) is None:
                continue
            found.append(_commit_document(path, sha, header, diff, server))
        return found
    except CairnError as exc:  # the server is down: the question is answered from the code alone
        log.warning("history of %s unavailable: %s", path, exc.message)
        return []


def _commit_document(path: str, sha: str, header: str, diff: str, server: str) -> Document:
    short = sha[:12]
    text = f"{header}\n\n{diff[:DIFF_CHARS]}" + ("\n[diff cut]" if len(diff) > DIFF_CHARS else "")
    metadata: dict[str, Any] = {
        "path": f"{path}@{short}",  # one commit, one document: keyed apart from the file's own chunks
        "file": path,
        "start_line": 1,
        "end_line": 1,
        "citation": f"commit {short}",
        "symbol": _message_of(header)[:120] or None,
        "kind": "commit",
        "language": "diff",
        "retriever": f"mcp:{server}",
        "score": 1.0,
        "commit": sha,
    }
    return Document(page_content=text, metadata=metadata)
