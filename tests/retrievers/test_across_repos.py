"""Search across repositories (fused by reciprocal rank fusion, citations prefixed) and the loaded-index LRU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from langchain_core.documents import Document

from ingest.store import open_generation
from retrievers import (
    AcrossReposRetriever,
    HybridRetriever,
    IndexSpec,
    KeywordRetriever,
    SearchIndex,
    fuse_documents,
    generation_bytes,
    load_search_index,
    loaded_indexes,
)
from retrievers import search_index as search_index_module
from tests.conftest import SAMPLE_REPO, FakeEmbedder
from tests.repos import ingest_as, write_billing_repo


@pytest.fixture
def repo_indexes(tmp_path: Path) -> dict[str, Path]:
    """The sample repository as 'tinykv' and the billing one as 'billing' under one data folder."""
    tinykv = tmp_path / "tinykv"
    shutil.copytree(SAMPLE_REPO, tinykv)
    return {
        "tinykv": ingest_as(tmp_path / "data", tinykv),
        "billing": ingest_as(tmp_path / "data", write_billing_repo(tmp_path / "billing")),
    }


def test_keyword_results_of_both_repositories_come_back_fused_and_prefixed(repo_indexes) -> None:
    embedder = FakeEmbedder()
    retrievers = {name: KeywordRetriever(index=SearchIndex(open_generation(path), embedder), k=4)
                  for name, path in repo_indexes.items()}  # fmt: skip
    across = AcrossReposRetriever(retrievers=retrievers, k=6, rrf_k=60)
    docs = across.invoke("round invoice total and evict the least recently used cache entry")
    repos = {d.metadata["repo"] for d in docs}
    assert repos == {"tinykv", "billing"}
    for doc in docs:
        meta = doc.metadata
        assert meta["path"].startswith(f"{meta['repo']}/")
        assert meta["citation"] == f"{meta['path']}:{meta['start_line']}-{meta['end_line']}"
    assert [d.metadata["rank"] for d in docs] == list(range(1, len(docs) + 1))
    # the first of each repository's ranking ties at 1/(60+1); ranks, not BM25 scores, decide
    assert docs[0].metadata["score"] == pytest.approx(1 / 61) and docs[1].metadata["score"] == pytest.approx(1 / 61)
    only = across.invoke("invoice", language="markdown", k=3)
    assert only and all(d.metadata["path"] == "billing/README.md" for d in only)


def test_hybrid_results_of_all_repositories_merge_by_their_rrf_score(repo_indexes) -> None:
    """Every repository's dense and keyword rankings fused: each chunk's own hybrid score decides."""
    embedder = FakeEmbedder()
    indexes = {name: SearchIndex(open_generation(path), embedder) for name, path in repo_indexes.items()}
    across = AcrossReposRetriever(retrievers={n: HybridRetriever(index=i, k=5) for n, i in indexes.items()}, k=6)
    query = "round_invoice_total"
    docs = across.invoke(query)
    own = {f"billing/{d.metadata['citation']}": d.metadata["score"] for d in HybridRetriever(
        index=indexes["billing"], k=5).invoke(query)}  # fmt: skip
    assert docs[0].metadata["citation"] == "billing/billing/invoice.py:1-3"  # found by both rankings: it leads
    assert docs[0].metadata["score"] == pytest.approx(own["billing/billing/invoice.py:1-3"])
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


def test_queries_are_embedded_once_for_every_repository(repo_indexes) -> None:
    embedder = FakeEmbedder()
    indexes = {name: SearchIndex(open_generation(path), embedder) for name, path in repo_indexes.items()}
    across = AcrossReposRetriever(retrievers={n: HybridRetriever(index=i, k=3) for n, i in indexes.items()}, k=4)
    before = len(embedder.embedded)
    batched = across.batch(["invoice ledger", "write-ahead log"])
    assert embedder.embedded[before:] == ["invoice ledger", "write-ahead log"]  # one batch, not one per repository
    assert len(batched) == 2 and all(len(docs) == 4 for docs in batched)


def test_fusion_adds_the_reciprocal_ranks_of_a_document_found_twice() -> None:
    def doc(citation: str) -> Document:
        return Document("x", metadata={"citation": citation})

    fused = fuse_documents([[doc("a/x.py:1-2"), doc("b/y.py:1-2")], [doc("b/y.py:1-2")]], 5, rrf_k=60)
    assert [d.metadata["citation"] for d in fused] == ["b/y.py:1-2", "a/x.py:1-2"]
    assert fused[0].metadata["score"] == pytest.approx(1 / 62 + 1 / 61)


def test_least_recently_used_indexes_are_unloaded_beyond_the_budget(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(search_index_module, "_open_indexes", type(search_index_module._open_indexes)())
    source = write_billing_repo(tmp_path / "src")
    dirs = [ingest_as(tmp_path / "data", source, name=f"r{n}") for n in range(3)]
    size = generation_bytes(open_generation(dirs[0]).path)
    # a budget that holds two of these indexes, not three
    specs = [IndexSpec(d, "all-MiniLM-L6-v2", memory_budget_bytes=2 * size + size // 2) for d in dirs]
    first = load_search_index(specs[0])
    load_search_index(specs[1])
    assert load_search_index(specs[0]) is first  # used again: now the most recent
    load_search_index(specs[2])
    assert loaded_indexes() == [dirs[0].resolve(), dirs[2].resolve()]  # r1 was the least recently used
    load_search_index(specs[1])  # loads again on its next use, and r0 goes
    assert loaded_indexes() == [dirs[2].resolve(), dirs[1].resolve()]
    tiny = IndexSpec(dirs[0], "all-MiniLM-L6-v2", memory_budget_bytes=1)
    assert load_search_index(tiny) is not None and loaded_indexes() == [dirs[0].resolve()]  # the one in use stays
