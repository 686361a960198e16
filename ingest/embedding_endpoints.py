"""Embeddings from the servers users already run: OpenAI-compatible ``/v1/embeddings`` and Ollama's ``/api/embed``.

``CAIRN_EMBEDDING_MODEL`` takes the chat models' provider forms:

    openai-compatible/<model>@<base_url>   vLLM, TEI, llama.cpp's server (--embedding), Infinity, LiteLLM
    ollama/<model>[@<base_url>]            Ollama's native API (default http://127.0.0.1:11434)

An ``EndpointEmbedder`` is a ``TextEmbedder`` like the local model: it sends batches of at most
``batch_size`` texts, ``concurrency`` at a time, retries 429 and 5xx answers (and dropped connections)
with exponential backoff, honouring ``Retry-After``, and returns L2-normalised float32 vectors in input
order. A server that is down, a model it does not know, or a reply of the wrong shape is one
``EmbeddingModelUnavailable`` (exit 6) saying which and what to do; nothing is written before every
batch has come back, so a failed ingest leaves the previous generation serving.

What an index records is the model's identity, ``provider/model`` without the URL (``identity``): the
same model served from another address is the same index, another model or dimension is refused.
Query and document prefixes (``search_query: ``/``search_document: `` for nomic-embed, ``query: `` /
``passage: `` for E5, ...) are settings, with defaults for the known families (``default_prefixes``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from cairn.errors import EmbeddingModelUnavailable

log = logging.getLogger("cairn.embeddings")

PROVIDERS = ("openai-compatible", "ollama")
OLLAMA_URL = "http://127.0.0.1:11434"
#: Answers worth another try: rate limited, or the server's trouble rather than the request's.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

#: Prefixes the known embedding families were trained with: (query, document), by a part of the model name.
_FAMILY_PREFIXES: tuple[tuple[str, tuple[str, str]], ...] = (
    ("nomic-embed", ("search_query: ", "search_document: ")),
    ("coderankembed", ("Represent this query for searching relevant code: ", "")),
    ("e5-", ("query: ", "passage: ")),
    ("bge-", ("Represent this sentence for searching relevant passages: ", "")),
    ("mxbai-embed", ("Represent this sentence for searching relevant passages: ", "")),
    ("snowflake-arctic-embed", ("Represent this sentence for searching relevant passages: ", "")),
)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """A parsed embedding endpoint setting: provider, model name and base URL."""

    provider: str
    model: str
    base_url: str

    @property
    def identity(self) -> str:
        """What an index records: the provider and model, not where they are served."""
        return f"{self.provider}/{self.model}"


def parse_endpoint(name: str) -> EndpointSpec | None:
    """Return the endpoint an embedding model setting names, or None for a local model (bundled or a folder)."""
    provider, sep, rest = name.strip().partition("/")
    if not sep or provider not in PROVIDERS:
        return None
    model, _at, base_url = rest.partition("@")
    if not model:
        raise EmbeddingModelUnavailable(
            f"Embedding model setting {name!r} names no model", f"e.g. '{provider}/nomic-embed-text@URL'"
        )
    if provider == "openai-compatible" and not base_url:
        raise EmbeddingModelUnavailable(
            f"Embedding model setting {name!r} has no endpoint",
            "append @<base_url>, e.g. openai-compatible/bge-small@http://127.0.0.1:7997/v1",
        )
    return EndpointSpec(provider, model, (base_url or OLLAMA_URL).rstrip("/"))


_USERINFO = re.compile(r"//[^/@\s]+@")


def shown(text: str) -> str:
    """A URL (or a message holding one) without the user and password it may carry: ``//***@host``."""
    return _USERINFO.sub("//***@", text)


def identity(name: str) -> str:
    """The embedding model an index records for a setting: ``provider/model`` for an endpoint, else the setting."""
    spec = parse_endpoint(name)
    return spec.identity if spec is not None else name


def default_prefixes(model: str) -> tuple[str, str]:
    """The (query, document) prefixes a known embedding family expects; none for others."""
    lowered = model.lower()
    for part, prefixes in _FAMILY_PREFIXES:
        if part in lowered:
            return prefixes
    return "", ""


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    """How to talk to an embedding endpoint (hashable: a process keeps one client per model and options)."""

    api_key: str | None = None
    batch_size: int = 32
    concurrency: int = 4
    timeout: float = 60.0
    query_prefix: str | None = None
    document_prefix: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> EndpointOptions:
        """The CAIRN_EMBEDDING_* settings that concern an endpoint."""
        key = settings.embedding_api_key
        return cls(
            api_key=key.get_secret_value() if key is not None else None,
            batch_size=settings.embedding_batch_size,
            concurrency=settings.embedding_concurrency,
            timeout=settings.embedding_timeout,
            query_prefix=settings.embedding_query_prefix,
            document_prefix=settings.embedding_document_prefix,
        )


def _pooled(row: Any) -> Any:
    if isinstance(row, list) and row and isinstance(row[0], list):
        return np.asarray(row, dtype=np.float32).mean(axis=0)
    return row


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32, copy=False)


