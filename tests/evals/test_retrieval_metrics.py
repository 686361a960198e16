"""Retrieval quality on the golden set: hit@k and MRR@k over ranked searches."""

import pytest

from evals.retrieval import DEFAULT_GOLDEN, GoldenQuestion, evaluate, load_golden, score_rankings


def test_hit_and_mrr() -> None:
    scores = score_rankings([1, 2, None, 7], hit_k=5, mrr_k=10)
    assert scores["hit@5"] == pytest.approx(0.5)
    assert scores["hit@1"] == pytest.approx(0.25)
    assert scores["mrr@10"] == pytest.approx((1 + 0.5 + 0 + 1 / 7) / 4, abs=1e-4)


def test_evaluate_runs_a_search_over_the_golden_set() -> None:
    golden = [GoldenQuestion("q1", "where is x", ("x.py",)), GoldenQuestion("q2", "where is y", ("y.py",))]
    report = evaluate(lambda q, k: ["x.py", "y.py"][:k], golden, depth=10)
    assert report["hit@5"] == 1.0 and report["mrr@10"] == pytest.approx(0.75)
    assert [row["rank"] for row in report["per_question"]] == [1, 2]


def test_the_shipped_golden_set_is_large_and_well_formed() -> None:
    golden = load_golden(DEFAULT_GOLDEN)
    assert len(golden) >= 30
    assert len({g.id for g in golden}) == len(golden)
    assert all(g.question.endswith("?") and g.files for g in golden)
