"""cairn def and cairn refs as a user runs them: real processes over an index of the sample repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from tests.conftest import ROOT, SAMPLE_REPO, FakeEmbedder


def cairn(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=120)


@pytest.fixture(scope="module")
def nav_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("nav") / "index"
    ingest_repository(SAMPLE_REPO, Settings(index_dir=index), embedder_factory=FakeEmbedder)
    return index


def test_def_prints_the_citation_and_lists_ambiguous_candidates(nav_index: Path) -> None:
    done = cairn("def", "Store.compact", "--index", str(nav_index))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tinykv/store.py:54-64  method Store.compact"

    done = cairn("def", "put", "--index", str(nav_index), "--json")
    payload = json.loads(done.stdout)
    assert payload["ambiguous"] is True
    assert [d["qualified_name"] for d in payload["definitions"]] == ["LRUCache.put", "Store.put"]
    assert payload["definitions"][1]["citation"] == "tinykv/store.py:28-36"


def test_refs_groups_callers_by_definition(nav_index: Path) -> None:
    done = cairn("refs", "invalidate", "--index", str(nav_index), "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    callers = {c["caller"]["qualified_name"]: c for c in payload["callers"] if c["caller"]}
    assert callers["Store.put"]["citation"] == "tinykv/store.py:28-36"
    assert callers["Store.put"]["references"] == [{"line": 34, "kind": "call", "citation": "tinykv/store.py:34-34"}]

    text = cairn("refs", "invalidate", "--index", str(nav_index))
    assert "tinykv/store.py:28-36  method Store.put" in text.stdout and "lines 34 (call)" in text.stdout


def test_an_unknown_name_exits_17_with_a_hint(nav_index: Path) -> None:
    done = cairn("def", "no_such_symbol", "--index", str(nav_index))
    assert done.returncode == 17
    assert "No definition of 'no_such_symbol'" in done.stderr and "cairn search" in done.stderr


def test_map_prints_ranked_definitions_within_the_budget(nav_index: Path) -> None:
    done = cairn("map", "--index", str(nav_index), "--tokens", "200")
    assert done.returncode == 0, done.stderr
    assert "tinykv/cache.py\n" in done.stdout and "  class LRUCache [6-40]" in done.stdout
    payload = json.loads(cairn("map", "--index", str(nav_index), "--json", "--tokens", "40").stdout)
    assert payload["definitions"] and payload["definitions"][0]["citation"].startswith("tinykv/")
    assert len(payload["map"]) < len(done.stdout)
