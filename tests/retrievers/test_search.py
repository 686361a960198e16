from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from cairn.errors import CairnError, EmbeddingModelMismatch
from config import Settings
from ingest.chunking import Chunk
from ingest.pipeline import ingest_repository
from retrievers import (
    RETRIEVERS,
    DenseRetriever,
    Hit,
    HybridRetriever,
    KeywordRetriever,
    SearchFilter,
    available_retrievers,
    fuse,
    load_search_index,
    make_retriever,
)

pytestmark = pytest.mark.integration  # the real embedding model


def _paths(hits) -> list[str]:
    return [h.chunk.path for h in hits]


def test_keyword_search_finds_exact_identifiers(sample_index) -> None:
    hits = sample_index.keyword("decode_records", 3)
    assert hits[0].chunk.path == "tinykv/wal.py" and hits[0].chunk.symbol == "decode_records"
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_dense_search_finds_meaning_without_shared_words(sample_index) -> None:
    hits = sample_index.dense("throw away the entry that was not used for the longest time", 3)
    assert "tinykv/cache.py" in _paths(hits)


def test_hybrid_ranks_the_answering_chunks_first(sample_index) -> None:
    hits = sample_index.hybrid("how is a torn record detected after a crash", 3)
    assert {"README.md", "docs/architecture.md", "tinykv/wal.py"} & set(_paths(hits[:2]))
    assert all(0 < h.score <= 2 / 61 for h in hits)


def test_filters_restrict_by_language_and_path_glob(sample_index) -> None:
    js = sample_index.hybrid("retry", 5, SearchFilter.of(language="javascript"))
    assert js and set(_paths(js)) == {"web/client.js"}
    docs = sample_index.dense("recovery", 5, SearchFilter.of(path_glob="docs/**"))
    assert docs and set(_paths(docs)) == {"docs/architecture.md"}
    md = sample_index.keyword("log", 10, SearchFilter.of(path_glob=["*.md"]))
    assert md and all(p.endswith(".md") for p in _paths(md))
    assert sample_index.hybrid("anything", 5, SearchFilter.of(language="cobol")) == []


def test_langchain_retrievers_return_cited_documents(sample_index) -> None:
    retriever = HybridRetriever(index=sample_index, k=2)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("write-ahead log fsync durability")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    meta = docs[0].metadata
    assert meta["citation"] == f"{meta['path']}:{meta['start_line']}-{meta['end_line']}"
    assert meta["retriever"] == "hybrid" and docs[0].page_content

    # per-call keyword arguments override the retriever's defaults
    narrowed = retriever.invoke("write-ahead log", k=5, language="markdown")
    assert len(narrowed) <= 5 and {d.metadata["language"] for d in narrowed} == {"markdown"}
    assert DenseRetriever(index=sample_index).invoke("cache")[0].metadata["retriever"] == "dense"
    assert KeywordRetriever(index=sample_index, path_glob=["web/*"]).invoke("fetch")[0].metadata["path"] == (
        "web/client.js"
    )


def test_factory_lists_choices_and_accepts_plugins(sample_index) -> None:
    assert {"dense", "keyword", "hybrid"} <= set(available_retrievers())
    with pytest.raises(CairnError, match="dense, hybrid, keyword"):
        make_retriever("semantic", sample_index)

    class FirstChunk(KeywordRetriever):
        def _hits(self, query, k, flt, vector=None):
            return [Hit(self.index.chunks[0], 0, 1.0, 1)]

    with RETRIEVERS.registered("first-chunk", FirstChunk):
        docs = make_retriever("first-chunk", sample_index).invoke("anything")
        assert docs[0].metadata["row"] == 0
    assert "first-chunk" not in available_retrievers()


def test_batch_embeds_every_query_once_and_matches_invoke(sample_index) -> None:
    retriever = HybridRetriever(index=sample_index, k=3)
    queries = ["write-ahead log fsync", "evict least recently used", "retry with backoff"]
    calls = []
    original = sample_index.embed_queries
    sample_index.embed_queries = lambda qs: calls.append(list(qs)) or original(qs)  # type: ignore[method-assign]
    try:
        batched = retriever.batch(queries)
    finally:
        del sample_index.embed_queries
    assert calls == [queries]  # one forward pass for all three
    assert [[d.metadata["citation"] for d in docs] for docs in batched] == [
        [d.metadata["citation"] for d in retriever.invoke(q)] for q in queries
    ]


