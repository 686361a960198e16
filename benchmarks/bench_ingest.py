"""Ingest benchmark on the installed transformers source: full build, raw-encode baseline, incremental.

    .venv/bin/python benchmarks/bench_ingest.py [--work DIR] [--raw-baseline] [--edits 5]

Reports chunk count, ingest time, chunks/s, the time spent inside SentenceTransformer.encode during
the ingest (so the pipeline's own overhead is measured in the same run), optionally a separate raw
``SentenceTransformer.encode`` over the very same chunk texts in the same process, incremental
re-ingest after editing one file (median of --edits runs), index size on disk and the RSS of a loaded
index. Results go to benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, du, machine, transformers_source, write_result
from config import Settings
from ingest.embedder import Embedder, embedding_input
from ingest.pipeline import ingest_repository
from ingest.store import open_generation

EDIT_TARGETS = [
    "models/bert/modeling_bert.py",
    "generation/utils.py",
    "tokenization_utils_base.py",
    "trainer.py",
    "models/llama/modeling_llama.py",
    "modeling_utils.py",
    "configuration_utils.py",
]

RSS_PROBE = """
import json, sys, psutil
from config import Settings
from retrievers import load_search_index
proc = psutil.Process()
before = proc.memory_info().rss
index = load_search_index(Settings(index_dir=sys.argv[1]))
loaded = proc.memory_info().rss
index.keyword("attention mask", 10)
index.dense("attention mask", 10)
with_model = proc.memory_info().rss
print(json.dumps({"rss_before_mb": before / 2**20, "rss_index_mb": (loaded - before) / 2**20,
                  "rss_index_and_model_mb": (with_model - before) / 2**20,
                  "rss_total_mb": with_model / 2**20}))
