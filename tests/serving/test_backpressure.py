"""A slow client costs the service a bounded amount: at most the answer's max_tokens, never more.

The answer model here is an OpenAI-compatible server that ignores max_tokens and streams for as long as
anyone reads, counting what it wrote (1 KB chunks, so a service that held everything would grow fast).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from tests.serving.conftest import RedisProcess, served

pytestmark = pytest.mark.integration

QUESTION = {"model": "cairn-agent", "stream": True,
            "messages": [{"role": "user", "content": "How does the LRU cache evict?"}]}  # fmt: skip

CHUNK = json.dumps({
    "id": "endless", "object": "chat.completion.chunk", "created": 0, "model": "endless",
    "choices": [{"index": 0, "delta": {"content": "word " * 200}, "finish_reason": None}],
})  # fmt: skip


class EndlessModel(ThreadingHTTPServer):
    """Streams 1 KB chunks forever to each chat request; ``written`` counts them, ``closed`` the requests ended."""

    daemon_threads = True

    def __init__(self) -> None:
        self.written = 0
        self.closed = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        server: EndlessModel = self.server  # type: ignore[assignment]
        event = f"data: {CHUNK}\n\n".encode()
        try:
            while True:
                self.wfile.write(event)  # blocks once the reader stops reading and the buffers are full
                server.written += 1
        except OSError:
            server.closed.set()  # the service closed the request


def test_a_stalled_client_holds_at_most_the_answers_tokens(service_index: Path, redis_server: RedisProcess) -> None:
    """A client that stops reading costs the service what the answer may hold (max_tokens), not more.

    The graph reads the answer as fast as the model writes it, so what bounds the buffering is the
    answer's length: a server that ignores max_tokens is cut off there, the model request closed, while
    the client still reads nothing; when it reads, it gets the answer up to the limit, ended "length".
    """
    model = EndlessModel()
    threading.Thread(target=model.serve_forever, daemon=True).start()
    process = psutil.Process()
    limit = 500  # 1 KB each
    try:
        spec = f"openai-compatible/endless@{model.base_url}"
        with served(service_index, redis_server.url, model_answer=spec, model_max_tokens=limit,
                    agent_max_rounds=0) as server:  # fmt: skip
            host, port = server.url.removeprefix("http://").split(":")
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            connection.connect()
            # a small receive buffer, as a slow client on a poor link would have; then read nothing
            connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            rss_before = process.memory_info().rss
            connection.request("POST", "/v1/chat/completions", body=json.dumps(QUESTION),
                               headers={"content-type": "application/json"})  # fmt: skip
            response = connection.getresponse()
            assert response.status == 200
            assert model.closed.wait(60), f"the model request stayed open ({model.written} chunks written)"
            grown = process.memory_info().rss - rss_before
            assert grown < 64 * 2**20, f"the service grew {grown / 2**20:.0f} MB for a stalled client"
            body = response.read().decode()
            connection.close()
    finally:
        model.shutdown()
        model.server_close()
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    content = [e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")]
    assert sum(text.startswith("word word") for text in content) == limit
    assert events[-1]["choices"][0]["finish_reason"] == "length" and body.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_the_client_cuts_a_server_that_ignores_max_tokens(mode: str) -> None:
    import asyncio

    from models import ModelConfig, chat_model

    model = EndlessModel()
    threading.Thread(target=model.serve_forever, daemon=True).start()
    try:
        config = ModelConfig(spec=f"openai-compatible/endless@{model.base_url}", temperature=0, max_tokens=20,
                             timeout=10, max_retries=0, context_tokens=4096, embedded_url="")  # fmt: skip
        client = chat_model(config)

        async def collect() -> list:
            return [chunk async for chunk in client.astream("hi")]

        chunks = asyncio.run(collect()) if mode == "async" else list(client.stream("hi"))
        assert model.closed.wait(10), "the request stayed open"
    finally:
        model.shutdown()
        model.server_close()
    assert sum(bool(c.content) for c in chunks) == 20
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.response_metadata["finish_reason"] == "length"
