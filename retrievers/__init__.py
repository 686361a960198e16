"""Dense (FAISS), keyword (BM25) and hybrid (reciprocal rank fusion) retrieval over a Cairn index."""

from retrievers.langchain_retrievers import (
    CodeRetriever,
    DenseRetriever,
    HybridRetriever,
    KeywordRetriever,
    available_retrievers,
    hit_to_document,
    make_retriever,
    register_retriever,
)
from retrievers.search_index import Hit, SearchFilter, SearchIndex, fuse, load_search_index

__all__ = [
    "CodeRetriever",
    "DenseRetriever",
    "Hit",
    "HybridRetriever",
    "KeywordRetriever",
    "SearchFilter",
    "SearchIndex",
    "available_retrievers",
    "fuse",
    "hit_to_document",
    "load_search_index",
    "make_retriever",
    "register_retriever",
]
