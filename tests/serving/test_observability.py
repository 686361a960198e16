"""Traces and /metrics of the running service: real HTTP, real Redis; OTLP/HTTP export to a loopback
receiver and `traceparent` at the real llama.cpp server."""

from __future__ import annotations

import gzip
import platform
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cairn.processes import free_port
from tests.serving.conftest import RedisProcess, ServiceProcess, served, service_settings

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
QUESTION = {"model": "cairn-agent", "messages": [{"role": "user", "content": "How does the LRU cache evict?"}]}


def metrics_of(text: str) -> dict[tuple[str, tuple], float]:
    """Parse a Prometheus exposition into {(sample name, sorted labels): value} (raises if malformed)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_metrics_count_requests_answers_nodes_and_the_index(service_index: Path, redis_server: RedisProcess) -> None:
    with served(service_index, redis_server.url) as server:
        assert httpx.post(f"{server.url}{CHAT}", json=QUESTION, timeout=60).status_code == 200
        with httpx.stream("POST", f"{server.url}{CHAT}", json={**QUESTION, "stream": True}, timeout=60) as stream:
            assert stream.status_code == 200 and list(stream.iter_lines())
        langserve = {"input": {"messages": [{"type": "human", "content": "How does the LRU cache evict?"}]}}
        assert httpx.post(f"{server.url}/agent/invoke", json=langserve, timeout=60).status_code == 200
        httpx.get(f"{server.url}/sessions/nobody")  # a 404, by its route template
        scraped = httpx.get(f"{server.url}/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    samples = metrics_of(scraped.text)
    assert value(samples, "cairn:http_requests_total", route=CHAT, status="200") == 2
    assert value(samples, "cairn:http_requests_total", route="/sessions/{session_id}", status="404") == 1
    assert value(samples, "cairn:http_request_duration_seconds_count", route=CHAT) == 2
    for node in ("plan", "retrieve", "analyze", "answer"):  # two /v1 runs and one LangServe run
        assert value(samples, "cairn:node_duration_seconds_count", node=node) == 3, node
    assert value(samples, "cairn:e2e_request_latency_seconds_count") == 3
    assert value(samples, "cairn:time_to_first_token_seconds_count") == 1  # the streamed one
    assert value(samples, "cairn:retrieval_duration_seconds_count") >= 2
    assert value(samples, "cairn:index_chunks") > 10
    if platform.libc_ver()[0] == "glibc":  # the worker's malloc heap (glibc's mallinfo2)
        assert value(samples, "cairn:native_heap_bytes", state="in_use") > 10 * 2**20
        assert ("cairn:native_heap_bytes", (("state", "free"),)) in samples
    assert value(samples, "cairn:num_requests_running") == 1  # the scrape itself
    # second-scale buckets, as for a model that takes tens of seconds
    buckets = {dict(ls)["le"] for (n, ls) in samples if n == "cairn:time_to_first_token_seconds_bucket"}
    assert {"0.1", "1.0", "10.0", "80.0"} <= buckets


def test_every_response_and_error_body_carries_its_trace_id(
    service_index: Path, redis_server: RedisProcess, spans
) -> None:
    with served(service_index, redis_server.url) as server:
        reply = httpx.post(f"{server.url}{CHAT}", json=QUESTION, timeout=60)
        missing = httpx.post(f"{server.url}{CHAT}", json={**QUESTION, "model": "gpt-9"}, timeout=60)
        malformed = httpx.post(f"{server.url}{CHAT}", content=b"{not json", timeout=60)
        probe = httpx.get(f"{server.url}/health")
    assert "traceresponse" not in probe.headers  # probes and scrapes make no traces of their own
    for response in (reply, missing, malformed):
        version, trace_id, span_id, flags = response.headers["traceresponse"].split("-")
        assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
        assert int(flags, 16) & 1  # sampled
    for response in (missing, malformed):
        assert response.json()["error"]["trace_id"] == response.headers["traceresponse"].split("-")[1]
    # the answered request's trace: server span → agent → nodes → model call, all one trace
    trace_id = int(reply.headers["traceresponse"].split("-")[1], 16)
    finished = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    names = {s.name for s in finished}
    assert {f"POST {CHAT}", "invoke_agent cairn-agent", "node retrieve", "node answer", "search fusion"} <= names
    server_span = next(s for s in finished if s.name == f"POST {CHAT}")
    agent = next(s for s in finished if s.name == "invoke_agent cairn-agent")
    assert agent.parent.span_id == server_span.context.span_id


def test_metrics_need_a_key_unless_made_public(service_index: Path, redis_server: RedisProcess) -> None:
    with served(service_index, redis_server.url, api_keys=["k1"]) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer k1"}).status_code == 200
    with served(service_index, redis_server.url, api_keys=["k1"], metrics_public=True) as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 200
        assert httpx.post(f"{server.url}{CHAT}", json=QUESTION).status_code == 401  # nothing else opened


# ---------------------------------------------------------------- OTLP/HTTP and traceparent, end to end


HOP_HEADERS = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}


class Recorder(ThreadingHTTPServer):
    """A loopback HTTP server that takes OTLP/HTTP traces and relays everything else to ``upstream``,
    recording the spans it was sent and the headers of each relayed request."""

    def __init__(self, upstream: str | None = None) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.upstream = upstream
        self.spans: list = []
        self.relayed: list[dict[str, str]] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        return gzip.decompress(body) if self.headers.get("content-encoding") == "gzip" else body

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/v1/traces":
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.server.spans.extend(scope.spans)
            self._reply(200, b"", "application/x-protobuf")
            return
        self._relay("POST", body)

    def do_GET(self) -> None:
        self._relay("GET", b"")

    def _relay(self, method: str, body: bytes) -> None:
        self.server.relayed.append({k.lower(): v for k, v in self.headers.items()})
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        try:
            upstream = httpx.request(method, f"{self.server.upstream}{self.path}", content=body, headers=headers,
                                     timeout=120)  # fmt: skip
        except httpx.HTTPError as exc:
            self.server.errors.append(repr(exc))
            self._reply(502, str(exc).encode(), "text/plain")
            return
        self._reply(upstream.status_code, upstream.content, upstream.headers.get("content-type", "application/json"))

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with Recorder() as recorder:
        yield recorder


def test_the_service_exports_otlp_and_the_model_server_gets_traceparent(
    service_index: Path, redis_server: RedisProcess, llama, receiver: Recorder, monkeypatch, tmp_path: Path
) -> None:
    """`cairn serve` exports over real OTLP/HTTP; llama.cpp's server is sent the model call's traceparent."""
    server_root = llama.base_url.removesuffix("/v1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "cairn-under-test")
    with Recorder(upstream=server_root) as proxy:
        spec = f"openai-compatible/smollm2-135m@{proxy.url}/v1"
        settings = service_settings(service_index, redis_server.url, model=spec, model_max_tokens=48)
        with ServiceProcess(settings, log_path=tmp_path / "serve.log") as service:
            client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused")
            raw = client.chat.completions.with_raw_response.create(
                model="cairn-agent", messages=[{"role": "user", "content": "How does the LRU cache evict?"}]
            )
            trace_hex = raw.headers["traceresponse"].split("-")[1]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(s.name == "node answer" for s in receiver.spans):
                time.sleep(0.2)
    spans = [s for s in receiver.spans if s.trace_id.hex() == trace_hex]
    by_id = {s.span_id: s for s in spans}
    names = [s.name for s in spans]
    assert f"POST {CHAT}" in names and "invoke_agent cairn-agent" in names and "node answer" in names, names

    def chain(span) -> list[str]:
        path = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            path.append(span.name)
        return path

    # the HTTP client call to the model endpoint, nested under the chat span of the node that made it
    client_spans = [s for s in spans if s.name == "POST" and s.kind == s.SPAN_KIND_CLIENT]
    assert client_spans, names
    answer_http = [s for s in client_spans if "node answer" in chain(s)]
    assert answer_http and chain(answer_http[0])[0].startswith("chat ")
    assert chain(answer_http[0])[-2:] == ["invoke_agent cairn-agent", f"POST {CHAT}"]
    # ... and llama.cpp's server was sent that span as its parent
    parents = {h["traceparent"].rsplit("-", 1)[0] for h in proxy.relayed if "traceparent" in h}
    assert f"00-{trace_hex}-{answer_http[0].span_id.hex()}" in parents
    chat = by_id[answer_http[0].parent_span_id]
    attributes = {a.key: a.value for a in chat.attributes}
    assert attributes["gen_ai.request.model"].string_value == "smollm2-135m"
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0  # llama.cpp reports usage


def test_the_operators_log_has_a_line_per_request_and_warnings_as_json(
    service_index: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    """CAIRN_LOG_FORMAT=json: a request's line names its route, model, status, time, session and trace."""
    import json

    settings = service_settings(service_index, redis_server.url, log_format="json")
    log_path = tmp_path / "serve.log"
    with ServiceProcess(settings, log_path=log_path) as service:
        body = {"model": "cairn-agent", "messages": [{"role": "user", "content": "How does the LRU cache evict?"}]}
        reply = httpx.post(f"{service.url}/v1/chat/completions", json=body, headers={"X-Session-Id": "log-1"},
                           timeout=60)  # fmt: skip
        assert reply.status_code == 200
        httpx.get(f"{service.url}/health")  # a probe: counted, not logged
        missing = httpx.get(f"{service.url}/v1/models/nope")
        assert missing.status_code == 404
        time.sleep(0.5)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    chat = next(e for e in lines if e.get("route") == "/v1/chat/completions")
    assert chat["method"] == "POST" and chat["status"] == 200 and chat["model"] == "cairn-agent"
    assert chat["session"] == "log-1" and chat["ms"] > 0 and chat["logger"] == "cairn.access"
    if "traceresponse" in reply.headers:
        assert chat["trace_id"] == reply.headers["traceresponse"].split("-")[1]
    assert any(e.get("route") == "/v1/models/nope" and e["status"] == 404 for e in lines)
    assert not any(e.get("route") == "/health" for e in lines)
    # the instant model writes no JSON: analyze takes its fallback, and the log says so
    assert any(e["level"] == "WARNING" and "took the deterministic fallback" in e["message"] for e in lines)
