"""Time to first token and answer quality: Cairn's graph against a single-call RAG baseline.

    .venv/bin/python benchmarks/bench_ttft.py [--dataset httpx] [--limit 24] [--variants shared,compact]

In one process, on one llama.cpp server (the bundled SmolLM2-135M unless --model says otherwise),
one index and one context budget, interleaved question by question (the order rotated each time):

- baseline: what most assistants do — retrieve once with the user's question (the same hybrid
  retriever and k as the agent), trim to the same token budget, one answer call with the same answer
  prompt;
- graph: Cairn's agent (plan → retrieve → analyze → answer), once per variant asked for (a prompt
  layout, optionally with other context fields, e.g. ``shared:plan=model``).

Before each measured run the server's KV cache is given an unrelated prompt, so no run starts from
a prefix another one left behind (the graph's own analyze → answer reuse is what is measured).
Reported: time to the first visible answer token and to the whole answer, p50/p95, the ratios of
the medians, where the graph's time goes (per node), and quality on the same questions: hit@5,
RAGAS context recall, and the model's citation precision. Results: benchmarks/results/ttft.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.messages import AIMessageChunk, HumanMessage

from benchmarks.common import machine, percentile, write_result
from cairn.processes import free_port
from config import Node, Settings
from evals.datasets import CORPORA, load_dataset, reference_contexts, resolve_dataset
from evals.metrics import Scorers, citation_checks, first_relevant_rank, hit_at_k
from evals.runner import corpus_index
from graphs.agent.budget import fit_budget
from graphs.agent.citations import check_citations, source_documents
from graphs.agent.context import Context
from graphs.agent.graph import build_graph
from graphs.agent.nodes import answer_prompt
from graphs.agent.resources import resources_for
from models.reasoning import ThinkingFilter, split_thinking


async def single_call(context: Context, question: str) -> dict[str, Any]:
    """The baseline: one retrieval with the question, one streamed answer call."""
    resources = resources_for(context)
    started = time.perf_counter()
    documents = await asyncio.to_thread(resources.retriever.invoke, question)
    documents = fit_budget(documents, context.document_tokens)
    prompt = answer_prompt(documents, documents, question)
    first, parts, visible = None, [], ThinkingFilter()
    async for chunk in resources.models[Node.ANSWER].astream(prompt):
        text, _ = visible.feed(str(chunk.content))
        if text and first is None:
            first = time.perf_counter() - started
        parts.append(str(chunk.content))
    total = time.perf_counter() - started
    answer, citations, dropped = check_citations(split_thinking("".join(parts))[0], documents)
    state = {"answer": answer, "documents": documents, "citations": citations, "dropped_citations": dropped}
    return {"ttft": first, "total": total, "state": state, "contexts": [d.page_content for d in documents]}


async def through_graph(graph: Any, context: Context, question: str) -> dict[str, Any]:
    """Cairn's agent, streamed: the first visible answer token, the whole run, and when each node ended."""
    started = time.perf_counter()
    first, final, nodes, visible = None, {}, {}, ThinkingFilter()
    async for mode, payload in graph.astream(
        {"messages": [HumanMessage(question)]}, context=context, stream_mode=["messages", "values", "custom"]
    ):
        now = time.perf_counter() - started
        if mode == "values":
            final = payload
        elif mode == "custom":
            nodes.setdefault(payload["node"], {})[payload["status"]] = now
        else:
            chunk, meta = payload
            is_answer = meta.get("langgraph_node") == Node.ANSWER and isinstance(chunk, AIMessageChunk)
            if is_answer and first is None and visible.feed(str(chunk.content))[0]:
                first = now
    total = time.perf_counter() - started
    spans = {node: round(marks.get("done", total) - marks.get("running", 0.0), 3) for node, marks in nodes.items()}
    documents = final.get("documents", [])
    relevant = source_documents(final) or documents
    return {"ttft": first, "total": total, "state": final, "contexts": [d.page_content for d in relevant],
            "nodes": spans, "fallbacks": final.get("fallbacks", []), "judged": final.get("judged", [])}  # fmt: skip


def flush_cache(base_url: str) -> None:
    """Give the server's single KV-cache slot an unrelated prompt, so the next run starts cold."""
    import openai

    openai.OpenAI(base_url=base_url, api_key="unused").chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Say OK."}], max_tokens=1
    )


