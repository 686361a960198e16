"""The navigation tools answer from the symbol graph with citations, and fail as error tool messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers import SearchIndex
from tests.conftest import FakeEmbedder
from tools import load_tools, tool_context_for


@pytest.fixture
def tools(sample_repo: Path, tmp_path: Path):
    settings = Settings(index_dir=tmp_path / "index")
    ingest_repository(sample_repo, settings, embedder_factory=FakeEmbedder)
    index = SearchIndex(open_generation(settings.resolved_index_dir), FakeEmbedder())
    names = ["find_definition", "find_references", "imports", "imported_by"]
    return {t.name: t for t in load_tools(tool_context_for(index), names)}


def _call(tool: str, **args) -> dict:
    return {"name": tool, "args": args, "id": f"call-{tool}", "type": "tool_call"}


def test_find_definition_cites_the_definition_and_returns_its_code(tools) -> None:
    message = tools["find_definition"].invoke(_call("find_definition", name="Store.compact"))
    assert message.status == "success"
    assert "[tinykv/store.py:54-64] method Store.compact" in message.content
    [code] = message.artifact
    assert code.metadata["citation"] == "tinykv/store.py:54-64" and code.page_content.lstrip().startswith("def compact")


def test_an_ambiguous_name_lists_the_candidates_by_qualified_name(tools) -> None:
    text = tools["find_definition"].invoke({"name": "put"})
    assert text.startswith("'put' is ambiguous: 2 definitions")
    assert "method LRUCache.put" in text and "method Store.put" in text


def test_find_references_groups_callers_by_enclosing_definition(tools) -> None:
    text = tools["find_references"].invoke({"name": "invalidate"})
    assert "[tinykv/store.py:28-36] method Store.put: line 34 (call)" in text
    assert "method Store.delete" in text


def test_imports_and_imported_by(tools) -> None:
    imports = tools["imports"].invoke({"path": "tinykv/store.py"})
    assert "[tinykv/store.py:5-5] from tinykv.cache import LRUCache -> tinykv/cache.py" in imports
    assert "import os" in imports
    importers = tools["imported_by"].invoke({"path": "tinykv/wal.py"})
    assert "[tinykv/store.py:6-6] from tinykv.wal import WriteAheadLog" in importers


def test_unknown_names_and_paths_are_error_tool_messages(tools) -> None:
    missing = tools["find_definition"].invoke(_call("find_definition", name="no_such_thing"))
    assert missing.status == "error" and "No definition of 'no_such_thing'" in missing.content
    outside = tools["imports"].invoke(_call("imports", path="../etc/passwd"))
    assert outside.status == "error" and "leaves the repository" in outside.content
