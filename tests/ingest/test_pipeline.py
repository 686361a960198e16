from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cairn.errors import EmbeddingModelMismatch, IndexCorrupted, IndexLocked, IndexMissing
from config import Settings
from ingest import store
from ingest.manifest import EmbeddingInfo, Manifest
from ingest.pipeline import ingest_repository
from ingest.store import open_generation, writer_lock
from tests.conftest import ROOT, FakeEmbedder


def _ingest(repo: Path, settings: Settings, embedder: FakeEmbedder, **kwargs):
    return ingest_repository(repo, settings, embedder_factory=lambda: embedder, **kwargs)


def _snapshot(index_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(index_dir)): p.read_bytes() for p in index_dir.rglob("*") if p.is_file()}


def test_full_ingest_writes_a_complete_manifest(sample_repo, settings, fake_embedder) -> None:
    result = _ingest(sample_repo, settings, fake_embedder)
    generation = open_generation(settings.resolved_index_dir)
    manifest = generation.manifest

    assert result.files_added == result.files_total == 9
    assert manifest.format == "cairn-index" and manifest.format_version == 2
    assert manifest.embedding == EmbeddingInfo(model="all-MiniLM-L6-v2", dimension=16, max_tokens=128)
    assert manifest.counts.chunks == len(generation.chunks) == result.chunks_total == result.chunks_embedded
    assert set(manifest.files) >= {"tinykv/store.py", "README.md", "notebooks/benchmark.ipynb"}
    # the typed manifest reads back exactly what was written
    assert Manifest.read(generation.path / "manifest.json") == manifest
    assert "files" not in manifest.summary() and manifest.summary()["counts"]["files"] == 9
    entry = manifest.files["tinykv/wal.py"]
    assert len(entry["sha256"]) == 64 and entry["chunks"] > 0
    wal_chunks = generation.chunks[entry["first_chunk"] : entry["first_chunk"] + entry["chunks"]]
    assert {c.path for c in wal_chunks} == {"tinykv/wal.py"}


