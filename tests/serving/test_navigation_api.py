"""/api/definitions and /api/references: in-process (TestClient), an index of the sample repository."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cairn.processes import free_port
from config import Settings
from ingest.pipeline import ingest_repository
from tests.conftest import SAMPLE_REPO, FakeEmbedder


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from serving.app import create_app

    base = tmp_path_factory.mktemp("nav-api")
    ingest_repository(SAMPLE_REPO, Settings(index_dir=base / "index"), embedder_factory=FakeEmbedder)
    settings = Settings(_env_file=None, data_dir=base, index_dir=base / "index", model="instant",
                        agent_retriever="keyword", redis_url=f"redis://127.0.0.1:{free_port()}/0")  # fmt: skip
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_definitions_cite_and_list_ambiguous_candidates(client: TestClient) -> None:
    found = client.get("/api/definitions", params={"name": "Store.compact"}).json()
    assert found["ambiguous"] is False
    assert found["definitions"] == [{
        "name": "compact", "qualified_name": "Store.compact", "kind": "method", "path": "tinykv/store.py",
        "start_line": 54, "end_line": 64, "citation": "tinykv/store.py:54-64",
    }]  # fmt: skip
    ambiguous = client.get("/api/definitions", params={"name": "put"}).json()
    assert ambiguous["ambiguous"] is True
    assert [d["qualified_name"] for d in ambiguous["definitions"]] == ["LRUCache.put", "Store.put"]


def test_references_are_grouped_by_caller(client: TestClient) -> None:
    found = client.get("/api/references", params={"name": "invalidate"}).json()
    callers = {c["caller"]["qualified_name"]: c for c in found["callers"] if c["caller"]}
    assert callers["Store.put"]["citation"] == "tinykv/store.py:28-36"
    assert callers["Store.put"]["references"] == [{"line": 34, "kind": "call", "citation": "tinykv/store.py:34-34"}]
    assert found["uses"] == found["total"] == sum(len(c["references"]) for c in found["callers"])


def test_unknown_names_are_404_and_a_missing_name_is_400(client: TestClient) -> None:
    missing = client.get("/api/definitions", params={"name": "no_such_symbol"})
    assert missing.status_code == 404 and "No definition of 'no_such_symbol'" in missing.json()["error"]["message"]
    assert client.get("/api/references", params={"name": "no_such_symbol"}).status_code == 404
    assert client.get("/api/definitions").status_code == 400


def test_the_openapi_schema_documents_both_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for route, model in (("/api/definitions", "Definitions"), ("/api/references", "References")):
        get = paths[route]["get"]
        assert get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
        assert {"400", "404"} <= set(get["responses"])
        assert {"name", "repo"} <= {p["name"] for p in get["parameters"]}


def test_references_list_up_to_limit_and_count_them_all(client: TestClient) -> None:
    found = client.get("/api/references", params={"name": "get", "limit": 1}).json()
    assert found["uses"] == 1 and found["total"] > 1
    assert client.get("/api/references", params={"name": "get", "limit": 0}).status_code == 400
