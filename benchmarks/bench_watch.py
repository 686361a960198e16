"""Always fresh: how long from saving a file to the change being searchable through the service.

    python benchmarks/bench_watch.py [--corpus PATH|transformers] [--saves N] [--switch N] [--placeholder-vectors]

A corpus (default: the installed `rich` package's source, 100 files) is copied to a temporary
folder and ingested with the real embedding model as repository "bench". Then `cairn serve --watch`
(the instant model, no Redis) follows it, and:

- **save → searchable**: N times (default 20), a function with a new name is appended to one of
  the files (a different file each time), and `/api/search` (keyword mode, the repository) is
  polled every 25 ms until it returns that file for that name. The time counts from just before the
  write: the debounce (CAIRN_WATCH_DEBOUNCE_MS), the incremental ingest (walk, chunk, embed the new
  chunk, write a generation) and the service loading the new generation on its next search.
- **branch switch**: N files (default 200) change at once, as `git checkout` does: each existing
  file gets a new function appended and the rest are new files, written back to back; the time runs
  until every one of the new names is searchable, with the number of batches the watcher ran.

Two services run side by side on two copies of the corpus, and every save or switch goes to each in
turn: one as configured by default (an index of CAIRN_INDEX_DELTA_FROM chunks or more gets delta
generations: only what changed), one with CAIRN_INDEX_DELTA_FROM=0 (a whole generation per batch, as
before deltas). At the end each is left quiet until its watcher has merged the live delta into a
whole generation (CAIRN_WATCH_MERGE_IDLE_MS, 30 s here), and the merge's time is reported.

With ``--placeholder-vectors`` the first, full ingest stores deterministic random 384-dimensional
vectors instead of running the model (the transformers source takes about 20 minutes to embed on
2 cores; chunking, keyword tokens and the generation's size are the real ones). The watcher, in the
service, embeds its batches with the real model, so what a save costs is measured at the real index
size; only what dense search would rank is meaningless, and keyword search is what is polled.

Results go to benchmarks/results/watch[-NAME].json; the numbers are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_serving import wait_ready  # noqa: E402
from benchmarks.common import du, machine, summary_ms, transformers_source, write_result  # noqa: E402
from cairn.processes import free_port  # noqa: E402

REPO = "bench"
POLL_SECONDS = 0.025
MERGE_IDLE_MS = 30_000


def default_corpus() -> Path:
    """Return the installed rich package's source: offline, about a hundred files."""
    import rich

    return Path(rich.__file__).parent


class PlaceholderEmbedder:
    """Deterministic random unit vectors of the real model's dimension, for the first full ingest only."""

    dimension = 384

    def embed_documents(self, texts, *, batch_size: int = 32, on_batch=None):
        import numpy as np

        rng = np.random.default_rng(len(texts))
        vectors = rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        if on_batch is not None:
            on_batch(len(texts))
        return vectors

    def embed_query(self, text: str):
        return self.embed_documents([text])[0]


def prepare(corpus: Path, work: Path, placeholder: bool) -> tuple[Path, Path, dict]:
    """Copy the corpus and ingest it as repository 'bench'; return source, data dir, stats."""
    from config import Settings
    from ingest.pipeline import ingest_repository
    from ingest.repos import Repositories

    source = work / "src" / REPO
    shutil.copytree(corpus, source, ignore=shutil.ignore_patterns("__pycache__"))
    data = work / "data"
    settings = Settings(_env_file=None, data_dir=data)
    claim = Repositories.of(settings).claim(REPO, source)
    started = time.perf_counter()
    result = ingest_repository(source, settings.model_copy(update={"index_dir": claim.index_dir}),
                               embedder_factory=PlaceholderEmbedder if placeholder else None)  # fmt: skip
    stats = {"files": result.files_total, "chunks": result.chunks_total,
             "ingest_seconds": round(time.perf_counter() - started, 1), "placeholder_vectors": placeholder,
             "index_mb": round(du(claim.index_dir) / 2**20, 1)}  # fmt: skip
    print(f"ingested {corpus}: {stats}", flush=True)
    return source, data, stats


