"""The navigation eval on the installed transformers source: the symbol graph against Python's ast.

    .venv/bin/python benchmarks/bench_navigation.py [--dataset navigation-transformers]

Builds Cairn's symbol graph of the corpus as ingest does and a reference graph with Python's ``ast``,
answers every question of the dataset (where is X defined, what calls X, which modules import X) from
both, and reports precision and recall per kind, per question, and the lookup times.
Results go to benchmarks/results/navigation.json (the same as ``cairn eval navigation-transformers``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, summary_ms, write_result
from evals.navigation import run_navigation_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="navigation-transformers")
    args = parser.parse_args()
    report = run_navigation_eval(args.dataset)
    report["lookup_ms"] = summary_ms([ms / 1000 for ms in report["lookup_ms"]])
    report["machine"] = machine()
    write_result("navigation", report)
    print(json.dumps({k: report[k] for k in ("kinds", "gate", "graph_s", "ast_s", "lookup_ms")}, indent=1))


if __name__ == "__main__":
    main()