"""


def overhead_pairs(
    source: Path, work: Path, every: int, pairs: int, embedder: Embedder, settings: Settings
) -> dict[str, object]:
    """Ingest overhead vs raw encode, measured as interleaved pairs so both see the same machine noise."""
    subset = work / f"subset-{every}"
    if not subset.exists():
        for i, file in enumerate(sorted(source.rglob("*.py"))):
            if i % every == 0 and "__pycache__" not in file.parts:
                target = subset / file.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)
    sub_settings = settings.model_copy(update={"index_dir": work / f"subset-{every}-index"})
    ingest_s: list[float] = []
    raw_s: list[float] = []
    chunks = 0
    for pair in range(pairs):
        order = ("ingest", "raw") if pair % 2 == 0 else ("raw", "ingest")
        for step in order:
            if step == "ingest":
                started = time.perf_counter()
                done = ingest_repository(subset, sub_settings, rebuild=True, embedder_factory=lambda: embedder)
                ingest_s.append(time.perf_counter() - started)
                chunks = done.chunks_total
                continue
            if not (sub_settings.resolved_index_dir / "CURRENT").exists():  # chunk exactly as ingest does
                ingest_repository(subset, sub_settings, rebuild=True, embedder_factory=lambda: embedder)
            texts = [
                embedding_input(c.path, c.symbol, c.text)
                for c in open_generation(sub_settings.resolved_index_dir).chunks
            ]
            started = time.perf_counter()
            embedder._model.encode(texts, batch_size=settings.embedding_batch_size, normalize_embeddings=True)
            raw_s.append(time.perf_counter() - started)
        print(f"pair {pair}: ingest {ingest_s[-1]:.1f}s raw {raw_s[-1]:.1f}s", flush=True)
    return {
        "subset_every_nth_file": every,
        "chunks": chunks,
        "ingest_median_s": round(statistics.median(ingest_s), 2),
        "raw_encode_median_s": round(statistics.median(raw_s), 2),
        "overhead_median_ratio": round(statistics.median(ingest_s) / statistics.median(raw_s) - 1, 4),
        "per_pair_overhead": [round(i / r - 1, 4) for i, r in zip(ingest_s, raw_s, strict=True)],
        "ingest_all_s": [round(x, 2) for x in ingest_s],
        "raw_all_s": [round(x, 2) for x in raw_s],
    }


def _target(corpus: Path, i: int) -> Path:
    path = corpus / EDIT_TARGETS[i % len(EDIT_TARGETS)]
    if path.exists():
        return path
    candidates = sorted(corpus.rglob("*.py"))
    return candidates[i % len(candidates)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cairn-bench"), help="scratch folder")
    parser.add_argument("--raw-baseline", action="store_true", help="also time raw encode on all chunks")
    parser.add_argument("--edits", type=int, default=5, help="incremental re-ingests to time")
    parser.add_argument("--corpus", type=Path, default=None, help="another corpus (smoke tests)")
    parser.add_argument(
        "--pairs", type=int, default=0, help="interleaved (ingest, raw encode) pairs on a subset of the corpus"
    )
    parser.add_argument("--subset", type=int, default=10, help="with --pairs: every Nth file of the corpus")
    parser.add_argument("--reuse", action="store_true", help="keep an existing index (skip the full build)")
    args = parser.parse_args()

    source = args.corpus or transformers_source()
    corpus = args.work / "corpus"
    if not corpus.exists():
        shutil.copytree(source, corpus, ignore=shutil.ignore_patterns("__pycache__"))
    settings = Settings(data_dir=args.work / "data", index_dir=args.work / "index")
    result: dict[str, object] = {"machine": machine(), "corpus": str(source)}
    result["settings"] = {
        "embedding_model": settings.embedding_model,
        "embedding_max_tokens": settings.embedding_max_tokens,
        "embedding_batch_size": settings.embedding_batch_size,
        "chunk_max_chars": settings.chunk_max_chars,
        "faiss_index": settings.faiss_index,
    }

    embedder = Embedder(settings.embedding_model, max_tokens=settings.embedding_max_tokens)
    if not args.reuse:
        started = time.perf_counter()
        full = ingest_repository(corpus, settings, rebuild=True, embedder_factory=lambda: embedder)
        wall = time.perf_counter() - started
        overhead = (wall - embedder.encode_seconds) / embedder.encode_seconds
        result["full"] = {
            "files": full.files_total,
            "chunks": full.chunks_total,
            "skipped": dict(full.skipped),
            "seconds": round(wall, 2),
            "chunks_per_s": round(full.chunks_total / wall, 2),
            "encode_seconds_inside_ingest": round(embedder.encode_seconds, 2),
            "overhead_vs_encode_inside_ingest": round(overhead, 4),
            "timings": {k: round(v, 3) for k, v in full.timings.items()},
        }
        print(json.dumps(result["full"], indent=1), flush=True)

    generation = open_generation(settings.resolved_index_dir)
    if args.raw_baseline:
        texts = [embedding_input(c.path, c.symbol, c.text) for c in generation.chunks]
        started = time.perf_counter()
        embedder._model.encode(texts, batch_size=settings.embedding_batch_size, normalize_embeddings=True)
        raw = time.perf_counter() - started
        result["raw_encode"] = {"chunks": len(texts), "seconds": round(raw, 2)}
        if "full" in result:
            full_seconds = result["full"]["seconds"]  # type: ignore[index]
            result["raw_encode"]["ingest_overhead_vs_raw"] = round(full_seconds / raw - 1, 4)  # type: ignore[index]
        print(json.dumps(result["raw_encode"]), flush=True)

    # Incremental: insert a line inside one file, re-ingest, time it; each run edits another file.
    noop_times = []
    for _ in range(3):
        started = time.perf_counter()
        ingest_repository(corpus, settings, embedder_factory=lambda: embedder)
        noop_times.append(time.perf_counter() - started)
    edit_times, embedded = [], []
    for i in range(args.edits):
        target = _target(corpus, i)
        lines = target.read_text().split("\n")
        middle = len(lines) // 2
        lines.insert(middle, f"# cairn benchmark edit {i} {time.time_ns()}")
        target.write_text("\n".join(lines))
        started = time.perf_counter()
        inc = ingest_repository(corpus, settings, embedder_factory=lambda: embedder)
        edit_times.append(time.perf_counter() - started)
        embedded.append(inc.chunks_embedded)
        print(
            f"edit {i}: {edit_times[-1]:.2f}s, {inc.chunks_embedded} chunks embedded, {inc.timings}",
            flush=True,
        )
    result["incremental"] = {
        "edit_one_file_median_s": round(statistics.median(edit_times), 3),
        "edit_one_file_all_s": [round(t, 3) for t in edit_times],
        "chunks_embedded_per_edit": embedded,
        "no_change_median_s": round(statistics.median(noop_times), 3),
        "note": "embedding model already loaded in this process (as in a running service)",
    }

    # A cold CLI process pays for loading the model too.
    cold = []
    for i in range(3):
        target = _target(corpus, args.edits + i)
        target.write_text(target.read_text() + f"\n# cold edit {time.time_ns()}\n")
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cli", "ingest", str(corpus),
             "--index", str(settings.resolved_index_dir), "--quiet"], check=True, capture_output=True,
        )  # fmt: skip
        cold.append(time.perf_counter() - started)
    result["incremental"]["edit_one_file_cold_cli_median_s"] = round(statistics.median(cold), 3)  # type: ignore[index]

    generation = open_generation(settings.resolved_index_dir)
    files = {p.name: p.stat().st_size for p in generation.path.rglob("*") if p.is_file()}
    result["disk"] = {"generation_mb": round(du(generation.path) / 2**20, 1), "files_bytes": files}
    probe = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(settings.resolved_index_dir)],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    result["memory"] = {k: round(v, 1) for k, v in json.loads(probe.stdout.strip().splitlines()[-1]).items()}
    if args.pairs:
        result["pairs"] = overhead_pairs(source, args.work, args.subset, args.pairs, embedder, settings)
    if args.reuse:  # keep the numbers of the full build made by an earlier run
        previous = RESULTS / "ingest.json"
        if previous.exists():
            result = {**json.loads(previous.read_text()), **result}
    path = write_result("ingest", result)
    print(json.dumps({k: v for k, v in result.items() if k != "disk"}, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
