"""Offline evaluation of the agent: run the real graph over a dataset and score it.

A dataset is a versioned JSONL file in ``evals/datasets/``, one question per line::

    {"id": "s-01", "corpus": "sample", "question": "...", "reference": "a reference answer",
     "files": ["path/answering/it.py"], "symbols": ["function_or_class"]}

``corpus`` names a pinned, offline corpus (see CORPORA); the eval ingests it when its index is
missing or stale. Reference contexts are the corpus chunks of ``files`` whose symbol matches one
of ``symbols`` (all chunks of those files when none does).

Scores per question:
- retrieval: hit@k and reciprocal rank of the first reference file among the retrieved chunks;
  RAGAS non-LLM context recall and precision (retrieved vs reference contexts);
- answer: RAGAS ROUGE-L against the reference answer; citation validity (share of the answer's
  path:start-end citations that exist in the corpus and lie inside retrieved code) and the share of
  the citations the model itself wrote that were valid;
- with a judge model: RAGAS faithfulness, response relevancy and LLM context precision.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from cairn.errors import CairnError
from config import Settings

DATASETS_DIR = Path(__file__).parent / "datasets"
ROOT = Path(__file__).resolve().parents[1]

#: Deterministic metrics with a gate threshold (setting name) — the LLM-judged ones are never gated.
GATED = {
    "hit_rate": "eval_min_hit_rate",
    "mrr": "eval_min_mrr",
    "context_recall": "eval_min_context_recall",
    "citation_validity": "eval_min_citation_validity",
}


class DatasetError(CairnError):
    """A dataset file that cannot be read."""

    exit_code = 2


class GateFailed(CairnError):
    """Scores fell below the configured thresholds."""

    exit_code = 12


@dataclass(frozen=True, slots=True)
class EvalQuestion:
    id: str
    corpus: str
    question: str
    reference: str
    files: tuple[str, ...]
    symbols: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Corpus:
    """A pinned corpus: where its files are and which version they are."""

    name: str
    root: Path
    version: str


def _package_corpus(package: str) -> Callable[[], Corpus]:
    def locate() -> Corpus:
        import importlib

        module = importlib.import_module(package)
        return Corpus(package, Path(module.__file__).parent, metadata.version(package))

    return locate


CORPORA: dict[str, Callable[[], Corpus]] = {
    "sample": lambda: Corpus("sample", ROOT / "examples" / "sample-repo", "in-repo"),
    "httpx": _package_corpus("httpx"),
}


def resolve_dataset(name_or_path: str | Path) -> Path:
    """Accept a path, or the name of a dataset in evals/datasets (with or without .jsonl)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    for candidate in (DATASETS_DIR / f"{name_or_path}.jsonl", DATASETS_DIR / str(name_or_path)):
        if candidate.exists():
            return candidate
    names = ", ".join(sorted(p.stem for p in DATASETS_DIR.glob("*.jsonl")))
    raise DatasetError(f"No dataset {str(name_or_path)!r}", f"give a JSONL path or one of: {names}")


def load_dataset(path: Path) -> list[EvalQuestion]:
    """Read and check a dataset; a bad line is reported with its number."""
    questions: list[EvalQuestion] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question = EvalQuestion(
                id=str(row["id"]),
                corpus=str(row["corpus"]),
                question=str(row["question"]),
                reference=str(row["reference"]),
                files=tuple(row["files"]),
                symbols=tuple(row.get("symbols", ())),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"{path}:{number} is not a valid question ({type(exc).__name__}: {exc})",
                "each line needs id, corpus, question, reference and files",
            ) from exc
        if question.corpus not in CORPORA:
            raise DatasetError(f"{path}:{number} names unknown corpus {question.corpus!r}",
                               f"use one of: {', '.join(CORPORA)}")  # fmt: skip
        questions.append(question)
    if not questions:
        raise DatasetError(f"{path} has no questions", "add one JSON object per line")
    if len({q.corpus for q in questions}) != 1:
        raise DatasetError(f"{path} mixes corpora", "keep one corpus per dataset file")
    return questions


# ---------------------------------------------------------------- scoring helpers


def first_rank(paths: list[str], files: tuple[str, ...]) -> int | None:
    """1-based rank of the first retrieved path that is a reference file (deduplicated by path)."""
    seen: list[str] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
            if path in files:
                return len(seen)
    return None


