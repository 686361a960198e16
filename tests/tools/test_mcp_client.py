"""Other MCP servers' tools inside Cairn's agent, against the real reference server mcp-server-git (PyPI).

A git repository (the sample repository, committed twice) is indexed; mcp-server-git is configured as
a client-side server; the agent answers a question about a file's last change from the git tool's
output, citing the commit.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.errors import CairnError
from config import Settings
from tests.conftest import SAMPLE_REPO
from tools.mcp import McpHub, hub_for, langchain_tool, parse_servers, result_text

pytestmark = pytest.mark.integration

GIT_SERVER = str(Path(sys.executable).with_name("mcp-server-git"))


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.com", *args], cwd=repo,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> tuple[Path, str]:
    """The sample repository in git: a first commit, then one that changes tinykv/cache.py; returns its sha."""
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, repo)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "Add tinykv")
    cache = repo / "tinykv" / "cache.py"
    cache.write_text(cache.read_text().replace("capacity=10", "capacity=64"))
    _git(repo, "commit", "-qam", "Raise the LRU cache's default capacity to 64: hot keys kept falling out")
    (repo / "README.md").write_text((repo / "README.md").read_text() + "\nMore.\n")
    _git(repo, "commit", "-qam", "README: more")
    return repo, _git(repo, "log", "-1", "--format=%H", "--", "tinykv/cache.py")


def _servers(repo: Path, **extra) -> dict:
    return {"git": {"command": GIT_SERVER, "args": ["--repository", str(repo)], **extra}}


def test_server_settings_are_checked() -> None:
    assert parse_servers({}) == {} and parse_servers(None) == {}
    with pytest.raises(CairnError, match="either command"):
        parse_servers({"x": {"args": ["a"]}})
    with pytest.raises(CairnError, match="not a valid server list"):
        parse_servers('{"x": {"command": "a", "bogus": 1}}')
    assert parse_servers('{"x": {"url": "http://127.0.0.1:9/mcp"}}')["x"].url


def test_only_read_only_tools_unless_a_write_is_allowed_and_a_broken_server_is_skipped(git_repo) -> None:
    repo, _ = git_repo
    servers = {**_servers(repo), "broken": {"command": str(repo / "no-such-server")}}
    hub = McpHub(parse_servers(servers))
    try:
        tools = {tool.name for tool in hub.tools()}
        assert {"git_log", "git_show", "git_diff", "git_status"} <= tools
        assert not tools & {"git_commit", "git_add", "git_reset", "git_checkout", "git_create_branch"}
        assert not hub.status["broken"].connected and "No such file" in (hub.status["broken"].error or "")
        with pytest.raises(CairnError, match="not allowed"):
            hub.call("git", "git_commit", {"repo_path": str(repo), "message": "x"})
        assert _git(repo, "log", "-1", "--format=%s") == "README: more"  # nothing was written
    finally:
        hub.close()
    listed = ["git_log", "git_add"]
    for extra, expected in (({}, {"git_log"}), ({"allow_writes": ["git_add"]}, {"git_log", "git_add"})):
        allowed = McpHub(parse_servers(_servers(repo, tools=listed, **extra)))
        try:
            assert {tool.name for tool in allowed.tools()} == expected  # a write needs both lists
        finally:
            allowed.close()


def test_the_tools_are_langchain_tools(git_repo) -> None:
    repo, sha = git_repo
    hub = McpHub(parse_servers(_servers(repo)))
    try:
        log = next(langchain_tool(hub, tool) for tool in hub.tools() if tool.name == "git_log")
        assert log.name == "git__git_log" and "[git]" in log.description
        message = asyncio.run(log.ainvoke({"type": "tool_call", "id": "1", "name": log.name,
                                           "args": {"repo_path": str(repo), "max_count": 5}}))  # fmt: skip
        assert sha in str(message.content)
        outside = asyncio.run(log.ainvoke({"type": "tool_call", "id": "2", "name": log.name,
                                           "args": {"repo_path": "/etc", "max_count": 1}}))  # fmt: skip
        assert outside.status == "error"  # a tool error is a ToolMessage, not an exception
        assert result_text(hub.call("git", "git_show", {"repo_path": str(repo), "revision": sha})).count("cache.py")
    finally:
        hub.close()


def test_the_agent_answers_a_question_about_a_files_last_change_citing_the_commit(
    git_repo, tmp_path, real_embedder
) -> None:
    from langchain_core.messages import HumanMessage

    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph
    from ingest.pipeline import ingest_repository

    repo, sha = git_repo
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", index_dir=tmp_path / "index", model="instant",
                        mcp_servers=_servers(repo))  # fmt: skip
    ingest_repository(repo, settings, embedder_factory=lambda: real_embedder)
    context = Context.from_settings(settings)
    state = asyncio.run(build_graph().compile().ainvoke(
        {"messages": [HumanMessage("When did tinykv/cache.py last change, and why?")]}, context=context))  # fmt: skip
    hub = hub_for(parse_servers(settings.mcp_servers))
    assert hub is not None
    hub.close()
    assert state["lookups"] == [{"kind": "history", "target": "tinykv/cache.py"}]
    first = state["documents"][0]
    assert first.metadata["citation"] == f"commit {sha[:12]}" and "default capacity to 64" in first.page_content
    assert f"commit {sha[:12]}" in state["answer"]  # the instant model cites the first excerpt it is shown
    assert any(source["citation"] == f"commit {sha[:12]}" for source in state["sources"])


def test_cairn_tools_and_the_api_list_the_servers_tools(git_repo, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from cli import app

    repo, _ = git_repo
    servers = {**_servers(repo), "down": {"command": str(tmp_path / "missing")}}
    monkeypatch.setenv("CAIRN_MCP_SERVERS", json.dumps(servers))
    monkeypatch.setenv("CAIRN_DATA_DIR", str(tmp_path / "data"))
    listed = CliRunner().invoke(app, ["tools", "--json"])
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.stdout)
    names = {row["name"]: row for row in report["tools"]}
    assert names["git__git_log"]["source"] == "mcp:git" and names["read_file"]["source"] == "cairn"
    assert "git__git_commit" not in names
    assert report["mcp_servers"]["git"]["ok"] and not report["mcp_servers"]["down"]["ok"]
