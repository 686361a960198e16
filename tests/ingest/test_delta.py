"""Delta generations: a watcher's re-index of a large index writes only what changed, and reads the same."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from config import Settings
from ingest.manifest import Manifest
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from ingest.watch import Watcher
from retrievers import SearchIndex
from retrievers.search_index import SearchFilter
from tests.conftest import FakeEmbedder
from tests.ingest.test_watch import wait_for

FILES = 60


def _module(i: int, extra: str = "") -> str:
    return (
        f'"""Module {i}: helpers for ledger area {i}."""\n\n\n'
        f"def settle_{i}(amount, rate):\n    total = amount * rate + {i}\n    return round(total, 2)\n\n\n"
        f"class Account{i}:\n    def balance_{i}(self, entries):\n        return sum(e.value for e in entries)\n{extra}"
    )


@pytest.fixture
def big_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "ledger"
    for i in range(FILES):
        folder = repo / ("core" if i % 2 else "extras")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod_{i}.py").write_text(_module(i))
    return repo


@pytest.fixture
def delta_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"index_delta_from": 1})


def _ingest(repo: Path, settings: Settings, embedder: FakeEmbedder, **kwargs):
    return ingest_repository(repo, settings, embedder_factory=lambda: embedder, **kwargs)


def _rows(generation) -> list[tuple]:
    return sorted((c.path, c.start_line, c.end_line, c.symbol, c.kind, c.language, c.text) for c in generation.chunks)


def _edit(repo: Path) -> None:
    """Change one file, add one, delete one."""
    (repo / "core" / "mod_3.py").write_text(_module(3, "\n\ndef reconcile_ledger(rows):\n    return sorted(rows)\n"))
    (repo / "extras" / "mod_60.py").write_text(_module(60))
    (repo / "extras" / "mod_4.py").unlink()


def test_a_delta_holds_only_what_changed_and_reads_as_a_whole_generation(
    big_repo, delta_settings, tmp_path, fake_embedder
) -> None:
    _ingest(big_repo, delta_settings, fake_embedder)
    base = open_generation(delta_settings.resolved_index_dir)
    _edit(big_repo)

    result = _ingest(big_repo, delta_settings, fake_embedder, delta=True)

    assert result.delta and result.changed_anything
    live = open_generation(delta_settings.resolved_index_dir)
    assert live.manifest.base == base.path.name and live.manifest.format_version == 3
    assert live.delta is not None and live.delta.index.ntotal < len(live.chunks) // 10
    assert np.load(live.path / "base_rows.npy").shape == (len(base.chunks) - 2 * 3,)  # mod_3 and mod_4 dropped
    # the same rows, texts and files as a whole generation built from scratch
    whole = delta_settings.model_copy(update={"index_dir": tmp_path / "whole"})
    _ingest(big_repo, whole, fake_embedder)
    fresh = open_generation(whole.resolved_index_dir)
    assert _rows(live) == _rows(fresh)
    assert sorted(live.chunks.paths) == sorted(fresh.chunks.paths) and "extras/mod_4.py" not in live.chunks.paths
    assert live.manifest.files.keys() == fresh.manifest.files.keys()
    for path, record in live.manifest.files.items():  # each file's rows are where its record says
        held = live.chunks[record["first_chunk"] : record["first_chunk"] + record["chunks"]]
        assert {c.path for c in held} == {path}
    # vectors and keyword tokens follow their rows
    key = {(c.path, c.start_line, c.text): row for row, c in enumerate(fresh.chunks)}
    rows = [key[(c.path, c.start_line, c.text)] for c in live.chunks]
    np.testing.assert_array_equal(live.vectors(), fresh.vectors()[rows])
    (tokens, offsets), (fresh_tokens, fresh_offsets) = live.tokens(), fresh.tokens()
    assert len(offsets) == len(live.chunks) + 1 and offsets[-1] == len(tokens)
    vocab, fresh_vocab = live.vocabulary(), {i: w for w, i in fresh.vocabulary().items()}
    for row in (0, len(live.chunks) // 2, len(live.chunks) - 1):
        words = [fresh_vocab[i] for i in fresh_tokens[fresh_offsets[rows[row]] : fresh_offsets[rows[row] + 1]]]
        assert tokens[offsets[row] : offsets[row + 1]].tolist() == [vocab[w] for w in words]


def test_searches_on_a_delta_find_what_a_whole_generation_finds(big_repo, delta_settings, tmp_path, fake_embedder):
    _ingest(big_repo, delta_settings, fake_embedder)
    _edit(big_repo)
    _ingest(big_repo, delta_settings, fake_embedder, delta=True)
    whole = delta_settings.model_copy(update={"index_dir": tmp_path / "whole"})
    _ingest(big_repo, whole, fake_embedder)
    live = SearchIndex(open_generation(delta_settings.resolved_index_dir), fake_embedder)
    fresh = SearchIndex(open_generation(whole.resolved_index_dir), fake_embedder)
    assert live.generation.delta is not None

    def seen(hits):  # every row ranked (rows with equal scores sit in another order)
        return sorted((-round(h.score, 4), h.chunk.path, h.chunk.start_line) for h in hits)

    everything = len(live.chunks)
    assert everything == len(fresh.chunks)
    for query in ("reconcile_ledger rows", "settle amount rate", "Account60 balance", "ledger area 4"):
        assert seen(live.keyword(query, everything)) == seen(fresh.keyword(query, everything))
        assert seen(live.dense(query, everything)) == seen(fresh.dense(query, everything))
        only_core = SearchFilter.of(path_glob="core/")
        assert seen(live.dense(query, everything, only_core)) == seen(fresh.dense(query, everything, only_core))
        top = live.dense(query, 5)
        assert [round(h.score, 4) for h in top] == [round(h.score, 4) for h in fresh.dense(query, 5)]
    assert [h.chunk.path for h in live.keyword("reconcile_ledger", 1)] == ["core/mod_3.py"]
    assert not any(h.chunk.path == "extras/mod_4.py" for h in live.dense("settle_4 ledger area 4", 20))
    site = live.generation.symbols().definitions("reconcile_ledger")[0]
    assert live.chunks[live.definition_row(site)].path == "core/mod_3.py"


def test_deltas_stack_on_one_base_and_the_base_outlives_collection(big_repo, delta_settings, fake_embedder) -> None:
    _ingest(big_repo, delta_settings, fake_embedder)
    index_dir = delta_settings.resolved_index_dir
    base = open_generation(index_dir).path.name
    for i in range(4):  # more deltas than generations kept: the base must survive them all
        (big_repo / "core" / "mod_5.py").write_text(_module(5, f"\n\ndef step_{i}(x):\n    return x + {i}\n"))
        assert _ingest(big_repo, delta_settings, fake_embedder, delta=True).delta
        live = open_generation(index_dir)
        assert live.manifest.base == base
        search = SearchIndex(live, fake_embedder)
        assert [h.chunk.path for h in search.keyword(f"step_{i}", 1)] == ["core/mod_5.py"]
        # the file's rows of the delta before are gone
        assert all(f"step_{i - 1}(" not in h.chunk.text for h in search.keyword(f"step_{i - 1}", 20))
        assert sum(c.path == "core/mod_5.py" for c in live.chunks) == 4  # module, function, class, step_i
    assert (index_dir / base).is_dir()
    assert len(list(index_dir.glob("gen-*"))) == 3  # the base, the live delta and the one before it


def test_a_merge_writes_a_whole_generation_and_collects_the_base(big_repo, delta_settings, fake_embedder) -> None:
    _ingest(big_repo, delta_settings, fake_embedder)
    index_dir = delta_settings.resolved_index_dir
    base = open_generation(index_dir).path.name
    _edit(big_repo)
    _ingest(big_repo, delta_settings, fake_embedder, delta=True)
    delta_rows = _rows(open_generation(index_dir))
    # a delta-allowing ingest with nothing changed leaves the delta live; a plain one merges it
    assert not _ingest(big_repo, delta_settings, fake_embedder, delta=True).changed_anything
    fake_embedder.embedded.clear()
    merged = _ingest(big_repo, delta_settings, fake_embedder)
    assert merged.changed_anything and not merged.delta and fake_embedder.embedded == []
    live = open_generation(index_dir)
    assert live.manifest.base is None and live.delta is None and live.manifest.format_version == 2
    assert _rows(live) == delta_rows
    assert not _ingest(big_repo, delta_settings, fake_embedder).changed_anything
    (big_repo / "core" / "mod_7.py").write_text(_module(7, "\n# touched\n"))
    _ingest(big_repo, delta_settings, fake_embedder)
    assert not (index_dir / base).exists()


def test_a_change_too_big_for_a_delta_writes_a_whole_generation(big_repo, delta_settings, fake_embedder) -> None:
    _ingest(big_repo, delta_settings, fake_embedder)
    for i in range(0, FILES, 4):  # a quarter of the files
        path = big_repo / ("core" if i % 2 else "extras") / f"mod_{i}.py"
        path.write_text(_module(i, f"\n\ndef branch_{i}():\n    return {i}\n"))
    result = _ingest(big_repo, delta_settings, fake_embedder, delta=True)
    assert result.changed_anything and not result.delta
    assert open_generation(delta_settings.resolved_index_dir).manifest.base is None


def test_a_small_index_gets_whole_generations(big_repo, settings, fake_embedder) -> None:
    assert settings.index_delta_from > 1_000  # the default: a small index is quick to write whole
    _ingest(big_repo, settings, fake_embedder)
    (big_repo / "core" / "mod_3.py").write_text(_module(3, "\n# edited\n"))
    assert not _ingest(big_repo, settings, fake_embedder, delta=True).delta


@pytest.mark.parametrize("damage", ["base manifest", "base gone", "base rows", "vocabulary"])
def test_a_damaged_delta_is_refused_with_a_way_out(big_repo, delta_settings, fake_embedder, damage) -> None:
    import json
    import shutil

    from cairn.errors import IndexCorrupted
    from ingest import store

    _ingest(big_repo, delta_settings, fake_embedder)
    _edit(big_repo)
    _ingest(big_repo, delta_settings, fake_embedder, delta=True)
    live = open_generation(delta_settings.resolved_index_dir).path
    base = live.parent / Manifest.read(live / "manifest.json").base
    if damage == "base manifest":
        (base / "manifest.json").write_text("{")
    elif damage == "base gone":
        shutil.rmtree(base)
    elif damage == "base rows":
        rows = np.load(live / "base_rows.npy")
        np.save(live / "base_rows.npy", rows[::-1])
    else:
        added = json.loads((live / "vocab_added.json").read_text())
        (live / "vocab_added.json").write_text(json.dumps({**added, "first_id": added["first_id"] + 5}))
    store._BASES.clear()
    with pytest.raises(IndexCorrupted) as caught:
        open_generation(delta_settings.resolved_index_dir)
    assert "--rebuild" in caught.value.hint


def test_a_delta_on_an_ivf_index_searches_like_a_whole_one(big_repo, delta_settings, tmp_path, fake_embedder):
    ivf = delta_settings.model_copy(update={"faiss_index": "ivf"})
    _ingest(big_repo, ivf, fake_embedder)
    _edit(big_repo)
    assert _ingest(big_repo, ivf, fake_embedder, delta=True).delta
    whole = ivf.model_copy(update={"index_dir": tmp_path / "whole"})
    _ingest(big_repo, whole, fake_embedder)
    live = SearchIndex(open_generation(ivf.resolved_index_dir), fake_embedder)
    fresh = SearchIndex(open_generation(whole.resolved_index_dir), fake_embedder)
    assert live.generation.manifest.faiss_index == "ivf" and live.generation.delta is not None
    only_extras = SearchFilter.of(path_glob="extras/")
    for query in ("reconcile_ledger rows", "settle amount rate", "Account60 balance"):
        # every list is probed at this size, so both are exact and agree
        assert [round(h.score, 4) for h in live.dense(query, 6)] == [round(h.score, 4) for h in fresh.dense(query, 6)]
        assert {h.chunk.path for h in live.dense(query, 6, only_extras)} <= {
            c.path for c in live.chunks if c.path.startswith("extras/")
        }
        assert [h.score for h in live.keyword(query, 6, only_extras)] == [
            h.score for h in fresh.keyword(query, 6, only_extras)
        ]


def test_the_walk_reads_only_what_changed_while_its_checks_stay_the_same(
    big_repo, delta_settings, fake_embedder, monkeypatch
) -> None:
    from ingest.secrets import SecretPolicy

    read: list[str] = []
    original = SecretPolicy.secret_content
    monkeypatch.setattr(
        SecretPolicy, "secret_content", lambda self, path, data: read.append(path) or original(self, path, data)
    )
    _ingest(big_repo, delta_settings, fake_embedder)
    assert len(set(read)) == FILES  # the walk and the scan
    old = time.time() - 60  # out of the racy window: files the last ingest saw settle
    for path in big_repo.rglob("*.py"):
        os.utime(path, (old, old))
    _ingest(big_repo, delta_settings, fake_embedder)  # the stats changed: each file read once more, all unchanged
    read.clear()
    (big_repo / "core" / "mod_3.py").write_text(_module(3, "\n# edited\n"))
    _ingest(big_repo, delta_settings, fake_embedder)
    assert sorted(set(read)) == ["core/mod_3.py"]  # the walk and the scan read the changed file only
    read.clear()
    # another allow list is another set of checks: every file is read again, once
    allowing = delta_settings.model_copy(update={"secrets_allow": ["fixtures/"]})
    _ingest(big_repo, allowing, fake_embedder)
    assert len(set(read)) == FILES


def test_the_watcher_writes_deltas_and_merges_them_once_quiet(big_repo, delta_settings, fake_embedder) -> None:
    settings = delta_settings.model_copy(update={"watch_debounce_ms": 100, "watch_merge_idle_ms": 3000})
    _ingest(big_repo, settings, fake_embedder)
    index_dir = settings.resolved_index_dir
    reported: list = []
    with Watcher(big_repo, settings, embedder_factory=lambda: fake_embedder, on_batch=reported.append) as watcher:
        (big_repo / "core" / "mod_9.py").write_text(_module(9, "\n\ndef audit_trail(x):\n    return x\n"))
        wait_for(lambda: watcher.batches >= 1 and not watcher.busy)
        assert watcher.last_batch is not None and watcher.last_batch.result is not None
        assert watcher.last_batch.result.delta and watcher.status()["delta"]
        assert open_generation(index_dir).manifest.base is not None
        batch_end = watcher.last_batch.started + watcher.last_batch.seconds
        wait_for(lambda: watcher.merges == 1 and not watcher.busy, timeout=20)
        assert time.time() - batch_end >= 2.9  # not before the folder was quiet
        live = open_generation(index_dir)
        assert live.manifest.base is None and not watcher.status()["delta"]
        # the merge is reported like a batch (the service loads the whole generation then), not counted as one
        assert [b.merge for b in reported] == [False, True] and watcher.batches == 1
        assert reported[-1].result.generation == live.path
        assert [h.chunk.path for h in SearchIndex(live, fake_embedder).keyword("audit_trail", 1)] == ["core/mod_9.py"]