def test_fusion_rewards_agreement_between_rankings() -> None:
    def chunk(name: str) -> Chunk:
        return Chunk(name, 1, 1, "python", None, "function", name)

    a, b, c = chunk("a"), chunk("b"), chunk("c")
    dense = [Hit(a, 0, 0.9, 1), Hit(b, 1, 0.8, 2)]
    keyword = [Hit(b, 1, 7.0, 1), Hit(c, 2, 5.0, 2)]
    fused = fuse([dense, keyword], 3, rrf_k=60)
    assert [h.chunk.path for h in fused] == ["b", "a", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_load_search_index_is_cached_until_a_new_generation(sample_repo, tmp_path, real_embedder) -> None:
    settings = Settings(index_dir=tmp_path / "index")
    ingest_repository(sample_repo, settings, embedder_factory=lambda: real_embedder)
    first = load_search_index(settings)
    assert load_search_index(settings) is first

    (sample_repo / "extra.py").write_text("def brand_new_function():\n    return 1\n")
    ingest_repository(sample_repo, settings, embedder_factory=lambda: real_embedder)
    second = load_search_index(settings)
    assert second is not first
    assert second.keyword("brand_new_function", 1)[0].chunk.path == "extra.py"

    with pytest.raises(EmbeddingModelMismatch):
        load_search_index(settings.model_copy(update={"embedding_model": "/models/other"}))


def test_hnsw_index_searches_and_filters_like_flat(sample_repo, tmp_path) -> None:
    import faiss

    from ingest.store import open_generation
    from retrievers import SearchIndex
    from tests.conftest import FakeEmbedder

    embedder = FakeEmbedder()
    flat = Settings(index_dir=tmp_path / "index")
    ingest_repository(sample_repo, flat, embedder_factory=lambda: embedder)
    exact = SearchIndex(open_generation(flat.resolved_index_dir), embedder)
    expected = [h.row for h in exact.dense("write-ahead log", 5)]

    hnsw = flat.model_copy(update={"faiss_index": "hnsw"})
    assert ingest_repository(sample_repo, hnsw, embedder_factory=lambda: embedder).chunks_embedded == 0
    generation = open_generation(hnsw.resolved_index_dir)
    assert isinstance(generation.faiss_index, faiss.IndexHNSWFlat)
    approx = SearchIndex(generation, embedder)
    assert [h.row for h in approx.dense("write-ahead log", 5)] == expected  # tiny corpus: HNSW is exact
    only_js = approx.dense("write-ahead log", 5, SearchFilter.of(language="javascript"))
    assert only_js and {h.chunk.path for h in only_js} == {"web/client.js"}


def test_ivf_index_searches_filters_and_keeps_its_lists_across_an_incremental_ingest(sample_repo, tmp_path) -> None:
    import faiss
    import numpy as np

    from ingest.store import open_generation
    from retrievers import SearchIndex
    from tests.conftest import FakeEmbedder

    embedder = FakeEmbedder()
    flat = Settings(index_dir=tmp_path / "flat", faiss_index="flat")
    ingest_repository(sample_repo, flat, embedder_factory=lambda: embedder)
    flat_generation = open_generation(flat.resolved_index_dir)
    exact = SearchIndex(flat_generation, embedder)

    ivf = Settings(index_dir=tmp_path / "ivf", faiss_index="ivf")
    ingest_repository(sample_repo, ivf, embedder_factory=lambda: embedder)
    generation = open_generation(ivf.resolved_index_dir)
    assert isinstance(generation.faiss_index, faiss.IndexIVFFlat) and generation.manifest.faiss_index == "ivf"
    assert np.array_equal(generation.vectors(), flat_generation.vectors())  # read back from the lists, in row order
    approx = SearchIndex(generation, embedder)
    for question in ("write-ahead log", "evict the least recently used entry", "parse the config"):
        # a tiny corpus has 16 lists and probes all of them: exact
        assert [h.row for h in approx.dense(question, 5)] == [h.row for h in exact.dense(question, 5)]
    only_js = approx.dense("write-ahead log", 5, SearchFilter.of(language="javascript"))
    assert only_js and {h.chunk.path for h in only_js} == {"web/client.js"}

    centroids = generation.ivf_centroids()
    (sample_repo / "extra.py").write_text("def brand_new_function():\n    return 1\n")
    result = ingest_repository(sample_repo, ivf, embedder_factory=lambda: embedder)
    assert result.chunks_embedded == 1
    again = open_generation(ivf.resolved_index_dir)
    assert np.array_equal(again.ivf_centroids(), centroids)  # not trained again
    row = next(r for r in range(len(again.chunks)) if again.chunks[r].path == "extra.py")
    found = SearchIndex(again, embedder).dense_by_vector(again.vectors()[row], 1)  # the new vector is in its list
    assert found[0].chunk.path == "extra.py"


def test_auto_index_kind_is_flat_until_a_size_then_ivf_with_lists_and_probes_by_size() -> None:
    from ingest.store import AUTO_IVF_FROM, index_kind, ivf_lists, ivf_probes

    assert Settings(_env_file=None).faiss_index == "auto"
    assert index_kind("auto", AUTO_IVF_FROM - 1) == "flat" and index_kind("auto", AUTO_IVF_FROM) == "ivf"
    assert index_kind("hnsw", 10) == "hnsw" and index_kind("flat", 10**7) == "flat"
    assert ivf_lists(1_000_000) == 4096 and ivf_probes(4096, 1_000_000) == 135  # ~32 k vectors scanned
    assert ivf_lists(200_000) == 2048 and ivf_probes(2048, 200_000) == 336
    assert ivf_lists(10) == 10 and ivf_lists(0) == 1
    assert ivf_probes(16, 32) == 16 and ivf_probes(65_536, 10**9) == 2048  # at least 1 in 32
