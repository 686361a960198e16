"""Query embedding through ONNX Runtime: the embedding model exported once, locally, from its own weights.

One query is a batch of one, where torch's per-call overhead is most of the time: measured here
(docs/benchmarks.md "ONNX Runtime for query embedding") ONNX Runtime on one thread embeds a question
about twice as fast, with vectors equal to torch's (cosine 1.000000). Document batches stay on torch,
which is as fast or faster at batch 32. Nothing is downloaded: the export reads the sentence-transformers
model already loaded from its local folder, and is written once (atomically) under the data folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
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
    """Return whether ONNX Runtime loads and the exporter's ``onnx`` package is installed (the ``onnx`` extra).

    ONNX Runtime is imported (queries need it, and a build that cannot load must fall back to torch);
    ``onnx`` is only looked for: importing it takes 0.85 s here (its ``ml_dtypes``), and only an export
    needs it, never a worker that embeds questions on a checked export.
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return importlib.util.find_spec("onnx") is not None


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
        pooling = _pooling(model_path)
        if not pooling.get("pooling_mode_mean_tokens", pooling.get("pooling_mode") == "mean"):
            raise EmbeddingModelUnavailable(
                f"The embedding model at {model_path} does not mean-pool its tokens; its ONNX export is not supported",
                "set CAIRN_EMBEDDING_BACKEND=torch",
            )
        self.max_length = int(model.max_seq_length)
        tokenizer = model.tokenizer
        self._tokenize: Callable[[list[str]], dict[str, np.ndarray]] = lambda texts: dict(
            tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        )
        self.path = export(model, model_path, cache_dir)
        self.dimension = int(
            (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
        )
        self._start(quantize_int8(self.path) if quantized else self.path, threads)

    @classmethod
    def from_checked_export(
        cls, model_path: Path, cache_dir: Path, max_tokens: int, *, threads: int = 1
    ) -> OnnxQueryEncoder | None:
        """Return an encoder on an export already checked against torch, without torch; None if there is none.

        The tokenizer is the model's own ``tokenizer.json`` run by the ``tokenizers`` library (what the
        transformers fast tokenizer runs underneath), truncating and padding as sentence-transformers does;
        the check (``mark_checked``) also proved it cuts texts as the transformers tokenizer does, for these
        very tokenizer files.
        """
        light = _light_tokenizer(model_path, max_tokens)
        if light is None:
            return None
        tokenize, max_length, dimension = light
        path = export_path(model_path, cache_dir, max_length)
        try:
            checked = json.loads(_checked(path).read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            return None
        if checked.get("tokenizer") != _tokenizer_digest(model_path):
            return None
        encoder = cls.__new__(cls)
        encoder.max_length, encoder._tokenize, encoder.path, encoder.dimension = max_length, tokenize, path, dimension
        encoder._start(path, threads)
        return encoder

    def _start(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs: tuple[str, ...] = tuple(i.name for i in self._session.get_inputs())

    def mark_checked(self, agreement: float, model_path: Path, probe: list[str]) -> None:
        """Record that this export embeds as torch does, so later processes may use it without torch.

        Only when the tokenizer run without transformers gives the ids, masks and types this one gives
        for ``probe`` (truncated and padded texts among them); the record names the tokenizer files.
        """
        light = _light_tokenizer(model_path, self.max_length)
        if light is None:
            return
        ours, theirs = self._tokenize(probe), light[0](probe)
        if any(not np.array_equal(np.asarray(ours[name]), theirs[name]) for name in theirs if name in ours):
            log.info("the tokenizer without transformers cuts texts differently: queries keep loading the model")
            return
        record = {"cosine": round(agreement, 6), "tokenizer": _tokenizer_digest(model_path)}
        with contextlib.suppress(OSError):  # a read-only folder: later processes check again
            _checked(self.path).write_text(json.dumps(record))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return one L2-normalised float32 vector per text."""
        encoded = self._tokenize(list(texts))
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


def export_path(model_path: Path, cache_dir: Path, max_length: int) -> Path:
    """Return where the export of a model (its weights as they are now, and ``max_length``) is kept."""
    weights = sorted(p for p in model_path.rglob("*") if p.suffix in {".safetensors", ".bin"} and p.is_file())
    digest = hashlib.sha256(f"{EXPORT_VERSION}:{max_length}".encode())
    for weight in weights:
        stat = weight.stat()
        digest.update(f"{weight.relative_to(model_path)}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return cache_dir / f"{model_path.name}-{digest.hexdigest()[:16]}.onnx"


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "sentence_bert_config.json")


def _tokenizer_digest(model_path: Path) -> str:
    """Return a digest of the files that decide how a text is cut into tokens."""
    digest = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        with contextlib.suppress(OSError):
            digest.update(name.encode() + (model_path / name).read_bytes())
    return digest.hexdigest()[:16]


def _light_tokenizer(
    model_path: Path, max_tokens: int
) -> tuple[Callable[[list[str]], dict[str, np.ndarray]], int, int] | None:
    """Return (tokenize, max length, dimension) run by the ``tokenizers`` library alone, or None if unsure."""
    try:
        config = json.loads((model_path / "sentence_bert_config.json").read_text())
        pooling = _pooling(model_path)
        special = json.loads((model_path / "special_tokens_map.json").read_text())
        settings = json.loads((model_path / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    native = config.get("max_seq_length")
    if (
        not native
        or not pooling.get("pooling_mode_mean_tokens")
        or not pooling.get("word_embedding_dimension")
        or settings.get("padding_side", "right") != "right"
        or settings.get("truncation_side", "right") != "right"
        or not (model_path / "tokenizer.json").is_file()
    ):
        return None  # fmt: skip
    from tokenizers import Tokenizer

    max_length = min(int(max_tokens), int(native))
    pad = special.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    if pad is None or tokenizer.token_to_id(pad) is None:
        return None
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad)

    def tokenize(texts: list[str]) -> dict[str, np.ndarray]:
        encoded = tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64),
        }

    return tokenize, max_length, int(pooling["word_embedding_dimension"])


def _checked(path: Path) -> Path:
    """Return the file saying an export was checked against torch (``mark_checked``)."""
    return path.with_name(path.name + ".checked")


def export(model: Any, model_path: Path, cache_dir: Path) -> Path:
    """Export the model's transformer to ONNX under ``cache_dir`` once, and return the file.

    Named by a hash of the model's weights and settings, so another model (or a changed one) gets
    its own file; written to a temporary file and renamed, so a crash or a second process racing
    this one never leaves a half-written export behind.
    """
    target = export_path(model_path, cache_dir, int(model.max_seq_length))
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
