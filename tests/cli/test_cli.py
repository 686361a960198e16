"""The CLI as a user runs it: real processes, real model, exit codes and messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.errors import ExitCode
from tests.conftest import ROOT, SAMPLE_REPO, free_port

pytestmark = pytest.mark.integration


def cairn(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [*prefix, sys.executable, "-m", "cli", *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300
    )


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("cli") / "index"
    done = cairn("ingest", str(SAMPLE_REPO), "--index", str(index), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["files"] == 9 and summary["chunks"] > 9 and summary["embedded"] == summary["chunks"]
    return index


def test_search_prints_ranked_citations(cli_index: Path) -> None:
    done = cairn("search", "least recently used eviction", "--index", str(cli_index), "-k", "3")
    assert done.returncode == 0, done.stderr
    assert " 1. tinykv/cache.py:" in done.stdout
    assert "3 results in" in done.stderr


def test_search_json_with_filters(cli_index: Path) -> None:
    done = cairn(
        "search",
        "retry",
        "--index",
        str(cli_index),
        "--json",
        "--language",
        "javascript",
        "--mode",
        "keyword",
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["mode"] == "keyword" and payload["results"]
    first = payload["results"][0]
    assert first["path"] == "web/client.js" and first["citation"].startswith("web/client.js:")
    assert "retr" in first["text"].lower()


def test_reingest_reports_up_to_date(cli_index: Path) -> None:
    done = cairn("ingest", str(SAMPLE_REPO), "--index", str(cli_index))
    assert done.returncode == 0 and "up to date" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("ingest", "/no/such/repo"), 2, "No such repository"),
        (("search", "x", "--index", "/tmp/cairn-no-index-here"), 3, "No index at"),
        (("search", "x", "--mode", "fuzzy"), 1, "Unknown --mode 'fuzzy'"),
        (("ask", "  "), 1, "The question is empty"),
        (("ask", "x", "--retriever", "fuzzy"), 1, "Unknown --retriever 'fuzzy'"),
        (("ask", "x", "--index", "/tmp/cairn-no-index-here"), 3, "No index at"),
        (("ask", "x", "--model", "gpt-4"), 8, "is not of the form provider/model"),
    ],
)
def test_errors_are_one_line_with_a_hint_and_an_exit_code(args, code, message) -> None:
    done = cairn(*args)
    assert done.returncode == code
    assert message in done.stderr and "hint:" in done.stderr
    assert "Traceback" not in done.stderr


def test_index_built_with_another_model_is_refused(cli_index: Path, tmp_path: Path) -> None:
    done = cairn("search", "x", "--index", str(cli_index), env={"CAIRN_EMBEDDING_MODEL": str(tmp_path)})
    assert done.returncode == 5 and "was built with embedding model" in done.stderr


def test_info_describes_the_index(cli_index: Path) -> None:
    done = cairn("info", "--index", str(cli_index))
    info = json.loads(done.stdout)
    assert info["embedding"]["model"] == "all-MiniLM-L6-v2" and info["counts"]["files"] == 9


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed")
def test_ingest_and_search_work_with_no_network_at_all(tmp_path: Path) -> None:
    """Run in a network namespace with no interfaces: any download or telemetry would fail."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail(f"unshare -n is not permitted here: {probe.stderr!r}")
    index = tmp_path / "index"
    offline = ("unshare", "-n")
    env = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}  # prove Cairn sets them, not the test
    done = cairn("ingest", str(SAMPLE_REPO), "--index", str(index), "--quiet", prefix=offline, env=env)
    assert done.returncode == 0, done.stderr
    done = cairn("search", "write-ahead log", "--index", str(index), "--json", prefix=offline, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"]


def test_ask_shows_the_steps_on_stderr_and_the_answer_on_stdout(cli_index: Path) -> None:
    done = cairn("ask", "How does the LRU cache evict entries?", "--index", str(cli_index), "--model", "instant")
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stderr.splitlines() if line.startswith("· ")]
    assert steps[0] == "· planning" and steps[-1] == "· answering"
    assert any(line.startswith('· searching "How does the LRU cache evict entries?"') for line in steps)
    assert any(line.startswith("· found ") for line in steps)
    # the citation comes as a code span, so Markdown renderers keep the path as written
    assert "It is implemented in `tinykv/cache.py:" in done.stdout and "Sources:" in done.stdout
    assert "· " not in done.stdout


