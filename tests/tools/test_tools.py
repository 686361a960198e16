"""The built-in tools, including every way of trying to read outside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers import SearchIndex
from tests.conftest import FakeEmbedder
from tools import TOOLS, available_tools, load_tools, tool_context_for


@pytest.fixture
def repo_tools(sample_repo: Path, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    (sample_repo / ".env").write_text("API_KEY=hunter2\n")
    (sample_repo / ".gitignore").write_text("*.kv\nbuild/\n.env\n")
    settings = Settings(index_dir=tmp_path / "index")
    ingest_repository(sample_repo, settings, embedder_factory=FakeEmbedder)
    index = SearchIndex(open_generation(settings.resolved_index_dir), FakeEmbedder())
    # Planted after indexing: a symlink that points out of the repository.
    os.symlink(outside / "secret.txt", sample_repo / "tinykv" / "link.py")
    tools = {t.name: t for t in load_tools(tool_context_for(index))}
    return tools, sample_repo, outside


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside/secret.txt", "leaves the repository"),
        ("tinykv/../../outside/secret.txt", "leaves the repository"),
        ("/etc/passwd", "not a path relative"),
        ("~/.ssh/id_rsa", "not a path relative"),
        (".env", "not an indexed file"),
        ("tinykv/link.py", "not an indexed file"),
    ],
)
def test_read_file_refuses_paths_outside_the_indexed_files(repo_tools, path, reason) -> None:
    tools, _, _ = repo_tools
    result = tools["read_file"].invoke({"path": path})
    assert reason in result and "SECRET" not in result and "hunter2" not in result


def test_a_symlink_swapped_in_for_an_indexed_file_is_refused(repo_tools) -> None:
    tools, repo, outside = repo_tools
    target = repo / "tinykv" / "cache.py"
    target.unlink()
    os.symlink(outside / "secret.txt", target)
    result = tools["read_file"].invoke({"path": "tinykv/cache.py"})
    assert "resolves outside the repository" in result and "SECRET" not in result
    assert "SECRET" not in tools["grep"].invoke({"pattern": "SECRET"})


def test_read_file_returns_numbered_lines_with_a_citation(repo_tools) -> None:
    tools, _, _ = repo_tools
    result = tools["read_file"].invoke({"path": "tinykv/wal.py", "start_line": 24, "end_line": 26})
    assert result.splitlines()[0] == "[tinykv/wal.py:24-26]"
    assert "   24  def decode_records(data):" in result


def test_grep_is_bounded_and_confined(repo_tools) -> None:
    tools, _, _ = repo_tools
    hits = tools["grep"].invoke({"pattern": r"def \w+_records", "path_glob": "*.py"})
    assert "tinykv/wal.py:16: def encode_record" not in hits  # \w+_records needs the plural
    assert "tinykv/wal.py:24: def decode_records(data):" in hits
    assert tools["grep"].invoke({"pattern": "hunter2"}) == "no matches"
    assert "invalid pattern" in tools["grep"].invoke({"pattern": "(unclosed"})
    many = tools["grep"].invoke({"pattern": "."})
    assert many.count("\n") <= 51 and "first 50 matches" in many


def test_outline_lists_symbols_with_ranges(repo_tools) -> None:
    tools, _, _ = repo_tools
    outline = tools["outline"].invoke({"path": "tinykv"})
    assert "class Store [tinykv/store.py:" in outline
    assert "method Store.compact [tinykv/store.py:" in outline
    assert "function decode_records [tinykv/wal.py:24-36]" in outline
    assert "leaves the repository" in tools["outline"].invoke({"path": ".."})


def test_search_code_returns_cited_chunks(repo_tools) -> None:
    tools, _, _ = repo_tools
    result = tools["search_code"].invoke({"query": "decode_records", "k": 2})
    assert result.startswith("[tinykv/wal.py:") or "[tinykv/wal.py:" in result


def test_registry_loads_plugins_like_builtins_and_names_choices(repo_tools) -> None:
    from langchain_core.tools import StructuredTool

    echo = lambda ctx: StructuredTool.from_function(lambda text: text, name="echo", description="e")  # noqa: E731
    with TOOLS.registered("echo", echo):
        assert {"echo", "grep", "outline", "read_file", "search_code"} <= set(available_tools())
    assert "echo" not in available_tools()
    with pytest.raises(Exception, match="choose from"):
        load_tools(None, ["nope"])  # type: ignore[arg-type]


def _call(name: str, **args) -> dict:
    return {"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"}


def test_failures_are_error_tool_messages_and_cited_code_comes_as_documents(repo_tools) -> None:
    """The agent tells a failed tool by ToolMessage.status, never by how its text starts."""
    from langchain_core.documents import Document

    tools, repo, _ = repo_tools
    (repo / "tinykv" / "wal.py").unlink()  # indexed, then gone: read_file cannot read it
    gone = tools["read_file"].invoke(_call("read_file", path="tinykv/wal.py"))
    assert gone.status == "error" and gone.content.startswith("cannot read tinykv/wal.py")
    bad_args = tools["read_file"].invoke(_call("read_file", path="tinykv/cache.py", start_line=0))
    assert bad_args.status == "error"

    read = tools["read_file"].invoke(_call("read_file", path="tinykv/cache.py", start_line=1, end_line=5))
    assert read.status == "success"
    (document,) = read.artifact
    assert isinstance(document, Document) and document.metadata["citation"] == "tinykv/cache.py:1-5"
    assert document.metadata["retriever"] == "tool:read_file" and document.metadata["language"] == "python"
    assert document.page_content == "\n".join((repo / "tinykv/cache.py").read_text().split("\n")[:5])

    found = tools["search_code"].invoke(_call("search_code", query="LRUCache", k=2))
    assert found.status == "success" and len(found.artifact) == 2
    assert all(d.metadata["citation"] in found.content for d in found.artifact)


def test_read_file_shows_a_latin1_file_as_written_and_cuts_a_line_too_long_to_show(
    sample_repo: Path, tmp_path: Path
) -> None:
    (sample_repo / "legacy.py").write_bytes("# café\nNAME = 'crème'\n".encode("latin-1"))
    (sample_repo / "table.py").write_text("\n".join(["x = 1"] * 40 + ["BLOB = '" + "ab" * 15_000 + "'", "y = 2"]))
    settings = Settings(index_dir=tmp_path / "index")
    ingest_repository(sample_repo, settings, embedder_factory=FakeEmbedder)
    tools = {
        t.name: t
        for t in load_tools(tool_context_for(SearchIndex(open_generation(tmp_path / "index"), FakeEmbedder())))
    }

    assert "    1  # café" in tools["read_file"].invoke({"path": "legacy.py"})
    assert "café" in tools["grep"].invoke({"pattern": "café"})
    long = tools["read_file"].invoke({"path": "table.py", "start_line": 41})
    assert long.startswith("[table.py:41-41]\n   41  BLOB = 'abab") and "(cut: the line has 30009 characters)" in long
    assert len(long) < 25_000
    assert tools["read_file"].invoke({"path": "table.py", "start_line": 40}).startswith("[table.py:40-40]")


def test_a_file_that_gains_a_secret_after_ingest_is_refused(repo_tools) -> None:
    import base64

    tools, repo, _ = repo_tools
    body = base64.b64encode(bytes(range(256)) * 2).decode()
    dashes = "-" * 5  # the key is assembled here, so this file holds none
    key = f"{dashes}BEGIN RSA PRIVATE KEY{dashes}\n" + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    with (repo / "tinykv" / "cache.py").open("a") as handle:
        handle.write(f'\nSIGNING_KEY = """{key}"""\n')

    read = tools["read_file"].invoke({"path": "tinykv/cache.py"})
    assert read.startswith("refused: 'tinykv/cache.py' changed since it was indexed and now looks like it holds")
    assert "PRIVATE KEY" not in read and "PRIVATE KEY" not in tools["grep"].invoke({"pattern": "PRIVATE KEY"})
    assert tools["outline"].invoke({"path": "tinykv/cache.py"}).startswith("refused")
    assert "def decode_records" in tools["read_file"].invoke({"path": "tinykv/wal.py"})  # unchanged: readable

    (repo / "tinykv" / "cache.py").write_text("class LRUCache:\n    pass\n")  # changed, no secret: readable
    assert "class LRUCache" in tools["read_file"].invoke({"path": "tinykv/cache.py"})
