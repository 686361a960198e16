"""Query latency and quality on the benchmark index, against LangChain's stock hybrid retriever.

    .venv/bin/python benchmarks/bench_query.py [--index /tmp/cairn-bench/index] [--rounds 3]

Uses the golden questions (evals/golden/transformers.jsonl) as queries. For each query it times
Cairn's keyword, dense and hybrid searches (the query embedding included) and LangChain's
``EnsembleRetriever(BM25Retriever, FAISS)`` built in this same process on the same chunks and the same
vectors, interleaved so both see the same machine noise. Reports p50/p95 per method, the ratio of
the stock ensemble to Cairn's hybrid, build time of the stock retriever, and hit@5 / MRR@10 for all.
Results go to benchmarks/results/query.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, summary_ms, write_result
from config import Settings
from evals.retrieval import evaluate, evaluate_index, load_golden
from retrievers import load_search_index

K = 8


def build_stock_ensemble(index, k: int):
    """LangChain's documented hybrid recipe over the same chunks and vectors."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy
    from langchain_core.embeddings import Embeddings

    class QueryEmbeddings(Embeddings):
        def embed_documents(self, texts):
            return [index.embedder.embed_query(t).tolist() for t in texts]

        def embed_query(self, text):
            return index.embedder.embed_query(text).tolist()

    texts = [c.text for c in index.chunks]
    metadatas = [{"path": c.path, "start_line": c.start_line} for c in index.chunks]
    vectors = index.generation.vectors()
    started = time.perf_counter()
    bm25 = BM25Retriever.from_texts(texts, metadatas=metadatas, k=k)
    faiss_store = FAISS.from_embeddings(
        zip(texts, vectors.tolist(), strict=True),
        QueryEmbeddings(),
        metadatas=metadatas,
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
    )
    ensemble = EnsembleRetriever(
        retrievers=[bm25, faiss_store.as_retriever(search_kwargs={"k": k})], weights=[0.5, 0.5]
    )
    return ensemble, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("/tmp/cairn-bench/index"))
    parser.add_argument("--rounds", type=int, default=3, help="passes over the golden questions")
    parser.add_argument("--no-baseline", action="store_true", help="skip LangChain's EnsembleRetriever")
    args = parser.parse_args()

    started = time.perf_counter()
    index = load_search_index(Settings(index_dir=args.index))
    load_seconds = time.perf_counter() - started
    index.dense("warm up the model", 1)
    golden = load_golden()
    queries = [g.question for g in golden]

    methods = {
        "keyword": lambda q: index.keyword(q, K),
        "dense": lambda q: index.dense(q, K),
        "hybrid": lambda q: index.hybrid(q, K),
    }
    baseline_build = None
    if not args.no_baseline:
        ensemble, baseline_build = build_stock_ensemble(index, K)
        methods["langchain_ensemble"] = lambda q: ensemble.invoke(q)
        ensemble.invoke(queries[0])

    for method in methods.values():  # warm-up
        for q in queries[:3]:
            method(q)
    timings: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for q in queries:
            for name, method in methods.items():  # interleaved: every method sees the same noise
                t0 = time.perf_counter()
                method(q)
                timings[name].append(time.perf_counter() - t0)

    latency = {name: summary_ms(values) for name, values in timings.items()}
    result: dict[str, object] = {
        "machine": machine(),
        "index": str(args.index),
        "chunks": len(index),
        "index_load_seconds": round(load_seconds, 3),
        "queries": len(queries),
        "rounds": args.rounds,
        "k": K,
        "latency": latency,
    }
    if baseline_build is not None:
        result["langchain_ensemble_build_seconds"] = round(baseline_build, 2)
        result["ratio_langchain_ensemble_over_hybrid_p50"] = round(
            latency["langchain_ensemble"]["p50_ms"] / latency["hybrid"]["p50_ms"], 2
        )
        result["ratio_langchain_ensemble_over_hybrid_p95"] = round(
            latency["langchain_ensemble"]["p95_ms"] / latency["hybrid"]["p95_ms"], 2
        )

    quality = evaluate_index(index, golden)
    if baseline_build is not None:
        quality["langchain_ensemble"] = evaluate(
            lambda q, k: [d.metadata["path"] for d in ensemble.invoke(q)][:k], golden
        )
    result["quality"] = {
        name: {k: v for k, v in report.items() if k != "per_question"} for name, report in quality.items()
    }
    result["per_question"] = {name: report["per_question"] for name, report in quality.items()}
    path = write_result("query", result)
    print(json.dumps({k: v for k, v in result.items() if k != "per_question"}, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
