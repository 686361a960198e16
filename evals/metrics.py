"""Score eval questions, and gate a run on the deterministic scores.

Scores per question:

- retrieval: the rank of the first retrieved chunk whose file is a reference file
  (``first_relevant_rank``: every chunk takes a rank, several chunks of one file included), and
  hit@k and reciprocal rank from it; RAGAS non-LLM context recall and precision (retrieved vs
  reference contexts);
- answer: RAGAS ROUGE-L against the reference answer; citation validity, the share of the answer's
  path:start-end citations that exist in the corpus and that retrieved code supports
  (``graphs.agent.citations.supported``, the rule the agent applies to its own answers); and model
  citation precision, the share of the citations the model wrote that the agent kept (those in the
  answer, against those plus the ones it dropped);
- with a judge model: RAGAS faithfulness, response relevancy and LLM context precision.

Only the deterministic scores are gated (``GATED``); the judged ones depend on the judge model, so
they are recorded, never gated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from config import Settings

if TYPE_CHECKING:
    from graphs.agent.citations import Citation

#: Deterministic metrics with a gate threshold (setting name) — the LLM-judged ones are never gated.
GATED = {
    "hit_rate": "eval_min_hit_rate",
    "mrr": "eval_min_mrr",
    "context_recall": "eval_min_context_recall",
    "citation_validity": "eval_min_citation_validity",
}


# ---------------------------------------------------------------- retrieval rank


def first_relevant_rank(paths: Sequence[str], relevant: Collection[str]) -> int | None:
    """Return the 1-based rank of the first retrieved chunk whose path is in ``relevant``, or None.

    ``paths`` holds one path per retrieved chunk, in ranked order; chunks of the same file each take
    a rank, so a reference file behind two chunks of another file ranks 3.
    """
    for rank, path in enumerate(paths, start=1):
        if path in relevant:
            return rank
    return None


def hit_at_k(rank: int | None, k: int) -> float:
    """Return 1.0 when the first relevant chunk ranks within the top ``k``, else 0.0."""
    return 1.0 if rank is not None and rank <= k else 0.0


def reciprocal_rank(rank: int | None, k: int | None = None) -> float:
    """Return 1/rank; 0.0 when nothing relevant was retrieved (or, given ``k``, it ranks below k)."""
    if rank is None or (k is not None and rank > k):
        return 0.0
    return 1.0 / rank


# ---------------------------------------------------------------- judgements


def fallback_rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Return, per judging node, the share of its model judgements that took the deterministic fallback.

    Each row lists the judgements asked of the model (``judged``) and those that fell back
    (``fallbacks``), one entry per call; a node never asked has no rate (None).
    """
    rates: dict[str, float | None] = {}
    for node in ("plan", "analyze", "refine"):
        asked = sum(list(r.get("judged", [])).count(node) for r in rows)
        failed = sum(list(r.get("fallbacks", [])).count(node) for r in rows)
        rates[f"fallback_rate_{node}"] = round(failed / asked, 4) if asked else None
    return rates


# ---------------------------------------------------------------- citations


def _lines_exist(citation: Citation, corpus_root: Path) -> bool:
    """Return True when the cited file is inside the corpus and has the cited lines."""
    root = corpus_root.resolve()
    path = (root / citation.path).resolve()
    if root not in path.parents or not path.is_file():
        return False
    lines = path.read_text(encoding="utf-8", errors="replace").count("\n") + 1
    return 1 <= citation.start <= citation.end <= lines


def citation_checks(state: Mapping[str, Any], corpus_root: Path) -> dict[str, float | None]:
    """Return citation validity and model citation precision of one answer (None: nothing was cited).

    ``state`` is the agent's final state: ``answer`` is the answer's text alone (its sources are
    apart), ``dropped_citations`` the citations the agent removed from it.
    """
    # Imported here: graphs.agent pulls in LangGraph, which the retrieval-only scores never need.
    from graphs.agent.citations import find_citations, supported

    documents = state.get("documents", [])
    cited = [citation for _, citation in find_citations(state.get("answer", ""))]
    valid = [c for c in cited if _lines_exist(c, corpus_root) and supported(c, documents)]
    written = len(cited) + len(state.get("dropped_citations", []))
    return {
        "citation_validity": len(valid) / len(cited) if cited else None,
        "model_citation_precision": len(cited) / written if written else None,
    }


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
        """Return the non-LLM metrics, plus the judged ones when a ``judge`` model is given."""
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

            from models import ModelConfig, build_chat_model

            # RAGAS' judge replies (statement lists, a verdict per statement) run longer than the agent's short JSON.
            config = ModelConfig.from_settings(settings, judge, max_tokens=settings.model_judge_max_tokens * 4)
            llm = LangchainLLMWrapper(build_chat_model(config))
            embeddings = LangchainEmbeddingsWrapper(LocalEmbeddings(embedder))
            scorers.judged = {
                "faithfulness": m.Faithfulness(llm=llm),
                "response_relevancy": m.ResponseRelevancy(llm=llm, embeddings=embeddings),
                "llm_context_precision": m.LLMContextPrecisionWithReference(llm=llm),
            }
        return scorers

    async def score(self, sample: Any) -> dict[str, float | str | None]:
        """Return every metric's score of one RAGAS sample; a judged metric that fails records its error."""
        out: dict[str, float | str | None] = {}
        for name, metric in self.deterministic.items():
            out[name] = float(await metric.single_turn_ascore(sample))
        for name, metric in self.judged.items():
            try:
                value = float(await metric.single_turn_ascore(sample))
                out[name] = None if value != value else value  # NaN: the judge's output did not parse
            except Exception as exc:  # a weak judge must not stop the run; recorded, never gated
                out[name] = None
                out[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return out


# ---------------------------------------------------------------- gate


def gate(values: Mapping[str, float | None], rows: list[dict[str, Any]], settings: Settings) -> dict[str, Any]:
    """Compare the deterministic scores with their thresholds; list the questions that pulled them down."""
    thresholds = {metric: getattr(settings, name) for metric, name in GATED.items()}
    failed = {
        metric: {"value": values.get(metric), "threshold": threshold}
        for metric, threshold in thresholds.items()
        if values.get(metric) is not None and values[metric] < threshold
    }
    per_question: dict[str, Callable[[dict[str, Any]], bool]] = {
        "hit_rate": lambda r: r["hit"] == 0,
        "mrr": lambda r: r["reciprocal_rank"] < settings.eval_min_mrr,
        "context_recall": lambda r: r["context_recall"] < settings.eval_min_context_recall,
        "citation_validity": lambda r: (
            r["citation_validity"] is not None and r["citation_validity"] < settings.eval_min_citation_validity
        ),
    }
    failing = sorted({r["id"] for metric in failed for r in rows if per_question[metric](r)})
    return {"passed": not failed, "thresholds": thresholds, "failed_metrics": failed, "failing_questions": failing}
