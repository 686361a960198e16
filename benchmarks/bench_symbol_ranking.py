"""Retrieval quality with and without the symbol graph's and the path names' rankings in the hybrid fusion.

    .venv/bin/python benchmarks/bench_symbol_ranking.py [--data /tmp/cairn-symbol-ranking]
        [--transformers-index /tmp/cairn-bench/index]

Ingests the eval corpora that need no long embedding run (the sample repository and the installed
httpx) with the real embedding model, then scores keyword, dense, hybrid without the symbol ranking
(dense + keyword, as before), hybrid with it, and hybrid with it and the path ranking (the default)
on each dataset's questions (``evals/datasets/``: a result is relevant when its file is one of the
question's files): hit@1, hit@5 and MRR@10. With the transformers index ``make bench-ingest`` builds
(33 minutes), the golden set (``evals/golden/transformers.jsonl``) is scored the same way, and so are
10 questions that name a model ("In BERT, ...", "Llama's attention"; ``evals/golden/transformers-models.jsonl``),
where each model's folder holds copies of the same code.
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
from evals.retrieval import GoldenQuestion, evaluate, load_golden
from ingest.pipeline import ingest_repository
from retrievers import SearchIndex, fuse, load_search_index

DEPTH = 50
DATASETS = {"sample": "evals/datasets/sample.jsonl", "httpx": "evals/datasets/httpx.jsonl"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="where to keep the indexes (default: a temp dir)")
    parser.add_argument(
        "--transformers-index", type=Path, default=Path("/tmp/cairn-bench/index"),
        help="the transformers index make bench-ingest builds; its golden set is scored when it exists",
    )  # fmt: skip
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    data = args.data or Path(tempfile.mkdtemp(prefix="cairn-symbol-ranking-"))
    report: dict = {"machine": machine(), "datasets": {}}
    sets: dict[str, tuple[Settings, list[GoldenQuestion]]] = {}
    for name, dataset in DATASETS.items():
        settings = Settings(index_dir=data / name / "index")
        ingest_repository(CORPORA[name]().root, settings)
        rows = [json.loads(line) for line in (root / dataset).read_text().splitlines() if line.strip()]
        sets[name] = settings, [GoldenQuestion(r["id"], r["question"], tuple(r["files"])) for r in rows]
    if (args.transformers_index / "CURRENT").exists():
        sets["transformers golden"] = Settings(index_dir=args.transformers_index), load_golden()
        models = load_golden(root / "evals/golden/transformers-models.jsonl")
        sets["transformers, questions naming a model"] = Settings(index_dir=args.transformers_index), models
    for name, (settings, golden) in sets.items():
        index = load_search_index(settings)
        scores = {mode: evaluate(lambda q, k, s=search, i=index: s(i, q, k), golden) for mode, search in MODES.items()}
        index.rank_paths = True
        report["datasets"][name] = scores
        print(f"{name} ({len(golden)} questions)")
        for mode, result in scores.items():
            hit1, hit5, mrr = result["hit@1"], result["hit@5"], result["mrr@10"]
            print(f"  {mode:<34} hit@1 {hit1:.3f}  hit@5 {hit5:.3f}  mrr@10 {mrr:.3f}")
    write_result("symbol-ranking", report)


def _hybrid(index: SearchIndex, query: str, k: int, *, paths: bool) -> list[str]:
    index.rank_paths = paths
    return [h.chunk.path for h in index.hybrid(query, k, depth=DEPTH)]


MODES = {
    "keyword": lambda i, q, k: [h.chunk.path for h in i.keyword(q, k)],
    "dense": lambda i, q, k: [h.chunk.path for h in i.dense(q, k)],
    "hybrid (dense + keyword)": lambda i, q, k: [
        h.chunk.path for h in fuse([i.dense(q, max(DEPTH, k)), i.keyword(q, max(DEPTH, k))], k)
    ],
    "hybrid + symbols": lambda i, q, k: _hybrid(i, q, k, paths=False),
    "hybrid + symbols + paths (default)": lambda i, q, k: _hybrid(i, q, k, paths=True),
}


if __name__ == "__main__":
    main()
