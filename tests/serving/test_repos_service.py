"""Several repositories through the real service: the official `openai` client, Redis sessions, real embeddings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from config import Settings
from tests.serving.conftest import RedisProcess, Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_dir(two_repos: Path) -> Path:
    return two_repos


@pytest.fixture(scope="module")
def service(data_dir: Path, redis_server: RedisProcess) -> Iterator[Server]:
    from serving.app import create_app

    settings = Settings(_env_file=None, data_dir=data_dir, model="instant", redis_url=redis_server.url,
                        redis_prefix=f"test-{uuid.uuid4().hex[:8]}")  # fmt: skip
    with Server(create_app(settings)) as server:
        yield server


def question(text: str = "How is an invoice total rounded?") -> list:
    return [{"role": "user", "content": text}]


def test_an_openai_client_picks_the_repository_from_the_model_menu(service: Server) -> None:
    client = openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == [
        "cairn-agent",
        "cairn/billing",
        "cairn/tinykv",
        "cairn/*",
        "cairn-chat",
    ]

    reply = client.chat.completions.create(model="cairn/billing", messages=question())
    assert reply.model == "cairn/billing"
    citations = reply.model_extra["cairn"]["citations"]
    assert citations and all(c.startswith(("billing/invoice.py:", "README.md:")) for c in citations)

    stream = client.chat.completions.create(
        model="cairn/*", stream=True, messages=question("round_invoice_total, and how the LRU cache evicts")
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "Sources:" in text
    listed = text.split("Sources:")[1]
    assert "billing/billing/invoice.py:" in listed and "tinykv/tinykv/" in listed  # fused, each prefixed

    with pytest.raises(openai.NotFoundError, match=r"'cairn/billing', 'cairn/tinykv'"):
        client.chat.completions.create(model="cairn/nope", messages=question())


def test_a_session_keeps_to_the_repository_it_started_with(service: Server) -> None:
    url, session = f"{service.url}/v1/chat/completions", {"X-Session-Id": f"s-{uuid.uuid4().hex[:6]}"}
    first = httpx.post(url, json={"model": "cairn/billing", "messages": question()}, headers=session, timeout=60)
    assert first.status_code == 200, first.text
    other = {"model": "cairn/tinykv", "messages": question("And how does the cache evict?")}
    refused = httpx.post(url, json=other, headers=session, timeout=60)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "session_repository_mismatch" and "is about 'billing'" in error["message"]
    again = {"model": "cairn/billing", "messages": question("And who issues invoices?")}
    assert httpx.post(url, json=again, headers=session, timeout=60).status_code == 200
    detail = httpx.get(f"{service.url}/sessions/{session['X-Session-Id']}", timeout=10).json()
    assert detail["repo"] == "billing" and len(detail["messages"]) == 4


def test_search_over_http_with_real_embeddings_by_repository(service: Server) -> None:
    params = {"q": "a ledger that keeps every invoice issued", "repo": "billing"}
    found = httpx.get(f"{service.url}/api/search", params=params).json()["results"]
    assert found[0]["symbol"] == "InvoiceLedger" and {r["path"] for r in found} == {"billing/invoice.py", "README.md"}
    every = httpx.get(f"{service.url}/api/search", params={"q": "evict least recently used", "repo": "*"}).json()
    assert every["results"][0]["path"].startswith("tinykv/tinykv/cache.py")


def test_the_page_lists_repositories_and_sessions_with_their_repository_and_finds_them_by_text(service: Server) -> None:
    listed = httpx.get(f"{service.url}/api/repositories", timeout=10).json()["repositories"]
    assert [(r["name"], r["ok"], r["default"]) for r in listed] == [("billing", True, False), ("tinykv", True, False)]
    assert all(r["chunks"] > 0 for r in listed)

    url, tag = f"{service.url}/v1/chat/completions", uuid.uuid4().hex[:6]
    asked = {"billing": "How is an invoice total rounded?", "tinykv": "How does the LRU cache evict entries?"}
    for repo, text in asked.items():
        reply = httpx.post(url, json={"model": f"cairn/{repo}", "messages": question(text)},
                           headers={"X-Session-Id": f"find-{repo}-{tag}"}, timeout=60)  # fmt: skip
        assert reply.status_code == 200, reply.text
    sessions = {s["id"]: s for s in httpx.get(f"{service.url}/sessions", timeout=10).json()["sessions"]}
    for repo, text in asked.items():
        assert (sessions[f"find-{repo}-{tag}"]["title"], sessions[f"find-{repo}-{tag}"]["repo"]) == (text, repo)

    # every word, in any case, in a question or an answer; the snippet shows where
    found = httpx.get(f"{service.url}/sessions", params={"q": "LRU EVICT"}, timeout=10).json()["sessions"]
    assert f"find-tinykv-{tag}" in [s["id"] for s in found] and f"find-billing-{tag}" not in [s["id"] for s in found]
    assert "LRU" in next(s for s in found if s["id"] == f"find-tinykv-{tag}")["snippet"]
    assert httpx.get(f"{service.url}/sessions", params={"q": "evict zebra-nowhere"}).json()["sessions"] == []
    assert httpx.get(f"{service.url}/sessions", params={"q": ""}).status_code == 400


def test_the_status_view_shows_each_repository_the_model_and_recent_requests(service: Server, data_dir: Path) -> None:
    reply = httpx.post(f"{service.url}/v1/chat/completions", timeout=60, headers={"X-Session-Id": "status-check"},
                       json={"model": "cairn/billing", "stream": True, "messages": question()})  # fmt: skip
    assert reply.status_code == 200
    status = httpx.get(f"{service.url}/api/status", timeout=30).json()
    repos = {r["name"]: r for r in status["repositories"]}
    assert set(repos) == {"billing", "tinykv"}
    billing = repos["billing"]
    assert billing["files"] > 0 and billing["chunks"] > 0 and billing["size_bytes"] > 0 and billing["last_ingest"]
    assert billing["freshness"] == {"fresh": True, "checked": billing["files"], "changed": 0, "missing": 0,
                                    "complete": True}  # fmt: skip
    assert status["model"]["ok"] and status["redis"]["ok"] and status["replica"]["pid"] > 0
    answered = next(r for r in status["requests"] if r["route"] == "/v1/chat/completions")
    assert answered["status"] == 200 and answered["model"] == "cairn/billing"
    assert 0 < answered["ttft_ms"] <= answered["ms"]
    assert all("status-check" not in str(r) for r in status["requests"])  # no session ids, only route templates
    assert not any(r["route"] == "/api/status" for r in status["requests"])

    # an indexed file edited since the ingest makes the repository stale (seen within FRESHNESS_TTL)
    from serving import status as status_module

    source = Path(billing["source"]) / "billing" / "invoice.py"
    original, stat = source.read_text(encoding="utf-8"), source.stat()
    try:
        source.write_text(original + "\n# edited\n", encoding="utf-8")
        status_module._checked.clear()
        status_module._status.clear()
        repos = {r["name"]: r for r in httpx.get(f"{service.url}/api/status", timeout=30).json()["repositories"]}
        assert repos["billing"]["freshness"]["changed"] == 1 and not repos["billing"]["freshness"]["fresh"]
        assert repos["tinykv"]["freshness"]["fresh"]
    finally:  # as it was, modification time included: the data folder is shared with other tests
        source.write_text(original, encoding="utf-8")
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
