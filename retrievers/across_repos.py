"""Search several repositories at once: every repository's rankings, fused by reciprocal rank fusion.

Hybrid search already is reciprocal rank fusion (RRF) of a dense and a keyword ranking; across
repositories it is the same RRF over every repository's dense and keyword rankings, which is each
chunk's own hybrid score (a chunk is in its repository's rankings only), so hybrid results merge by
that score. Dense scores are cosine similarities of one embedding model (a repository embedded with
another is never searched with them), so they merge by score too. BM25 scores depend on each
corpus and plugin scores on anything, so those rankings are fused by rank: 1/(rrf_k + rank), ties
broken by score. Every document comes back with its path and citation prefixed by its repository's
name (``<repo>/<path>:start-end``), so a citation says where it points and stays checkable against
the retrieved code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import ConfigDict

from config import Settings
from retrievers.langchain_retrievers import CodeRetriever


def in_repo(document: Document, repo: str) -> Document:
    """Return a copy of a retrieved document whose path and citation start with ``<repo>/``."""
    meta = dict(document.metadata)
    meta["path"] = f"{repo}/{meta['path']}"
    if meta.get("kind") == "commit":  # cited by its commit, which names no path (tools/history.py)
        meta["citation"] = f"{repo}: {meta['citation']}"
    else:
        meta["citation"] = f"{meta['path']}:{meta['start_line']}-{meta['end_line']}"
    meta["repo"] = repo
    meta["copies"] = [f"{repo}/{citation}" for citation in meta.get("copies", [])]
    return Document(page_content=document.page_content, metadata=meta)


#: Retrievers whose scores compare across indexes: hybrid (an RRF sum with the same rrf_k), dense (cosine).
COMPARABLE_SCORES = frozenset({"hybrid", "dense"})


def fuse_documents(rankings: Sequence[Sequence[Document]], k: int, *, rrf_k: int = 60) -> list[Document]:
    """Fuse rankings of several indexes into the best k; each document keeps its fused score and a new rank.

    Hybrid and dense documents merge by their own score (see the module's docstring); any other
    ranking adds 1/(rrf_k + rank) to a document's score, ties broken by its own score.
    """
    documents = [document for ranking in rankings for document in ranking]
    if documents and all(d.metadata.get("retriever") in COMPARABLE_SCORES for d in documents):
        scores = {d.metadata["citation"]: float(d.metadata["score"]) for d in documents}
        first = {d.metadata["citation"]: d for d in documents}
        best = sorted(scores, key=lambda citation: -scores[citation])[:k]
    else:
        scores, first = {}, {}
        for ranking in rankings:
            for rank, document in enumerate(ranking, start=1):
                citation = document.metadata["citation"]
                scores[citation] = scores.get(citation, 0.0) + 1.0 / (rrf_k + rank)
                first.setdefault(citation, document)
        own = {citation: float(document.metadata.get("score") or 0.0) for citation, document in first.items()}
        best = sorted(scores, key=lambda citation: (-scores[citation], -own[citation]))[:k]
    fused = []
    for rank, citation in enumerate(best, start=1):
        metadata = {**first[citation].metadata, "score": scores[citation], "rank": rank}
        fused.append(Document(first[citation].page_content, metadata=metadata))
    return fused


class AcrossReposRetriever(BaseRetriever):
    """One retriever per repository (by name); their rankings fused, citations prefixed with the name."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retrievers: dict[str, BaseRetriever]
    k: int = Settings.model_fields["search_k"].default
    rrf_k: int = Settings.model_fields["rrf_k"].default

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self.batch([query], **kwargs)[0]

    def batch(
        self,
        inputs: Sequence[str],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[Document]]:
        """Search several queries in every repository; the queries are embedded once per embedding model."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        vectors: dict[tuple[str, int | None], np.ndarray] = {}
        per_repo: list[list[list[Document]]] = []
        for name, retriever in self.retrievers.items():
            if isinstance(retriever, CodeRetriever) and retriever.uses_vectors:
                embedding = retriever.index.generation.manifest.embedding
                key = (embedding.model, embedding.max_tokens)
                if key not in vectors:
                    vectors[key] = retriever.index.embed_queries(inputs)
                found = retriever.batch(list(inputs), configs, vectors=vectors[key], **kwargs)
            else:
                found = retriever.batch(list(inputs), configs, **kwargs)
            per_repo.append([[in_repo(d, name) for d in ranking] for ranking in found])
        k = int(kwargs.get("k", self.k))
        return [fuse_documents([rankings[i] for rankings in per_repo], k, rrf_k=self.rrf_k) for i in range(len(inputs))]
