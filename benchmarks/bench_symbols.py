"""The symbol graph on a large source: extraction time, size on disk, incremental update, lookup latency.

    .venv/bin/python benchmarks/bench_symbols.py [--source PATH] [--lookups 300]

Over every file ingest would index in the transformers package (the walker's rules), times the
tree-sitter parse (which ingest already does for chunking, and shares) apart from the symbol
extraction that the graph adds, then writes ``symbols.db`` as an ingest does and reports its size,
the time to carry it into a next generation with one file replaced, and p50/p95 of find_definition,
find_references, imports and imported_by over names and files drawn from the graph (each lookup the
median of 5 back-to-back runs).
Results go to benchmarks/results/symbols.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, summary_ms, transformers_source, write_result
from config import Settings
from ingest.chunking import parse_code
from ingest.languages import detect_language
from ingest.symbol_graph import SYMBOLS_FILE, SymbolGraph, SymbolGraphUpdate
from ingest.symbols import extract_symbols, has_tag_query
from ingest.walker import walk_repository
from retrievers.navigation import find_definition, find_references

FULL_INGEST_SECONDS = 1980.0  # docs/benchmarks.md, full transformers ingest
# Each lookup runs this many times back to back and counts as their median: the 2 shared cores of
# this machine otherwise put scheduler noise, not the lookup, at the 95th percentile.
ROUNDS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--lookups", type=int, default=300)
    args = parser.parse_args()
    source = args.source or transformers_source()

    settings = Settings()
    report = walk_repository(source, max_file_bytes=settings.max_file_bytes, exclude=settings.exclude)
    parse_s = extract_s = 0.0
    update = SymbolGraphUpdate(base=None)
    files = 0
    for item in report.files:
        language = detect_language(item.path)
        if not has_tag_query(language):
            continue
        text = item.abs_path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
        started = time.perf_counter()
        tree = parse_code(language, text)
        parse_s += time.perf_counter() - started
        started = time.perf_counter()
        update.replace(extract_symbols(item.path, language, tree))
        extract_s += time.perf_counter() - started
        files += 1

    with tempfile.TemporaryDirectory() as tmp:
        first, second = Path(tmp) / "gen-1", Path(tmp) / "gen-2"
        first.mkdir()
        second.mkdir()
        started = time.perf_counter()
        update.write(first)
        write_s = time.perf_counter() - started
        size = (first / SYMBOLS_FILE).stat().st_size

        edited = update.added[len(update.added) // 2]
        incremental = SymbolGraphUpdate(base=first / SYMBOLS_FILE)
        incremental.replace(edited)
        started = time.perf_counter()
        incremental.write(second)
        incremental_s = time.perf_counter() - started

        graph = SymbolGraph(first / SYMBOLS_FILE)
        counts = graph.counts()
        rng = random.Random(15)
        names = [d.qualified if i % 2 else d.name for i, d in enumerate(
            rng.choice(rng.choice(update.added).definitions or [None]) for _ in range(args.lookups * 3)
        ) if d is not None][: args.lookups]  # fmt: skip
        paths = [rng.choice(update.added).path for _ in range(args.lookups)]
        graph.imports(paths[0])  # the stem map is built once per graph, on first use
        timings: dict[str, list[float]] = {"find_definition": [], "find_references": [], "imports": [],
                                           "imported_by": []}  # fmt: skip
        for name, path in zip(names, paths, strict=False):
            for label, call, argument in (
                ("find_definition", find_definition, name),
                ("find_references", find_references, name),
                ("imports", SymbolGraph.imports, path),
                ("imported_by", SymbolGraph.imported_by, path),
            ):
                rounds = []
                for _ in range(ROUNDS):
                    started = time.perf_counter()
                    call(graph, argument)
                    rounds.append(time.perf_counter() - started)
                timings[label].append(statistics.median(rounds))
        graph.close()

    result = {
        "machine": machine(),
        "source": str(source),
        "files": files,
        "counts": counts,
        "parse_s": round(parse_s, 2),
        "extract_s": round(extract_s, 2),
        "extract_share_of_full_ingest": round(extract_s / FULL_INGEST_SECONDS, 4),
        "write_s": round(write_s, 2),
        "added_to_ingest_s": round(extract_s + write_s, 2),
        "added_share_of_full_ingest": round((extract_s + write_s) / FULL_INGEST_SECONDS, 4),
        "symbols_db_bytes": size,
        "incremental_one_file_s": round(incremental_s, 3),
        "lookups": {label: summary_ms(values) for label, values in timings.items()},
    }
    print(write_result("symbols", result).read_text())


if __name__ == "__main__":
    main()
