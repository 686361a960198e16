"""Embeddings from endpoints: request shapes, batching, retries, errors; a real llama.cpp server end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from cairn.errors import EmbeddingModelMismatch, EmbeddingModelUnavailable
from config import Settings
from ingest.embedding_endpoints import (
    EndpointEmbedder,
    EndpointSpec,
    default_prefixes,
    identity,
    parse_endpoint,
)
from tests.conftest import ROOT, SAMPLE_REPO, free_port

DIM = 4


def _vector(text: str) -> list[float]:
    """A deterministic vector of a text: a server's answer, known in advance."""
    seed = sum(map(ord, text)) % 97
    return [float(seed + i) for i in range(DIM)]


class FakeServer:
    """An httpx transport answering like an OpenAI-compatible or Ollama server, recording each request."""

    def __init__(self, failures: list[int] | None = None, retry_after: str | None = None) -> None:
        self.requests: list[dict] = []
        self.failures = list(failures or [])
        self.retry_after = retry_after

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append({"url": str(request.url), "body": body, "auth": request.headers.get("authorization")})
        if self.failures:
            headers = {"retry-after": self.retry_after} if self.retry_after else {}
            return httpx.Response(self.failures.pop(0), text="busy", headers=headers)
        if request.url.path.endswith("/api/embed"):
            return httpx.Response(200, json={"embeddings": [_vector(t) for t in body["input"]]})
        data = [{"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(body["input"])]
        return httpx.Response(200, json={"object": "list", "data": list(reversed(data))})  # any order, by index


def _embedder(spec: str, server: FakeServer, **options) -> EndpointEmbedder:
    parsed = parse_endpoint(spec)
    assert parsed is not None
    return EndpointEmbedder(parsed, transport=httpx.MockTransport(server), backoff=0.001, **options)


def test_settings_name_endpoints_and_indexes_record_the_model_not_the_address() -> None:
    assert parse_endpoint("all-MiniLM-L6-v2") is None and parse_endpoint("/models/bge-small") is None
    assert parse_endpoint("openai-compatible/bge-small@http://h:7997/v1/") == EndpointSpec(
        "openai-compatible", "bge-small", "http://h:7997/v1"
    )
    assert parse_endpoint("ollama/nomic-embed-text") == EndpointSpec(
        "ollama", "nomic-embed-text", "http://127.0.0.1:11434"
    )
    assert identity("ollama/nomic-embed-text@http://gpu:11434") == "ollama/nomic-embed-text"
    assert identity("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    with pytest.raises(EmbeddingModelUnavailable, match="has no endpoint"):
        parse_endpoint("openai-compatible/bge-small")


def test_known_families_get_their_prefixes() -> None:
    assert default_prefixes("nomic-embed-text:v1.5") == ("search_query: ", "search_document: ")
    assert default_prefixes("intfloat/e5-small-v2") == ("query: ", "passage: ")
    assert default_prefixes("all-MiniLM-L6-v2") == ("", "")


def test_openai_compatible_batches_in_order_with_the_key_and_prefixes() -> None:
    server = FakeServer()
    embedder = _embedder("openai-compatible/nomic-embed-text@http://h/v1", server, api_key="sk-1", batch_size=2)
    assert embedder.dimension == DIM and embedder.model_name == "openai-compatible/nomic-embed-text"
    texts = [f"chunk {i}" for i in range(5)]
    seen: list[int] = []
    vectors = embedder.embed_documents(texts, batch_size=64, on_batch=seen.append)
    expected = np.asarray([_vector(f"search_document: {t}") for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-6)  # normalised, in input order
    batches = [r["body"]["input"] for r in server.requests[1:]]
    assert [len(b) for b in batches] == [2, 2, 1] and seen == [2, 2, 1]  # the endpoint's batch size wins
    assert all(r["url"] == "http://h/v1/embeddings" and r["auth"] == "Bearer sk-1" for r in server.requests)
    assert server.requests[1]["body"]["input"][0] == "search_document: chunk 0"
    embedder.embed_query("where is the cache?")
    assert server.requests[-1]["body"]["input"] == ["search_query: where is the cache?"]


def test_ollama_is_asked_to_truncate_at_what_cairn_reads() -> None:
    server = FakeServer()
    embedder = _embedder("ollama/nomic-embed-text@http://o:11434", server, max_tokens=256)
    embedder.embed_documents(["a", "b"])
    request = server.requests[-1]
    assert request["url"] == "http://o:11434/api/embed"
    assert request["body"] == {"model": "nomic-embed-text", "input": ["search_document: a", "search_document: b"],
                               "truncate": True, "options": {"num_ctx": 256}}  # fmt: skip


def test_429_and_5xx_are_retried_honouring_retry_after() -> None:
    server = FakeServer(retry_after="0.01")
    embedder = _embedder("openai-compatible/m@http://h/v1", server)
    server.failures = [429, 503]
    assert embedder.embed_documents(["a"]).shape == (1, DIM) and len(server.requests) == 4  # probe, 2 refused, 1


def test_the_dimension_probe_is_one_try() -> None:
    """A server that is down fails at once: a service's requests do not wait out the backoff at start."""
    server = FakeServer(failures=[503])
    with pytest.raises(EmbeddingModelUnavailable, match="answered 503"):
        _embedder("openai-compatible/m@http://h/v1", server)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(404, text='{"error": "model \\"missing-model\\" not found"}'), "does not serve the model"),
        (httpx.Response(401, text="unauthorized"), "answered 401"),
        (httpx.Response(200, json={"choices": []}), "something other than embeddings"),
        (httpx.Response(503, text="down"), "answered 503"),  # after the retries
    ],
)
def test_a_bad_answer_is_one_clear_error(answer: httpx.Response, message: str) -> None:
    spec = EndpointSpec("openai-compatible", "missing-model", "http://h/v1")
    with pytest.raises(EmbeddingModelUnavailable, match=message) as caught:
        EndpointEmbedder(spec, transport=httpx.MockTransport(lambda request: answer), retries=1, backoff=0.001)
    assert caught.value.hint


def test_an_endpoint_that_is_down_is_named() -> None:
    spec = EndpointSpec("openai-compatible", "m", f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(EmbeddingModelUnavailable, match="cannot be reached") as caught:
        EndpointEmbedder(spec, retries=1, backoff=0.001)
    assert "start the embedding server" in caught.value.hint


def test_cairn_ingest_against_a_down_endpoint_exits_6_and_writes_nothing(tmp_path: Path) -> None:
    env = {"CAIRN_EMBEDDING_MODEL": f"openai-compatible/m@http://127.0.0.1:{free_port()}/v1",
           "CAIRN_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "cli", "ingest", str(SAMPLE_REPO)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert "cannot be reached" in done.stderr and "hint:" in done.stderr
    assert not any(tmp_path.rglob("manifest.json"))  # no generation written


def test_a_query_vector_of_another_dimension_is_refused_not_a_faiss_crash(sample_index) -> None:
    import numpy as np

    with pytest.raises(EmbeddingModelMismatch, match="8-dimensional vectors; the index holds 384"):
        sample_index.dense_by_vector(np.ones(8, dtype=np.float32), k=3)


# ---------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def llama_embeddings() -> Iterator[str]:
    """llama-cpp-python's server with --embedding on the bundled SmolLM2 GGUF (one vector per token: pooled here)."""
    from models.embedded import bundled_gguf

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--embedding", "true", "--n_threads", "1", "--n_ctx", "512"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(10)


@pytest.mark.integration
def test_ingest_and_search_through_a_real_llama_cpp_embedding_server(llama_embeddings: str, tmp_path: Path) -> None:
    from ingest.pipeline import ingest_repository
    from retrievers import IndexSpec, load_search_index, make_retriever

    model = f"openai-compatible/smollm2@{llama_embeddings}"
    settings = Settings(_env_file=None, data_dir=tmp_path, index_dir=tmp_path / "index", embedding_model=model,
                        embedding_concurrency=2, embedding_batch_size=8)  # fmt: skip
    result = ingest_repository(SAMPLE_REPO, settings)
    assert result.generation is not None
    manifest = json.loads((result.generation / "manifest.json").read_text())
    assert manifest["embedding"]["model"] == "openai-compatible/smollm2"  # the model, not its address
    assert manifest["embedding"]["dimension"] == 576  # SmolLM2-135M's hidden size
    index = load_search_index(IndexSpec.from_settings(settings))
    hits = make_retriever("dense", index, k=3).invoke("LRU cache eviction")
    assert hits and all(":" in d.metadata["citation"] for d in hits)
    # the same model served at another address is the same index
    moved = Settings(_env_file=None, data_dir=tmp_path, index_dir=tmp_path / "index",
                     embedding_model=f"openai-compatible/smollm2@{llama_embeddings}/")  # fmt: skip
    assert load_search_index(IndexSpec.from_settings(moved)).embedder.dimension == 576
    # another model is refused (exit 5), and so is the bundled one
    with pytest.raises(EmbeddingModelMismatch):
        load_search_index(IndexSpec.from_settings(Settings(_env_file=None, index_dir=tmp_path / "index")))
