"""One service, several repositories: model ids, routing, 404s listing names, readiness per repository.

In-process (FastAPI's TestClient), keyword retrieval and the instant model, no Redis: the session
and OpenAI-client tests are in test_repos_service.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cairn.processes import free_port
from config import Settings
from tests.conftest import SAMPLE_REPO
from tests.repos import ingest_as, write_billing_repo

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tinykv and billing (good), odd (another embedding model), gone (its source folder deleted)."""
    base = tmp_path_factory.mktemp("served-repos")
    tinykv = base / "src" / "tinykv"
    shutil.copytree(SAMPLE_REPO, tinykv)
    ingest_as(base / "data", tinykv)
    ingest_as(base / "data", write_billing_repo(base / "src" / "billing"))
    ingest_as(base / "data", write_billing_repo(base / "src" / "odd"), embedding_model="/models/other")
    gone = write_billing_repo(base / "src" / "gone")
    ingest_as(base / "data", gone)
    shutil.rmtree(gone)
    return base / "data"


def settings_for(data_dir: Path, **values) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, model="instant", agent_retriever="keyword",
                    redis_url=f"redis://127.0.0.1:{free_port()}/0", **values)  # fmt: skip


@pytest.fixture(scope="module")
def client(data_dir: Path) -> Iterator[TestClient]:
    from serving.app import create_app

    with TestClient(create_app(settings_for(data_dir))) as test_client:
        yield test_client


def ask(model: str, question: str = "How is an invoice total rounded?") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": question}]}


def test_models_list_the_agent_each_repository_and_all(client: TestClient) -> None:
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["cairn-agent", "cairn/billing", "cairn/gone", "cairn/odd", "cairn/tinykv", "cairn/*", "cairn-chat"]
    assert client.get("/v1/models/cairn/billing").json()["id"] == "cairn/billing"
    missing = client.get("/v1/models/cairn/nope")
    assert missing.status_code == 404 and "billing, gone, odd, tinykv" in missing.json()["error"]["message"]


def test_a_chat_completion_answers_from_the_repository_its_model_names(client: TestClient) -> None:
    reply = client.post(CHAT, json=ask("cairn/billing"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == "cairn/billing"
    citations = body["cairn"]["citations"]
    assert citations and all(c.startswith(("billing/invoice.py:", "README.md:")) for c in citations)
    assert all(not s["citation"].startswith("tinykv/") for s in body["cairn"]["sources"])


def test_all_repositories_answer_with_prefixed_citations(client: TestClient) -> None:
    for model in ("cairn/*", "cairn-agent"):  # several repositories, no default: cairn-agent spans them too
        body = client.post(CHAT, json=ask(model, "round_invoice_total and LRU cache eviction")).json()
        sources = [s["citation"] for s in body["cairn"]["sources"]]
        assert {s.split("/", 1)[0] for s in sources} <= {"billing", "tinykv", "gone"}, sources
        assert body["cairn"]["citations"][0] in body["choices"][0]["message"]["content"]
        assert not any(s.startswith("odd/") for s in sources)  # another embedding model: left out


def test_an_unknown_model_or_repository_is_a_404_listing_them(client: TestClient) -> None:
    reply = client.post(CHAT, json=ask("cairn/nope"))
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found" and "'cairn/tinykv'" in error["message"]
    assert "the repositories are: billing, gone, odd, tinykv" in error["message"]
    search = client.get("/api/search", params={"q": "invoice", "repo": "nope", "mode": "keyword"})
    assert search.status_code == 404 and "billing, gone, odd, tinykv" in search.json()["error"]["message"]


def test_a_repository_built_with_another_embedding_model_is_a_503_when_named(client: TestClient) -> None:
    reply = client.post(CHAT, json=ask("cairn/odd"))
    assert reply.status_code == 503 and "'/models/other'" in reply.json()["error"]["message"]


def test_search_takes_the_repository(client: TestClient) -> None:
    one = client.get("/api/search", params={"q": "invoice", "repo": "billing", "mode": "keyword", "k": 3}).json()
    assert one["results"] and all(not r["path"].startswith("billing/billing") for r in one["results"])
    assert one["results"][0]["path"] == "billing/invoice.py"
    every = client.get("/api/search", params={"q": "invoice cache", "repo": "*", "mode": "keyword"}).json()
    assert {r["path"].split("/", 1)[0] for r in every["results"]} >= {"billing", "tinykv"}
    cited = every["results"][0]
    lines = client.get(f"/api/files/{cited['path']}", params={"start": cited["start_line"], "repo": "*"})
    assert lines.status_code == 200 and lines.json()["path"] == cited["path"]


def test_readiness_reports_each_repository_while_the_good_ones_serve(client: TestClient) -> None:
    index = client.get("/ready").json()["checks"]["index"]
    assert index["ok"] and index["repo"] == "*" and index["serving"] == ["billing", "gone", "tinykv"]
    repos = index["repos"]
    assert repos["tinykv"]["ok"] and repos["billing"]["ok"] and repos["tinykv"]["source_exists"]
    assert repos["gone"]["ok"] and not repos["gone"]["source_exists"] and "missing" in repos["gone"]["warning"]
    assert not repos["odd"]["ok"] and "'/models/other'" in repos["odd"]["error"] and "--rebuild" in repos["odd"]["hint"]
    assert "odd:" in index["warning"] and "gone: source folder missing" in index["warning"]


def test_langserve_takes_the_repository_in_configurable(client: TestClient) -> None:
    body = {"input": {"messages": [{"type": "human", "content": "How is an invoice total rounded?"}]},
            "config": {"configurable": {"repo": "billing"}}}  # fmt: skip
    reply = client.post("/agent/invoke", json=body)
    assert reply.status_code == 200, reply.text
    citations = reply.json()["output"]["citations"]
    assert citations and all(c.startswith(("billing/invoice.py:", "README.md:")) for c in citations)  # unprefixed
    body["config"]["configurable"]["repo"] = "nope"
    missing = client.post("/agent/invoke", json=body)
    assert missing.status_code == 404 and "billing, gone, odd, tinykv" in missing.json()["error"]["message"]


def test_the_default_repository_is_what_cairn_agent_answers_about(data_dir: Path) -> None:
    from serving.app import create_app

    with TestClient(create_app(settings_for(data_dir, default_repo="tinykv"))) as client:
        body = client.post(CHAT, json=ask("cairn-agent", "How does the LRU cache evict?")).json()
        citations = body["cairn"]["citations"]
        # paths of the sample, unprefixed (the repository is also called tinykv)
        assert citations and all(c.startswith("tinykv/") and not c.startswith("tinykv/tinykv/") for c in citations)
        assert client.get("/ready").json()["checks"]["index"]["repo"] == "tinykv"


def test_langserve_clients_may_not_move_the_index_or_the_model(client: TestClient, tmp_path: Path) -> None:
    body = {"input": {"messages": [{"type": "human", "content": "How is an invoice total rounded?"}]},
            "config": {"configurable": {"repo": "billing", "data_dir": str(tmp_path), "index_dir": str(tmp_path),
                                        "model": "openai-compatible/x@http://203.0.113.1/v1"}}}  # fmt: skip
    reply = client.post("/agent/invoke", json=body)
    assert reply.status_code == 200, reply.text  # the folders and the model stay the service's
    assert reply.json()["output"]["citations"][0].startswith(("billing/invoice.py:", "README.md:"))
    body["config"]["configurable"] = {"k": 0}
    assert client.post("/agent/invoke", json=body).status_code == 400
