"""Query embedding through ONNX Runtime: the embedding model exported once, locally, from its own weights.

One query is a batch of one, where torch's per-call overhead is most of the time: measured here
(docs/benchmarks.md "ONNX Runtime for query embedding") ONNX Runtime on one thread embeds a question
about twice as fast, with vectors equal to torch's (cosine 1.000000). Document batches stay on torch,
which is as fast or faster at batch 32. Nothing is downloaded: the export reads the sentence-transformers
model already loaded from its local folder, and is written once (atomically) under the data folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cairn.errors import EmbeddingModelUnavailable

log = logging.getLogger("cairn.embedder")

#: Bump when the exported graph changes shape, so an old export is not reused.
EXPORT_VERSION = 1
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_export_lock = threading.Lock()


def onnx_available() -> bool:
    """Return whether ONNX Runtime and the exporter's ``onnx`` package are installed (the ``onnx`` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _pooling(model_path: Path) -> dict[str, Any]:
    """Return the model's pooling configuration (sentence-transformers' ``1_Pooling/config.json``)."""
    modules = json.loads((model_path / "modules.json").read_text())
    pooling = next((m for m in modules if m["type"].endswith("Pooling")), None)
    if pooling is None:
        return {}
    return json.loads((model_path / pooling["path"] / "config.json").read_text())


class OnnxQueryEncoder:
    """Embed short texts (queries) with ONNX Runtime, mean-pooled and L2-normalised like the torch model."""

    def __init__(
        self, model: Any, model_path: Path, cache_dir: Path, *, threads: int = 1, quantized: bool = False
    ) -> None:
        import onnxruntime as ort

        pooling = _pooling(model_path)
        if not pooling.get("pooling_mode_mean_tokens", pooling.get("pooling_mode") == "mean"):
            raise EmbeddingModelUnavailable(
                f"The embedding model at {model_path} does not mean-pool its tokens; its ONNX export is not supported",
                "set CAIRN_EMBEDDING_BACKEND=torch",
            )
        self.max_length = int(model.max_seq_length)
        self._tokenizer = model.tokenizer
        path = export(model, model_path, cache_dir)
        if quantized:
            path = quantize_int8(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs: tuple[str, ...] = tuple(i.name for i in self._session.get_inputs())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return one L2-normalised float32 vector per text."""
        encoded = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        feeds = {name: np.asarray(encoded[name], dtype=np.int64) if name in encoded else np.zeros_like(ids)
                 for name in self._inputs}  # fmt: skip
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return vectors.astype(np.float32, copy=False)

    def encode_batches(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Embed many texts in batches (what ingest would do; measured against torch, not used by it)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.empty((len(texts), 0), dtype=np.float32)
        for begin in range(0, len(order), batch_size):
            ids = order[begin : begin + batch_size]
            vectors = self.encode([texts[i] for i in ids])
            if not out.shape[1]:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[ids] = vectors
        return out


def export(model: Any, model_path: Path, cache_dir: Path) -> Path:
    """Export the model's transformer to ONNX under ``cache_dir`` once, and return the file.

    Named by a hash of the model's weights and settings, so another model (or a changed one) gets
    its own file; written to a temporary file and renamed, so a crash or a second process racing
    this one never leaves a half-written export behind.
    """
    weights = sorted(p for p in model_path.rglob("*") if p.suffix in {".safetensors", ".bin"} and p.is_file())
    digest = hashlib.sha256(f"{EXPORT_VERSION}:{model.max_seq_length}".encode())
    for weight in weights:
        stat = weight.stat()
        digest.update(f"{weight.relative_to(model_path)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    target = cache_dir / f"{model_path.name}-{digest.hexdigest()[:16]}.onnx"
    if target.exists():
        return target
    with _export_lock:
        if target.exists():
            return target
        import torch

        cache_dir.mkdir(parents=True, exist_ok=True)
        transformer = model[0].auto_model.eval()

        class _LastHiddenState(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.transformer(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state

        sample = model.tokenizer(["def f(x): return x", "a longer sample text"], padding=True, return_tensors="pt")
        if "token_type_ids" not in sample:
            sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
        axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
        handle, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".onnx.tmp")
        os.close(handle)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
                torch.onnx.export(
                    _LastHiddenState(),
                    tuple(sample[name] for name in _INPUTS),
                    temporary,
                    input_names=list(_INPUTS),
                    output_names=["last_hidden_state"],
                    dynamic_axes=axes,
                    opset_version=17,
                    dynamo=False,
                )
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)
        log.info("exported the embedding model to ONNX: %s", target)
        return target


def quantize_int8(path: Path) -> Path:
    """Return the export with its weights dynamically quantized to int8 (written once beside it, atomically)."""
    target = path.with_name(path.stem + "-int8.onnx")
    if target.exists():
        return target
    with _export_lock:
        if target.exists():
            return target
        from onnxruntime.quantization import QuantType, quantize_dynamic

        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
        os.close(handle)
        try:
            quantize_dynamic(str(path), temporary, weight_type=QuantType.QInt8)
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)
        log.info("quantized the embedding model's ONNX export to int8: %s", target)
        return target
