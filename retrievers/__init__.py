"""Dense (FAISS), keyword (BM25) and hybrid (reciprocal rank fusion) retrieval over a Cairn index."""

from retrievers.across_repos import AcrossReposRetriever, fuse_documents, in_repo
from retrievers.langchain_retrievers import (
    RETRIEVERS,
    CodeRetriever,
    DenseRetriever,
    HybridRetriever,
    KeywordRetriever,
    available_retrievers,
    check_retriever,
    code_document,
    hit_to_document,
    make_retriever,
    register_retriever,
)
from retrievers.search_index import (
    Hit,
    IndexSpec,
    SearchFilter,
    SearchIndex,
    cached_embedder,
    fuse,
    generation_bytes,
    load_search_index,
    loaded_indexes,
)

__all__ = [
    "RETRIEVERS",
    "AcrossReposRetriever",
    "CodeRetriever",
    "DenseRetriever",
    "Hit",
    "HybridRetriever",
    "IndexSpec",
    "KeywordRetriever",
    "SearchFilter",
    "SearchIndex",
    "available_retrievers",
    "cached_embedder",
    "check_retriever",
    "code_document",
    "fuse",
    "fuse_documents",
    "generation_bytes",
    "hit_to_document",
    "in_repo",
    "load_search_index",
    "loaded_indexes",
    "make_retriever",
    "register_retriever",
]
