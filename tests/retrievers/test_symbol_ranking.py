"""The symbol graph as a third ranking: a chunk defining a name the query uses outranks mere mentions."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers import SearchFilter, SearchIndex, fuse
from tests.conftest import SAMPLE_REPO, FakeEmbedder


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    folder = tmp_path_factory.mktemp("symbol-ranking") / "index"
    ingest_repository(SAMPLE_REPO, Settings(index_dir=folder), embedder_factory=FakeEmbedder)
    return SearchIndex(open_generation(folder), FakeEmbedder())


def test_symbols_ranks_the_defining_chunks_in_the_order_the_query_names_them(index: SearchIndex) -> None:
    hits = index.symbols("why does Store.compact call encode_record?", 5)
    assert [(h.chunk.symbol, h.rank) for h in hits] == [("Store.compact", 1), ("encode_record", 2)]
    assert hits[1].chunk.citation.startswith("tinykv/wal.py:16-")


def test_plain_words_and_filtered_out_paths_add_no_ranking(index: SearchIndex) -> None:
    assert index.symbols("how does the cache evict entries", 5) == []
    assert index.symbols("encode_record", 5, SearchFilter.of(path_glob="web/**")) == []


def test_a_definition_outranks_chunks_that_only_mention_it(index: SearchIndex) -> None:
    query = "where is WriteAheadLog used"
    wide = len(index)
    without = fuse([index.dense(query, wide), index.keyword(query, wide)], 5)
    with_symbols = index.hybrid(query, 5)
    defining = next(h.row for h in index.symbols(query, 5))
    assert index.symbols(query, 5)[0].chunk.symbol == "WriteAheadLog"
    assert with_symbols[0].row == defining
    rows_without = [h.row for h in without]
    assert rows_without.index(defining) > 0 if defining in rows_without else True  # it was not first before


def test_an_index_without_a_graph_searches_as_before(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    ingest_repository(SAMPLE_REPO, Settings(index_dir=folder), embedder_factory=FakeEmbedder)
    (open_generation(folder).path / "symbols.db").unlink()
    assert SearchIndex(open_generation(folder), FakeEmbedder()).symbols("encode_record", 5) == []