def test_second_ingest_without_changes_writes_nothing(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    before = _snapshot(settings.resolved_index_dir)
    fake_embedder.embedded.clear()

    result = _ingest(sample_repo, settings, fake_embedder)

    assert not result.changed_anything and fake_embedder.embedded == []
    assert _snapshot(settings.resolved_index_dir) == before


def test_editing_one_function_re_embeds_only_that_chunk(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    cache = sample_repo / "tinykv" / "cache.py"
    cache.write_text(cache.read_text().replace("else 0.0", "else float('nan')"))
    fake_embedder.embedded.clear()

    result = _ingest(sample_repo, settings, fake_embedder)

    assert (result.files_changed, result.files_unchanged) == (1, 8)
    assert result.chunks_embedded == len(fake_embedder.embedded) == 1
    assert "float('nan')" in fake_embedder.embedded[0]
    generation = open_generation(settings.resolved_index_dir)
    assert any("float('nan')" in c.text for c in generation.chunks)


def test_added_and_deleted_files_are_reflected(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    (sample_repo / "web" / "client.js").unlink()
    (sample_repo / "tinykv" / "metrics.py").write_text("def count_requests(log):\n    return len(log)\n")

    result = _ingest(sample_repo, settings, fake_embedder)

    assert (result.files_added, result.files_deleted) == (1, 1)
    paths = {c.path for c in open_generation(settings.resolved_index_dir).chunks}
    assert "web/client.js" not in paths and "tinykv/metrics.py" in paths


def test_touched_but_unchanged_file_is_not_re_embedded(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    os.utime(sample_repo / "README.md", ns=(1, 1))
    fake_embedder.embedded.clear()
    result = _ingest(sample_repo, settings, fake_embedder)
    assert result.files_unchanged == 9 and fake_embedder.embedded == []


def test_new_chunking_settings_rechunk_but_reuse_identical_chunks(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    fake_embedder.embedded.clear()
    wider = settings.model_copy(update={"chunk_max_chars": 4000})
    result = _ingest(sample_repo, wider, fake_embedder)
    assert result.files_changed == 9
    assert 0 < result.chunks_embedded < result.chunks_total  # small definitions are the same chunks
    assert open_generation(settings.resolved_index_dir).manifest.chunking.max_chars == 4000


def test_another_embedding_model_is_refused_and_the_index_kept(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    before = _snapshot(settings.resolved_index_dir)
    other = settings.model_copy(update={"embedding_model": "/models/e5-small"})

    with pytest.raises(EmbeddingModelMismatch, match="all-MiniLM-L6-v2") as caught:
        _ingest(sample_repo, other, fake_embedder)
    assert "--rebuild" in caught.value.hint
    assert _snapshot(settings.resolved_index_dir) == before

    rebuilt = _ingest(sample_repo, other, fake_embedder, rebuild=True)
    assert rebuilt.files_added == 9
    assert open_generation(settings.resolved_index_dir).embedding_model == "/models/e5-small"


def test_corrupted_index_is_reported_not_deleted(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    generation = open_generation(settings.resolved_index_dir)
    (generation.path / "manifest.json").write_text("{ truncated")

    with pytest.raises(IndexCorrupted, match="not valid JSON"):
        open_generation(settings.resolved_index_dir)
    with pytest.raises(IndexCorrupted) as caught:
        _ingest(sample_repo, settings, fake_embedder)
    assert "--rebuild" in caught.value.hint
    assert (generation.path / "manifest.json").read_text() == "{ truncated"

    _ingest(sample_repo, settings, fake_embedder, rebuild=True)
    assert open_generation(settings.resolved_index_dir).manifest.counts.files == 9


def test_damaged_vectors_file_is_reported(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    generation = open_generation(settings.resolved_index_dir)
    (generation.path / "faiss.index").write_bytes(b"garbage")
    with pytest.raises(IndexCorrupted, match="damaged"):
        open_generation(settings.resolved_index_dir)


def test_foreign_folder_is_never_overwritten(sample_repo, tmp_path, fake_embedder) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    settings = Settings(index_dir=foreign)
    with pytest.raises(IndexCorrupted, match="not a Cairn index"):
        _ingest(sample_repo, settings, fake_embedder)
    with pytest.raises(IndexCorrupted, match="not a Cairn index"):
        open_generation(foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_missing_index_says_to_ingest(tmp_path) -> None:
    with pytest.raises(IndexMissing) as caught:
        open_generation(tmp_path / "none")
    assert "cairn ingest" in caught.value.hint


def test_concurrent_ingest_is_refused(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    with writer_lock(settings.resolved_index_dir), pytest.raises(IndexLocked):
        _ingest(sample_repo, settings, fake_embedder, rebuild=True)


def test_unreadable_file_is_reported_and_the_rest_indexed(sample_repo, settings, fake_embedder, monkeypatch) -> None:
    original = Path.read_bytes

    def flaky(self: Path) -> bytes:
        if self.name == "cache.py":
            raise PermissionError("denied")
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", flaky)
    result = _ingest(sample_repo, settings, fake_embedder)
    assert result.unreadable == ["tinykv/cache.py"] and result.skipped["unreadable"] == 1
    assert result.files_total == 8


@pytest.mark.parametrize("fail_at", ["write_index", "rename", "swap"])
def test_failure_while_writing_leaves_the_previous_index_live(
    sample_repo, settings, fake_embedder, monkeypatch, fail_at
) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    before = open_generation(settings.resolved_index_dir)
    (sample_repo / "tinykv" / "new.py").write_text("def added():\n    return 42\n")

    import faiss

    def boom(*_args, **_kwargs):
        raise OSError("disk full")

    target = {
        "write_index": (faiss, "write_index"),
        "rename": (store.os, "rename"),
        "swap": (store, "_swap_current"),
    }
    monkeypatch.setattr(*target[fail_at], boom)
    with pytest.raises(OSError, match="disk full"):
        _ingest(sample_repo, settings, fake_embedder)
    monkeypatch.undo()

    after = open_generation(settings.resolved_index_dir)
    assert after.path == before.path and len(after.chunks) == len(before.chunks)
    assert not list(settings.resolved_index_dir.glob(".tmp-*"))
    # The next ingest completes normally and picks the change up.
    assert _ingest(sample_repo, settings, fake_embedder).files_added == 1


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from config import Settings
from ingest.pipeline import ingest_repository
from tests.conftest import FakeEmbedder

class Slow(FakeEmbedder):
    def embed_documents(self, texts, **kw):
        time.sleep(0.001 * len(texts))
        return super().embed_documents(texts, **kw)

print("start", flush=True)
ingest_repository(Path(sys.argv[1]), Settings(index_dir=sys.argv[2]), rebuild=True,
                  embedder_factory=Slow)
print("done", flush=True)
"""


@pytest.mark.integration
def test_killing_ingest_at_any_moment_leaves_a_usable_index(tmp_path, fake_embedder) -> None:
    repo = tmp_path / "repo"
    for i in range(150):
        module = repo / f"pkg{i % 10}" / f"mod{i}.py"
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text("".join(f"def f{i}_{j}(x):\n    return x * {j}\n\n\n" for j in range(20)))
    index_dir = tmp_path / "index"
    settings = Settings(index_dir=index_dir)
    first = _ingest(repo, settings, fake_embedder)
    expected = first.chunks_total

    script = tmp_path / "kill_me.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT)))
    outcomes = []
    for delay in (0.2, 0.5, 0.8, 1.1, 1.4, 1.7, 2.0, 2.4):
        proc = subprocess.Popen([sys.executable, str(script), str(repo), str(index_dir)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"start"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        generation = open_generation(index_dir)  # never raises: some complete generation is live
        assert len(generation.chunks) == generation.faiss_index.ntotal == expected
        assert generation.bm25.scores["num_docs"] == expected
        assert len(generation.symbols().definitions("f0_0")) == 1  # its symbol graph came with it, whole
        outcomes.append(generation.path.name)
    # A later ingest cleans up what the killed ones left behind.
    _ingest(repo, settings, fake_embedder, rebuild=True)
    assert not list(index_dir.glob(".tmp-*"))
    assert len(list(index_dir.glob("gen-*"))) <= store.KEEP_GENERATIONS


def test_readers_never_see_a_half_written_index(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_forever() -> None:
        while not stop.is_set():
            try:
                generation = open_generation(settings.resolved_index_dir)
                assert len(generation.chunks) == generation.faiss_index.ntotal
            except BaseException as exc:
                errors.append(exc)
                return

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        for i in range(8):
            (sample_repo / f"extra{i}.py").write_text(f"def extra_{i}():\n    return {i}\n")
            _ingest(sample_repo, settings, fake_embedder)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert (
        json.loads((open_generation(settings.resolved_index_dir).path / "manifest.json").read_text())["counts"]["files"]
        == 17
    )


def _expected_tokens(chunk) -> list[str]:
    from ingest.pipeline import SYMBOL_BOOST
    from ingest.tokens import tokenize

    return tokenize(chunk.symbol or "") * SYMBOL_BOOST + tokenize(chunk.text)


def test_carried_over_tokens_and_vectors_match_a_fresh_build(sample_repo, settings, fake_embedder, tmp_path) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    # A new file sorting first puts a new chunk right before the previous generation's row 0.
    (sample_repo / "!first.txt").write_text("brand new text about zebras\n")
    (sample_repo / "tinykv" / "cache.py").write_text(
        (sample_repo / "tinykv" / "cache.py").read_text().replace("capacity must be positive", "capacity > 0")
    )
    (sample_repo / "docs" / "architecture.md").unlink()
    _ingest(sample_repo, settings, fake_embedder)

    generation = open_generation(settings.resolved_index_dir)
    tokens, offsets = generation.tokens()
    words = {i: w for w, i in generation.vocabulary().items()}
    for row, chunk in enumerate(generation.chunks):
        assert [words[i] for i in tokens[offsets[row] : offsets[row + 1]]] == _expected_tokens(chunk), chunk.citation
    vectors = generation.vectors()
    for row, chunk in enumerate(generation.chunks):
        from ingest.embedder import embedding_input

        expected = fake_embedder._vector(embedding_input(chunk.path, chunk.symbol, chunk.text))
        assert (vectors[row] == expected).all(), chunk.citation
    assert generation.chunks[0].path == "!first.txt"


def test_a_format_1_index_is_read_and_upgraded_without_re_embedding(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    generation = open_generation(settings.resolved_index_dir)
    folder = generation.path
    rows = [[c.path, c.start_line, c.end_line, c.language, c.symbol, c.kind, c.text] for c in generation.chunks]
    del generation
    (folder / "chunks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("chunks.json", "texts.bin", "text_offsets.npy", "hashes.npy"):
        (folder / name).unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))

    old = open_generation(settings.resolved_index_dir)
    assert old.manifest.format_version == 1 and len(old.chunks) == len(rows)
    fake_embedder.embedded.clear()
    result = _ingest(sample_repo, settings, fake_embedder)
    assert result.changed_anything and fake_embedder.embedded == []
    assert open_generation(settings.resolved_index_dir).manifest.format_version == 2


def test_an_index_from_the_legacy_tokenizer_is_searched_with_it_then_re_tokenized_without_re_embedding(
    sample_repo, settings, fake_embedder, monkeypatch
) -> None:
    from ingest import pipeline
    from ingest.tokens import LEGACY_TOKENIZER, TOKENIZER, tokenizer
    from retrievers import SearchIndex

    with monkeypatch.context() as patch:  # an index as an earlier Cairn wrote it: no tokenizer named
        patch.setattr(pipeline, "TOKENIZER", LEGACY_TOKENIZER)
        patch.setattr(pipeline, "tokenize", tokenizer(LEGACY_TOKENIZER))
        _ingest(sample_repo, settings, fake_embedder)
    folder = open_generation(settings.resolved_index_dir).path
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["keyword"]
    (folder / "manifest.json").write_text(json.dumps(manifest))

    legacy = open_generation(settings.resolved_index_dir)
    assert legacy.manifest.keyword.tokenizer == LEGACY_TOKENIZER
    index = SearchIndex(legacy, fake_embedder)
    # "evicted" is one token to the legacy tokenizer ("evict" too to the new one): the query meets
    # the index on the legacy tokens, so keyword search finds what it always found.
    assert index._tokenize("evicted entries") == tokenizer(LEGACY_TOKENIZER)("evicted entries")
    assert index.keyword("least recently used eviction", 3)

    fake_embedder.embedded.clear()
    result = _ingest(sample_repo, settings, fake_embedder)

    assert result.changed_anything and fake_embedder.embedded == []  # nothing re-embedded
    upgraded = open_generation(settings.resolved_index_dir)
    assert upgraded.manifest.keyword.tokenizer == TOKENIZER
    tokens, offsets = upgraded.tokens()
    words = {i: w for w, i in upgraded.vocabulary().items()}
    for row, chunk in enumerate(upgraded.chunks):
        assert [words[i] for i in tokens[offsets[row] : offsets[row + 1]]] == _expected_tokens(chunk), chunk.citation
    assert (upgraded.vectors() == legacy.vectors()).all()
    # And a third ingest has nothing left to do.
    assert not _ingest(sample_repo, settings, fake_embedder).changed_anything


def test_an_index_from_an_unknown_tokenizer_is_refused_and_kept(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    folder = open_generation(settings.resolved_index_dir).path
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "keyword": {"tokenizer": "snowball-9"}}))
    before = _snapshot(settings.resolved_index_dir)

    with pytest.raises(IndexCorrupted, match="keyword tokenizer 'snowball-9'") as raised:
        open_generation(settings.resolved_index_dir)
    assert "--rebuild" in (raised.value.hint or "")
    with pytest.raises(IndexCorrupted):
        _ingest(sample_repo, settings, fake_embedder)
    assert _snapshot(settings.resolved_index_dir) == before


def test_ingest_is_one_trace_of_walk_chunk_embed_and_write(tmp_path, sample_repo, spans) -> None:
    from cairn import telemetry

    with telemetry.span("cairn ingest"):
        result = ingest_repository(sample_repo, Settings(index_dir=tmp_path / "index"), embedder_factory=FakeEmbedder)
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert {"cairn ingest", "ingest", "walk", "chunk", "embed", "write"} <= set(finished)
    ingest = finished["ingest"]
    assert ingest.parent.span_id == finished["cairn ingest"].context.span_id
    for step in ("walk", "chunk", "embed", "write"):
        assert finished[step].parent.span_id == ingest.context.span_id, step
    assert ingest.attributes["cairn.chunks"] == result.chunks_total > 0
    assert finished["embed"].attributes["cairn.chunks.embedded"] == result.chunks_embedded


def test_a_latin1_file_is_indexed_with_its_own_characters(sample_repo, settings, fake_embedder) -> None:
    (sample_repo / "tinykv" / "legacy.py").write_bytes(
        "# Café du coin: the résumé of a crème brûlée order\ndef brulee_order():\n    return 'crème'\n".encode(
            "latin-1"
        )
    )

    result = _ingest(sample_repo, settings, fake_embedder)

    assert "binary" not in result.skipped
    generation = open_generation(settings.resolved_index_dir)
    entry = generation.manifest.files["tinykv/legacy.py"]
    texts = [generation.chunks.text(row) for row in range(entry["first_chunk"], entry["first_chunk"] + entry["chunks"])]
    assert "# Café du coin" in "\n".join(texts) and "\ufffd" not in "\n".join(texts)
    assert generation.symbols().definitions("brulee_order")
