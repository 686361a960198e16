"""The eval's scores: one rank definition (chunk rank), hit@k, reciprocal rank, citation checks, the gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings
from evals.metrics import citation_checks, first_relevant_rank, gate, hit_at_k, reciprocal_rank
from evals.retrieval import GoldenQuestion, evaluate
from retrievers import code_document


def test_rank_counts_chunks_not_distinct_files() -> None:
    # two chunks of one other file come first: the reference file ranks 3, not 2
    assert first_relevant_rank(["other.py", "other.py", "ref.py"], ("ref.py",)) == 3
    assert first_relevant_rank(["a.py", "b.py", "c.py"], ["c.py", "b.py"]) == 2
    assert first_relevant_rank(["a.py"], ["z.py"]) is None
    assert first_relevant_rank([], ["z.py"]) is None


def test_the_retrieval_benchmark_ranks_the_same_way() -> None:
    golden = [GoldenQuestion("q", "where is ref", ("ref.py",))]
    report = evaluate(lambda q, k: ["other.py", "other.py", "ref.py"], golden, depth=10)
    assert report["per_question"][0]["rank"] == 3
    assert report["hit@5"] == 1.0 and report["mrr@10"] == pytest.approx(1 / 3, abs=1e-4)


def test_hit_at_k_and_reciprocal_rank() -> None:
    assert hit_at_k(3, 5) == 1.0 and hit_at_k(5, 5) == 1.0 and hit_at_k(6, 5) == 0.0 and hit_at_k(None, 5) == 0.0
    assert reciprocal_rank(4) == 0.25 and reciprocal_rank(None) == 0.0
    assert reciprocal_rank(11, 10) == 0.0 and reciprocal_rank(10, 10) == 0.1


def _chunk(path: str, start: int, end: int):
    return code_document("...", path=path, start_line=start, end_line=end, retriever="hybrid")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("".join(f"line_{n} = {n}\n" for n in range(1, 61)))
    return tmp_path


def test_a_citation_spanning_adjacent_retrieved_chunks_is_valid(corpus: Path) -> None:
    state = {
        "answer": "It is built in [pkg/mod.py:10-30].",  # neither chunk alone holds lines 10-30
        "documents": [_chunk("pkg/mod.py", 1, 20), _chunk("pkg/mod.py", 21, 40)],
        "dropped_citations": [],
    }
    assert citation_checks(state, corpus) == {"citation_validity": 1.0, "model_citation_precision": 1.0}


def test_citations_outside_the_corpus_or_retrieved_code_are_invalid(corpus: Path) -> None:
    documents = [_chunk("pkg/mod.py", 1, 20), _chunk("pkg/gone.py", 1, 20), _chunk("pkg/mod.py", 55, 90)]
    state = {
        "answer": (
            "See [pkg/mod.py:2-5], [pkg/gone.py:1-3] (not in the corpus), [pkg/mod.py:58-70] (past the file's end) "
            "and [pkg/mod.py:25-30] (never retrieved)."
        ),
        "documents": documents,
        "dropped_citations": ["pkg/mod.py:41-45", "other.py:1-2"],
    }
    scores = citation_checks(state, corpus)
    assert scores["citation_validity"] == pytest.approx(1 / 4)
    # the model wrote six citations; the agent kept the four in the answer and dropped two
    assert scores["model_citation_precision"] == pytest.approx(4 / 6)


def test_an_answer_without_citations_scores_none(corpus: Path) -> None:
    scores = citation_checks({"answer": "Nothing relevant was found.", "documents": []}, corpus)
    assert scores == {"citation_validity": None, "model_citation_precision": None}


def test_gate_names_the_failing_metrics_and_questions() -> None:
    settings = Settings(eval_min_mrr=0.5, eval_min_hit_rate=0.5, eval_min_context_recall=0.1,
                        eval_min_citation_validity=0.9)  # fmt: skip
    rows = [
        {"id": "a", "hit": 1.0, "reciprocal_rank": 1.0, "context_recall": 0.5, "citation_validity": 1.0},
        {"id": "b", "hit": 0.0, "reciprocal_rank": 0.0, "context_recall": 0.5, "citation_validity": None},
    ]
    values = {"hit_rate": 0.5, "mrr": 0.5 - 0.25, "context_recall": 0.5, "citation_validity": 1.0}
    verdict = gate(values, rows, settings)
    assert not verdict["passed"]
    assert set(verdict["failed_metrics"]) == {"mrr"} and verdict["failing_questions"] == ["b"]
    assert gate({**values, "mrr": 0.5}, rows, settings)["passed"]
