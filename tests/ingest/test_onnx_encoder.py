"""CAIRN_EMBEDDING_BACKEND=onnx: queries embedded by ONNX Runtime equal torch's, from a local, atomic, cached export."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from cairn.errors import EmbeddingModelUnavailable
from config import Settings
from ingest import onnx_encoder
from ingest.embedder import Embedder, resolve_model_path
from retrievers import SearchIndex, load_search_index

pytestmark = pytest.mark.integration

QUESTIONS = [
    "How does the LRU cache evict its oldest entry?",
    "x",
    "def put(self, key, value):\n    self.items[key] = value\n" * 40,  # longer than 128 word-pieces: truncated
]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def onnx_embedder(onnx_dir: Path) -> Embedder:
    return Embedder("all-MiniLM-L6-v2", max_tokens=128, backend="onnx", onnx_dir=onnx_dir)


def test_onnx_queries_embed_as_torch_does(onnx_embedder: Embedder, real_embedder: Embedder) -> None:
    for question in QUESTIONS:
        assert float(np.dot(onnx_embedder.embed_query(question), real_embedder.embed_query(question))) > 0.9999
    together = onnx_embedder.embed_queries(QUESTIONS)
    assert together.shape == (3, 384) and together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(together * real_embedder.embed_queries(QUESTIONS), axis=1)) > 0.9999


def test_the_export_is_written_once_and_reused(onnx_embedder: Embedder, onnx_dir: Path) -> None:
    [exported] = list(onnx_dir.glob("*.onnx"))
    written = exported.stat().st_mtime_ns
    Embedder("all-MiniLM-L6-v2", max_tokens=128, backend="onnx", onnx_dir=onnx_dir)
    assert sorted(p.name for p in onnx_dir.iterdir()) == [exported.name, f"{exported.name}.checked"]
    assert exported.stat().st_mtime_ns == written


def test_a_checked_export_embeds_queries_without_torch(onnx_embedder: Embedder, onnx_dir: Path, real_embedder) -> None:
    """A worker that only answers questions never loads torch or the model (RSS), and embeds the same."""
    import subprocess
    import sys

    assert onnx_embedder.backend == "onnx"  # the first one exported, checked against torch, and marked it
    code = f"""
import json, sys
from ingest.embedder import Embedder
embedder = Embedder("all-MiniLM-L6-v2", max_tokens=128, backend="auto", onnx_dir={str(onnx_dir)!r})
vectors = embedder.embed_queries(json.loads(sys.argv[1]))
print(json.dumps({{"torch": "torch" in sys.modules, "sentence_transformers": "sentence_transformers" in sys.modules,
                   "onnx": "onnx" in sys.modules,
                   "backend": embedder.backend, "dimension": embedder.dimension, "vectors": vectors.tolist()}}))
"""
    import json

    questions = [*QUESTIONS, "", "naïve Unicode — café"]
    out = subprocess.run([sys.executable, "-c", code, json.dumps(questions)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False and result["sentence_transformers"] is False
    assert result["onnx"] is False  # the exporter's package (0.85 s to import) is not needed to run the export
    assert result["backend"] == "onnx" and result["dimension"] == 384
    expected = real_embedder.embed_queries(questions)
    assert np.min(np.sum(np.asarray(result["vectors"], dtype=np.float32) * expected, axis=1)) > 0.9999
    # documents still go through the model, loaded when they come
    light = Embedder("all-MiniLM-L6-v2", max_tokens=128, backend="onnx", onnx_dir=onnx_dir)
    assert light._loaded is None
    documents = light.embed_documents(["def f(x):\n    return x"])
    assert light._loaded is not None
    assert float(np.dot(documents[0], real_embedder.embed_documents(["def f(x):\n    return x"])[0])) > 0.9999


def test_processes_racing_to_export_leave_one_whole_file(tmp_path: Path, real_embedder: Embedder) -> None:
    model, path = real_embedder._model, resolve_model_path("all-MiniLM-L6-v2")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(onnx_encoder.export(model, path, tmp_path))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and [p.name for p in tmp_path.iterdir()] == [results[0].name]


def test_a_search_through_the_settings_finds_what_torch_finds(sample_index: SearchIndex, tmp_path: Path) -> None:
    settings = Settings(index_dir=sample_index.generation.path.parent, data_dir=tmp_path, embedding_backend="onnx")
    index = load_search_index(settings)
    # the default, "auto", picks ONNX Runtime when it is installed, exported into the model's own folder
    assert Settings().embedding_backend == "auto" and index.embedder.backend == "onnx"
    assert list((resolve_model_path("all-MiniLM-L6-v2") / "onnx").glob("*.onnx"))
    for question in [QUESTIONS[0], "where are records checksummed?"]:
        assert [h.row for h in index.hybrid(question, 5)] == [h.row for h in sample_index.hybrid(question, 5)]


def test_without_onnx_runtime_the_error_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(onnx_encoder, "onnx_available", lambda: False)
    with pytest.raises(EmbeddingModelUnavailable) as raised:
        Embedder("all-MiniLM-L6-v2", backend="onnx", onnx_dir=tmp_path)
    assert "onnxruntime" in raised.value.message and "CAIRN_EMBEDDING_BACKEND=torch" in raised.value.hint
    with pytest.raises(EmbeddingModelUnavailable, match="Unknown embedding backend"):
        Embedder("all-MiniLM-L6-v2", backend="tensorflow")
    # "auto" falls back to torch rather than failing
    assert Embedder("all-MiniLM-L6-v2", backend="auto", onnx_dir=tmp_path).backend == "torch"


def test_a_read_only_model_folder_exports_into_the_fallback_folder(monkeypatch, tmp_path: Path) -> None:
    import ingest.embedder

    monkeypatch.setattr(ingest.embedder.os, "access", lambda path, mode: False)
    embedder = Embedder("all-MiniLM-L6-v2", backend="onnx", onnx_fallback_dir=tmp_path / "fallback")
    assert embedder.backend == "onnx" and list((tmp_path / "fallback").glob("*.onnx"))
