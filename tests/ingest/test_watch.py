"""The watcher: real files, a real watchdog observer, the fake embedder; batches counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config import Settings
from ingest import pipeline
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from ingest.watch import WatchBatch, Watcher, watch_targets
from retrievers import SearchIndex
from tests.conftest import FakeEmbedder


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    """Poll until ``condition()``; return the seconds it took, or fail after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


def keyword_paths(settings: Settings, query: str) -> set[str]:
    index = SearchIndex(open_generation(settings.resolved_index_dir), FakeEmbedder())
    return {hit.chunk.path for hit in index.keyword(query, 20)}


class Recorder:
    """The watcher's batches as they finish."""

    def __init__(self) -> None:
        self.batches: list[WatchBatch] = []
        self.lock = threading.Lock()

    def __call__(self, batch: WatchBatch) -> None:
        with self.lock:
            self.batches.append(batch)

    def count(self) -> int:
        with self.lock:
            return len(self.batches)


@pytest.fixture
def watched(sample_repo: Path, settings: Settings, fake_embedder: FakeEmbedder) -> Iterator[tuple]:
    """The sample repository, ingested, with a started watcher (200 ms quiet period) and its batches."""
    settings = settings.model_copy(update={"watch_debounce_ms": 200, "watch_max_wait_ms": 3000})
    (sample_repo / ".gitignore").write_text("generated/\n*.log\n")
    ingest_repository(sample_repo, settings, embedder_factory=lambda: fake_embedder)
    recorder = Recorder()
    watcher = Watcher(sample_repo, settings, embedder_factory=lambda: fake_embedder, on_batch=recorder)
    with watcher:
        yield sample_repo, settings, watcher, recorder


def test_a_saved_file_is_searchable_within_seconds(watched) -> None:
    repo, settings, _watcher, recorder = watched
    (repo / "tinykv" / "fresh.py").write_text("def quokka_handshake():\n    return 'zebra'\n")
    took = wait_for(lambda: "tinykv/fresh.py" in keyword_paths(settings, "quokka_handshake"))
    assert took < 5
    assert recorder.count() == 1 and recorder.batches[0].paths == ["tinykv/fresh.py"]


def test_a_burst_of_200_writes_is_one_batch_not_200(watched) -> None:
    repo, settings, _watcher, recorder = watched
    for i in range(200):  # like a branch switch: many files written back to back
        target = repo / "branch" / f"pkg{i % 8}" / f"mod{i}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"def switched_{i}():\n    return {i}\n")
    wait_for(lambda: len(open_generation(settings.resolved_index_dir).manifest.files) >= 200 + 6, timeout=30)
    time.sleep(0.5)  # anything still queued would show up as another batch now
    assert recorder.count() <= 2, [len(b.paths) for b in recorder.batches]
    assert "branch/pkg3/mod123.py" in keyword_paths(settings, "switched_123")


def test_ignored_files_cause_no_reindex(watched) -> None:
    repo, settings, _watcher, recorder = watched
    before = open_generation(settings.resolved_index_dir).path
    (repo / "generated").mkdir()
    (repo / "generated" / "out.py").write_text("def generated_thing():\n    pass\n")
    (repo / "server.log").write_text("noise\n")
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\x00\x01")
    (repo / ".git").mkdir()
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    time.sleep(1.0)  # five quiet periods
    assert recorder.count() == 0
    assert open_generation(settings.resolved_index_dir).path == before
    # the watcher is alive all the same: a kept file is picked up
    (repo / "kept.py").write_text("def kept_thing():\n    pass\n")
    wait_for(lambda: recorder.count() == 1)
    assert recorder.batches[0].paths == ["kept.py"]


def test_a_deleted_file_leaves_the_index(watched) -> None:
    repo, settings, _watcher, recorder = watched
    victim = next(p for p in sorted((repo / "tinykv").glob("*.py")) if p.stat().st_size > 100)
    rel = victim.relative_to(repo).as_posix()
    assert rel in open_generation(settings.resolved_index_dir).manifest.files
    victim.unlink()
    wait_for(lambda: rel not in open_generation(settings.resolved_index_dir).manifest.files)
    assert recorder.batches[-1].result.files_deleted == 1


def test_a_file_that_fails_to_chunk_is_reported_and_watching_goes_on(watched, monkeypatch) -> None:
    repo, settings, watcher, recorder = watched
    real_chunk_file = pipeline.chunk_file

    def chunk_file(path, text, options, **kwargs):
        if "broken" in path:
            raise ValueError("parser exploded")
        return real_chunk_file(path, text, options, **kwargs)

    monkeypatch.setattr(pipeline, "chunk_file", chunk_file)
    (repo / "broken.py").write_text("def broken(:\n")
    (repo / "fine.py").write_text("def fine_neighbour():\n    pass\n")
    wait_for(lambda: "fine.py" in keyword_paths(settings, "fine_neighbour"))
    result = recorder.batches[-1].result
    assert result.failed == {"broken.py": "ValueError: parser exploded"}
    assert "broken.py" in watcher.status()["error"]
    assert "broken.py" not in open_generation(settings.resolved_index_dir).manifest.files

    (repo / "later.py").write_text("def later_addition():\n    pass\n")  # still watching
    wait_for(lambda: "later.py" in keyword_paths(settings, "later_addition"))


