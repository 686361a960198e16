"""Retrieval quality on a golden set: hit@k and MRR for the keyword, dense and hybrid retrievers.

    .venv/bin/python -m evals.retrieval --index /tmp/cairn-bench/index [--golden FILE] [--json]

A golden set is JSONL, one question per line: ``{"id": ..., "question": ..., "files": [paths]}``;
a result answers the question when its path is one of ``files`` (paths relative to the indexed
repository's root). Ranks are chunk ranks, as in ``cairn eval`` (``evals.metrics.first_relevant_rank``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.metrics import first_relevant_rank, hit_at_k, reciprocal_rank

GOLDEN_DIR = Path(__file__).parent / "golden"
DEFAULT_GOLDEN = GOLDEN_DIR / "transformers.jsonl"


@dataclass(frozen=True, slots=True)
class GoldenQuestion:
    """A question and the files that answer it."""

    id: str
    question: str
    files: tuple[str, ...]


def load_golden(path: Path = DEFAULT_GOLDEN) -> list[GoldenQuestion]:
    """Read a golden set from JSONL."""
    questions = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            questions.append(GoldenQuestion(row["id"], row["question"], tuple(row["files"])))
    return questions


def score_rankings(ranks: Sequence[int | None], *, hit_k: int = 5, mrr_k: int = 10) -> dict[str, float]:
    """Return hit@1, hit@hit_k and MRR@mrr_k for first-relevant ranks (None: not found)."""
    firsts = [hit_at_k(r, 1) for r in ranks]
    hits = [hit_at_k(r, hit_k) for r in ranks]
    reciprocal = [reciprocal_rank(r, mrr_k) for r in ranks]
    return {
        "hit@1": round(statistics.fmean(firsts), 4) if firsts else 0.0,
        f"hit@{hit_k}": round(statistics.fmean(hits), 4) if hits else 0.0,
        f"mrr@{mrr_k}": round(statistics.fmean(reciprocal), 4) if reciprocal else 0.0,
    }


def evaluate(
    search: Callable[[str, int], Sequence[str]], golden: Sequence[GoldenQuestion], *, depth: int = 10
) -> dict[str, Any]:
    """Run ``search(question, depth) -> one path per ranked chunk`` over the golden set and score it."""
    ranks, rows = [], []
    for item in golden:
        paths = list(search(item.question, depth))
        rank = first_relevant_rank(paths, item.files)
        ranks.append(rank)
        rows.append({"id": item.id, "rank": rank, "top": paths[:3]})
    return {**score_rankings(ranks, mrr_k=depth), "questions": len(golden), "per_question": rows}


def evaluate_index(index: Any, golden: Sequence[GoldenQuestion], *, depth: int = 10) -> dict[str, Any]:
    """Score the keyword, dense and hybrid searches of a SearchIndex on the golden set."""
    modes: dict[str, Callable[[str, int], Sequence[str]]] = {
        "keyword": lambda q, k: [h.chunk.path for h in index.keyword(q, k)],
        "dense": lambda q, k: [h.chunk.path for h in index.dense(q, k)],
        "hybrid": lambda q, k: [h.chunk.path for h in index.hybrid(q, k)],
    }
    return {mode: evaluate(search, golden, depth=depth) for mode, search in modes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="index folder built over the corpus")
    parser.add_argument("--golden", type=Path, default=DEFAULT_GOLDEN)
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args()

    from config import Settings
    from retrievers import load_search_index

    index = load_search_index(Settings(index_dir=args.index))
    report = evaluate_index(index, load_golden(args.golden))
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"{'retriever':<10} {'hit@1':>7} {'hit@5':>7} {'mrr@10':>7}   ({len(load_golden(args.golden))} questions)")
    for mode, result in report.items():
        print(f"{mode:<10} {result['hit@1']:>7.3f} {result['hit@5']:>7.3f} {result['mrr@10']:>7.3f}")


if __name__ == "__main__":
    main()