def reference_contexts(index: Any, question: EvalQuestion) -> list[str]:
    """The corpus chunks that answer a question: reference files' chunks whose symbol matches."""
    in_files = [c for c in index.chunks if c.path in question.files]
    if question.symbols:
        pattern = re.compile("|".join(rf"\b{re.escape(s)}\b" for s in question.symbols))
        matched = [c for c in in_files if c.symbol and pattern.search(c.symbol)]
        if matched:
            return [c.text for c in matched[:6]]
    return [c.text for c in in_files[:6]]


def citation_checks(state: dict[str, Any], corpus_root: Path) -> dict[str, float | None]:
    """Share of the answer's citations that exist in the corpus and inside retrieved code; and of the
    citations the model wrote (before Cairn removed invented ones), the share that was valid."""
    from graphs.agent.citations import find_citations

    documents = state.get("documents", [])
    cited = [c for _, c in find_citations(state.get("answer", ""))]

    def exists(citation: Any) -> bool:
        path = (corpus_root / citation.path).resolve()
        if corpus_root.resolve() not in path.parents or not path.is_file():
            return False
        lines = path.read_text(encoding="utf-8", errors="replace").count("\n") + 1
        return 1 <= citation.start <= citation.end <= lines

    def retrieved(citation: Any) -> bool:
        return any(d["path"] == citation.path and d["start_line"] <= citation.start and citation.end <= d["end_line"]
                   for d in documents)  # fmt: skip

    valid = [c for c in cited if exists(c) and retrieved(c)]
    body = state.get("answer", "").split("\n\nSources:")[0]
    written = len(find_citations(body)) + len(state.get("dropped_citations", []))
    return {
        "citation_validity": len(valid) / len(cited) if cited else None,
        "model_citation_precision": len(find_citations(body)) / written if written else None,
    }


def _answer_body(state: dict[str, Any]) -> str:
    return state.get("answer", "").split("\n\nSources:")[0].strip()


# ---------------------------------------------------------------- RAGAS