def summary(values: list[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"p50_s": None, "p95_s": None, "n": 0}
    return {"p50_s": round(statistics.median(present), 3), "p95_s": round(percentile(present, 95), 3),
            "n": len(present)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="httpx", help="eval dataset whose questions and corpus to use")
    parser.add_argument("--limit", type=int, default=24, help="questions (at least 20 for the report)")
    parser.add_argument(
        "--variants",
        default="shared,compact",
        help="graph variants: a prompt layout, optionally with context fields, e.g. 'shared,shared:plan=model'",
    )
    parser.add_argument("--model", default="embedded", help="model setting (default: the bundled model)")
    parser.add_argument("--name", default="ttft", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    from models.embedded import EmbeddedServer

    questions = load_dataset(resolve_dataset(args.dataset))[: args.limit]
    corpus = CORPORA[questions[0].corpus]()
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-ttft-"))
    settings = Settings(_env_file=None, data_dir=work, embedded_port=free_port(), model=args.model,
                        model_temperature=0.0)  # fmt: skip
    index_dir = corpus_index(corpus, settings.model_copy(update={"data_dir": Path(".cairn")}))
    server = EmbeddedServer(settings)
    server.start(timeout=120)
    try:
        base = Context.from_settings(settings, index_dir=str(index_dir))
        variants: dict[str, Context | None] = {"baseline": None}
        for variant in args.variants.split(","):
            layout, *fields = variant.split(":")
            changes = dict(field.split("=", 1) for field in fields)
            variants[f"graph-{variant}"] = Context(**{**base.as_configurable(), "prompt_layout": layout, **changes})
        graph = build_graph().compile()
        resources = resources_for(base)
        scorers = Scorers.build(settings, None, next(iter(resources.indexes.values())).embedder)
        from ragas import SingleTurnSample

        await single_call(base, questions[0].question)  # warm-up: the embedding model, the index, the server
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        names = list(variants)
        for n, question in enumerate(questions):
            for name in names[n % len(names) :] + names[: n % len(names)]:  # rotate who goes first
                await asyncio.to_thread(flush_cache, server.base_url)
                context = variants[name]
                if context is None:
                    result = await single_call(base, question.question)
                else:
                    result = await through_graph(graph, context, question.question)
                state = result.pop("state")
                rank = first_relevant_rank([d.metadata["path"] for d in state["documents"]], question.files)
                sample = SingleTurnSample(
                    user_input=question.question,
                    response=state.get("answer", ""),
                    reference=question.reference,
                    retrieved_contexts=result.pop("contexts") or [""],
                    reference_contexts=reference_contexts(next(iter(resources.indexes.values())), question),
                )
                scores = await scorers.score(sample)
                row = {"id": question.id, **result, "rank": rank, "hit@5": hit_at_k(rank, 5),
                       "context_recall": scores["context_recall"],
                       **citation_checks(state, corpus.root)}  # fmt: skip
                rows[name].append(row)
                print(f"{question.id:<7} {name:<15} ttft {row['ttft'] or float('nan'):6.2f}s  total "
                      f"{row['total']:6.2f}s  rank {rank}", flush=True)  # fmt: skip
    finally:
        server.stop()
    report = {"machine": machine(), "model": args.model, "dataset": args.dataset, "questions": len(questions),
              "index": str(index_dir), "results": {}, "rows": rows}  # fmt: skip
    for name, results in rows.items():
        entry: dict[str, Any] = {
            "ttft": summary([r["ttft"] for r in results]),
            "total": summary([r["total"] for r in results]),
            "hit@5": round(statistics.fmean(r["hit@5"] for r in results), 4),
            "context_recall": round(statistics.fmean(r["context_recall"] for r in results), 4),
            "model_citation_precision": _mean([r["model_citation_precision"] for r in results]),
        }
        if name != "baseline":
            entry["nodes_p50_s"] = {
                node: round(statistics.median(r["nodes"].get(node, 0.0) for r in results), 3)
                for node in ("plan", "retrieve", "analyze", "refine", "answer")
            }
            entry["fallback_rates"] = {node: _rate(results, node) for node in ("plan", "analyze", "refine")}
            baseline = report["results"]["baseline"]
            entry["ttft_ratio_p50"] = round(entry["ttft"]["p50_s"] / baseline["ttft"]["p50_s"], 2)
            entry["total_ratio_p50"] = round(entry["total"]["p50_s"] / baseline["total"]["p50_s"], 2)
        report["results"][name] = entry
    path = write_result(args.name, report)
    print()
    for name, entry in report["results"].items():
        ratios = f"  ×{entry['ttft_ratio_p50']} / ×{entry['total_ratio_p50']}" if "ttft_ratio_p50" in entry else ""
        print(f"{name:<15} TTFT p50 {entry['ttft']['p50_s']}s p95 {entry['ttft']['p95_s']}s  total p50 "
              f"{entry['total']['p50_s']}s p95 {entry['total']['p95_s']}s{ratios}  hit@5 {entry['hit@5']}  "
              f"ctx-recall {entry['context_recall']}  "
              f"citation precision {entry['model_citation_precision']}")  # fmt: skip
    print(f"wrote {path}")


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 4) if present else None


def _rate(results: list[dict[str, Any]], node: str) -> float | None:
    asked = sum(r["judged"].count(node) for r in results)
    return round(sum(r["fallbacks"].count(node) for r in results) / asked, 4) if asked else None


if __name__ == "__main__":
    main()
