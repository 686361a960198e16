"""Fixtures shared by the test suite: sample repositories, a fake and the real embedding model."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from cairn.processes import free_port
from config import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_REPO = ROOT / "examples" / "sample-repo"


class FakeEmbedder:
    """Deterministic 16-dim vectors from a hash of the text; records what it was asked to embed."""

    dimension = 16

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def _vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        vector = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
        return vector / np.linalg.norm(vector)

    def embed_documents(
        self, texts: Sequence[str], *, batch_size: int = 32, on_batch: Callable[[int], None] | None = None
    ) -> np.ndarray:
        self.embedded.extend(texts)
        if on_batch:
            on_batch(len(texts))
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, 16), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)


@pytest.fixture
def fake_models() -> Iterator[Callable[..., None]]:
    """Register chat-model providers for one test (``register(provider, name="fake")``); removed after it."""
    from models import PROVIDERS, clear_model_caches

    with contextlib.ExitStack() as stack:

        def register(provider: Callable, name: str = "fake") -> None:
            stack.enter_context(PROVIDERS.registered(name, provider))
            clear_model_caches()

        yield register
    clear_model_caches()


@pytest.fixture(scope="session")
def _span_exporter():
    """An in-memory exporter on the process's tracer provider (installed once, as the service does)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cairn import telemetry

    exporter = InMemorySpanExporter()
    telemetry.configure().add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans(_span_exporter):
    """The spans finished during one test (``spans.get_finished_spans()``)."""
    _span_exporter.clear()
    yield _span_exporter
    _span_exporter.clear()


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def sample_repo(tmp_path: Path) -> Path:
    """Return a private copy of the bundled sample repository that a test may modify."""
    target = tmp_path / "repo"
    shutil.copytree(SAMPLE_REPO, target)
    return target


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "index")


@pytest.fixture(scope="session")
def real_embedder():
    """The bundled all-MiniLM-L6-v2, loaded once for the whole session."""
    from ingest.embedder import Embedder

    return Embedder("all-MiniLM-L6-v2", max_tokens=128)


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory, real_embedder):
    """The sample repository ingested with the real embedding model, and its SearchIndex."""
    from ingest.pipeline import ingest_repository
    from ingest.store import open_generation
    from retrievers import SearchIndex

    base = tmp_path_factory.mktemp("sample-index")
    settings = Settings(data_dir=base / "data", index_dir=base / "index")
    ingest_repository(SAMPLE_REPO, settings, embedder_factory=lambda: real_embedder)
    return SearchIndex(open_generation(settings.resolved_index_dir), real_embedder)


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory):
    """The real llama.cpp server on the bundled SmolLM2-135M, on a free loopback port, for the session."""
    from models.embedded import EmbeddedServer, is_serving

    settings = Settings(data_dir=tmp_path_factory.mktemp("llama"), embedded_port=free_port())
    server = EmbeddedServer(settings)
    server.start(timeout=120)
    yield server
    server.stop()
    assert not is_serving(settings)
