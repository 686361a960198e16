"""`cairn repos`, `cairn repos remove` and `--repo` in process (fake-embedded repositories, keyword search)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from tests.conftest import SAMPLE_REPO
from tests.repos import ingest_as, write_billing_repo


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """tinykv and billing, odd (another embedding model) and gone (its source folder deleted)."""
    tinykv = tmp_path / "src" / "tinykv"
    shutil.copytree(SAMPLE_REPO, tinykv)
    ingest_as(tmp_path / "data", tinykv)
    ingest_as(tmp_path / "data", write_billing_repo(tmp_path / "src" / "billing"))
    ingest_as(tmp_path / "data", write_billing_repo(tmp_path / "src" / "odd"), embedding_model="/models/other")
    ingest_as(tmp_path / "data", write_billing_repo(tmp_path / "src" / "gone"))
    shutil.rmtree(tmp_path / "src" / "gone")
    return tmp_path / "data"


def run(data_dir: Path, *args: str, **env: str):
    return CliRunner(env={"CAIRN_DATA_DIR": str(data_dir), **env}).invoke(app, list(args))


def test_repos_lists_each_repository_and_what_is_wrong(data_dir: Path) -> None:
    done = run(data_dir, "repos", "--json")
    assert done.exit_code == 0, done.output
    listing = json.loads(done.stdout)
    assert listing["default"] == "*"
    repos = {r["name"]: r for r in listing["repos"]}
    assert list(repos) == ["billing", "gone", "odd", "tinykv"]
    assert repos["tinykv"]["files"] == 9 and repos["tinykv"]["chunks"] > 9 and repos["tinykv"]["size_bytes"] > 0
    assert repos["tinykv"]["embedding_model"] == "all-MiniLM-L6-v2" and repos["tinykv"]["last_ingest"]
    assert repos["gone"]["ok"] and not repos["gone"]["source_exists"]
    assert not repos["odd"]["ok"] and "'/models/other'" in repos["odd"]["problem"]

    table = run(data_dir, "repos")
    assert table.exit_code == 0
    assert "name" in table.stdout and "embedding model" in table.stdout and "tinykv" in table.stdout
    assert "(missing)" in table.stdout and "gone: the source folder" in table.stdout
    assert "odd: built with embedding model '/models/other'" in table.stdout and "--rebuild" in table.stdout


def test_search_by_repository_and_across_them(data_dir: Path) -> None:
    one = run(data_dir, "search", "invoice", "--repo", "billing", "--mode", "keyword", "--json")
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["results"][0]["path"] == "billing/invoice.py"
    every = run(data_dir, "search", "invoice cache evict", "--mode", "keyword", "--json")  # default: all
    paths = [r["path"] for r in json.loads(every.stdout)["results"]]
    assert {p.split("/", 1)[0] for p in paths} >= {"billing", "tinykv"}
    assert "repository odd left out" in every.stderr


def test_an_unknown_repository_exits_15_listing_the_names(data_dir: Path) -> None:
    for args in (("search", "x", "--repo", "nope"), ("info", "--repo", "nope"), ("repos", "remove", "nope")):
        done = run(data_dir, *args)
        assert done.exit_code == 15, (args, done.output)
        assert "No repository named 'nope'" in done.stderr and "billing, gone, odd, tinykv" in done.stderr
        assert "hint:" in done.stderr
    bad_default = run(data_dir, "search", "x", "--mode", "keyword", CAIRN_DEFAULT_REPO="nope")
    assert bad_default.exit_code == 15


def test_index_and_repo_together_are_refused(data_dir: Path, tmp_path: Path) -> None:
    done = run(data_dir, "search", "x", "--repo", "billing", "--index", str(tmp_path))
    assert done.exit_code == 1 and "--index and --repo" in done.stderr


def test_info_describes_a_repository(data_dir: Path) -> None:
    done = run(data_dir, "info", "--repo", "billing")
    assert done.exit_code == 0 and json.loads(done.stdout)["counts"]["files"] == 2
    several = run(data_dir, "info")
    assert several.exit_code == 1 and "name one with --repo" in several.stderr


def test_remove_asks_or_takes_yes(data_dir: Path) -> None:
    refused = run(data_dir, "repos", "remove", "billing")  # no terminal to ask on
    assert refused.exit_code == 1 and "add --yes" in refused.stderr
    assert (data_dir / "repos" / "billing").is_dir()
    done = run(data_dir, "repos", "remove", "billing", "--yes")
    assert done.exit_code == 0 and "Removed repository billing" in done.stdout
    assert not (data_dir / "repos" / "billing").exists()
    assert [r["name"] for r in json.loads(run(data_dir, "repos", "--json").stdout)["repos"]] == [
        "gone",
        "odd",
        "tinykv",
    ]
