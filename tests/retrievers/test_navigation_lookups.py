"""Plan's navigation lookups: which phrasings ask the symbol graph, and the chunks each lookup returns."""

from __future__ import annotations

import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers import SearchIndex
from retrievers.navigation import Lookup, lookup_documents, lookups_in
from tests.conftest import SAMPLE_REPO, FakeEmbedder


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What calls encode_record?", [Lookup("references", "encode_record")]),
        ("who uses `Store.compact`", [Lookup("references", "Store.compact")]),
        ("Which functions call decode_records()?", [Lookup("references", "decode_records")]),
        ("show me the callers of compact", [Lookup("references", "compact")]),
        ("Where is put used?", [Lookup("references", "put")]),
        ("Where is LRUCache defined?", [Lookup("definition", "LRUCache")]),
        ("where's the definition of hit_ratio", [Lookup("definition", "hit_ratio")]),
        ("Where is WriteAheadLog?", [Lookup("definition", "WriteAheadLog")]),
        ("Which modules import tinykv.store?", [Lookup("importers", "tinykv.store")]),
        ("what imports tinykv/wal.py", [Lookup("importers", "tinykv/wal.py")]),
    ],
)
def test_navigation_phrasings_become_lookups(question: str, expected: list[Lookup]) -> None:
    assert lookups_in(question) == expected


@pytest.mark.parametrize(
    "question",
    ["How does compaction work?", "What calls the function?", "Where is the cache?", "explain the write-ahead log"],
)
def test_other_questions_ask_for_no_lookup(question: str) -> None:
    assert lookups_in(question) == []


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    folder = tmp_path_factory.mktemp("lookups") / "index"
    ingest_repository(SAMPLE_REPO, Settings(index_dir=folder), embedder_factory=FakeEmbedder)
    return SearchIndex(open_generation(folder), FakeEmbedder())


def _cited(documents) -> list[str]:
    return [d.metadata["citation"] for d in documents]


def test_a_references_lookup_gives_the_definition_then_each_calling_chunk(index: SearchIndex) -> None:
    documents = lookup_documents(index, Lookup("references", "encode_record"), 6)
    cited = _cited(documents)
    assert cited[0].startswith("tinykv/wal.py:") and documents[0].metadata["symbol"] == "encode_record"
    # its callers, each the chunk that holds the call: Store.compact and the log's append
    assert any(c.startswith("tinykv/store.py:") for c in cited[1:])
    assert all(d.metadata["retriever"] == "graph:references" for d in documents)
    assert documents[0].metadata["lookup"] == "references encode_record"
    assert len(cited) == len(set(cited))


def test_a_definition_lookup_gives_the_defining_chunk(index: SearchIndex) -> None:
    [document] = lookup_documents(index, Lookup("definition", "Store.compact"), 6)
    assert document.metadata["symbol"] == "Store.compact"
    assert document.page_content.lstrip().startswith("def compact")


def test_an_importers_lookup_gives_the_import_statements(index: SearchIndex) -> None:
    documents = lookup_documents(index, Lookup("importers", "tinykv.store"), 6)
    assert _cited(documents) and all(d.metadata["path"] == "tinykv/__init__.py" for d in documents)
    # as a path, or under a package name the index does not include (indexed from inside it)
    assert _cited(lookup_documents(index, Lookup("importers", "tinykv/store.py"), 6)) == _cited(documents)
    assert _cited(lookup_documents(index, Lookup("importers", "site.tinykv.store"), 6)) == _cited(documents)


def test_an_ambiguous_definition_gives_every_candidate(index: SearchIndex) -> None:
    documents = lookup_documents(index, Lookup("definition", "put"), 6)
    # LRUCache.put sits in its class's chunk (a small class is one chunk), Store.put in its own
    assert sorted((d.metadata["path"], d.metadata["symbol"]) for d in documents) == [
        ("tinykv/cache.py", "LRUCache"), ("tinykv/store.py", "Store.put")]  # fmt: skip


def test_an_unknown_name_or_a_limit_bounds_what_comes_back(index: SearchIndex) -> None:
    assert lookup_documents(index, Lookup("references", "no_such_name"), 6) == []
    assert lookup_documents(index, Lookup("importers", "no.such.module"), 6) == []
    assert len(lookup_documents(index, Lookup("references", "encode_record"), 1)) == 1