@pytest.fixture(scope="module")
def repos_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder where `cairn ingest` put the sample (named after its folder) and billing (--name)."""
    from tests.repos import write_billing_repo

    base = tmp_path_factory.mktemp("cli-repos")
    billing = write_billing_repo(base / "src" / "billing")
    env = {"CAIRN_DATA_DIR": str(base / "data")}
    done = cairn("ingest", str(SAMPLE_REPO), "--json", "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["repo"] == "sample-repo"
    done = cairn("ingest", str(billing), "--name", "invoices", "--json", "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["index"] == str(base / "data" / "repos" / "invoices" / "index")
    return base / "data"


def test_ingest_keeps_one_index_per_repository(repos_data: Path) -> None:
    done = cairn("repos", "--json", env={"CAIRN_DATA_DIR": str(repos_data)})
    repos = {r["name"]: r for r in json.loads(done.stdout)["repos"]}
    assert list(repos) == ["invoices", "sample-repo"] and repos["sample-repo"]["source"] == str(SAMPLE_REPO)
    again = cairn("ingest", str(SAMPLE_REPO), env={"CAIRN_DATA_DIR": str(repos_data)})
    assert again.returncode == 0 and "up to date" in again.stdout and "(repository sample-repo)" in again.stdout


def test_a_second_folder_under_a_taken_name_exits_16(repos_data: Path, tmp_path: Path) -> None:
    from tests.repos import write_billing_repo

    other = write_billing_repo(tmp_path / "elsewhere")
    done = cairn("ingest", str(other), "--name", "invoices", env={"CAIRN_DATA_DIR": str(repos_data)})
    assert done.returncode == 16 and "is already taken by" in done.stderr and "--name" in done.stderr


def test_search_and_ask_take_the_repository(repos_data: Path) -> None:
    env = {"CAIRN_DATA_DIR": str(repos_data)}
    done = cairn("search", "a ledger that keeps every invoice issued", "--repo", "invoices", "--json", env=env)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert results[0]["symbol"] == "InvoiceLedger"
    assert {r["path"] for r in results} == {"billing/invoice.py", "README.md"}  # this repository's, unprefixed
    every = cairn("search", "invoices and the write-ahead log", "--json", env=env)  # several: all of them
    assert {r["path"].split("/", 1)[0] for r in json.loads(every.stdout)["results"]} == {"invoices", "sample-repo"}
    asked = cairn("ask", "How is an invoice total rounded?", "--repo", "invoices", "--model", "instant", env=env)
    assert asked.returncode == 0, asked.stderr
    assert "It is implemented in `billing/invoice.py:" in asked.stdout or "`README.md:" in asked.stdout
    unknown = cairn("ask", "x", "--repo", "nope", "--model", "instant", env=env)
    assert unknown.returncode == 15 and "invoices, sample-repo" in unknown.stderr


def test_an_ask_session_keeps_to_its_repository(repos_data: Path) -> None:
    env = {"CAIRN_DATA_DIR": str(repos_data)}
    first = cairn("ask", "How is an invoice rounded?", "--repo", "invoices", "--session", "s", "--model", "instant",
                  env=env)  # fmt: skip
    assert first.returncode == 0, first.stderr
    other = cairn("ask", "And the cache?", "--repo", "sample-repo", "--session", "s", "--model", "instant", env=env)
    assert other.returncode == ExitCode.SESSION_REPOSITORY_MISMATCH
    assert "The session 's' is about 'invoices'" in other.stderr


def test_a_single_index_keeps_working_then_moves_into_repos_on_the_next_ingest(tmp_path: Path) -> None:
    env = {"CAIRN_DATA_DIR": str(tmp_path / "data")}
    single = tmp_path / "data" / "index"
    assert cairn("ingest", str(SAMPLE_REPO), "--index", str(single), "--quiet", env=env).returncode == 0
    found = cairn("search", "evict least recently used", "--json", env=env)  # DATA_DIR/index, as before
    assert json.loads(found.stdout)["results"][0]["path"] == "tinykv/cache.py"
    again = cairn("ingest", str(SAMPLE_REPO), env=env)
    assert again.returncode == 0, again.stderr
    assert f"moved the index at {single}" in again.stderr and "is up to date" in again.stdout  # nothing re-embedded
    assert not single.exists()
    listed = json.loads(cairn("repos", "--json", env=env).stdout)
    assert listed["default"] == "sample-repo" and [r["name"] for r in listed["repos"]] == ["sample-repo"]
    found = cairn("search", "evict least recently used", "--json", env=env)  # now the only repository
    assert json.loads(found.stdout)["results"][0]["path"] == "tinykv/cache.py"


def test_search_rerank_needs_a_reranker_and_survives_one_that_is_down(cli_index: Path) -> None:
    unset = cairn("search", "cache", "--index", str(cli_index), "--rerank")
    assert unset.returncode == 1 and "CAIRN_RERANK_MODEL" in unset.stderr
    plain = cairn("search", "cache", "--index", str(cli_index), "--json")
    env = {"CAIRN_RERANK_MODEL": f"openai-compatible/m@http://127.0.0.1:{free_port()}"}
    down = cairn("search", "cache", "--index", str(cli_index), "--rerank", "--json", env=env)
    assert down.returncode == 0 and "warning: not reranked" in down.stderr and "cannot be reached" in down.stderr
    found = json.loads(down.stdout)
    assert [r["citation"] for r in found["results"]] == [r["citation"] for r in json.loads(plain.stdout)["results"]]
    assert found["warnings"] and found["warnings"][0].startswith("not reranked")
