"""The symbol graph: tag queries per language, and the graph an ingest keeps in each generation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ingest import symbol_graph
from ingest.chunking import parse_code
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from ingest.symbols import QUERY_FILES, extract_symbols


def _symbols(path: str, language: str, source: str):
    return extract_symbols(path, language, parse_code(language, source))


def _defs(symbols) -> set[tuple[str, str]]:
    return {(d.qualified, d.kind) for d in symbols.definitions}


def _scoped_calls(symbols) -> set[tuple[str, str | None]]:
    return {
        (r.name, None if r.scope is None else symbols.definitions[r.scope].qualified)
        for r in symbols.references
        if r.kind == "call"
    }


def test_every_tag_query_compiles_against_its_grammar() -> None:
    for language in QUERY_FILES:
        assert _symbols("x", language, "\n").definitions == []


def test_python_definitions_references_and_imports() -> None:
    source = (
        "import os.path as p\n"
        "from . import sibling\n"
        "from ..pkg.mod import helper, Other as O\n"
        "LIMIT = 3\n"
        "class Store(Base):\n"
        "    @cached\n"
        "    def put(self, key):\n"
        "        def inner():\n"
        "            return helper(key)\n"
        "        return self.cache.invalidate(inner())\n"
        "def main():\n"
        "    return isinstance(Store(), Store)\n"
        "helper(1)\n"
    )
    symbols = _symbols("a/b/c.py", "python", source)
    assert [(d.qualified, d.kind, d.start_line, d.end_line) for d in symbols.definitions] == [
        ("LIMIT", "constant", 4, 4),
        ("Store", "class", 5, 10),
        ("Store.put", "method", 7, 10),
        ("Store.put.inner", "function", 8, 9),
        ("main", "function", 11, 12),
    ]
    assert _scoped_calls(symbols) >= {
        ("helper", "Store.put.inner"), ("invalidate", "Store.put"), ("inner", "Store.put"),
        ("cached", "Store"), ("Store", "main"), ("helper", None),
    }  # fmt: skip
    kinds = {(r.name, r.kind, r.line) for r in symbols.references}
    assert ("Base", "class", 5) in kinds and ("Store", "use", 12) in kinds
    assert not any(r.name == "Store" and r.line == 5 for r in symbols.references)  # a definition is no use
    assert [(i.module, i.name, i.target) for i in symbols.imports] == [
        ("os.path", None, "os/path"),
        (".", "sibling", "/a/b"),
        ("..pkg.mod", "helper", "/a/pkg/mod"),
        ("..pkg.mod", "Other", "/a/pkg/mod"),
    ]


@pytest.mark.parametrize(
    ("path", "language", "source", "definitions", "call", "target"),
    [
        (
            "web/app.js", "javascript",
            "import { x } from './util.js';\nclass A { run() { return helper(); } }\nconst f = () => 1;\n",
            {("A", "class"), ("A.run", "method"), ("f", "function")}, ("helper", "A.run"), "/web/util",
        ),
        (
            "src/app.ts", "typescript",
            "import { x } from '../lib/util';\ninterface Shape { area(): number }\n"
            "export class Sq implements Shape { area() { return calc(1); } }\n",
            {("Shape", "interface"), ("Shape.area", "method"), ("Sq", "class"), ("Sq.area", "method")},
            ("calc", "Sq.area"), "/lib/util",
        ),
        (
            "kv/store.go", "go",
            'package kv\nimport "example.com/kv/wal"\ntype Store struct{}\n'
            "func (s *Store) Put(k string) { wal.Append(k) }\nfunc New() *Store { return &Store{} }\n",
            {("Store", "type"), ("Store.Put", "method"), ("New", "function")}, ("Append", "Store.Put"),
            "example.com/kv/wal",
        ),
        (
            "src/lib.rs", "rust",
            "use crate::wal::Log;\nstruct Store {}\nimpl Store {\n    fn put(&self) { append(1); }\n}\n"
            "trait Shape { fn area(&self) -> f64; }\n",
            {("Store", "class"), ("Store.put", "method"), ("Shape", "interface"), ("Shape.area", "method")},
            ("append", "Store.put"), "wal/Log",
        ),
        (
            "src/Store.java", "java",
            "import com.kv.Wal;\nclass Store {\n  Store() {}\n  void put() { wal.append(1); }\n}\n",
            {("Store", "class"), ("Store.Store", "method"), ("Store.put", "method")}, ("append", "Store.put"),
            "com/kv/Wal",
        ),
        (
            "src/store.c", "c",
            '#include "wal.h"\nstruct store { int n; };\nint *put(int k) { return append(k); }\n',
            {("store", "class"), ("put", "function")}, ("append", "put"), "wal.h",
        ),
        (
            "src/store.cpp", "cpp",
            '#include <vector>\nnamespace kv {\nclass Store { void put() { log(); } };\n'
            "int Store::get() { return fetch(); }\n}\n",
            {("kv", "module"), ("kv.Store", "class"), ("kv.Store.put", "method"), ("Store.get", "method")},
            ("fetch", "Store.get"), "vector",
        ),
    ],
)  # fmt: skip
def test_other_languages_through_their_tag_queries(path, language, source, definitions, call, target) -> None:
    symbols = _symbols(path, language, source)
    assert _defs(symbols) >= definitions
    assert call in _scoped_calls(symbols)
    assert target in {i.target for i in symbols.imports}


# ---------------------------------------------------------------- the graph in a generation


def _ingest(repo: Path, settings, embedder, **kwargs):
    return ingest_repository(repo, settings, embedder_factory=lambda: embedder, **kwargs)


def _rows_by_file(generation_path: Path) -> dict[str, list[tuple]]:
    connection = sqlite3.connect(generation_path / symbol_graph.SYMBOLS_FILE)
    rows: dict[str, list[tuple]] = {}
    for table in ("defs", "refs", "imports"):
        for row in connection.execute(f"SELECT f.path, t.* FROM {table} t JOIN files f ON f.id = t.file"):
            rows.setdefault(row[0], []).append((table, *row[1:]))
    connection.close()
    return rows


def test_ingest_builds_a_graph_that_answers_navigation(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    graph = open_generation(settings.resolved_index_dir).symbols()
    assert graph is not None

    [put] = graph.definitions("Store.put")
    assert (put.citation, put.kind) == ("tinykv/store.py:28-36", "method")
    assert [d.qualified for d in graph.definitions("put")] == ["LRUCache.put", "Store.put"]  # ambiguous: both
    assert graph.definitions("tinykv.store.Store")[0].citation == "tinykv/store.py:9-68"
    assert [d.citation for d in graph.definitions("TinyKVClient")] == ["web/client.js:5-28"]
    assert graph.definitions("no_such_symbol") == []

    callers = {(r.path, r.scope.qualified if r.scope else None) for r in graph.references("invalidate")}
    assert ("tinykv/store.py", "Store.put") in callers and ("tinykv/store.py", "Store.delete") in callers

    imports = {(i.module, i.name): i.resolved for i in graph.imports("tinykv/store.py")}
    assert imports[("tinykv.cache", "LRUCache")] == "tinykv/cache.py"
    assert imports[("tinykv.wal", "WriteAheadLog")] == "tinykv/wal.py"
    assert imports[("os", None)] is None  # outside the repository
    assert {i.path for i in graph.imported_by("tinykv/cache.py")} == {"tinykv/__init__.py", "tinykv/store.py"}


def test_an_edited_file_rewrites_only_its_own_rows(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    before = _rows_by_file(open_generation(settings.resolved_index_dir).path)
    cache = sample_repo / "tinykv" / "cache.py"
    cache.write_text(cache.read_text() + "\n\ndef warm(cache):\n    return cache.get(1)\n")
    (sample_repo / "web" / "client.js").unlink()

    _ingest(sample_repo, settings, fake_embedder)
    generation = open_generation(settings.resolved_index_dir)
    after = _rows_by_file(generation.path)

    assert "web/client.js" not in after
    assert {d.citation for d in generation.symbols().definitions("warm")} == {"tinykv/cache.py:43-44"}
    unchanged = set(before) - {"tinykv/cache.py", "web/client.js"}
    # The untouched files' rows are carried over byte for byte, ids included, the edited file's replaced.
    assert all(after[path] == before[path] for path in unchanged)
    assert after["tinykv/cache.py"] != before["tinykv/cache.py"]


def test_a_failed_ingest_leaves_the_previous_graph_usable(sample_repo, settings, fake_embedder, monkeypatch) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    (sample_repo / "tinykv" / "new.py").write_text("def added():\n    return 42\n")

    def boom(self, folder):
        raise OSError("disk full")

    monkeypatch.setattr(symbol_graph.SymbolGraphUpdate, "write", boom)
    with pytest.raises(OSError, match="disk full"):
        _ingest(sample_repo, settings, fake_embedder)
    monkeypatch.undo()

    graph = open_generation(settings.resolved_index_dir).symbols()
    assert graph.definitions("added") == [] and graph.definitions("Store")
    assert not list(settings.resolved_index_dir.glob(".tmp-*"))
    _ingest(sample_repo, settings, fake_embedder)
    assert open_generation(settings.resolved_index_dir).symbols().definitions("added")


def test_an_index_without_a_graph_gets_one_without_re_embedding(sample_repo, settings, fake_embedder) -> None:
    _ingest(sample_repo, settings, fake_embedder)
    (open_generation(settings.resolved_index_dir).path / symbol_graph.SYMBOLS_FILE).unlink()
    assert open_generation(settings.resolved_index_dir).symbols() is None
    fake_embedder.embedded.clear()

    result = _ingest(sample_repo, settings, fake_embedder)

    assert result.changed_anything and fake_embedder.embedded == []
    assert open_generation(settings.resolved_index_dir).symbols().definitions("Store.put")
