"""The navigation eval: the ast reference graph is right on known code, and Cairn's graph matches it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.navigation import AstGraph, build_cairn_graph, is_navigation_dataset, load_navigation, score
from tests.conftest import SAMPLE_REPO


@pytest.fixture(scope="module")
def sample_graphs(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("nav-eval")
    graph, paths = build_cairn_graph(SAMPLE_REPO, folder)
    return graph, AstGraph.build(SAMPLE_REPO, paths, "")


def test_the_ast_reference_knows_the_sample_repository(sample_graphs) -> None:
    _, reference = sample_graphs
    assert {(p, start, q) for p, start, _end, q in reference.definitions["put"]} == {
        ("tinykv/cache.py", 26, "LRUCache.put"),
        ("tinykv/store.py", 28, "Store.put"),
    }
    assert ("tinykv/store.py", 34, "Store.put") in reference.calls["invalidate"]
    assert reference.importers["tinykv/cache.py"] == {"tinykv/__init__.py", "tinykv/store.py"}
    assert reference.importers["tinykv/wal.py"] == {"tinykv/store.py"}


def test_cairn_answers_the_sample_questions_exactly(sample_graphs, tmp_path: Path) -> None:
    graph, reference = sample_graphs
    rows = [
        {"id": "n1", "corpus": "sample", "kind": "definition", "symbol": "put", "question": "Where is put defined?"},
        {"id": "n2", "corpus": "sample", "kind": "definition", "symbol": "Store.compact", "question": "?"},
        {"id": "n3", "corpus": "sample", "kind": "callers", "symbol": "invalidate", "question": "What calls it?"},
        {"id": "n4", "corpus": "sample", "kind": "callers", "symbol": "encode_record", "question": "?"},
        {"id": "n5", "corpus": "sample", "kind": "importers", "path": "tinykv/cache.py", "question": "?"},
    ]
    dataset = tmp_path / "nav.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert is_navigation_dataset(dataset)

    report = score(load_navigation(dataset), graph, reference)

    for kind in ("definition", "callers", "importers"):
        assert report["kinds"][kind]["precision"] == report["kinds"][kind]["recall"] == 1.0, kind
    assert report["kinds"]["definition"]["answers"] == 3


def test_the_transformers_dataset_has_every_kind_of_question() -> None:
    questions = load_navigation("navigation-transformers")
    assert len(questions) >= 40
    assert {q.kind for q in questions} == {"definition", "callers", "importers"}


@pytest.mark.integration
def test_the_symbol_graph_passes_the_navigation_eval_on_transformers() -> None:
    from evals.navigation import run_navigation_eval

    report = run_navigation_eval("navigation-transformers")
    kinds = report["kinds"]
    assert kinds["definition"]["precision"] >= 0.95 and kinds["definition"]["recall"] >= 0.95
    assert kinds["callers"]["recall"] >= 0.9
    assert report["gate"]["passed"]
