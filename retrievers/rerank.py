"""Reranking, opt-in: a cross-encoder scores the fused ranking's top N against the query.

``CAIRN_RERANK_MODEL`` names the reranker:

    openai-compatible/<model>@<base_url>   a rerank endpoint: llama.cpp's server (--reranking), vLLM, TEI,
                                           Infinity, Jina or Cohere's request shape (POST <base_url>/rerank)
    <folder>                               a local sentence-transformers CrossEncoder folder

No reranker weights ship offline, so it is off unless a setting (``CAIRN_RERANK``) or ``cairn search
--rerank`` turns it on. A reranker that fails (an endpoint down, an answer of the wrong shape) never
fails the search: the fused order stands and the caller gets a warning to show (``Reranked.warning``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import httpx
from langchain_core.documents import Document

from cairn.errors import RerankUnavailable

log = logging.getLogger("cairn.rerank")

#: Documents of the fused ranking the reranker reads (CAIRN_RERANK_TOP_N's default).
TOP_N = 30


class Reranker(Protocol):
    """What reranking needs: a relevance score per text for a query, higher is better."""

    def scores(self, query: str, texts: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True, slots=True)
class Reranked:
    """The documents in their new order, and a warning when the reranker failed (the fused order kept)."""

    documents: list[Document]
    warning: str | None = None


class EndpointReranker:
    """Scores from a rerank endpoint (``POST <base_url>/rerank``, Jina/Cohere's request shape)."""

    def __init__(self, model: str, base_url: str, *, api_key: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        self.model, self.url = model, f"{base_url.rstrip('/')}/rerank"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        body = {"model": self.model, "query": query, "documents": list(texts), "top_n": len(texts),
                "return_documents": False}  # fmt: skip
        try:
            response = self._client.post(self.url, json=body)
        except httpx.TransportError as exc:
            raise RerankUnavailable(f"The rerank endpoint {self.url} cannot be reached ({exc})",
                                    "start the reranker, or unset CAIRN_RERANK") from exc  # fmt: skip
        if response.status_code >= 400:
            raise RerankUnavailable(f"The rerank endpoint {self.url} answered {response.status_code}: "
                                    f"{response.text[:200].strip()}", "check the reranker's log")  # fmt: skip
        try:
            data = response.json()
            # Jina, Cohere, Infinity, llama.cpp, vLLM: {"results": [{index, relevance_score}]}; TEI: [{index, score}]
            rows = data["results"] if isinstance(data, dict) else data
            found = {int(row["index"]): float(row.get("relevance_score", row.get("score"))) for row in rows}
        except (ValueError, KeyError, TypeError) as exc:
            raise RerankUnavailable(f"The rerank endpoint {self.url} answered with something other than scores",
                                    "point CAIRN_RERANK_MODEL at a rerank endpoint") from exc  # fmt: skip
        if set(found) != set(range(len(texts))):
            raise RerankUnavailable(f"The rerank endpoint {self.url} scored {len(found)} of {len(texts)} documents",
                                    "check that the server reranks with this model")  # fmt: skip
        return [found[i] for i in range(len(texts))]


class CrossEncoderReranker:
    """Scores from a local sentence-transformers CrossEncoder folder (nothing is downloaded)."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        from sentence_transformers import CrossEncoder

        try:
            self._model: Any = CrossEncoder(str(folder), device=device, local_files_only=True)
        except Exception as exc:  # the library raises many kinds; all mean the same to a user
            raise RerankUnavailable(f"Could not load the reranker at {folder}: {exc}",
                                    "point CAIRN_RERANK_MODEL at a CrossEncoder folder") from exc  # fmt: skip

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        return [float(score) for score in self._model.predict([(query, text) for text in texts])]


@lru_cache(maxsize=4)
def make_reranker(spec: str, api_key: str | None = None, timeout: float = 30.0) -> Reranker:
    """The reranker a setting names (an endpoint, or a CrossEncoder folder); loaded once per process."""
    provider, sep, rest = spec.partition("/")
    if sep and provider == "openai-compatible":
        model, at, base_url = rest.partition("@")
        if not model or not at or not base_url:
            raise RerankUnavailable(f"Rerank setting {spec!r} is not openai-compatible/<model>@<base_url>",
                                    "e.g. openai-compatible/bge-reranker-v2-m3@http://127.0.0.1:7997")  # fmt: skip
        return EndpointReranker(model, base_url, api_key=api_key, timeout=timeout)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return CrossEncoderReranker(folder)
    raise RerankUnavailable(f"Reranker {spec!r} is neither a rerank endpoint nor a local folder",
                            "set CAIRN_RERANK_MODEL to openai-compatible/<model>@<base_url> or a folder")  # fmt: skip


def rerank(
    reranker: Reranker | None, query: str, documents: Sequence[Document], *, k: int, top_n: int = TOP_N
) -> Reranked:
    """Reorder the first ``top_n`` documents by the reranker's scores and return the first ``k``.

    Each reranked document gets ``rerank_score`` and its new ``rank``; the rest keep their fused order
    behind them. A failing reranker leaves the order as it was, with the warning.
    """
    head, tail = list(documents[:top_n]), list(documents[top_n:])
    if reranker is None or not head:
        return Reranked(list(documents[:k]))
    try:
        scores = reranker.scores(query, [d.page_content for d in head])
    except RerankUnavailable as exc:
        log.warning("rerank skipped: %s", exc.message)
        return Reranked(list(documents[:k]), f"not reranked: {exc.message}")
    except Exception as exc:  # a model's own failure (CrossEncoder.predict, a broken answer): never the search's
        log.warning("rerank skipped: %s: %s", type(exc).__name__, exc)
        return Reranked(list(documents[:k]), f"not reranked: the reranker failed ({type(exc).__name__}: {exc})")
    order = sorted(range(len(head)), key=lambda i: -scores[i])
    ranked = []
    for rank, i in enumerate(order, start=1):
        document = head[i]
        metadata = {**document.metadata, "rerank_score": round(scores[i], 6), "rank": rank}
        ranked.append(Document(page_content=document.page_content, metadata=metadata))
    return Reranked([*ranked, *tail][:k])


def rerank_with(
    spec: str, api_key: str | None, query: str, documents: Sequence[Document], *, k: int, top_n: int = TOP_N
) -> Reranked:
    """``rerank`` with the reranker a setting names; one that cannot be loaded leaves the order, with the warning."""
    try:
        reranker = make_reranker(spec, api_key)
    except RerankUnavailable as exc:
        return Reranked(list(documents[:k]), f"not reranked: {exc.message}")
    return rerank(reranker, query, documents, k=k, top_n=top_n)