class LocalEmbeddings(Embeddings):
    """LangChain Embeddings over Cairn's offline sentence-transformers model (for RAGAS' judge metrics)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed_documents(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed_query(text).tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


@dataclass
class Scorers:
    """The RAGAS metric objects, built once per run."""

    deterministic: dict[str, Any]
    judged: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, judge: str | None, embedder: Any) -> Scorers:
        from evals.ragas_compat import metrics

        m = metrics()
        scorers = cls(
            deterministic={
                "context_recall": m.NonLLMContextRecall(),
                "context_precision": m.NonLLMContextPrecisionWithReference(),
                "rouge_l": m.RougeScore(rouge_type="rougeL", mode="fmeasure"),
            }
        )
        if judge:
            from ragas.embeddings import LangchainEmbeddingsWrapper
            from ragas.llms import LangchainLLMWrapper

            from models import build_chat_model

            llm = LangchainLLMWrapper(build_chat_model(judge, settings, max_tokens=settings.model_judge_max_tokens * 4))
            embeddings = LangchainEmbeddingsWrapper(LocalEmbeddings(embedder))
            scorers.judged = {
                "faithfulness": m.Faithfulness(llm=llm),
                "response_relevancy": m.ResponseRelevancy(llm=llm, embeddings=embeddings),
                "llm_context_precision": m.LLMContextPrecisionWithReference(llm=llm),
            }
        return scorers


async def _ragas_scores(scorers: Scorers, sample: Any) -> dict[str, float | str | None]:
    out: dict[str, float | str | None] = {}
    for name, metric in scorers.deterministic.items():
        out[name] = float(await metric.single_turn_ascore(sample))
    for name, metric in scorers.judged.items():
        try:
            value = float(await metric.single_turn_ascore(sample))
            out[name] = None if value != value else value  # NaN: the judge's output did not parse
        except Exception as exc:  # a weak judge must not stop the run; recorded, never gated
            out[name] = None
            out[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return out


# ---------------------------------------------------------------- run


def corpus_index(corpus: Corpus, settings: Settings, quiet: bool = True) -> Path:
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
    judge: str | None = None,
    limit: int | None = None,
    on_question: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the agent over a dataset and return the report (per-question rows, summary, gate, config)."""
    from langchain_core.messages import HumanMessage

    from evals.ragas_compat import load_ragas
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph
    from ingest.store import open_generation
    from retrievers import load_search_index

    questions = load_dataset(dataset)[:limit]
    corpus = CORPORA[questions[0].corpus]()
    started = time.perf_counter()
    index_dir = corpus_index(corpus, settings)
    index_settings = settings.model_copy(update={"index_dir": index_dir})
    index = load_search_index(index_settings)
    ragas = load_ragas()
    from ragas import SingleTurnSample

    scorers = Scorers.build(settings, judge, index.embedder)
    graph = build_graph().compile()
    context = Context(index_dir=str(index_dir), temperature=settings.model_temperature)
    rows: list[dict[str, Any]] = []
    for question in questions:
        t0 = time.perf_counter()
        state = await graph.ainvoke({"messages": [HumanMessage(question.question)]}, context=context)
        latency = time.perf_counter() - t0
        documents = state.get("documents", [])
        rank = first_rank([d["path"] for d in documents], question.files)
        relevant = [documents[i] for i in state.get("relevant", []) if i < len(documents)] or documents
        sample = SingleTurnSample(
            user_input=question.question,
            response=_answer_body(state) or state.get("answer", ""),
            reference=question.reference,
            retrieved_contexts=[d["text"] for d in relevant] or [""],
            reference_contexts=reference_contexts(index, question),
        )
        row: dict[str, Any] = {
            "id": question.id,
            "question": question.question,
            "rank": rank,
            "hit": 1.0 if rank is not None and rank <= settings.eval_k else 0.0,
            "reciprocal_rank": 1.0 / rank if rank else 0.0,
            **await _ragas_scores(scorers, sample),
            **citation_checks(state, corpus.root),
            "latency_s": round(latency, 3),
            "fallbacks": state.get("fallbacks", []),
            "retrieved": [d["citation"] for d in documents[: settings.eval_k]],
            "citations": state.get("citations", []),
            "answer": state.get("answer", ""),
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
    }
    for name in scorers.judged:
        summary[name] = _mean([r.get(name) for r in rows])
    gated_values = {"hit_rate": summary[f"hit@{settings.eval_k}"], **{k: summary[k] for k in GATED if k in summary}}
    generation = open_generation(index_dir)
    manifest = {k: v for k, v in generation.manifest.items() if k != "files"}
    return {
        "dataset": {"path": str(dataset), "name": dataset.stem, "questions": len(rows)},
        "corpus": {"name": corpus.name, "root": str(corpus.root), "version": corpus.version},
        "config": {
            "models": {node: settings.node_model(node) for node in ("plan", "analyze", "refine", "answer")},
            "model_fallback": settings.model_fallback,
            "temperature": settings.model_temperature,
            "judge": judge,
            "retriever": settings.agent_retriever,
            "agent_k": settings.agent_k,
            "max_rounds": settings.agent_max_rounds,
            "eval_k": settings.eval_k,
            "chunking": {"max_chars": settings.chunk_max_chars, "overlap_lines": settings.chunk_overlap_lines},
            "embedding": {"model": settings.embedding_model, "max_tokens": settings.embedding_max_tokens},
            "index": {**manifest, "generation": generation.path.name, "path": str(index_dir)},
            "ragas": ragas.__version__,
        },
        "summary": summary,
        "gate": gate(gated_values, rows, settings),
        "questions": rows,
        "duration_s": round(time.perf_counter() - started, 1),
    }


def gate(values: dict[str, float | None], rows: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Compare the deterministic scores with their thresholds; list the questions that pulled them down."""
    thresholds = {metric: getattr(settings, name) for metric, name in GATED.items()}
    failed = {
        metric: {"value": values.get(metric), "threshold": threshold}
        for metric, threshold in thresholds.items()
        if values.get(metric) is not None and values[metric] < threshold
    }
    per_question = {
        "hit_rate": lambda r: r["hit"] == 0,
        "mrr": lambda r: r["reciprocal_rank"] < settings.eval_min_mrr,
        "context_recall": lambda r: r["context_recall"] < settings.eval_min_context_recall,
        "citation_validity": lambda r: (
            r["citation_validity"] is not None and r["citation_validity"] < settings.eval_min_citation_validity
        ),
    }
    failing = sorted({r["id"] for metric in failed for r in rows if per_question[metric](r)})
    return {"passed": not failed, "thresholds": thresholds, "failed_metrics": failed, "failing_questions": failing}


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write report.json, report.md and scores.png into ``out``."""
    from evals.report import markdown, plot

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "plot": out / "scores.png"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    plot(report, paths["plot"])
    return paths
