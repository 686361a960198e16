"""The repository map: PageRank over the symbol graph's references, fitted to a token budget."""

from __future__ import annotations

import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers.repo_map import _tokens, rank_definitions, repo_map
from tests.conftest import SAMPLE_REPO, FakeEmbedder


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("repo-map") / "index"
    ingest_repository(SAMPLE_REPO, Settings(index_dir=folder), embedder_factory=FakeEmbedder)
    return open_generation(folder).symbols()


def test_the_definitions_other_files_use_are_ranked_first(graph) -> None:
    ranked = [item.site.qualified for item in rank_definitions(graph)]
    assert {"LRUCache", "WriteAheadLog", "encode_record", "Store"} <= set(ranked)
    assert "Store._recover" not in ranked  # used only inside its own file


def test_the_map_fits_the_budget_and_cites_lines(graph) -> None:
    text, ranked = repo_map(graph, 1000)
    assert "tinykv/cache.py\n" in text + "\n" and "  class LRUCache [6-40]" in text
    small, fewer = repo_map(graph, 20)
    assert _tokens(small) <= 20 and 0 < len(fewer) < len(ranked)


def test_focus_ranks_from_a_file_s_point_of_view(graph) -> None:
    def share(ranked, name: str) -> float:
        return sum(r.score for r in ranked if r.site.qualified == name) / sum(r.score for r in ranked)

    plain, focused = rank_definitions(graph), rank_definitions(graph, focus=["tinykv/store.py"])
    for used_by_store in ("WriteAheadLog", "encode_record"):
        assert share(focused, used_by_store) > share(plain, used_by_store), used_by_store
    assert "LRUCache.get" in [r.site.qualified for r in plain]  # store.py's cache.get(), not client.js's get()
    assert all(r.site.path != "web/client.js" for r in plain)
