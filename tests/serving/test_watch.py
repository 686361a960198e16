"""`cairn serve --watch` in process: a saved file reaches /api/search; /ready shows the watchers."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from fastapi.testclient import TestClient

from cairn.processes import free_port
from config import Settings
from tests.conftest import SAMPLE_REPO, FakeEmbedder
from tests.repos import ingest_as, write_billing_repo


def test_a_saved_change_is_searchable_through_the_service(tmp_path: Path) -> None:
    from serving.app import create_app

    tinykv = tmp_path / "src" / "tinykv"
    shutil.copytree(SAMPLE_REPO, tinykv)
    billing = write_billing_repo(tmp_path / "src" / "billing")
    data = tmp_path / "data"
    ingest_as(data, tinykv)
    ingest_as(data, billing)
    settings = Settings(_env_file=None, data_dir=data, model="instant", agent_retriever="keyword", watch=True,
                        watch_debounce_ms=150, redis_url=f"redis://127.0.0.1:{free_port()}/0")  # fmt: skip

    def search(query: str, repo: str) -> list[str]:
        reply = client.get("/api/search", params={"q": query, "mode": "keyword", "repo": repo})
        assert reply.status_code == 200, reply.text
        return [hit["path"] for hit in reply.json()["results"]]

    with TestClient(create_app(settings, embedder_factory=FakeEmbedder)) as client:
        watch = client.get("/ready").json()["checks"]["index"]["watch"]
        assert set(watch) == {"billing", "tinykv"} and watch["billing"]["watching"]
        assert "billing/refunds.py" not in search("refund_partial_amount", "billing")

        (billing / "billing" / "refunds.py").write_text("def refund_partial_amount(total, share):\n"
                                                        "    return round(total * share, 2)\n")  # fmt: skip
        start = time.monotonic()
        while "billing/refunds.py" not in search("refund_partial_amount", "billing"):
            assert time.monotonic() - start < 10, client.get("/ready").json()["checks"]["index"]["watch"]
            time.sleep(0.05)
        assert "tinykv/refunds.py" not in search("refund_partial_amount", "tinykv")  # only its own repository

        (billing / "billing" / "refunds.py").unlink()
        while "billing/refunds.py" in search("refund_partial_amount", "billing"):
            assert time.monotonic() - start < 20
            time.sleep(0.05)
        status = client.get("/ready").json()["checks"]["index"]["watch"]["billing"]
        assert status["batches"] >= 2 and "error" not in status
