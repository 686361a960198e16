"""Helpers shared by the benchmark scripts: the corpus, percentiles, RSS."""

from __future__ import annotations

import json
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def transformers_source() -> Path:
    """Return the installed transformers package's source folder, the benchmark corpus."""
    import transformers

    return Path(transformers.__file__).parent


def retrieval_sets(data: Path, transformers_index: Path, *, models: bool = False) -> dict[str, tuple[Any, list[Any]]]:
    """Return the retrieval eval sets by name: (settings of the index, questions).

    The sample and httpx sets are ingested (with the real embedding model) under ``data``; the
    transformers golden set, and with ``models`` the 10 questions naming a model, join when the index
    ``make bench-ingest`` builds exists at ``transformers_index``.
    """
    from config import Settings
    from evals.datasets import CORPORA
    from evals.retrieval import GoldenQuestion, load_golden
    from ingest.pipeline import ingest_repository

    root = Path(__file__).resolve().parents[1]
    sets: dict[str, tuple[Any, list[Any]]] = {}
    for name in ("sample", "httpx"):
        settings = Settings(index_dir=data / name / "index")
        ingest_repository(CORPORA[name]().root, settings)
        lines = (root / "evals" / "datasets" / f"{name}.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        sets[name] = settings, [GoldenQuestion(r["id"], r["question"], tuple(r["files"])) for r in rows]
    if (transformers_index / "CURRENT").exists():
        sets["transformers golden"] = Settings(index_dir=transformers_index), load_golden()
        if models:
            questions = load_golden(root / "evals/golden/transformers-models.jsonl")
            sets["transformers, questions naming a model"] = Settings(index_dir=transformers_index), questions
    return sets


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """Return p50/p95/mean in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "n": len(ms),
    }


def machine() -> dict[str, Any]:
    """Describe the machine the numbers came from."""
    import os

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def du(path: Path) -> int:
    """Return the bytes used by the files below path."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write a benchmark's results as JSON under benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


class ThreadServer:
    """The Cairn app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from cairn.processes import free_port

        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def sample_service(name: str, **overrides: Any) -> tuple[Any, Any]:
    """Ingest the sample repository into a fresh folder and start a Redis beside it.

    Return the service's settings (the instant fake model, that Redis under key prefix ``name``, and
    ``overrides``) and the Redis process, which the caller stops.
    """
    import tempfile

    from cairn.processes import free_port
    from config import Settings
    from ingest.pipeline import ingest_repository
    from serving.redis_server import start_redis

    root = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix=f"cairn-bench-{name}-"))
    index_dir = work / "index"
    ingest_repository(root / "examples/sample-repo", Settings(_env_file=None, data_dir=work, index_dir=index_dir))
    port = free_port()
    redis = start_redis(port, work)
    settings = Settings(_env_file=None, data_dir=work, index_dir=index_dir, model="instant",
                        redis_url=f"redis://127.0.0.1:{port}/0", redis_prefix=name, **overrides)  # fmt: skip
    return settings, redis
