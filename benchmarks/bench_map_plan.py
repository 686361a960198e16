"""Would plan reading the repository map help a question that names no identifier? Measured before wiring it.

    .venv/bin/python benchmarks/bench_map_plan.py [--data /tmp/cairn-symbol-ranking]
        [--transformers-index /tmp/cairn-bench/index]

The map (``retrievers/repo_map.py``) ranks definitions by PageRank over the reference graph. For a
question that names no identifier, the candidate use is to look up the definitions whose name words the
question uses ("Which learning rate schedule decreases linearly after a warmup?" ->
``get_linear_schedule_with_warmup``): a name counts when the question holds at least two of its words
(Snowball stems, ignoring get/set/is/...) and at least half of them; they are ordered by words matched,
then the share of the name matched, then the map's rank. Their chunks join the hybrid fusion as one more
ranking, exactly as the symbol ranking does for named identifiers. Scored against the default hybrid
search on the same questions (hit@1, hit@5, MRR@10): the sample and httpx sets (ingested into
``--data``, as ``make bench-ranking`` does) and the transformers golden set when its index exists.
Results go to benchmarks/results/map-plan.json.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, retrieval_sets, write_result
from evals.retrieval import evaluate
from ingest.symbol_graph import DefinitionSite
from ingest.tokens import _CAMEL, _WORD, STOPWORDS, _snowball_stem, identifiers_in
from retrievers import Hit, SearchIndex, collapse_copies, fuse, load_search_index
from retrievers.repo_map import rank_definitions

DEPTH = 50
#: Name words that say nothing of what a definition does.
GENERIC = frozenset("get set is has to from init forward call new make build create do run add".split())


def _words(name: str) -> list[str]:
    parts = [p.lower() for piece in name.split("_") if piece for p in _CAMEL.findall(piece)]
    return [_snowball_stem(p) for p in parts if len(p) > 1 and p not in STOPWORDS]


class NameMatcher:
    """Definitions of one index by their name words, with the map's rank of each."""

    def __init__(self, index: SearchIndex) -> None:
        graph = index.generation.symbols()
        assert graph is not None
        self.index = index
        rank = {(r.site.path, r.site.start_line, r.site.qualified): r.score for r in rank_definitions(graph)}
        connection = sqlite3.connect(f"file:{graph.path}?mode=ro", uri=True)
        rows = connection.execute(
            'SELECT d.name, d.qualified, d.kind, f.path, d.start, d."end" FROM defs d JOIN files f ON f.id = d.file'
        ).fetchall()
        connection.close()
        self.sites: list[tuple[list[str], DefinitionSite, float]] = []
        self.by_word: dict[str, list[int]] = defaultdict(list)
        for name, qualified, kind, path, start, end in rows:
            words = [w for w in dict.fromkeys(_words(name)) if w not in GENERIC]
            if len(words) < 2:
                continue
            for word in words:
                self.by_word[word].append(len(self.sites))
            self.sites.append(
                (
                    words,
                    DefinitionSite(name, qualified, kind, path, start, end),
                    rank.get((path, start, qualified), 0.0),
                )
            )

    def ranking(self, question: str, k: int) -> list[Hit]:
        """Return the hits of the definitions a question describes by their name's words (none if it names one)."""
        if identifiers_in(question):
            return []
        asked = {w for word in _WORD.findall(question) for w in _words(word)}
        matched: dict[int, set[str]] = defaultdict(set)
        for word in asked:
            for i in self.by_word.get(word, ()):
                matched[i].add(word)
        scored = []
        for i, words in matched.items():
            name_words, site, rank = self.sites[i]
            share = len(words) / len(name_words)
            if len(words) >= 2 and share >= 0.5:
                scored.append(((-len(words), -share, -rank, site.path, site.start_line), site))
        scored.sort(key=lambda item: item[0])  # ties in file order, whatever the hash seed
        rows: list[int] = []
        for _, site in scored:
            row = self.index.definition_row(site)
            if row is not None and row not in rows:
                rows.append(row)
            if len(rows) >= k:
                break
        return [Hit(self.index.chunks[row], row, 1.0, rank) for rank, row in enumerate(rows, start=1)]


def hybrid_with_names(index: SearchIndex, matcher: NameMatcher, question: str, k: int) -> list[str]:
    """The default hybrid search with the map's name matches as one more ranking."""
    vector = index.embedder.embed_query(question)
    wide = max(DEPTH, k)
    rankings = [index.dense_by_vector(vector, wide), index.keyword(question, wide)]
    named = [r for r in (index.symbols(question, wide), index.by_path(question, vector, wide)) if r]
    names = matcher.ranking(question, wide)
    rankings = collapse_copies([*rankings, *named, *([names] if names else [])], index.text_key, prefer=named[::-1])
    return [hit.chunk.path for hit in fuse(rankings, k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="where to keep the indexes (default: a temp dir)")
    parser.add_argument("--transformers-index", type=Path, default=Path("/tmp/cairn-bench/index"))
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="cairn-map-plan-"))
    sets = retrieval_sets(data, args.transformers_index)
    report: dict = {"machine": machine(), "datasets": {}}
    for name, (settings, golden) in sets.items():
        index = load_search_index(settings)
        matcher = NameMatcher(index)
        described = sum(not identifiers_in(q.question) for q in golden)
        scores = {
            "hybrid (default)": evaluate(lambda q, k, i=index: [h.chunk.path for h in i.hybrid(q, k)], golden),
            "hybrid + the map's name matches": evaluate(
                lambda q, k, i=index, m=matcher: hybrid_with_names(i, m, q, k), golden
            ),
        }
        report["datasets"][name] = {"questions naming no identifier": described, **scores}
        print(f"{name} ({len(golden)} questions, {described} naming no identifier)")
        for mode, result in scores.items():
            print(
                f"  {mode:<34} hit@1 {result['hit@1']:.3f}  hit@5 {result['hit@5']:.3f}  mrr@10 {result['mrr@10']:.3f}"
            )
    write_result("map-plan", report)


if __name__ == "__main__":
    main()
