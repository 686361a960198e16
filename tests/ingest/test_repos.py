"""Several repositories under one data folder: names, listing, removal, and what goes wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cairn.errors import CairnError, ExitCode, IndexLocked, RepositoryNameTaken, UnknownRepository
from ingest.repos import ALL, Repositories, adopt_single_index, check_name, default_name, default_repo
from ingest.store import writer_lock
from tests.conftest import SAMPLE_REPO
from tests.repos import ingest_as, repo_settings, write_billing_repo


@pytest.fixture
def two_repos(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A data folder with the sample repository as 'tinykv' and a billing repository as 'billing'."""
    data = tmp_path / "data"
    tinykv = tmp_path / "tinykv"
    shutil.copytree(SAMPLE_REPO, tinykv)
    billing = write_billing_repo(tmp_path / "billing")
    ingest_as(data, tinykv)
    ingest_as(data, billing)
    return data, tinykv, billing


def test_two_repositories_are_listed_with_what_they_hold(two_repos) -> None:
    data, tinykv, _ = two_repos
    repositories = Repositories.of(repo_settings(data))
    assert repositories.names() == ["billing", "tinykv"]
    assert repositories.get("tinykv") == data / "repos" / "tinykv" / "index"
    infos = {info.name: info for info in repositories.describe_all("all-MiniLM-L6-v2")}
    assert infos["tinykv"].source == str(tinykv.resolve()) and infos["tinykv"].source_exists
    assert infos["tinykv"].files == 9 and infos["tinykv"].chunks > 9
    assert infos["billing"].files == 2 and infos["billing"].chunks >= 2
    assert all(info.ok and info.embedding_model == "all-MiniLM-L6-v2" for info in infos.values())
    assert all(info.size_bytes > 1000 and info.last_ingest for info in infos.values())
    assert infos["billing"].size_bytes < infos["tinykv"].size_bytes


def test_names_default_to_the_folder_and_must_be_safe(tmp_path: Path) -> None:
    assert default_name(tmp_path / "My Project!") == "my-project"
    assert default_name(tmp_path / ".hidden") == "hidden"
    assert check_name("shop-api_2.x") == "shop-api_2.x"
    for bad in ("", "../etc", "a/b", "Upper", "*", ".", "-x", "x" * 65):
        with pytest.raises(CairnError, match="not a valid repository name"):
            check_name(bad)


def test_an_unknown_name_lists_the_names_there_are(two_repos) -> None:
    data, _, _ = two_repos
    with pytest.raises(UnknownRepository, match=r"No repository named 'nope'.*billing, tinykv") as caught:
        Repositories.of(repo_settings(data)).get("nope")
    assert caught.value.exit_code == ExitCode.UNKNOWN_REPOSITORY == 15 and caught.value.http_status == 404
    with pytest.raises(UnknownRepository):
        Repositories.of(repo_settings(data)).get("../repos/tinykv")  # not a name: never a path
    with pytest.raises(UnknownRepository, match="there are none yet"):
        Repositories.of(repo_settings(data / "empty")).resolve(ALL)


def test_a_name_another_folder_holds_is_refused(two_repos, tmp_path: Path) -> None:
    data, _, _ = two_repos
    other = write_billing_repo(tmp_path / "elsewhere" / "billing")
    with pytest.raises(RepositoryNameTaken, match="already taken by") as caught:
        ingest_as(data, other)  # same folder name, another folder
    assert caught.value.exit_code == 16 and "--name" in (caught.value.hint or "")
    ingest_as(data, other, name="billing-2")  # with its own name it is welcome
    assert Repositories.of(repo_settings(data)).names() == ["billing", "billing-2", "tinykv"]


def test_a_moved_source_still_serves_is_reported_and_can_be_taken_over(two_repos, tmp_path: Path) -> None:
    data, _, billing = two_repos
    moved = tmp_path / "moved" / "billing"
    shutil.move(billing, moved)
    repositories = Repositories.of(repo_settings(data))
    info = repositories.describe("billing", "all-MiniLM-L6-v2")
    assert info.ok and not info.source_exists and info.chunks  # still serves, source reported missing
    claim = repositories.claim("billing", moved)
    assert claim.moved_from == str(billing.resolve()) and claim.index_dir == repositories.get("billing")
    from ingest.pipeline import ingest_repository
    from tests.conftest import FakeEmbedder

    settings = repo_settings(data, index_dir=claim.index_dir)
    result = ingest_repository(moved, settings, embedder_factory=FakeEmbedder)
    assert result.chunks_embedded == 0 and result.generation is not None  # files matched by their path inside
    assert repositories.describe("billing", "all-MiniLM-L6-v2").source == str(moved.resolve())


def test_an_index_built_with_another_embedding_model_is_reported(two_repos, tmp_path: Path) -> None:
    data, _, _ = two_repos
    odd = write_billing_repo(tmp_path / "odd")
    ingest_as(data, odd, embedding_model="/models/other")
    infos = {i.name: i for i in Repositories.of(repo_settings(data)).describe_all("all-MiniLM-L6-v2")}
    assert not infos["odd"].ok and "'/models/other'" in (infos["odd"].problem or "")
    assert "--rebuild" in (infos["odd"].hint or "")
    assert infos["tinykv"].ok and infos["billing"].ok


def test_remove_deletes_the_index_but_not_while_an_ingest_writes_it(two_repos) -> None:
    data, tinykv, _ = two_repos
    repositories = Repositories.of(repo_settings(data))
    with writer_lock(repositories.get("billing")), pytest.raises(IndexLocked):
        repositories.remove("billing")
    repositories.remove("billing")
    assert repositories.names() == ["tinykv"] and not (data / "repos" / "billing").exists()
    assert tinykv.is_dir()  # the source folder is untouched
    with pytest.raises(UnknownRepository):
        repositories.remove("billing")


def test_the_default_repository(two_repos, tmp_path: Path) -> None:
    data, _, _ = two_repos
    assert default_repo(repo_settings(data)) == ALL  # several and none chosen: all of them
    assert default_repo(repo_settings(data, default_repo="tinykv")) == "tinykv"
    assert default_repo(repo_settings(data, index_dir=tmp_path / "index")) is None  # CAIRN_INDEX_DIR wins
    Repositories.of(repo_settings(data)).remove("billing")
    assert default_repo(repo_settings(data)) == "tinykv"  # the only one
    assert default_repo(repo_settings(tmp_path / "fresh")) is None  # none: DATA_DIR/index, as before


def test_a_single_index_is_adopted_by_the_first_ingest_of_its_source(tmp_path: Path) -> None:
    from ingest.pipeline import ingest_repository
    from tests.conftest import FakeEmbedder

    data = tmp_path / "data"
    source = write_billing_repo(tmp_path / "billing")
    single = repo_settings(data)
    ingest_repository(source, single, embedder_factory=FakeEmbedder)  # the old layout: DATA_DIR/index
    assert default_repo(single) is None
    repositories = Repositories.of(single)
    other = write_billing_repo(tmp_path / "other")
    assert not adopt_single_index(single, repositories.claim("other", other), other)  # another source: left
    claim = repositories.claim("billing", source)
    assert adopt_single_index(single, claim, source)
    assert repositories.names() == ["billing"] and not (data / "index").exists()
    result = ingest_repository(source, single.model_copy(update={"index_dir": claim.index_dir}),
                               embedder_factory=FakeEmbedder)  # fmt: skip
    assert result.chunks_embedded == 0 and not result.changed_anything  # moved, not re-embedded
