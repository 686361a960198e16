"""The ingest's batch encoder: torch fp32 against ONNX Runtime fp32 and dynamically quantized int8.

    .venv/bin/python -m benchmarks.bench_ingest_onnx [--sets sample,httpx,described-httpx,described-rich]
        [--rounds 3] [--threads 2] [--data /tmp/cairn-walk]

The chunk texts of each set's corpus (ingested under DATA/eval-indexes, as ``make bench-walk`` does)
are embedded by each encoder, interleaved ``--rounds`` times (chunks/s medians over all corpora's
chunks, batch 32; torch and ONNX Runtime on ``--threads`` threads). Quality: dense retrieval with each
encoder's own document and query vectors (exact inner product, no index), hit@1 / hit@5 / MRR@10 on
each set's questions, and the cosine between each encoder's document vectors and torch's.
The default moves to int8 only if it is faster and loses at most 0.01 MRR on every set.

Results: benchmarks/results/ingest_onnx.json. ``make bench-ingest-onnx``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_walk import load_questions
from benchmarks.common import machine, write_result
from config import Settings
from evals.datasets import CORPORA
from evals.metrics import first_relevant_rank
from evals.retrieval import score_rankings
from evals.runner import corpus_index
from ingest.embedder import Embedder, embedding_input, resolve_model_path
from ingest.onnx_encoder import OnnxQueryEncoder

MODEL = "all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="sample,httpx,described-httpx,described-rich")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "cairn-walk")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    settings = Settings(_env_file=None, data_dir=args.data)
    torch_encoder = Embedder(MODEL, max_tokens=settings.embedding_max_tokens, backend="torch")
    model_path = resolve_model_path(MODEL)
    onnx_dir = args.data / "onnx-bench"
    encoders = {
        "torch fp32": lambda texts: torch_encoder.embed_documents(texts, batch_size=32),
        "onnx fp32": OnnxQueryEncoder(torch_encoder._model, model_path, onnx_dir, threads=args.threads).encode_batches,
        "onnx int8": OnnxQueryEncoder(
            torch_encoder._model, model_path, onnx_dir, threads=args.threads, quantized=True
        ).encode_batches,
    }

    from retrievers import IndexSpec, load_search_index

    corpora: dict[str, tuple[list[str], list[str]]] = {}  # corpus -> (chunk texts, chunk paths)
    sets: dict[str, tuple[str, list[Any]]] = {}
    for name in (s.strip() for s in args.sets.split(",") if s.strip()):
        corpus, questions = load_questions(name, None)
        sets[name] = (corpus, questions)
        if corpus not in corpora:
            index = load_search_index(IndexSpec(corpus_index(CORPORA[corpus](), settings), MODEL))
            corpora[corpus] = ([embedding_input(c.path, c.symbol, c.text) for c in index.chunks],
                               [c.path for c in index.chunks])  # fmt: skip

    everything = [text for texts, _ in corpora.values() for text in texts]
    for encode in encoders.values():  # warm up: the first batch of each pays for allocation
        encode(everything[:64])
    rates: dict[str, list[float]] = {label: [] for label in encoders}
    for _ in range(args.rounds):
        for label, encode in encoders.items():
            started = time.perf_counter()
            encode(everything)
            rates[label].append(len(everything) / (time.perf_counter() - started))
    speed = {label: round(statistics.median(values), 1) for label, values in rates.items()}

    quality: dict[str, dict[str, Any]] = {}
    agreement: dict[str, float] = {}
    vectors = {label: {corpus: encode(texts) for corpus, (texts, _) in corpora.items()}
               for label, encode in encoders.items()}  # fmt: skip
    for label in encoders:
        cosines = [np.sum(vectors[label][c] * vectors["torch fp32"][c], axis=1) for c in corpora]
        agreement[label] = round(float(np.min(np.concatenate(cosines))), 6)
    for name, (corpus, questions) in sets.items():
        paths = corpora[corpus][1]
        quality[name] = {}
        for label, encode in encoders.items():
            queries = encode([q.question for q in questions])
            scores = queries @ vectors[label][corpus].T
            ranks = []
            for question, row in zip(questions, scores, strict=True):
                order = np.argsort(-row)[:50]
                ranks.append(first_relevant_rank([paths[i] for i in order], question.files))
            quality[name][label] = score_rankings(ranks, hit_k=5, mrr_k=10)

    report = {
        "machine": machine(),
        "load_1min_at_end": round(os.getloadavg()[0], 2),
        "threads": args.threads,
        "chunks": len(everything),
        "chunks_per_s": speed,
        "all_rounds": {label: [round(r, 1) for r in values] for label, values in rates.items()},
        "min_cosine_to_torch": agreement,
        "dense_retrieval": quality,
    }
    print(write_result("ingest_onnx", report))
    print("chunks/s", speed, "min cosine to torch", agreement)
    for name, by_encoder in quality.items():
        print(name, {label: (s["hit@1"], s["hit@5"], s["mrr@10"]) for label, s in by_encoder.items()})


if __name__ == "__main__":
    main()
