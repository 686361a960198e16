"""Dense (FAISS), keyword (BM25) and hybrid (reciprocal rank fusion) retrieval over a Cairn index."""

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
from retrievers.search_index import Hit, IndexSpec, SearchFilter, SearchIndex, fuse, load_search_index

__all__ = [
    "RETRIEVERS",
    "CodeRetriever",
    "DenseRetriever",
    "Hit",
    "HybridRetriever",
    "IndexSpec",
    "KeywordRetriever",
    "SearchFilter",
    "SearchIndex",
    "available_retrievers",
    "check_retriever",
    "code_document",
    "fuse",
    "hit_to_document",
    "load_search_index",
    "make_retriever",
    "register_retriever",
]
