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
from pathlib import Path
from typing import Any

from cairn.telemetry import ContentPolicy, span
from config import MODEL_NODES, Settings
from evals.datasets import CORPORA, Corpus, load_dataset, reference_contexts
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

__all__ = ["corpus_index", "run_eval", "write_report"]


def corpus_index(corpus: Corpus, settings: Settings) -> Path:
    """Ingest the corpus into DATA_DIR/eval-indexes/<name>-<version> (incremental: cheap when current)."""
    from ingest.pipeline import ingest_repository

    index_dir = Path(settings.data_dir) / "eval-indexes" / f"{corpus.name}-{corpus.version}"
    ingest_repository(corpus.root, settings.model_copy(update={"index_dir": index_dir}))
    return index_dir


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 4) if present else None


async def run_eval(
    dataset: Path,
    settings: Settings,
    *,
    temperature: float = 0.0,
    judge: str | None = None,
    limit: int | None = None,
    on_question: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the agent over a dataset and return the report (per-question rows, summary, gate, config).

    ``temperature`` applies to every node (0: repeatable runs); ``judge`` is the model for RAGAS'
    LLM-judged metrics (None: skip them); ``on_question`` gets each row as soon as it is scored.
    """
    from langchain_core.messages import HumanMessage

    from evals.ragas_compat import load_ragas
    from graphs.agent.citations import source_documents
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph
    from graphs.agent.telemetry import RunTelemetry
    from retrievers import load_search_index

    questions = load_dataset(dataset)[:limit]
    corpus = CORPORA[questions[0].corpus]()
    started = time.perf_counter()
    index_dir = corpus_index(corpus, settings)
    context = Context.from_settings(settings, index_dir=str(index_dir), temperature=temperature)
    index = load_search_index(context.index_spec())  # the index the agent searches (one load, shared)
    ragas = load_ragas()
    from ragas import SingleTurnSample

    scorers = Scorers.build(settings, judge, index.embedder)
    graph = build_graph().compile()
    rows: list[dict[str, Any]] = []
    content = ContentPolicy(settings.trace_content)
    for question in questions:
        t0 = time.perf_counter()
        asked = content.text(question.question, kind="query")
        with span("eval question", **{"cairn.eval.question_id": question.id, "cairn.question": asked}) as current:
            traced = {"callbacks": [RunTelemetry(content=content)]}
            state = await graph.ainvoke({"messages": [HumanMessage(question.question)]}, traced, context=context)
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
            reference_contexts=reference_contexts(index, question),
        )
        row: dict[str, Any] = {
            "id": question.id,
            "question": question.question,
            "rank": rank,
            "hit": hit_at_k(rank, settings.eval_k),
            "reciprocal_rank": reciprocal_rank(rank),
            **await scorers.score(sample),
            **citation_checks(state, corpus.root),
            "latency_s": round(latency, 3),
            "judged": state.get("judged", []),
            "fallbacks": state.get("fallbacks", []),
            "planned_by": state.get("planned_by"),
            "retrieved": [d.metadata["citation"] for d in documents[: settings.eval_k]],
            "citations": state.get("citations", []),
            "sources": [source["citation"] for source in state.get("sources", [])],
            "answer": answer,
        }
        rows.append(row)
        if on_question:
            on_question(row)

    summary = {
        "questions": len(rows),
        f"hit@{settings.eval_k}": _mean([r["hit"] for r in rows]),
        "mrr": _mean([r["reciprocal_rank"] for r in rows]),
        "context_recall": _mean([r["context_recall"] for r in rows]),
        "context_precision": _mean([r["context_precision"] for r in rows]),
        "rouge_l": _mean([r["rouge_l"] for r in rows]),
        "citation_validity": _mean([r["citation_validity"] for r in rows]),
        "model_citation_precision": _mean([r["model_citation_precision"] for r in rows]),
        "latency_p50_s": round(statistics.median(r["latency_s"] for r in rows), 3),
        **fallback_rates(rows),
    }
    for name in scorers.judged:
        summary[name] = _mean([r.get(name) for r in rows])
    gated_values = {"hit_rate": summary[f"hit@{settings.eval_k}"], **{k: summary[k] for k in GATED if k in summary}}
    manifest = index.generation.manifest
    return {
        "dataset": {"path": str(dataset), "name": dataset.stem, "questions": len(rows)},
        "corpus": {"name": corpus.name, "root": str(corpus.root), "version": corpus.version},
        "config": {
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
            "eval_k": settings.eval_k,
            # as the index was built, which is what the run searched
            "chunking": {"max_chars": manifest.chunking.max_chars, "overlap_lines": manifest.chunking.overlap_lines},
            "embedding": {"model": manifest.embedding.model, "max_tokens": manifest.embedding.max_tokens},
            "index": {**manifest.summary(), "generation": index.generation.path.name, "path": str(index_dir)},
            "ragas": ragas.__version__,
        },
        "summary": summary,
        "gate": gate(gated_values, rows, settings),
        "questions": rows,
        "duration_s": round(time.perf_counter() - started, 1),
    }


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.json, report.md and scores.png into ``out``; return their paths by kind."""
    from evals.report import markdown, plot

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "scores.png"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    plot(report, paths["plot"])
    return paths
