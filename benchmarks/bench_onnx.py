"""Query embedding on ONNX Runtime against torch: latency, batch throughput, agreement, retrieval quality.

    .venv/bin/python benchmarks/bench_onnx.py [--index /tmp/cairn-bench/index] [--rounds 3]

The same model (the bundled all-MiniLM-L6-v2, 128 word-pieces) on both sides, loaded once, measured
in the same process and interleaved round by round:

- one query at a time: torch as the service runs it (torch's default threads), torch on one thread,
  and ONNX Runtime on one thread (``CAIRN_EMBEDDING_BACKEND=onnx``); p50/p95 over the golden questions;
- the hybrid search a question costs, query embedding included, on the index;
- chunks/s embedding 640 of the index's chunks in batches of 32 (what ingest does), torch and ONNX;
- the cosine between the two backends' vectors for 2,000 chunks and every question;
- hit@1/hit@5/MRR@10 of dense and hybrid search with each backend's query vectors over the same index
  (the httpx eval set on its index; the transformers golden set when that index exists).

Results go to benchmarks/results/onnx.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks.common import machine, summary_ms, write_result
from config import Settings
from evals.datasets import CORPORA
from evals.retrieval import GoldenQuestion, evaluate, load_golden
from ingest.embedder import Embedder, embedding_input
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers import SearchIndex

ROOT = Path(__file__).resolve().parents[1]


def _timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def _questions(path: Path) -> list[GoldenQuestion]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [GoldenQuestion(r["id"], r["question"], tuple(r["files"])) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=Path("/tmp/cairn-bench/index"), help="transformers index")
    parser.add_argument("--data", type=Path, default=None, help="where to build the httpx index (default: temp)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="cairn-bench-onnx-"))
    default_threads = torch.get_num_threads()

    settings = Settings(index_dir=data / "httpx" / "index")
    ingest_repository(CORPORA["httpx"]().root, settings)
    sets = {"httpx": (settings.resolved_index_dir, _questions(ROOT / "evals/datasets/httpx.jsonl"))}
    if (args.index / "CURRENT").exists():
        sets["transformers golden"] = (args.index, load_golden())

    model, max_tokens = settings.embedding_model, settings.embedding_max_tokens
    torch_embedder = Embedder(model, max_tokens=max_tokens)
    onnx_embedder = Embedder(model, max_tokens=max_tokens, backend="onnx", onnx_dir=data / "onnx")
    report: dict = {"machine": {**machine(), "torch_default_threads": default_threads}, "rounds": args.rounds}

    # agreement and quality
    first_dir, _ = next(iter(sets.values()))
    generation = open_generation(first_dir)
    texts = [embedding_input(c.path, c.symbol, c.text) for c in list(generation.chunks)[:2000]]
    questions = [q.question for _, qs in sets.values() for q in qs]
    chunk_cos = np.sum(torch_embedder.embed_documents(texts) * onnx_embedder._queries.encode_batches(texts), axis=1)
    query_cos = np.sum(torch_embedder.embed_queries(questions) * onnx_embedder.embed_queries(questions), axis=1)
    report["agreement"] = {
        "chunks": len(texts), "chunk_cosine_min": round(float(chunk_cos.min()), 6),
        "questions": len(questions), "question_cosine_min": round(float(query_cos.min()), 6),
    }  # fmt: skip
    print(json.dumps(report["agreement"]), flush=True)
    quality: dict = {}
    indexes = {}
    for name, (folder, golden) in sets.items():
        generation = open_generation(folder)
        per_backend = {"torch": torch_embedder, "onnx": onnx_embedder}
        indexes[name] = {b: SearchIndex(generation, e) for b, e in per_backend.items()}
        quality[name] = {}
        for backend, index in indexes[name].items():
            for mode in ("dense", "hybrid"):
                search = getattr(index, mode)
                result = evaluate(lambda q, k, s=search: [h.chunk.path for h in s(q, k)], golden)
                quality[name][f"{mode} ({backend})"] = {m: result[m] for m in ("hit@1", "hit@5", "mrr@10")}
                print(name, mode, backend, quality[name][f"{mode} ({backend})"], flush=True)
    report["quality"] = quality

    # speed, interleaved
    batch = sorted(texts[:640], key=len, reverse=True)
    samples: dict[str, list[float]] = {}
    throughput: dict[str, list[float]] = {"torch": [], "onnx": []}
    search_index = indexes[list(sets)[-1]]
    for round_ in range(args.rounds):
        for question in questions:
            torch.set_num_threads(default_threads)
            samples.setdefault(f"query: torch ({default_threads} threads)", []).append(
                _timed(torch_embedder.embed_query, question)
            )
            torch.set_num_threads(1)
            samples.setdefault("query: torch (1 thread)", []).append(_timed(torch_embedder.embed_query, question))
            samples.setdefault("query: onnx (1 thread)", []).append(_timed(onnx_embedder.embed_query, question))
            torch.set_num_threads(default_threads)
            for backend, index in search_index.items():
                samples.setdefault(f"hybrid search: {backend}", []).append(_timed(index.hybrid, question, 8))
        torch.set_num_threads(default_threads)
        throughput["torch"].append(len(batch) / _timed(torch_embedder.embed_documents, batch))
        throughput["onnx"].append(len(batch) / _timed(onnx_embedder._queries.encode_batches, batch))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in throughput.items()), flush=True)
    report["latency_ms"] = {name: summary_ms(values) for name, values in samples.items()}
    report["chunks_per_s"] = {name: round(statistics.median(values), 1) for name, values in throughput.items()}
    base = report["latency_ms"][f"query: torch ({default_threads} threads)"]["p50_ms"]
    report["query_p50_ratio_onnx_vs_torch"] = round(report["latency_ms"]["query: onnx (1 thread)"]["p50_ms"] / base, 3)
    for name, summary in report["latency_ms"].items():
        print(f"{name:<34} p50 {summary['p50_ms']:7.2f} ms  p95 {summary['p95_ms']:7.2f} ms")
    print("chunks/s", report["chunks_per_s"])
    write_result("onnx", report)


if __name__ == "__main__":
    main()
