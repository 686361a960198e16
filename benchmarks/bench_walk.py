"""Retrieval on questions that describe code instead of naming it: hybrid search alone and the agent's first round.

    .venv/bin/python benchmarks/bench_walk.py [--sets described-sample,described-httpx,described-rich,sample,httpx]
        [--k 10] [--variants hybrid,agent,agent-callees] [--data /tmp/cairn-walk] [--limit N]
        [--out benchmarks/results/walk.json]

The baseline for "resolve, then navigate" (retrieve the code a question describes, then follow the symbol
graph from its definitions to callers, callees and importers). Each set is a dataset of
``evals/datasets/`` whose corpus is ingested with the real embedding model under DATA/eval-indexes
(``evals.runner.corpus_index``: incremental, cheap when current). Every question is put to each variant,
which returns documents in ranked order:

- ``hybrid``: the hybrid retriever alone, k documents for the question as it is asked;
- ``agent``: the documents the agent's first retrieval round hands on to analyze and answer: the real
  graph (plan, then retrieve) with the ``instant`` model, stopped after retrieve; at most the agent's k
  (CAIRN_AGENT_K) documents, trimmed to its token budget;
- ``agent-callees``: the same with the definitions the best chunk calls fused into the ranking (off in
  the product: ``graphs.agent.nodes.CALLEES_OF_TOP``);
- ``agent-hyde``: the same with HyDE (``CAIRN_AGENT_HYDE``): the bundled SmolLM2-135M, served by the
  embedded llama.cpp server this benchmark starts, writes a hypothetical snippet that joins the queries
  (not in the default variants: it adds a model call per question).

A document hits when its path is one of the question's ``files``. Per variant, set and question kind
(``behaviour``, ``where``, ``who-calls``; ``unlabelled`` for sets without kinds): hit@1, hit@5 and MRR@10
(``evals.retrieval.score_rankings``), and for who-calls questions caller recall@5 and @k, the share of the
question's ``callers`` files found among the top documents' paths. The ranks, paths and caller hits of each
question go to benchmarks/results/walk.json.

A variant is a name in ``VARIANTS``: a function that takes the set's ``SetRun`` and returns an async
``rank(question) -> documents``. A new retrieval strategy registers one with ``@variant("name")`` and is
measured with ``--variants hybrid,agent,name``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.documents import Document

from benchmarks.common import RESULTS, machine, summary_ms
from config import Settings
from evals.datasets import CORPORA, load_dataset, resolve_dataset
from evals.metrics import first_relevant_rank
from evals.retrieval import score_rankings
from evals.runner import corpus_index
from retrievers import SearchIndex, load_search_index

DEFAULT_SETS = "described-sample,described-httpx,described-rich,sample,httpx"
DEFAULT_VARIANTS = "hybrid,agent,agent-callees"
#: hit@1 and hit@5 are scored, MRR down to rank 10, whatever --k is.
HIT_K, MRR_K = 5, 10
UNLABELLED = "unlabelled"


@dataclass(frozen=True, slots=True)
class Question:
    """A dataset question with what this benchmark scores it on: its kind and, for who-calls, the callers."""

    id: str
    kind: str
    question: str
    files: tuple[str, ...]
    callers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetRun:
    """What every variant of one set shares: the settings, the corpus index and the depth k."""

    name: str
    settings: Settings
    index_dir: Path
    index: SearchIndex
    k: int


Ranker = Callable[[str], Awaitable[list[Document]]]
VARIANTS: dict[str, Callable[[SetRun], Ranker]] = {}


def variant(name: str) -> Callable[[Callable[[SetRun], Ranker]], Callable[[SetRun], Ranker]]:
    """Register a ranking strategy under ``name`` (selected with --variants)."""

    def register(factory: Callable[[SetRun], Ranker]) -> Callable[[SetRun], Ranker]:
        VARIANTS[name] = factory
        return factory

    return register


@variant("hybrid")
def hybrid_ranker(run: SetRun) -> Ranker:
    """Rank with the hybrid retriever alone: k documents for the question as asked."""
    from retrievers import make_retriever

    retriever = make_retriever("hybrid", run.index, k=run.k, depth=run.settings.fusion_depth, rrf_k=run.settings.rrf_k)

    async def rank(question: str) -> list[Document]:
        return await asyncio.to_thread(retriever.invoke, question)

    return rank


@variant("agent")
def agent_ranker(run: SetRun, **overrides: Any) -> Ranker:
    """Rank with the documents the real graph's first retrieve hands on (instant model; stopped after retrieve)."""
    from langchain_core.messages import HumanMessage

    from config import Node
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph

    context = Context.from_settings(run.settings, index_dir=str(run.index_dir), temperature=0.0, **overrides)
    graph = build_graph().compile()

    async def rank(question: str) -> list[Document]:
        stream = graph.astream({"messages": [HumanMessage(question)]}, context=context, stream_mode="updates")
        # astream is an async generator (typed as an iterator): closing it stops the graph before analyze
        async with aclosing(cast("AsyncGenerator[dict[str, Any], None]", stream)) as updates:
            async for update in updates:
                if Node.RETRIEVE in update:
                    return list(update[Node.RETRIEVE].get("documents", []))
        return []

    return rank