def test_a_failed_batch_keeps_the_previous_index_and_the_next_one_recovers(watched, monkeypatch) -> None:
    repo, settings, watcher, recorder = watched
    before = open_generation(settings.resolved_index_dir).path

    def disk_full(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "_write_generation", disk_full)
    (repo / "one.py").write_text("def first_attempt():\n    pass\n")
    wait_for(lambda: recorder.count() == 1)
    assert "disk full" in recorder.batches[0].error and "disk full" in watcher.status()["error"]
    assert open_generation(settings.resolved_index_dir).path == before
    monkeypatch.undo()

    (repo / "two.py").write_text("def second_attempt():\n    pass\n")
    wait_for(lambda: "one.py" in keyword_paths(settings, "first_attempt"))  # the whole folder is re-read
    assert "two.py" in keyword_paths(settings, "second_attempt")
    assert "error" not in watcher.status()


def test_a_long_stream_of_changes_still_flushes_at_the_longest_wait(sample_repo, settings, fake_embedder) -> None:
    settings = settings.model_copy(update={"watch_debounce_ms": 300, "watch_max_wait_ms": 1000})
    ingest_repository(sample_repo, settings, embedder_factory=lambda: fake_embedder)
    recorder = Recorder()
    with Watcher(sample_repo, settings, embedder_factory=lambda: fake_embedder, on_batch=recorder):
        start = time.monotonic()
        i = 0
        while recorder.count() == 0 and time.monotonic() - start < 5:
            (sample_repo / f"stream{i}.py").write_text(f"def streamed_{i}():\n    pass\n")
            i += 1
            time.sleep(0.1)  # never quiet for 300 ms
        assert recorder.count() >= 1
        assert time.monotonic() - start < 3


def test_the_index_folder_inside_the_source_is_not_watched(sample_repo, tmp_path, fake_embedder) -> None:
    settings = Settings(data_dir=tmp_path / "data", index_dir=sample_repo / "my-index", watch_debounce_ms=100)
    ingest_repository(sample_repo, settings, embedder_factory=lambda: fake_embedder)
    recorder = Recorder()
    with Watcher(sample_repo, settings, embedder_factory=lambda: fake_embedder, on_batch=recorder):
        (sample_repo / "new.py").write_text("def brand_new():\n    pass\n")
        wait_for(lambda: recorder.count() == 1)
        time.sleep(0.8)  # its own generation write must not trigger another batch
        assert recorder.count() == 1


def test_watch_targets_are_the_repositories_sources(tmp_path, sample_repo, fake_embedder) -> None:
    from ingest.repos import Repositories

    base = Settings(_env_file=None, data_dir=tmp_path / "data")
    claim = Repositories.of(base).claim("tinykv", sample_repo)
    ingest_repository(sample_repo, base.model_copy(update={"index_dir": claim.index_dir}),
                      embedder_factory=lambda: fake_embedder)  # fmt: skip
    targets, problems = watch_targets(base)
    assert [(t.name, t.source, t.index_dir) for t in targets] == [("tinykv", sample_repo.resolve(), claim.index_dir)]
    assert problems == []


def test_a_batch_waits_while_another_ingest_holds_the_index(watched) -> None:
    from ingest.store import writer_lock

    repo, settings, watcher, recorder = watched
    with writer_lock(settings.resolved_index_dir):  # a manual `cairn ingest` writing the same index
        (repo / "meanwhile.py").write_text("def written_meanwhile():\n    pass\n")
        wait_for(lambda: recorder.count() >= 1)
        assert "is writing" in recorder.batches[0].error
        assert "error" not in watcher.status()  # not a failure: it is retried
    wait_for(lambda: "meanwhile.py" in keyword_paths(settings, "written_meanwhile"))


def test_a_repository_whose_source_is_gone_is_reported_not_watched(tmp_path, sample_repo, fake_embedder) -> None:
    import shutil

    from ingest.repos import Repositories
    from ingest.watch import WatchGroup

    base = Settings(_env_file=None, data_dir=tmp_path / "data", watch_debounce_ms=100)
    gone = tmp_path / "gone"
    shutil.copytree(sample_repo, gone)
    for source in (sample_repo, gone):
        claim = Repositories.of(base).claim(source.name, source)
        ingest_repository(source, base.model_copy(update={"index_dir": claim.index_dir}),
                          embedder_factory=lambda: fake_embedder)  # fmt: skip
    shutil.rmtree(gone)
    group = WatchGroup(base, embedder_factory=lambda: fake_embedder).start()
    try:
        status = group.status()
        assert set(status) == {"repo", "not_watched"}
        assert "gone" in status["not_watched"][0] and "missing" in status["not_watched"][0]
        wait_for(lambda: group.watchers["repo"].batches == 1)  # the catch-up batch at start
    finally:
        group.stop()


def test_with_an_index_folder_that_one_index_is_watched(sample_repo, settings, fake_embedder) -> None:
    ingest_repository(sample_repo, settings, embedder_factory=lambda: fake_embedder)
    targets, problems = watch_targets(settings)
    assert [(t.name, t.source, t.index_dir) for t in targets] == [("", sample_repo.resolve(), settings.index_dir)]
    assert problems == []
