"""Several repositories through the real service: the official `openai` client, Redis sessions, real embeddings."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.repos import Repositories
from tests.conftest import SAMPLE_REPO
from tests.repos import write_billing_repo
from tests.serving.conftest import RedisProcess, Server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, real_embedder) -> Path:
    """The sample repository as 'tinykv' and the billing one, embedded with the real model."""
    base = tmp_path_factory.mktemp("repos-service")
    tinykv = base / "src" / "tinykv"
    shutil.copytree(SAMPLE_REPO, tinykv)
    settings = Settings(_env_file=None, data_dir=base / "data")
    for source in (tinykv, write_billing_repo(base / "src" / "billing")):
        claim = Repositories.of(settings).claim(source.name, source)
        ingest_repository(source, settings.model_copy(update={"index_dir": claim.index_dir}),
                          embedder_factory=lambda: real_embedder)  # fmt: skip
    return base / "data"


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