class WatchingService:
    """`cairn serve --watch` on the data folder, as its own process."""

    def __init__(self, data: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "PYTHONPATH": str(ROOT), "CAIRN_DATA_DIR": str(data), "CAIRN_MODEL": "instant",
                       "CAIRN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", **env}  # fmt: skip
        environment.pop("CAIRN_INDEX_DIR", None)
        cairn = str(Path(sys.executable).with_name("cairn"))
        command = [cairn, "serve", "--watch", "--no-start-redis", "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stderr=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def __enter__(self) -> WatchingService:
        wait_ready(f"{self.url}/health", self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(30)

    def watch_status(self) -> dict:
        return self.client.get("/ready").json()["checks"]["index"]["watch"][REPO]

    def wait_idle(self, timeout: float = 120, poll: float = 0.2) -> dict:
        """Wait until the watcher has nothing pending and is not ingesting."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.watch_status()
            if status["batches"] >= 1 and not status["pending"] and not status["busy"]:
                return status
            time.sleep(poll)
        raise RuntimeError(f"the watcher did not settle: {self.watch_status()}")

    def finds(self, name: str, path: str) -> bool:
        reply = self.client.get("/api/search", params={"q": name, "mode": "keyword", "repo": REPO, "k": 3})
        reply.raise_for_status()
        return any(hit["path"] == path for hit in reply.json()["results"])

    def until_found(self, name: str, path: str, started: float, timeout: float = 120) -> float:
        while not self.finds(name, path):
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"{name} in {path} not searchable after {timeout}s")
            time.sleep(POLL_SECONDS)
        return time.perf_counter() - started


def append_function(path: Path, name: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n\ndef {name}(value):\n    return value\n")


def measure_save(service: WatchingService, source: Path, target: Path, label: str) -> float:
    """Append a function to ``target`` and return the seconds until a search finds it."""
    name = f"fresh_probe_{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    append_function(target, name)
    took = service.until_found(name, target.relative_to(source).as_posix(), started)
    print(f"{label}: {took * 1000:.0f} ms", flush=True)
    service.wait_idle()
    time.sleep(0.3)
    return took


def measure_saves(arms: dict[str, tuple[WatchingService, Path, list[Path]]], count: int) -> dict[str, list[float]]:
    """Save N times into each arm in turn (a warm-up first, not counted); return each arm's seconds."""
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    for i in range(count + 1):
        for name, (service, source, files) in arms.items() if i % 2 else reversed(arms.items()):
            took = measure_save(service, source, files[i % len(files)], f"save {i} ({name})")
            if i:
                seconds[name].append(took)
    return seconds


def wait_merged(service: WatchingService, timeout: float = 300) -> dict:
    """Wait, touching nothing, until the watcher has merged its live delta (if it has one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = service.watch_status()
        if not status.get("delta") and not status["busy"]:
            return {"merges": status.get("merges", 0), "merge_seconds": status.get("last_merge_seconds")}
        time.sleep(0.5)
    raise RuntimeError(f"the delta was not merged: {service.watch_status()}")


def measure_switch(service: WatchingService, source: Path, files: list[Path], count: int) -> dict:
    before = service.wait_idle()["batches"]
    tag = uuid.uuid4().hex[:6]
    changed: list[tuple[str, str]] = []
    started = time.perf_counter()
    for i in range(count):
        name = f"switched_{tag}_{i}"
        if i < len(files):
            target = files[i]
            append_function(target, name)
        else:
            target = source / "branch_only" / f"module_{i}.py"
            target.parent.mkdir(exist_ok=True)
            target.write_text(f'"""Only on the other branch."""\n\n\ndef {name}(value):\n    return value + {i}\n')
        changed.append((name, target.relative_to(source).as_posix()))
    written = time.perf_counter() - started
    service.until_found(*changed[-1], started)
    # idle (nothing pending, no batch running) after the last write was seen: every change is in
    status = service.wait_idle(poll=POLL_SECONDS)
    all_searchable = time.perf_counter() - started
    missing = [pair for pair in changed if not service.finds(*pair)]
    if missing:
        raise RuntimeError(f"{len(missing)} of the {count} changes are not searchable: {missing[:3]}")
    return {
        "files": count,
        "write_seconds": round(written, 3),
        "all_searchable_seconds": round(all_searchable, 3),
        "batches": status["batches"] - before,
        "last_batch_seconds": status.get("last_batch", {}).get("seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=None, help="the repository to follow: a folder, or 'transformers' "
                        "(default: the installed rich source)")  # fmt: skip
    parser.add_argument("--saves", type=int, default=20, help="single-file saves to time")
    parser.add_argument("--switch", type=int, default=200, help="files a branch switch changes")
    parser.add_argument("--placeholder-vectors", action="store_true",
                        help="first ingest with random vectors (the watcher still embeds for real)")  # fmt: skip
    args = parser.parse_args()
    corpus = {None: default_corpus, "transformers": transformers_source}.get(args.corpus, lambda: Path(args.corpus))()
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-watch-"))
    arms_env = {"deltas": {}, "whole": {"CAIRN_INDEX_DELTA_FROM": "0"}}
    results: dict = {"machine": machine(), "corpus": str(corpus), "debounce_ms": 400, "merge_idle_ms": MERGE_IDLE_MS}
    try:
        prepared = {name: prepare(corpus, work / name, args.placeholder_vectors) for name in arms_env}
        results |= next(iter(prepared.values()))[2]
        with contextlib.ExitStack() as stack:
            arms = {}
            for name, env in arms_env.items():
                source, data, _stats = prepared[name]
                service = stack.enter_context(
                    WatchingService(data, CAIRN_WATCH_MERGE_IDLE_MS=str(MERGE_IDLE_MS), **env)
                )
                arms[name] = (service, source, sorted(p for p in source.rglob("*.py") if p.stat().st_size > 0))
                results.setdefault(name, {})["catch_up_batch_seconds"] = (
                    service.wait_idle().get("last_batch", {}).get("seconds"))  # fmt: skip
            saves = measure_saves(arms, args.saves)
            for name, (service, source, files) in arms.items():
                results[name]["save_to_searchable"] = summary_ms(saves[name])
                results[name]["branch_switch"] = measure_switch(service, source, files, args.switch)
            for name, (service, _source, _files) in arms.items():
                results[name]["merge"] = wait_merged(service)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pairs = [whole / delta for delta, whole in zip(saves["deltas"], saves["whole"], strict=True)]
    results["whole_over_deltas_per_save"] = {"median": round(statistics.median(pairs), 3), "n": len(pairs)}
    for name in arms_env:
        print(f"\n{name}: save → searchable {results[name]['save_to_searchable']}")
        print(f"{name}: branch switch {results[name]['branch_switch']}; merge {results[name]['merge']}")
    print(f"whole / deltas, per save: {results['whole_over_deltas_per_save']}")
    name = "watch" if args.corpus is None else f"watch-{corpus.name}"
    print(f"wrote {write_result(name, results)}")


if __name__ == "__main__":
    main()
