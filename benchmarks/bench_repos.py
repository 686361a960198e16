"""Several repositories in one service: its RSS with 1 and 5 loaded indexes, and under a memory budget.

    python benchmarks/bench_repos.py [--corpus PATH] [--requests N]

One corpus (default: the installed `rich` package's source) is ingested once with the real embedding
model as repository r1 and copied as r2..r5, so every index weighs the same. Then `cairn serve`
(the instant model, no Redis: requests without a session) is asked questions with the model
`cairn/r1` only, then with each of `cairn/r1`..`cairn/r5`, and its RSS read after each step; a
second service with CAIRN_INDEX_MEMORY_MB set to hold two of the indexes is asked the same five,
which shows the least recently used ones unloaded. Last, one question across all five (`cairn/*`)
against one repository, to show what fusing five rankings costs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_serving import wait_ready  # noqa: E402
from benchmarks.common import du, machine, write_result  # noqa: E402
from cairn.processes import free_port  # noqa: E402

REPOS = [f"r{n}" for n in range(1, 6)]
QUESTIONS = [
    "How is a table rendered?",
    "Where are console colors detected?",
    "How does the progress bar refresh?",
    "How is markup parsed into styles?",
    "What does a Live display do?",
]


def default_corpus() -> Path:
    """Return the installed rich package's source: offline, and a few thousand chunks."""
    import rich

    return Path(rich.__file__).parent


def build_repositories(corpus: Path, data_dir: Path) -> dict[str, int]:
    """Ingest the corpus as r1 with the real embedding model, copy it as r2..r5; return the index sizes."""
    from config import Settings
    from ingest.pipeline import ingest_repository
    from ingest.repos import Repositories

    settings = Settings(_env_file=None, data_dir=data_dir)
    repositories = Repositories.of(settings)
    claim = repositories.claim("r1", corpus)
    started = time.perf_counter()
    result = ingest_repository(corpus, settings.model_copy(update={"index_dir": claim.index_dir}))
    print(f"ingested {corpus} as r1: {result.chunks_total} chunks in {time.perf_counter() - started:.0f} s", flush=True)
    for name in REPOS[1:]:
        shutil.copytree(repositories.root / "r1", repositories.root / name)
    return {name: du(repositories.root / name) for name in REPOS}


class Service:
    """`cairn serve` on the repositories, as its own process (its RSS is what is measured)."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            "CAIRN_DATA_DIR": str(data_dir),
            "CAIRN_MODEL": "instant",
            "CAIRN_DEFAULT_REPO": "r1",
            "CAIRN_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing there: no sessions needed
            **env,
        }
        cairn = str(Path(sys.executable).with_name("cairn"))
        command = [cairn, "serve", "--no-start-redis", "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stderr=subprocess.DEVNULL)
        self.psutil = psutil.Process(self.process.pid)

    def __enter__(self) -> Service:
        wait_ready(f"{self.url}/health", self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(30)

    def rss_mb(self) -> float:
        return round(self.psutil.memory_info().rss / 2**20, 1)

    def ask(self, model: str, n: int) -> list[float]:
        """Ask n questions with a model id; return the seconds each took."""
        seconds = []
        for i in range(n):
            body = {"model": model, "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
            started = time.perf_counter()
            reply = httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=120)
            seconds.append(time.perf_counter() - started)
            reply.raise_for_status()
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=None, help="the repository to index (default: rich)")
    parser.add_argument("--requests", type=int, default=5, help="questions per model and step")
    args = parser.parse_args()
    corpus = args.corpus or default_corpus()
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-repos-"))
    try:
        sizes = build_repositories(corpus, work / "data")
        results: dict = {"machine": machine(), "corpus": str(corpus), "index_bytes": sizes["r1"], "steps": {}}
        steps = results["steps"]
        with Service(work / "data") as service:
            steps["started (r1 loaded, no query yet)"] = service.rss_mb()
            service.ask("cairn/r1", args.requests)
            steps["1 index loaded (after queries to cairn/r1)"] = service.rss_mb()
            for name in REPOS[1:]:
                service.ask(f"cairn/{name}", args.requests)
            steps["5 indexes loaded (after queries to cairn/r1..r5)"] = service.rss_mb()
            one = service.ask("cairn/r1", 20)
            across = service.ask("cairn/*", 20)
            steps["after 20 questions to cairn/*"] = service.rss_mb()
            results["latency_ms"] = {
                "one repository p50": round(statistics.median(one) * 1000, 1),
                "all five (cairn/*) p50": round(statistics.median(across) * 1000, 1),
            }
        budget_mb = max(1, (2 * sizes["r1"] + sizes["r1"] // 2) // 2**20)
        with Service(work / "data", CAIRN_INDEX_MEMORY_MB=str(budget_mb)) as service:
            for name in REPOS:
                service.ask(f"cairn/{name}", args.requests)
            steps[f"budget {budget_mb} MB (two indexes), after queries to cairn/r1..r5"] = service.rss_mb()
        results["budget_mb"] = budget_mb
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nindex on disk: {results['index_bytes'] / 2**20:.1f} MB each")
    for step, rss in results["steps"].items():
        print(f"  RSS {rss:>7.1f} MB  {step}")
    for what, ms in results["latency_ms"].items():
        print(f"  {what}: {ms} ms")
    print(f"wrote {write_result('repos', results)}")


if __name__ == "__main__":
    main()