@variant("agent-callees")
def agent_callees_ranker(run: SetRun) -> Ranker:
    """The agent's first round with the best chunk's callees fused in (graphs.agent.nodes.CALLEES_OF_TOP)."""
    from graphs.agent import nodes

    rank = agent_ranker(run)

    async def ranked(question: str) -> list[Document]:
        nodes.CALLEES_OF_TOP = True
        try:
            return await rank(question)
        finally:
            nodes.CALLEES_OF_TOP = False

    return ranked


_EMBEDDED: list[Any] = []  # the embedded model server, started once for every set that needs it


@variant("agent-hyde")
def agent_hyde_ranker(run: SetRun) -> Ranker:
    """The agent's first round with HyDE (CAIRN_AGENT_HYDE): the bundled model writes the snippet searched."""
    import atexit

    from cairn.processes import free_port
    from models.embedded import EmbeddedServer

    if not _EMBEDDED:
        server = EmbeddedServer(Settings(data_dir=run.settings.data_dir, embedded_port=free_port()))
        server.start(timeout=180)
        atexit.register(server.stop)
        _EMBEDDED.append(server)
    model = f"openai-compatible/smollm2-135m@{_EMBEDDED[0].base_url}"
    return agent_ranker(run, model=model, hyde=True)


# ---------------------------------------------------------------- questions and scores


