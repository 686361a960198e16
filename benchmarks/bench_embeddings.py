"""Embeddings from an endpoint against the local model: the same vectors, the same retrieval, and what HTTP costs.

    .venv/bin/python benchmarks/bench_embeddings.py [--infinity .venv-infinity/bin/infinity_emb]
        [--sets sample,httpx,described-httpx] [--rounds 3]

Infinity (``infinity-emb``, in a venv of its own: ``make infinity-venv``) serves the bundled
all-MiniLM-L6-v2 folder over its OpenAI-compatible ``/embeddings``, started by this script on a free
loopback port with its telemetry off. For each set's corpus, the same chunks are ingested twice into
fresh folders, with the local model (``all-MiniLM-L6-v2``) and with the endpoint
(``openai-compatible/all-MiniLM-L6-v2@URL``), both reading ``--max-tokens`` word-pieces of a chunk (an
OpenAI-compatible endpoint truncates at its model's own limit, 256 for this model: the local model is
set to the same to compare like with like), and then:

- **vectors**: the largest difference between the two indexes' vectors;
- **retrieval**: hit@1 / hit@5 / MRR@10 of hybrid search on the set's questions, each index with its own
  query embedder (they must agree to the decimal);
- **ingest speed**: ``embed_documents`` over the corpus's chunk texts, local and endpoint interleaved
  ``--rounds`` times, chunks/s medians and the endpoint's overhead (goal: at most 10 % slower).

Results: benchmarks/results/embeddings.json. ``make bench-embeddings``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.bench_walk import load_questions, score_question, summarize
from benchmarks.common import machine, write_result
from cairn.processes import free_port
from config import Settings
from evals.datasets import CORPORA
from evals.runner import corpus_index
from ingest.embedder import resolve_model_path
from ingest.store import open_generation

ROOT = Path(__file__).resolve().parents[1]
LOCAL = "all-MiniLM-L6-v2"


def start_infinity(binary: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Infinity on the bundled model folder, offline and without usage statistics; returns once it is healthy."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "INFINITY_ANONYMOUS_USAGE_STATS": "0"}  # fmt: skip
    command = [str(binary), "v2", "--model-id", str(resolve_model_path(LOCAL)), "--served-model-name", LOCAL,
               "--engine", "torch", "--device", "cpu", "--batch-size", "32", "--host", "127.0.0.1",
               "--port", str(port), "--url-prefix", "/v1"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"Infinity exited ({process.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"Infinity did not become healthy in 180 s; see {log}")


def retrieval(index_dir: Path, settings: Settings, name: str) -> dict[str, Any]:
    from retrievers import IndexSpec, load_search_index, make_retriever

    _corpus, questions = load_questions(name, None)
    index = load_search_index(IndexSpec.from_settings(settings, index_dir))
    retriever = make_retriever("hybrid", index, k=10, depth=settings.fusion_depth, rrf_k=settings.rrf_k)
    rows = [score_question(q, retriever.invoke(q.question), 10, 0.0) for q in questions]
    return summarize(rows, 10)


def chunk_texts(index_dir: Path) -> list[str]:
    from ingest.embedder import embedding_input
    from retrievers import IndexSpec, load_search_index

    index = load_search_index(IndexSpec(index_dir, LOCAL))
    return [embedding_input(c.path, c.symbol, c.text) for c in index.chunks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--infinity", type=Path, default=ROOT / ".venv-infinity" / "bin" / "infinity_emb")
    parser.add_argument("--sets", default="sample,httpx,described-httpx")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=256,
                        help="word-pieces the local model reads (Infinity: the model's limit, 256)")  # fmt: skip
    args = parser.parse_args()
    if not args.infinity.exists():
        raise SystemExit(f"{args.infinity} is missing: run 'make infinity-venv' first")

    from ingest.embedder import make_embedder
    from ingest.embedding_endpoints import EndpointOptions

    port = free_port()
    endpoint = f"openai-compatible/{LOCAL}@http://127.0.0.1:{port}/v1"
    report: dict[str, Any] = {"machine": machine(), "endpoint": "infinity-emb 0.0.78, torch, CPU",
                              "max_tokens": args.max_tokens, "sets": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        server = start_infinity(args.infinity, port, Path(tmp) / "infinity.log")
        try:
            tokens = args.max_tokens
            local_settings = Settings(_env_file=None, data_dir=Path(tmp) / "local", embedding_max_tokens=tokens)
            endpoint_settings = Settings(_env_file=None, data_dir=Path(tmp) / "endpoint", embedding_model=endpoint,
                                         embedding_max_tokens=tokens)  # fmt: skip
            for name in (s.strip() for s in args.sets.split(",") if s.strip()):
                corpus, _ = load_questions(name, None)
                local_dir = corpus_index(CORPORA[corpus](), local_settings)
                endpoint_dir = corpus_index(CORPORA[corpus](), endpoint_settings)
                # vectors() is a view into the FAISS index's memory: each generation is kept while it is read
                local_generation, endpoint_generation = open_generation(local_dir), open_generation(endpoint_dir)
                local_vectors = np.array(local_generation.vectors())
                endpoint_vectors = np.array(endpoint_generation.vectors())
                entry = {
                    "corpus": corpus,
                    "built_with": [local_generation.embedding_model, endpoint_generation.embedding_model],
                    "chunks": len(local_vectors),
                    "max_vector_difference": float(np.abs(local_vectors - endpoint_vectors).max()),
                    "local": retrieval(local_dir, local_settings, name),
                    "endpoint": retrieval(endpoint_dir, endpoint_settings, name),
                }
                report["sets"][name] = entry
                print(name, {k: v for k, v in entry.items() if k not in ("local", "endpoint")})
                print("  local   ", entry["local"])
                print("  endpoint", entry["endpoint"])
            # ingest speed: the largest corpus's chunk texts, the two embedders interleaved
            texts = chunk_texts(local_dir)
            local = make_embedder(LOCAL, max_tokens=local_settings.embedding_max_tokens)
            remote = make_embedder(endpoint, max_tokens=endpoint_settings.embedding_max_tokens,
                                   endpoint=EndpointOptions.from_settings(endpoint_settings))  # fmt: skip
            rates: dict[str, list[float]] = {"local": [], "endpoint": []}
            for _ in range(args.rounds):
                for label, embedder in (("local", local), ("endpoint", remote)):
                    started = time.perf_counter()
                    embedder.embed_documents(texts, batch_size=32)
                    rates[label].append(len(texts) / (time.perf_counter() - started))
            medians = {label: round(statistics.median(r), 1) for label, r in rates.items()}
            report["ingest_speed"] = {
                "chunks": len(texts),
                "rounds": args.rounds,
                "chunks_per_s": medians,
                "all_rounds": {label: [round(r, 1) for r in values] for label, values in rates.items()},
                "endpoint_slower_by": round(1 - medians["endpoint"] / medians["local"], 3),
                "load_1min": round(os.getloadavg()[0], 2),
            }
            print("ingest speed", report["ingest_speed"])
        finally:
            server.terminate()
            server.wait(20)
    print(write_result("embeddings", report))


if __name__ == "__main__":
    main()
