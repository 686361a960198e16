"""Run the agent over an eval dataset and report the scores: the run behind ``cairn eval``.

The run ingests the dataset's corpus when its index is missing or stale (``corpus_index``), resolves
the graph's ``Context`` once from the settings, the index and the run's temperature, then invokes
the real graph on each question and scores it (``evals.metrics``; datasets and corpora are in
``evals.datasets``). The report holds one row per question, the summary (means; latency median),
the gate verdict, and the configuration the run actually used: the models, temperature, retriever,
k and rounds from the Context, and the index's manifest. ``write_report`` writes it as JSON,
Markdown and a PNG.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cairn.telemetry import ContentPolicy, span
from config import MODEL_NODES, Settings
from evals.datasets import CORPORA, Corpus, EvalQuestion, load_dataset, reference_contexts
from evals.metrics import (
    GATED,
    Scorers,
    citation_checks,
    fallback_rates,
    first_relevant_rank,
    gate,
    hit_at_k,
    reciprocal_rank,
)

__all__ = ["EvalReport", "Gate", "corpus_index", "run_eval", "write_report"]


def corpus_index(corpus: Corpus, settings: Settings) -> Path:
    """Ingest the corpus into DATA_DIR/eval-indexes/<name>-<version> (incremental: cheap when current)."""
    from ingest.pipeline import ingest_repository

    index_dir = Path(settings.data_dir) / "eval-indexes" / f"{corpus.name}-{corpus.version}"
    ingest_repository(corpus.root, settings.model_copy(update={"index_dir": index_dir}))
    return index_dir


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 4) if present else None


@dataclass(frozen=True, slots=True)
class Gate:
    """The gate's verdict: the thresholds, the metrics below them, and the questions that pulled them down."""

    passed: bool
    thresholds: dict[str, float]
    failed_metrics: dict[str, dict[str, float | None]]
    failing_questions: list[str]


