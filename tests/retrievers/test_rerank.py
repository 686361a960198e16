"""Reranking, opt-in: request and answer shapes, the new order, and a failing reranker leaving the fused order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from langchain_core.documents import Document

from cairn.errors import RerankUnavailable
from retrievers.rerank import EndpointReranker, make_reranker, rerank
from tests.conftest import free_port

DOCS = [Document(page_content=f"chunk {i}", metadata={"citation": f"a.py:{i}-{i}", "rank": i + 1}) for i in range(5)]


def _endpoint(answer) -> EndpointReranker:
    return EndpointReranker("bge-reranker", "http://r:7997/", transport=httpx.MockTransport(answer))


def test_the_top_n_are_reordered_by_score_and_the_rest_follow() -> None:
    sent: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"results": [{"index": i, "relevance_score": s}
                                                     for i, s in enumerate([0.1, 0.9, 0.5])]})  # fmt: skip

    result = rerank(_endpoint(answer), "where is the cache?", DOCS, k=4, top_n=3)
    assert sent[0] == {"model": "bge-reranker", "query": "where is the cache?", "return_documents": False,
                       "documents": ["chunk 0", "chunk 1", "chunk 2"], "top_n": 3}  # fmt: skip
    assert [d.page_content for d in result.documents] == ["chunk 1", "chunk 2", "chunk 0", "chunk 3"]
    assert [d.metadata["rank"] for d in result.documents[:3]] == [1, 2, 3]
    assert result.documents[0].metadata["rerank_score"] == 0.9 and result.warning is None


def test_teis_answer_shape_is_read_too() -> None:
    tei = [{"index": 0, "score": -1.0}, {"index": 1, "score": 2.0}]
    result = rerank(_endpoint(lambda r: httpx.Response(200, json=tei)), "q", DOCS[:2], k=2)
    assert [d.page_content for d in result.documents] == ["chunk 1", "chunk 0"]


@pytest.mark.parametrize(
    "answer",
    [
        lambda r: httpx.Response(503, text="loading"),
        lambda r: httpx.Response(200, json={"choices": []}),
        lambda r: httpx.Response(200, json={"results": [{"index": 0, "relevance_score": 1.0}]}),  # one of two
    ],
)
def test_a_failing_reranker_leaves_the_fused_order_with_a_warning(answer) -> None:
    result = rerank(_endpoint(answer), "q", DOCS[:2], k=2)
    assert result.documents == DOCS[:2] and result.warning and result.warning.startswith("not reranked: ")


def test_a_rerankers_own_failure_never_fails_the_search() -> None:
    class Broken:
        def scores(self, query, texts):
            raise RuntimeError("CUDA out of memory")

    result = rerank(Broken(), "q", DOCS, k=2)
    assert result.documents == DOCS[:2] and "RuntimeError: CUDA out of memory" in str(result.warning)


def test_a_reranker_that_is_down_is_named() -> None:
    down = EndpointReranker("m", f"http://127.0.0.1:{free_port()}")
    result = rerank(down, "q", DOCS, k=3)
    assert result.documents == DOCS[:3] and "cannot be reached" in str(result.warning)


def test_settings_name_an_endpoint_or_a_folder(tmp_path) -> None:
    assert isinstance(make_reranker("openai-compatible/bge@http://127.0.0.1:1"), EndpointReranker)
    with pytest.raises(RerankUnavailable, match="neither a rerank endpoint nor a local folder"):
        make_reranker("BAAI/bge-reranker-base")
    with pytest.raises(RerankUnavailable, match="Could not load the reranker"):
        make_reranker(str(tmp_path))  # a folder that is not a CrossEncoder


class _Handler(BaseHTTPRequestHandler):
    """A rerank endpoint whose score is how often "evict" occurs in a document: its order is known in advance."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        scores = [
            {"index": i, "relevance_score": float(text.count("evict"))} for i, text in enumerate(body["documents"])
        ]
        payload = json.dumps({"results": scores}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def rerank_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_search_reranks_through_an_http_endpoint(sample_index, rerank_server: str) -> None:
    from retrievers import make_retriever

    fused = make_retriever("hybrid", sample_index, k=30).invoke("how are entries removed from the cache?")
    reranker = make_reranker(f"openai-compatible/counting@{rerank_server}")
    result = rerank(reranker, "how are entries removed from the cache?", fused, k=5)
    counts = [d.page_content.count("evict") for d in result.documents]
    assert result.warning is None and counts == sorted(counts, reverse=True) and counts[0] > 0
