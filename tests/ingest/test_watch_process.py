"""Watcher processes killed at any moment, and `cairn ingest --watch` end to end (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config import Settings
from ingest import store
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers import SearchIndex
from tests.conftest import ROOT, FakeEmbedder

pytestmark = pytest.mark.integration

WATCH_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from config import Settings
from ingest.watch import Watcher
from tests.conftest import FakeEmbedder

class Slow(FakeEmbedder):
    def embed_documents(self, texts, **kw):
        time.sleep(0.0003 * len(texts))
        return super().embed_documents(texts, **kw)

def report(batch):
    print("batch", batch.error or "ok", flush=True)

settings = Settings(index_dir=sys.argv[2], watch_debounce_ms=100)
with Watcher(Path(sys.argv[1]), settings, embedder_factory=Slow, on_batch=report):
    print("watching", flush=True)
    time.sleep(3600)
"""


def write_modules(repo: Path, version: int) -> None:
    for i in range(150):
        module = repo / f"pkg{i % 10}" / f"mod{i}.py"
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text("".join(f"def f{i}_{j}(x):\n    return x * {j + version}\n\n\n" for j in range(20)))


def test_killing_a_watcher_mid_batch_leaves_a_usable_index(tmp_path) -> None:
    repo, index_dir = tmp_path / "repo", tmp_path / "index"
    write_modules(repo, 0)
    first = ingest_repository(repo, Settings(index_dir=index_dir), embedder_factory=FakeEmbedder)
    expected = first.chunks_total
    script = tmp_path / "watch_me.py"
    script.write_text(WATCH_SCRIPT.format(root=str(ROOT)))
    outcomes = []
    for version, delay in enumerate((0.1, 0.3, 0.6, 0.9, 1.2, 1.6, 2.5, 4.0), start=1):
        proc = subprocess.Popen([sys.executable, str(script), str(repo), str(index_dir)], stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"watching"
            write_modules(repo, version)  # every chunk changes: a batch that embeds 3,000 chunks
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        generation = open_generation(index_dir)  # never raises: a complete generation is live
        assert len(generation.chunks) == generation.faiss_index.ntotal == expected
        assert generation.bm25.scores["num_docs"] == expected
        index = SearchIndex(generation, FakeEmbedder())
        assert index.keyword("f7_3", 3)
        outcomes.append(generation.path.name)
    assert len(set(outcomes)) >= 2, "no kill landed after a completed batch; the delays are off"
    # A later ingest cleans up what the killed ones left behind and brings the index up to date.
    last = ingest_repository(repo, Settings(index_dir=index_dir), embedder_factory=FakeEmbedder)
    assert last.chunks_total == expected
    assert not list(index_dir.glob(".tmp-*"))
    assert len(list(index_dir.glob("gen-*"))) <= store.KEEP_GENERATIONS


def test_cairn_ingest_watch_follows_a_save_and_survives_sigkill(tmp_path, sample_repo) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAIRN_DATA_DIR": str(data), "CAIRN_WATCH_DEBOUNCE_MS": "200"}
    env.pop("CAIRN_INDEX_DIR", None)
    cairn = str(Path(sys.executable).with_name("cairn"))
    proc = subprocess.Popen([cairn, "ingest", str(sample_repo), "--name", "tinykv", "--watch", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)  # fmt: skip
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.decode())
            if line.startswith(b"Watching"):
                break
        assert lines and lines[-1].startswith("Watching"), "".join(lines)
        (sample_repo / "tinykv" / "fresh.py").write_text("def pangolin_checksum(data):\n    return sum(data)\n")
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            lines.append(line.decode())
            if b"re-indexed" in line or time.monotonic() > deadline:
                break
        assert "1 added" in lines[-1], "".join(lines)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    index_dir = data / "repos" / "tinykv" / "index"
    index = SearchIndex(open_generation(index_dir), FakeEmbedder())
    assert index.keyword("pangolin_checksum", 1)[0].chunk.path == "tinykv/fresh.py"