@dataclass(frozen=True, slots=True)
class EvalReport:
    """What ``cairn eval`` reports: one row per question, the summary, the gate, and the run's configuration."""

    #: The dataset file (path, name, questions asked).
    dataset: dict[str, Any]
    #: The corpus the dataset pins (name, root, version).
    corpus: dict[str, Any]
    #: What the run used: models, temperature, retriever, k, rounds, and the index as it was built.
    config: dict[str, Any]
    #: Means of every score (latency: median); a metric no question could score is None.
    summary: dict[str, Any]
    gate: Gate
    #: One row per question: rank, hit, scores, citations, latency, the answer.
    questions: list[dict[str, Any]]
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data (the shape of report.json)."""
        return asdict(self)


@dataclass
class _Run:
    """Everything one eval run shares across its questions, resolved once."""

    settings: Settings
    corpus: Corpus
    index_dir: Path
    context: Any  # graphs.agent.context.Context (imported lazily, as the graph is)
    index: Any  # retrievers.SearchIndex
    scorers: Scorers
    graph: Any
    content: ContentPolicy


async def run_eval(
    dataset: Path,
    settings: Settings,
    *,
    temperature: float = 0.0,
    judge: str | None = None,
    limit: int | None = None,
    on_question: Callable[[dict[str, Any]], None] | None = None,
) -> EvalReport:
    """Run the agent over a dataset and return the report (per-question rows, summary, gate, config).

    ``temperature`` applies to every node (0: repeatable runs); ``judge`` is the model for RAGAS'
    LLM-judged metrics (None: skip them); ``on_question`` gets each row as soon as it is scored.
    """
    started = time.perf_counter()
    questions = load_dataset(dataset)[:limit]
    run = _prepare(questions[0].corpus, settings, temperature, judge)
    rows: list[dict[str, Any]] = []
    for question in questions:
        rows.append(await _ask_one(run, question))
        if on_question:
            on_question(rows[-1])
    summary = _summary(rows, run)
    gated = {"hit_rate": summary[f"hit@{settings.eval_k}"], **{k: summary[k] for k in GATED if k in summary}}
    return EvalReport(
        dataset={"path": str(dataset), "name": dataset.stem, "questions": len(rows)},
        corpus={"name": run.corpus.name, "root": str(run.corpus.root), "version": run.corpus.version},
        config=_run_config(run, judge),
        summary=summary,
        gate=Gate(**gate(gated, rows, settings)),
        questions=rows,
        duration_s=round(time.perf_counter() - started, 1),
    )


def _prepare(corpus_name: str, settings: Settings, temperature: float, judge: str | None) -> _Run:
    """Ingest the corpus if needed, resolve the Context once, load the index, the scorers and the graph."""
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph
    from retrievers import load_search_index

    corpus = CORPORA[corpus_name]()
    index_dir = corpus_index(corpus, settings)
    context = Context.from_settings(settings, index_dir=str(index_dir), temperature=temperature)
    index = load_search_index(context.index_spec())  # the index the agent searches (one load, shared)
    return _Run(settings=settings, corpus=corpus, index_dir=index_dir, context=context, index=index,
                scorers=Scorers.build(settings, judge, index.embedder), graph=build_graph().compile(),
                content=ContentPolicy(settings.trace_content))  # fmt: skip


async def _ask_one(run: _Run, question: EvalQuestion) -> dict[str, Any]:
    """Ask one question through the real graph, traced, and score it."""
    from langchain_core.messages import HumanMessage

    from evals.ragas_compat import load_ragas
    from graphs.agent.citations import source_documents
    from graphs.agent.telemetry import RunTelemetry

    load_ragas()
    from ragas import SingleTurnSample

    t0 = time.perf_counter()
    asked = run.content.text(question.question, kind="query")
    with span("eval question", **{"cairn.eval.question_id": question.id, "cairn.question": asked}) as current:
        traced = {"callbacks": [RunTelemetry(content=run.content)]}
        state = await run.graph.ainvoke({"messages": [HumanMessage(question.question)]}, traced, context=run.context)
        documents = state.get("documents", [])
        rank = first_relevant_rank([d.metadata["path"] for d in documents], question.files)
        current.set_attribute("cairn.eval.rank", rank if rank is not None else -1)
    latency = time.perf_counter() - t0
    # what analyze judged relevant is what the answer was given; when it judged nothing relevant,
    # the retrieved documents are the contexts there are
    relevant = source_documents(state) or documents
    answer = state.get("answer", "")
    sample = SingleTurnSample(
        user_input=question.question,
        response=answer,
        reference=question.reference,
        retrieved_contexts=[d.page_content for d in relevant] or [""],
        reference_contexts=reference_contexts(run.index, question),
    )
    k = run.settings.eval_k
    return {
        "id": question.id,
        "question": question.question,
        "rank": rank,
        "hit": hit_at_k(rank, k),
        "reciprocal_rank": reciprocal_rank(rank),
        **await run.scorers.score(sample),
        **citation_checks(state, run.corpus.root),
        "latency_s": round(latency, 3),
        "judged": state.get("judged", []),
        "fallbacks": state.get("fallbacks", []),
        "planned_by": state.get("planned_by"),
        "empty_answer": bool(state.get("empty_answer")),
        "retrieved": [d.metadata["citation"] for d in documents[:k]],
        "citations": state.get("citations", []),
        "sources": [source["citation"] for source in state.get("sources", [])],
        "answer": answer,
    }


def _summary(rows: list[dict[str, Any]], run: _Run) -> dict[str, Any]:
    """Return the run's means (latency: the median), the LLM-judged ones included when a judge scored them."""
    summary = {
        "questions": len(rows),
        f"hit@{run.settings.eval_k}": _mean([r["hit"] for r in rows]),
        "mrr": _mean([r["reciprocal_rank"] for r in rows]),
        "context_recall": _mean([r["context_recall"] for r in rows]),
        "context_precision": _mean([r["context_precision"] for r in rows]),
        "rouge_l": _mean([r["rouge_l"] for r in rows]),
        "citation_validity": _mean([r["citation_validity"] for r in rows]),
        "model_citation_precision": _mean([r["model_citation_precision"] for r in rows]),
        "latency_p50_s": round(statistics.median(r["latency_s"] for r in rows), 3),
        **fallback_rates(rows),
        "empty_answers": sum(bool(r.get("empty_answer")) for r in rows),
    }
    for name in run.scorers.judged:
        summary[name] = _mean([r.get(name) for r in rows])
    return summary


def _run_config(run: _Run, judge: str | None) -> dict[str, Any]:
    """Return the configuration the run actually used, the index's as it was built."""
    from evals.ragas_compat import load_ragas

    context, manifest = run.context, run.index.generation.manifest
    return {
        "models": {str(node): context.node_model(node) for node in MODEL_NODES},
        "model_fallback": context.fallback_model,
        "temperature": context.temperature,
        "judge": judge,
        "retriever": context.retriever,
        "agent_k": context.k,
        "plan": context.plan,
        "prompt_layout": context.prompt_layout,
        "structured_output": context.structured_output,
        "max_rounds": context.max_rounds,
        "eval_k": run.settings.eval_k,
        # as the index was built, which is what the run searched
        "chunking": {"max_chars": manifest.chunking.max_chars, "overlap_lines": manifest.chunking.overlap_lines},
        "embedding": {"model": manifest.embedding.model, "max_tokens": manifest.embedding.max_tokens},
        "index": {**manifest.summary(), "generation": run.index.generation.path.name, "path": str(run.index_dir)},
        "ragas": load_ragas().__version__,
    }


def write_report(report: EvalReport, out: Path) -> dict[str, Path]:
    """Write report.json, report.md and scores.png into ``out``; return their paths by kind."""
    from evals.report import markdown, plot

    data = report.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "scores.png"}
    paths["json"].write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(data), encoding="utf-8")
    plot(data, paths["plot"])
    return paths
