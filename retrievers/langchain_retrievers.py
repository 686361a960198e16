"""Dense, keyword and hybrid search as LangChain retrievers, with a registry that plugins join too."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import ConfigDict

from cairn.errors import CairnError
from cairn.registry import Registry
from config import Settings
from retrievers.search_index import Hit, SearchFilter, SearchIndex


def code_document(
    text: str,
    *,
    path: str,
    start_line: int,
    end_line: int,
    retriever: str,
    language: str = "",
    symbol: str | None = None,
    kind: str = "",
    score: float = 0.0,
    rank: int = 0,
    row: int = -1,
    copies: Sequence[str] = (),
) -> Document:
    """Return the one shape retrieved code has everywhere in Cairn: a Document of lines of a file.

    The metadata carries the citation (``path:start-end``) and where the code came from
    (``retriever``: dense, keyword, hybrid, or ``tool:<name>``); ``row`` is the chunk's row in the
    index (-1 for code a tool read); ``copies`` cite the other places the search met holding exactly the same text.
    """
    return Document(
        page_content=text,
        metadata={
            "path": path,
            "start_line": start_line,
            "end_line": end_line,
            "language": language,
            "symbol": symbol,
            "kind": kind,
            "citation": f"{path}:{start_line}-{end_line}",
            "score": score,
            "rank": rank,
            "row": row,
            "retriever": retriever,
            "copies": list(copies),
        },
    )


def hit_to_document(hit: Hit, method: str) -> Document:
    """Return the Document for a search hit: the chunk's text, its citation, score and rank."""
    chunk = hit.chunk
    return code_document(
        chunk.text,
        path=chunk.path,
        start_line=chunk.start_line,
        end_line=chunk.end_line,
        retriever=method,
        language=chunk.language,
        symbol=chunk.symbol,
        kind=chunk.kind,
        score=hit.score,
        rank=hit.rank,
        row=hit.row,
        copies=[copy.citation for copy in hit.copies],
    )


class CodeRetriever(BaseRetriever):
    """Base for Cairn's retrievers: ``invoke(query, k=..., path_glob=..., language=...)``.

    ``k``, ``path_glob`` and ``language`` set on the retriever are defaults that keyword arguments of
    ``invoke`` override for one call. ``batch`` embeds all its queries in one forward pass.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    method: ClassVar[str] = ""
    uses_vectors: ClassVar[bool] = False
    index: SearchIndex
    k: int = Settings.model_fields["search_k"].default
    path_glob: list[str] | None = None
    language: list[str] | None = None
    depth: int = Settings.model_fields["fusion_depth"].default
    rrf_k: int = Settings.model_fields["rrf_k"].default

    def _hits(self, query: str, k: int, flt: SearchFilter, vector: np.ndarray | None = None) -> list[Hit]:
        raise NotImplementedError

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        flt = SearchFilter.of(kwargs.get("path_glob", self.path_glob), kwargs.get("language", self.language))
        hits = self._hits(query, int(kwargs.get("k", self.k)), flt, kwargs.get("vector"))
        return [hit_to_document(hit, self.method) for hit in hits]

    def batch(
        self,
        inputs: Sequence[str],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        vectors: np.ndarray | Sequence[np.ndarray] | None = None,
        **kwargs: Any,
    ) -> list[list[Document]]:
        """Search several queries, their embeddings computed in one batch (or given, one row each); one ranking each."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        rows: Iterable[np.ndarray | None]
        if vectors is not None:
            rows = vectors
        elif self.uses_vectors:
            rows = self.index.embed_queries(inputs)
        else:
            rows = [None] * len(inputs)
        return [
            self.invoke(query, one, vector=vector, **kwargs)
            for query, one, vector in zip(inputs, configs, rows, strict=True)
        ]


class DenseRetriever(CodeRetriever):
    """Nearest chunks by embedding (FAISS, inner product on normalised vectors)."""

    method: ClassVar[str] = "dense"
    uses_vectors: ClassVar[bool] = True

    def _hits(self, query: str, k: int, flt: SearchFilter, vector: np.ndarray | None = None) -> list[Hit]:
        if vector is None:
            return self.index.dense(query, k, flt)
        return self.index.dense_by_vector(vector, k, flt)


class KeywordRetriever(CodeRetriever):
    """Best BM25 matches under the code-aware tokenizer (identifiers whole and split)."""

    method: ClassVar[str] = "keyword"

    def _hits(self, query: str, k: int, flt: SearchFilter, vector: np.ndarray | None = None) -> list[Hit]:
        return self.index.keyword(query, k, flt)


class HybridRetriever(CodeRetriever):
    """Dense and keyword rankings fused by reciprocal rank fusion."""

    method: ClassVar[str] = "hybrid"
    uses_vectors: ClassVar[bool] = True

    def _hits(self, query: str, k: int, flt: SearchFilter, vector: np.ndarray | None = None) -> list[Hit]:
        if vector is None:
            return self.index.hybrid(query, k, flt, depth=self.depth, rrf_k=self.rrf_k)
        return self.index.hybrid_by_vector(query, vector, k, flt, depth=self.depth, rrf_k=self.rrf_k)


RetrieverFactory = Callable[..., BaseRetriever]
RETRIEVERS: Registry[RetrieverFactory] = Registry("cairn.retrievers")


def register_retriever(name: str, factory: RetrieverFactory) -> None:
    """Make a retriever available by name; built-ins and plugins both come in through here.

    ``factory(index=..., k=..., depth=..., rrf_k=...)`` returns a LangChain retriever over a loaded
    index (a pydantic retriever ignores the options it does not declare).
    """
    RETRIEVERS.register(name, factory)


def available_retrievers() -> list[str]:
    """Return the names ``make_retriever`` accepts."""
    return RETRIEVERS.names()


def check_retriever(mode: str) -> str:
    """Return ``mode`` if a retriever is registered under it, else raise an error listing the choices."""
    if RETRIEVERS.get(mode) is None:
        raise CairnError(f"Unknown retriever {mode!r}", f"choose one of: {', '.join(available_retrievers())}")
    return mode


def make_retriever(mode: str, index: SearchIndex, **options: Any) -> BaseRetriever:
    """Build the retriever registered as ``mode`` over ``index``."""
    factory = RETRIEVERS.get(check_retriever(mode))
    assert factory is not None
    return factory(index=index, **options)


register_retriever("dense", DenseRetriever)
register_retriever("keyword", KeywordRetriever)
register_retriever("hybrid", HybridRetriever)