def load_questions(name: str, limit: int | None) -> tuple[str, list[Question]]:
    """Return a dataset's corpus and its questions, with kind and callers (checked by ``load_dataset`` first)."""
    path = resolve_dataset(name)
    checked = load_dataset(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = {row["id"]: row for row in (json.loads(line) for line in lines if line.strip())}
    questions = [
        Question(
            id=q.id, kind=rows[q.id].get("kind", UNLABELLED), question=q.question, files=q.files,
            callers=tuple(rows[q.id].get("callers", ())),
        )
        for q in checked
    ]  # fmt: skip
    return checked[0].corpus, questions[:limit]


def caller_recall(paths: Sequence[str], callers: Sequence[str], n: int) -> float:
    """Return the share of the expected caller files found among the first ``n`` documents' paths."""
    expected = set(callers)
    return len(expected & set(paths[:n])) / len(expected)


def score_question(question: Question, documents: Sequence[Document], k: int, ms: float) -> dict[str, Any]:
    """Return one question's row: the first relevant rank, the top paths and, for who-calls, the callers found."""
    paths = [d.metadata["path"] for d in documents]
    row: dict[str, Any] = {
        "id": question.id,
        "kind": question.kind,
        "rank": first_relevant_rank(paths, question.files),
        "documents": len(paths),
        "top": paths[:HIT_K],
        "ms": round(ms, 1),
    }
    if question.callers:
        row["callers_found"] = sorted(set(question.callers) & set(paths[:k]))
        row["callers_missing"] = sorted(set(question.callers) - set(paths[:k]))
        row[f"caller_recall@{HIT_K}"] = round(caller_recall(paths, question.callers, HIT_K), 4)
        row[f"caller_recall@{k}"] = round(caller_recall(paths, question.callers, k), 4)
    return row


def summarize(rows: Sequence[dict[str, Any]], k: int) -> dict[str, Any]:
    """Return hit@1, hit@5, MRR@10 over the rows, and the mean caller recalls over those with callers."""
    summary: dict[str, Any] = {"questions": len(rows), **score_rankings([r["rank"] for r in rows], hit_k=HIT_K,
                                                                        mrr_k=MRR_K)}  # fmt: skip
    with_callers = [r for r in rows if "callers_found" in r]
    for n in dict.fromkeys((HIT_K, k)):
        key = f"caller_recall@{n}"
        summary[key] = round(statistics.fmean(r[key] for r in with_callers), 4) if with_callers else None
    return summary


# ---------------------------------------------------------------- the run


def prepare(name: str, corpus: str, settings: Settings, k: int) -> SetRun:
    """Ingest the set's corpus when its index is missing or stale, and load it."""
    index_dir = corpus_index(CORPORA[corpus](), settings)
    return SetRun(name=name, settings=settings, index_dir=index_dir,
                  index=load_search_index(Settings(index_dir=index_dir)), k=k)  # fmt: skip


async def run_set(run: SetRun, questions: Sequence[Question], variants: Sequence[str]) -> dict[str, Any]:
    """Score every variant on the set's questions: overall, per kind, per question, and the time per question."""
    report: dict[str, Any] = {}
    for name in variants:
        rank = VARIANTS[name](run)
        rows = []
        for question in questions:
            started = time.perf_counter()
            documents = await rank(question.question)
            rows.append(score_question(question, documents, run.k, (time.perf_counter() - started) * 1000))
        kinds = sorted({r["kind"] for r in rows})
        report[name] = {
            "all": summarize(rows, run.k),
            "kinds": {kind: summarize([r for r in rows if r["kind"] == kind], run.k) for kind in kinds},
            "latency_ms": summary_ms([r["ms"] / 1000 for r in rows]),
            "per_question": rows,
        }
    return report


def revision() -> str | None:
    """Return the commit measured, "+changes" when the working tree differs from it (None outside a checkout)."""
    root = str(Path(__file__).resolve().parents[1])
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        changed = subprocess.run(["git", "-C", root, "diff", "--quiet", "HEAD"], capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+changes" if changed else head


def _fmt(value: float | None) -> str:
    return f"{value:>7.3f}" if value is not None else f"{'-':>7}"


def print_table(name: str, report: dict[str, Any], k: int) -> None:
    """Print one set's scores: a row per variant, then one per kind."""
    recalls = list(dict.fromkeys((f"caller_recall@{HIT_K}", f"caller_recall@{k}")))
    head = "".join(f"{'callers@' + r.split('@')[1]:>11}" for r in recalls)
    print(f"\n{name}\n  {'variant / kind':<22}{'n':>4}{'hit@1':>8}{'hit@5':>8}{'mrr@10':>8}{head}{'p50 ms':>9}")
    for variant_name, scores in report.items():
        rows = [(variant_name, scores["all"])] + [(f"  {kind}", s) for kind, s in scores["kinds"].items()]
        for label, s in rows:
            latency = f"{scores['latency_ms']['p50_ms']:>9.0f}" if label == variant_name else ""
            recall = "".join(f"    {_fmt(s[r])}" for r in recalls)
            print(f"  {label:<22}{s['questions']:>4} {_fmt(s['hit@1'])} {_fmt(s[f'hit@{HIT_K}'])} "
                  f"{_fmt(s[f'mrr@{MRR_K}'])}{recall}{latency}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=DEFAULT_SETS, help=f"datasets, comma-separated (default: {DEFAULT_SETS})")
    parser.add_argument("--k", type=int, default=10, help="documents the hybrid variant returns; caller recall depth")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"rankings to score, comma-separated, of: {', '.join(VARIANTS)}")  # fmt: skip
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "cairn-walk",
                        help="data folder whose eval-indexes/ keeps the indexes (reused between runs)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="the first N questions of each set only")
    parser.add_argument("--out", type=Path, default=RESULTS / "walk.json", help="where the JSON report goes")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")

    settings = Settings(data_dir=args.data, model="instant")
    report: dict[str, Any] = {
        "machine": machine(),
        "revision": revision(),
        "k": args.k,
        "variants": variants,
        "agent_k": settings.agent_k,
        "model": settings.model,
        "embedding_model": settings.embedding_model,
        "sets": {},
    }
    started = time.perf_counter()
    for name in (s.strip() for s in args.sets.split(",") if s.strip()):
        corpus, questions = load_questions(name, args.limit)
        t0 = time.perf_counter()
        run = prepare(name, corpus, settings, args.k)
        ingest_s = time.perf_counter() - t0
        scores = asyncio.run(run_set(run, questions, variants))
        report["sets"][name] = {"corpus": corpus, "questions": len(questions), "index": str(run.index_dir),
                                "ingest_s": round(ingest_s, 1), "variants": scores}  # fmt: skip
        print_table(f"{name} ({corpus}, {len(questions)} questions)", scores, args.k)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    path = args.out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{path} ({report['duration_s']} s)")


if __name__ == "__main__":
    main()
