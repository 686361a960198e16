"""The navigation eval: exact questions about a corpus, Cairn's symbol graph scored against Python's ``ast``.

A dataset is a JSONL file in ``evals/datasets/`` (``navigation-transformers.jsonl``), one question a line::

    {"id": "nav-01", "corpus": "transformers", "kind": "definition", "symbol": "set_seed",
     "question": "Where is set_seed defined?"}

``kind`` is ``definition`` (where is ``symbol`` defined), ``callers`` (what calls ``symbol``) or
``importers`` (which modules import the file ``path``). The answers are not stored: they come from a
graph built here with Python's own ``ast`` over the corpus's Python files, independently of tree-sitter,
and Cairn's answers (the graph ingest writes, read through the lookups the tools use) are scored
against it by precision and recall, per question and summed over each kind.
"""

from __future__ import annotations

import ast
import json
import posixpath
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.errors import DatasetError
from config import Settings
from evals.datasets import CORPORA, DATASETS_DIR
from ingest.chunking import parse_code
from ingest.languages import detect_language
from ingest.symbol_graph import SYMBOLS_FILE, SymbolGraph, SymbolGraphUpdate
from ingest.symbols import extract_symbols, has_tag_query
from ingest.walker import walk_repository

KINDS = ("definition", "callers", "importers")
#: The eval's gate: (kind, metric) -> the least value that passes.
GATES: dict[tuple[str, str], float] = {
    ("definition", "precision"): 0.95,
    ("definition", "recall"): 0.95,
    ("callers", "recall"): 0.9,
}
#: Enough to list every answer of every question (the lookups' own defaults are for people).
EVAL_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class NavigationQuestion:
    """One exact question: where ``symbol`` is defined, what calls it, or which files import ``path``."""

    id: str
    corpus: str
    kind: str
    question: str
    symbol: str = ""
    path: str = ""


def is_navigation_dataset(path: Path) -> bool:
    """Return True when a dataset file holds navigation questions (its first question has a ``kind``)."""
    with path.open(encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), "{}")
    try:
        return "kind" in json.loads(first)
    except ValueError:
        return False


def load_navigation(name: str | Path = "navigation-transformers") -> list[NavigationQuestion]:
    """Load a navigation dataset by name (from evals/datasets/) or path."""
    path = Path(name) if str(name).endswith(".jsonl") else DATASETS_DIR / f"{name}.jsonl"
    if not path.is_file():
        raise DatasetError(f"No navigation dataset at {path}", "name one in evals/datasets/ or give a .jsonl path")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question = NavigationQuestion(**row)
        except (ValueError, TypeError) as exc:
            raise DatasetError(
                f"{path}:{number} is not a navigation question: {exc}", "see evals/navigation.py"
            ) from exc
        if question.kind not in KINDS or not (question.path if question.kind == "importers" else question.symbol):
            raise DatasetError(f"{path}:{number}: kind must be one of {KINDS} with its symbol or path", None)
        questions.append(question)
    return questions


# ---------------------------------------------------------------- the reference graph, from ast


@dataclass(slots=True)
class AstGraph:
    """Definitions, calls and imports of Python files as the ``ast`` module sees them.

    The same notions as Cairn's graph, stated in ast's terms: a definition is a class or function
    anywhere, or a name assigned at module level; a call is a Call of a name or attribute, or a
    decorator; a call's caller is the innermost definition around it; an import reaches the corpus
    file its module names (``from m import n`` reaches ``m/n.py`` when that is a module, else ``m``).
    """

    #: name -> {(path, start line, end line, qualified name)}
    definitions: dict[str, set[tuple[str, int, int, str]]] = field(default_factory=lambda: defaultdict(set))
    #: name -> {(path, line, caller's qualified name or "")}
    calls: dict[str, set[tuple[str, int, str]]] = field(default_factory=lambda: defaultdict(set))
    #: imported file -> {importing file}
    importers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def build(cls, root: Path, paths: list[str], package: str) -> AstGraph:
        """Parse every Python file in ``paths`` (relative to ``root``; ``package`` is the root's package name,
        "" when the root is not a package and absolute imports start below it)."""
        graph = cls()
        modules = {_module_name(p): p for p in paths if p.endswith(".py")}
        for path in paths:
            if not path.endswith(".py"):
                continue
            try:
                tree = ast.parse((root / path).read_bytes())
            except (SyntaxError, ValueError):
                continue
            _Visitor(graph, path).visit(tree)
            for target in _imported_files(tree, path, modules, package):
                if target != path:
                    graph.importers[target].add(path)
        return graph


