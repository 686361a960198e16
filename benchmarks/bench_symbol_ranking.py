"""Retrieval quality step by step: tokenizer, copies collapsed, and the symbol and path rankings in the fusion.

    .venv/bin/python benchmarks/bench_symbol_ranking.py [--data /tmp/cairn-symbol-ranking]
        [--transformers-index /tmp/cairn-bench/index]

Ingests the eval corpora that need no long embedding run (the sample repository and the installed
httpx) with the real embedding model, then scores keyword and dense with copies kept and collapsed,
hybrid without the symbol ranking (dense + keyword), with it, and with it and the path ranking, then
the steps from the previous default (the light-1 keyword tokenizer, re-tokenized in memory, and copies
kept) to this one (snowball-1, copies collapsed), on each dataset's questions (``evals/datasets/``: a
result is relevant when its file is one of the question's files): hit@1, hit@5 and MRR@10. With the
transformers index ``make bench-ingest`` builds (33 minutes), the golden set
(``evals/golden/transformers.jsonl``) is scored the same way, and so are 10 questions that name a
model ("In BERT, ...", "Llama's attention"; ``evals/golden/transformers-models.jsonl``), where each
model's folder holds copies of the same code; and the median time of one hybrid search there, copies
kept and collapsed, interleaved. Results go to benchmarks/results/symbol-ranking.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, retrieval_sets, write_result
from evals.retrieval import evaluate
from ingest.bm25 import build_bm25
from ingest.manifest import KeywordInfo
from ingest.pipeline import tokenize_all
from ingest.tokens import LEGACY_TOKENIZER, tokenizer
from retrievers import SearchIndex, collapse_copies, fuse, load_search_index

DEPTH = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="where to keep the indexes (default: a temp dir)")
    parser.add_argument(
        "--transformers-index", type=Path, default=Path("/tmp/cairn-bench/index"),
        help="the transformers index make bench-ingest builds; its golden set is scored when it exists",
    )  # fmt: skip
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="cairn-symbol-ranking-"))
    report: dict = {"machine": machine(), "datasets": {}}
    sets = retrieval_sets(data, args.transformers_index, models=True)
    for name, (settings, golden) in sets.items():
        index = load_search_index(settings)
        legacy = with_tokenizer(index, LEGACY_TOKENIZER)
        indexes = {"default": index, "legacy": legacy}
        scores = {
            mode: evaluate(lambda q, k, s=search, i=indexes: s(i, q, k), golden) for mode, search in MODES.items()
        }
        report["datasets"][name] = scores
        print(f"{name} ({len(golden)} questions)")
        for mode, result in scores.items():
            hit1, hit5, mrr = result["hit@1"], result["hit@5"], result["mrr@10"]
            print(f"  {mode:<52} hit@1 {hit1:.3f}  hit@5 {hit5:.3f}  mrr@10 {mrr:.3f}")
        if name == "transformers golden":
            report["latency_ms"] = _latency(index, [q.question for q in golden])
            print(f"  hybrid query, p50 ms: {report['latency_ms']}")
    write_result("symbol-ranking", report)


def with_tokenizer(index: SearchIndex, name: str) -> SearchIndex:
    """Return the index searched with keyword tokens made by another tokenizer (re-tokenized in memory)."""
    tokens, offsets, vocab = tokenize_all(index.chunks, tokenizer(name))
    generation = dataclasses.replace(
        index.generation,
        bm25=build_bm25(tokens, offsets, vocab),
        manifest=dataclasses.replace(index.generation.manifest, keyword=KeywordInfo(name)),
    )
    return SearchIndex(generation, index.embedder)


def _search(
    indexes: dict[str, SearchIndex], query: str, k: int, *, mode: str, tokens: str = "default",
    collapse: bool = True, symbols: bool = True, paths: bool = True,
) -> list[str]:  # fmt: skip
    index = indexes[tokens]
    index.collapse, index.rank_paths = collapse, paths
    try:
        if mode == "hybrid" and not symbols:  # dense + keyword only
            wide = max(DEPTH, k)
            rankings = [index.dense(query, wide), index.keyword(query, wide)]
            hits = fuse(collapse_copies(rankings, index.text_key) if collapse else rankings, k)
        elif mode == "hybrid":
            hits = index.hybrid(query, k, depth=DEPTH)
        else:
            hits = getattr(index, mode)(query, k)
        return [h.chunk.path for h in hits]
    finally:
        index.collapse, index.rank_paths = True, True


def _latency(index: SearchIndex, questions: list[str], rounds: int = 5) -> dict[str, float]:
    """Median ms of one hybrid search (query vectors computed beforehand), copies kept and collapsed, interleaved."""
    vectors = index.embed_queries(questions)
    times: dict[str, list[float]] = {"copies kept": [], "copies collapsed": []}
    for _ in range(rounds):
        for label, collapse in (("copies kept", False), ("copies collapsed", True)):
            index.collapse = collapse
            for question, vector in zip(questions, vectors, strict=True):
                started = time.perf_counter()
                index.hybrid_by_vector(question, vector, 8, depth=DEPTH)
                times[label].append((time.perf_counter() - started) * 1000)
    index.collapse = True
    return {label: round(statistics.median(values), 2) for label, values in times.items()}


# Rows: the steps from the previous default (light-1 tokenizer, copies kept) to this one.
MODES = {
    "keyword, light-1 tokenizer, copies kept": partial(_search, mode="keyword", tokens="legacy", collapse=False),
    "keyword (default: snowball-1, copies collapsed)": partial(_search, mode="keyword"),
    "dense, copies kept": partial(_search, mode="dense", collapse=False),
    "dense (default: copies collapsed)": partial(_search, mode="dense"),
    "hybrid (dense + keyword)": partial(_search, mode="hybrid", symbols=False, paths=False),
    "hybrid + symbols": partial(_search, mode="hybrid", paths=False),
    "hybrid + symbols + paths, light-1, copies kept (before)": partial(
        _search, mode="hybrid", tokens="legacy", collapse=False
    ),
    "  + snowball-1 tokenizer": partial(_search, mode="hybrid", collapse=False),
    "  + copies collapsed (default)": partial(_search, mode="hybrid"),
}


if __name__ == "__main__":
    main()
