"""The model clients' HTTP calls are traced: each is a client span and carries `traceparent`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cairn import telemetry
from config import Settings
from models.factory import ModelConfig, build_chat_model

COMPLETION = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}  # fmt: skip


class Endpoint(ThreadingHTTPServer):
    """An OpenAI-compatible endpoint on loopback that answers every chat request and keeps its headers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.headers_seen: list[dict[str, str]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: Endpoint

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        body = json.dumps(COMPLETION).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_model_request_is_a_client_span_under_the_caller_and_sends_traceparent(endpoint, spans, mode) -> None:
    model = build_chat_model(ModelConfig.from_settings(Settings(_env_file=None), f"openai-compatible/m@{endpoint.url}"))
    with telemetry.span("caller") as caller:
        reply = model.invoke("hi") if mode == "sync" else await model.ainvoke("hi")
    assert reply.content == "hi"
    (http,) = [s for s in spans.get_finished_spans() if s.name == "POST"]
    assert http.parent.span_id == caller.get_span_context().span_id
    trace_id = format(caller.get_span_context().trace_id, "032x")
    assert endpoint.headers_seen[-1]["traceparent"].startswith(f"00-{trace_id}-{http.context.span_id:016x}-")
