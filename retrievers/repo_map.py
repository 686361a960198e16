"""A repository map: the definitions that matter most, ranked by PageRank over the reference graph.

Like aider's repo map: files are nodes, and a file that uses a name another file defines links to it
(weighted by how often). PageRank over those links ranks files; each file's rank flows along its links
to the definitions it uses, which ranks definitions. The map lists the best definitions grouped by
file, as many as fit a token budget, each with its ``path:start-end`` lines.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from langchain_core.messages import HumanMessage
from langchain_core.messages.utils import count_tokens_approximately

from ingest.languages import detect_language
from ingest.symbol_graph import DefinitionSite, SymbolGraph

DAMPING = 0.85
ITERATIONS = 50
#: Source code runs about 3.5 characters a token (as the agent's budgets count, graphs/agent/budget.py).
CHARS_PER_TOKEN = 3.5


@dataclass(frozen=True, slots=True)
class RankedDefinition:
    """A definition and its share of the repository's rank."""

    site: DefinitionSite
    score: float


def _family(path: str) -> str:
    language = detect_language(path)
    return {"typescript": "javascript", "tsx": "javascript", "c": "cpp"}.get(language, language)


def _specificity(name: str) -> float:
    """Return how much a use of ``name`` says about which definition it means (aider's multipliers)."""
    if name.startswith("_"):
        return 0.1
    code_like = "_" in name or (name[:1].islower() and any(c.isupper() for c in name)) or name[:1].isupper()
    return 10.0 if code_like and len(name) >= 8 else 1.0


def _tokens(text: str) -> int:
    return count_tokens_approximately([HumanMessage(text)], chars_per_token=CHARS_PER_TOKEN, extra_tokens_per_message=0)


def rank_definitions(graph: SymbolGraph, focus: list[str] | None = None) -> list[RankedDefinition]:
    """Return definitions used across files, best first (PageRank, personalised towards ``focus`` files)."""
    # A Python call of get() says nothing about a JavaScript get(): links stay within a language family.
    edges = [e for e in graph.reference_edges() if _family(e[0]) == _family(e[1])]
    if not edges:
        return []
    files = sorted({src for src, *_ in edges} | {dst for _, dst, *_ in edges})
    index = {path: i for i, path in enumerate(files)}
    src = np.array([index[e[0]] for e in edges])
    dst = np.array([index[e[1]] for e in edges])
    # Many uses count, but less than linearly; and as in aider, a specific name links more than a short
    # or private one (a call of get() is far more often dict.get than SomeClass.get).
    weight = np.sqrt(np.array([e[4] for e in edges], dtype=float)) * np.array([_specificity(e[3]) for e in edges])
    out = np.zeros(len(files))
    np.add.at(out, src, weight)
    personal = np.ones(len(files))
    if focus:
        chosen = [index[path] for path in focus if path in index]
        if chosen:
            personal = np.full(len(files), 0.1)  # the focus files and what they use rise, the rest stays visible
            personal[chosen] = 1.0
    personal /= personal.sum()
    rank = personal.copy()
    share = weight / out[src]
    for _ in range(ITERATIONS):
        flow = np.zeros(len(files))
        np.add.at(flow, dst, rank[src] * share)
        dangling = rank[out == 0].sum()
        rank = (1 - DAMPING) * personal + DAMPING * (flow + dangling * personal)
    scores: dict[int, float] = defaultdict(float)
    for (_, _, def_id, _, _), contribution in zip(edges, rank[src] * share, strict=True):
        scores[def_id] += float(contribution)
    sites = graph.definitions_by_id(list(scores))
    ranked = [RankedDefinition(sites[i], score) for i, score in scores.items() if i in sites]
    return sorted(ranked, key=lambda r: (-r.score, r.site.path, r.site.start_line))


def render(ranked: list[RankedDefinition]) -> str:
    """Return the map text: files in order of their best definition, each definition with its lines."""
    by_file: dict[str, list[DefinitionSite]] = {}
    for item in ranked:
        by_file.setdefault(item.site.path, []).append(item.site)
    lines = []
    for path, sites in by_file.items():
        lines.append(path)
        lines.extend(
            f"  {s.kind} {s.qualified} [{s.start_line}-{s.end_line}]" for s in sorted(sites, key=lambda s: s.start_line)
        )
    return "\n".join(lines)


def repo_map(graph: SymbolGraph, max_tokens: int, focus: list[str] | None = None) -> tuple[str, list[RankedDefinition]]:
    """Return the map that fits ``max_tokens`` (the most definitions that do) and the definitions in it."""
    ranked = rank_definitions(graph, focus)
    low, high = 0, len(ranked)
    while low < high:  # the largest n whose rendering fits
        middle = (low + high + 1) // 2
        if _tokens(render(ranked[:middle])) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return render(ranked[:low]), ranked[:low]