class _Visitor(ast.NodeVisitor):
    def __init__(self, graph: AstGraph, path: str) -> None:
        self.graph, self.path = graph, path
        self.scope: list[str] = []

    def _define(self, node: ast.stmt, name: str) -> None:
        qualified = ".".join([*self.scope, name])
        self.graph.definitions[name].add((self.path, node.lineno, node.end_lineno or node.lineno, qualified))

    def visit_Module(self, node: ast.Module) -> None:
        for statement in node.body:
            target = None
            if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
                target = statement.targets[0].id
            elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                target = statement.target.id
            if target is not None:
                self._define(statement, target)
                self.scope.append(target)
                self.generic_visit(statement)
                self.scope.pop()
            else:
                self.visit(statement)

    def _definition(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:  # decorators run in the enclosing scope
            if isinstance(decorator, ast.Name | ast.Attribute):
                self._call(decorator)
            self.visit(decorator)
        self._define(node, node.name)
        self.scope.append(node.name)
        for child in ast.iter_child_nodes(node):
            if child not in node.decorator_list:
                self.visit(child)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _definition

    def _call(self, function: ast.expr) -> None:
        if isinstance(function, ast.Name):
            name, line = function.id, function.lineno
        elif isinstance(function, ast.Attribute):
            name, line = function.attr, function.end_lineno or function.lineno
        else:
            return
        self.graph.calls[name].add((self.path, line, ".".join(self.scope)))

    def visit_Call(self, node: ast.Call) -> None:
        self._call(node.func)
        self.generic_visit(node)


def _module_name(path: str) -> str:
    stem = posixpath.splitext(path)[0]
    return stem.removesuffix("/__init__").removesuffix("__init__").replace("/", ".").strip(".")


def _imported_files(tree: ast.Module, path: str, modules: dict[str, str], package: str) -> set[str]:
    """Return the corpus files the imports of one file reach (modules: dotted name below the root -> path)."""
    here = _module_name(path).split(".") if _module_name(path) else []
    own_package = here if path.endswith("__init__.py") else here[:-1]
    found: set[str] = set()

    def absolute(dotted: str) -> str | None:
        """Return a module name below the corpus root ("" for the root package), None outside the corpus."""
        if not package:
            return dotted
        parts = dotted.split(".")
        return ".".join(parts[1:]) if parts[0] == package else None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = absolute(alias.name)
                if module is not None and module in modules:
                    found.add(modules[module])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package[: len(own_package) - (node.level - 1)] if node.level > 1 else own_package
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = absolute(node.module or "")
                if module is None:
                    continue
            for alias in node.names:
                submodule = f"{module}.{alias.name}" if module else alias.name
                if submodule in modules:
                    found.add(modules[submodule])
                elif module in modules:
                    found.add(modules[module])
    return found


# ---------------------------------------------------------------- Cairn's graph, and the scores


def build_cairn_graph(root: Path, folder: Path, settings: Settings | None = None) -> tuple[SymbolGraph, list[str]]:
    """Write the symbol graph of ``root`` into ``folder`` as ingest does (same walk, parse and queries)."""
    settings = settings or Settings()
    report = walk_repository(root, max_file_bytes=settings.max_file_bytes, exclude=settings.exclude)
    update = SymbolGraphUpdate(base=None)
    for source in report.files:
        language = detect_language(source.path)
        if not has_tag_query(language):
            continue
        text = source.abs_path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
        tree = parse_code(language, text)
        if tree is not None:
            update.replace(extract_symbols(source.path, language, tree))
    update.write(folder)
    return SymbolGraph(folder / SYMBOLS_FILE, root.name), [s.path for s in report.files]


def _answers(question: NavigationQuestion, graph: SymbolGraph, reference: AstGraph) -> tuple[set, set]:
    """Return (Cairn's answer, the reference answer) to one question, as comparable sets."""
    if question.kind == "definition":  # (path, start line)
        symbol = question.symbol
        name = symbol.rsplit(".", 1)[-1]
        expected_sites = {
            (path, start) for path, start, _end, qualified in reference.definitions.get(name, set())
            if qualified == symbol or "." not in symbol
        }  # fmt: skip
        found_sites = {(d.path, d.start_line) for d in graph.definitions(symbol, limit=EVAL_LIMIT)}
        return found_sites, expected_sites
    if question.kind == "callers":  # (path, line, caller's qualified name or "")
        expected_calls = set(reference.calls.get(question.symbol, set()))
        found_calls = {
            (r.path, r.line, r.scope.qualified if r.scope else "")
            for r in graph.references(question.symbol, limit=EVAL_LIMIT)
            if r.kind == "call" and r.path.endswith(".py")
        }
        return found_calls, expected_calls
    found_files = {site.path for site in graph.imported_by(question.path) if site.path.endswith(".py")}  # importers
    return found_files, set(reference.importers.get(question.path, set()))


def score(questions: list[NavigationQuestion], graph: SymbolGraph, reference: AstGraph) -> dict[str, Any]:
    """Score Cairn's answers against the reference: per question, and micro-averaged per kind."""
    rows = []
    totals: dict[str, list[int]] = {kind: [0, 0, 0] for kind in KINDS}  # right, found, expected
    lookup_ms: list[float] = []
    for question in questions:
        started = time.perf_counter()
        found, expected = _answers(question, graph, reference)
        lookup_ms.append((time.perf_counter() - started) * 1000)
        right = len(found & expected)
        total = totals[question.kind]
        total[0], total[1], total[2] = total[0] + right, total[1] + len(found), total[2] + len(expected)
        rows.append({
            "id": question.id, "kind": question.kind, "question": question.question,
            "expected": len(expected), "found": len(found), "right": right,
            "precision": right / len(found) if found else float(not expected),
            "recall": right / len(expected) if expected else 1.0,
            "missed": sorted(map(str, expected - found))[:5], "extra": sorted(map(str, found - expected))[:5],
        })  # fmt: skip
    kinds = {
        kind: {
            "questions": sum(1 for q in questions if q.kind == kind),
            "precision": round(right / found, 4) if found else None,
            "recall": round(right / expected, 4) if expected else None,
            "answers": expected,
        }
        for kind, (right, found, expected) in totals.items()
    }
    return {"kinds": kinds, "questions": rows, "lookup_ms": lookup_ms}


def run_navigation_eval(dataset: str | Path = "navigation-transformers") -> dict[str, Any]:
    """Build both graphs over the dataset's corpus and score every question; return the report."""
    questions = load_navigation(dataset)
    corpus = CORPORA[questions[0].corpus]()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        graph, paths = build_cairn_graph(corpus.root, Path(tmp))
        cairn_s = time.perf_counter() - started
        started = time.perf_counter()
        package = corpus.root.name if (corpus.root / "__init__.py").is_file() else ""
        reference = AstGraph.build(corpus.root, paths, package)
        ast_s = time.perf_counter() - started
        report = score(questions, graph, reference)
        graph.close()
    failed = {
        f"{kind} {metric}": {"value": report["kinds"][kind][metric], "threshold": threshold}
        for (kind, metric), threshold in GATES.items()
        if (report["kinds"][kind][metric] or 0.0) < threshold
    }
    report |= {"corpus": corpus.name, "version": corpus.version, "graph_s": round(cairn_s, 2),
               "ast_s": round(ast_s, 2), "gate": {"passed": not failed, "failed_metrics": failed}}  # fmt: skip
    return report
