"""Dense, keyword and hybrid search as LangChain retrievers, with a registry that plugins join too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from cairn.registry import Registry
from retrievers.search_index import Hit, SearchFilter, SearchIndex


def hit_to_document(hit: Hit, method: str) -> Document:
    """Return a LangChain Document for a hit, its citation and score in the metadata."""
    chunk = hit.chunk
    return Document(
        page_content=chunk.text,
        metadata={
            "path": chunk.path,
            "start_line": chunk.start_line,
            "end_line": chunk.end_line,
            "language": chunk.language,
            "symbol": chunk.symbol,
            "kind": chunk.kind,
            "citation": chunk.citation,
            "score": hit.score,
            "rank": hit.rank,
            "row": hit.row,
            "retriever": method,
        },
    )


class CodeRetriever(BaseRetriever):
    """Base for Cairn's retrievers: ``invoke(query, k=..., path_glob=..., language=...)``.

    ``k``, ``path_glob`` and ``language`` set on the retriever are defaults that keyword arguments of
    ``invoke`` override for one call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    method: ClassVar[str] = ""
    index: SearchIndex
    k: int = 8
    path_glob: list[str] | None = None
    language: list[str] | None = None

    def _hits(self, query: str, k: int, flt: SearchFilter) -> list[Hit]:
        raise NotImplementedError

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        flt = SearchFilter.of(kwargs.get("path_glob", self.path_glob), kwargs.get("language", self.language))
        hits = self._hits(query, int(kwargs.get("k", self.k)), flt)
        return [hit_to_document(hit, self.method) for hit in hits]


class DenseRetriever(CodeRetriever):
    """Nearest chunks by embedding (FAISS, inner product on normalised vectors)."""

    method: ClassVar[str] = "dense"

    def _hits(self, query: str, k: int, flt: SearchFilter) -> list[Hit]:
        return self.index.dense(query, k, flt)


class KeywordRetriever(CodeRetriever):
    """Best BM25 matches under the code-aware tokenizer (identifiers whole and split)."""

    method: ClassVar[str] = "keyword"

    def _hits(self, query: str, k: int, flt: SearchFilter) -> list[Hit]:
        return self.index.keyword(query, k, flt)


class HybridRetriever(CodeRetriever):
    """Dense and keyword rankings fused by reciprocal rank fusion."""

    method: ClassVar[str] = "hybrid"
    depth: int = 50
    rrf_k: int = 60

    def _hits(self, query: str, k: int, flt: SearchFilter) -> list[Hit]:
        return self.index.hybrid(query, k, flt, depth=self.depth, rrf_k=self.rrf_k)


RetrieverFactory = Callable[..., BaseRetriever]

_RETRIEVERS: Registry[RetrieverFactory] = Registry("cairn.retrievers")


def register_retriever(name: str, factory: RetrieverFactory) -> None:
    """Make a retriever available by name; built-ins and plugins both come in through here."""
    _RETRIEVERS.register(name, factory)


def available_retrievers() -> list[str]:
    """Return the names ``make_retriever`` accepts."""
    return _RETRIEVERS.names()


def make_retriever(mode: str, index: SearchIndex, **options: Any) -> BaseRetriever:
    """Build the retriever registered as ``mode`` over ``index``."""
    factory = _RETRIEVERS.get(mode)
    if factory is None:
        raise ValueError(f"Unknown retriever {mode!r}; choose one of: {', '.join(available_retrievers())}")
    return factory(index=index, **options)


register_retriever("dense", DenseRetriever)
register_retriever("keyword", KeywordRetriever)
register_retriever("hybrid", HybridRetriever)