class EndpointEmbedder:
    """A ``TextEmbedder`` whose vectors come from an embedding server (see the module's docstring)."""

    def __init__(
        self,
        spec: EndpointSpec,
        *,
        api_key: str | None = None,
        max_tokens: int = 512,
        batch_size: int = 32,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.spec = spec
        self.model_name = spec.identity
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        self.retries = retries
        self.backoff = backoff
        family_query, family_document = default_prefixes(spec.model)
        self.query_prefix = family_query if query_prefix is None else query_prefix
        self.document_prefix = family_document if document_prefix is None else document_prefix
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=timeout,
            headers=headers,
            transport=transport,
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )
        # The dimension is the server's: asked once now, so a server that is down fails before any work
        # (one try: a service's requests should not wait out the backoff for a server that is not there).
        try:
            self.dimension = int(self._embed([f"{self.query_prefix}dimension probe"], retries=0)[0].shape[0])
        except BaseException:
            self._client.close()
            raise

    # ------------------------------------------------------------ TextEmbedder

    def embed_documents(
        self, texts: Sequence[str], *, batch_size: int | None = None, on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Embed chunks: batches of ``batch_size`` (this endpoint's when unset), ``concurrency`` in flight."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        size = min(batch_size or self.batch_size, self.batch_size)
        # Longest first, as sentence-transformers' encode does: a batch of like lengths pads least.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        batches = [[self.document_prefix + texts[i] for i in order[b : b + size]] for b in range(0, len(order), size)]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="cairn-embed") as pool:
            done = 0
            for vectors in pool.map(self._embed, batches):  # in order; the first failure stops the rest
                out[order[done : done + len(vectors)]] = vectors
                done += len(vectors)
                if on_batch is not None:
                    on_batch(len(vectors))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self.query_prefix + text])[0]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._embed([self.query_prefix + t for t in texts])

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------ one request

    def _request(self, texts: list[str]) -> tuple[str, dict[str, Any]]:
        if self.spec.provider == "ollama":
            # truncate: a chunk longer than the model's window is cut by the server, and said so here
            # (num_ctx set to what Cairn reads); without it Ollama answers 400 for a long chunk.
            body = {"model": self.spec.model, "input": texts, "truncate": True,
                    "options": {"num_ctx": self.max_tokens}}  # fmt: skip
            return f"{self.spec.base_url}/api/embed", body
        body = {"model": self.spec.model, "input": texts, "encoding_format": "float"}
        return f"{self.spec.base_url}/embeddings", body

    def _embed(self, texts: list[str], retries: int | None = None) -> np.ndarray:
        url, body = self._request(texts)
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                response = self._client.post(url, json=body)
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise self._unreachable(exc) from exc
                self._wait(attempt, None)
                continue
            if response.status_code in RETRY_STATUSES and attempt < retries:
                log.warning("embedding endpoint %s answered %s; retrying", shown(url), response.status_code)
                self._wait(attempt, response.headers.get("retry-after"))
                continue
            return self._vectors(response, len(texts))
        raise AssertionError("unreachable")  # pragma: no cover: the loop returns or raises

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2**attempt
        if retry_after:
            with contextlib.suppress(ValueError):  # an HTTP date instead of seconds: the backoff's delay
                delay = max(delay, min(float(retry_after), 30.0))
        time.sleep(delay)

    def _vectors(self, response: httpx.Response, expected: int) -> np.ndarray:
        where = f"{self.spec.provider} embedding endpoint {shown(self.spec.base_url)}"
        if response.status_code in (404, 400) and self.spec.model.lower() in response.text.lower():
            raise EmbeddingModelUnavailable(
                f"The {where} does not serve the model {self.spec.model!r} ({response.status_code}: "
                f"{response.text[:200].strip()})",
                "check the model's name on the server (its /v1/models, or 'ollama list'), or pull it",
            )
        if response.status_code >= 400:
            raise EmbeddingModelUnavailable(
                f"The {where} answered {response.status_code}: {response.text[:200].strip()}",
                "check the server's log; set CAIRN_EMBEDDING_API_KEY if it needs a key",
            )
        try:
            data = response.json()
            if self.spec.provider == "ollama":
                rows = data["embeddings"]
            else:
                rows = [item["embedding"] for item in sorted(data["data"], key=lambda item: item.get("index", 0))]
            # One vector per token (llama-cpp-python's server on a model without a pooling layer): their mean.
            vectors = np.asarray([_pooled(row) for row in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingModelUnavailable(
                f"The {where} answered with something other than embeddings: {response.text[:200].strip()}",
                f"point CAIRN_EMBEDDING_MODEL at an embedding endpoint ({self.spec.provider})",
            ) from exc
        if vectors.ndim != 2 or len(vectors) != expected:
            raise EmbeddingModelUnavailable(
                f"The {where} returned {len(vectors)} embeddings for {expected} texts",
                "check that the server is an embedding server for this model",
            )
        dimension = getattr(self, "dimension", None)
        if dimension is not None and vectors.shape[1] != dimension:
            raise EmbeddingModelUnavailable(
                f"The {where} changed its embedding dimension ({dimension} → {vectors.shape[1]})",
                "the model behind the endpoint changed: re-ingest with --rebuild",
            )
        return _normalised(vectors)

    def _unreachable(self, exc: Exception) -> EmbeddingModelUnavailable:
        return EmbeddingModelUnavailable(
            f"The {self.spec.provider} embedding endpoint {shown(self.spec.base_url)} cannot be reached "
            f"({type(exc).__name__}: {exc})",
            "start the embedding server, or fix the URL in CAIRN_EMBEDDING_MODEL",
        )
