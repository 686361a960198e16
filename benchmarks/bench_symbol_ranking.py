"""Retrieval quality with and without the symbol graph's ranking in the hybrid fusion.

    .venv/bin/python benchmarks/bench_symbol_ranking.py [--data /tmp/cairn-symbol-ranking]

Ingests the eval corpora that need no long embedding run (the sample repository and the installed
httpx) with the real embedding model, then scores keyword, dense, hybrid without the symbol ranking
(dense + keyword, as before) and hybrid with it on each dataset's questions (``evals/datasets/``:
a result is relevant when its file is one of the question's files): hit@5 and MRR@10.
Results go to benchmarks/results/symbol-ranking.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, write_result
from config import Settings
from evals.datasets import CORPORA
from evals.retrieval import GoldenQuestion, evaluate
from ingest.pipeline import ingest_repository
from retrievers import fuse, load_search_index

DEPTH = 50
DATASETS = {"sample": "evals/datasets/sample.jsonl", "httpx": "evals/datasets/httpx.jsonl"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="where to keep the indexes (default: a temp dir)")
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    data = args.data or Path(tempfile.mkdtemp(prefix="cairn-symbol-ranking-"))
    report: dict = {"machine": machine(), "datasets": {}}
    for name, dataset in DATASETS.items():
        corpus = CORPORA[name]()
        settings = Settings(index_dir=data / name / "index")
        ingest_repository(corpus.root, settings)
        index = load_search_index(settings)
        rows = [json.loads(line) for line in (root / dataset).read_text().splitlines() if line.strip()]
        golden = [GoldenQuestion(r["id"], r["question"], tuple(r["files"])) for r in rows]
        modes = {
            "keyword": lambda q, k, i=index: [h.chunk.path for h in i.keyword(q, k)],
            "dense": lambda q, k, i=index: [h.chunk.path for h in i.dense(q, k)],
            "hybrid (dense + keyword)": lambda q, k, i=index: [
                h.chunk.path for h in fuse([i.dense(q, max(DEPTH, k)), i.keyword(q, max(DEPTH, k))], k)
            ],
            "hybrid + symbols": lambda q, k, i=index: [h.chunk.path for h in i.hybrid(q, k, depth=DEPTH)],
        }
        scores = {mode: evaluate(search, golden) for mode, search in modes.items()}
        report["datasets"][name] = scores
        print(f"{name} ({len(golden)} questions)")
        for mode, result in scores.items():
            print(f"  {mode:<26} hit@5 {result['hit@5']:.3f}  mrr@10 {result['mrr@10']:.3f}")
    write_result("symbol-ranking", report)


if __name__ == "__main__":
    main()
