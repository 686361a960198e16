"""Two-turn follow-ups with the embedded model: are pronouns resolved, and is the prompt's example copied?

For each pair of evals/datasets/followups-sample.jsonl (a first question, then a follow-up leaning on it
through a pronoun), the graph runs both turns on the bundled SmolLM2-135M (temperature 0, one round)
and the follow-up is scored three ways, each searched the same way (hybrid, fused by RRF, k chunks):

- ``as asked``: the follow-up's own words only (what a search box would do);
- ``model plan, unchecked``: the model's plan as it came (the behaviour before issue 28);
- ``cairn``: the plan Cairn keeps (example copies and queries about nothing in the conversation
  dropped, a pronoun's antecedent folded in).

Reported: hit@5 of the follow-up's files, how many plans copied the prompt's example, how many
standalone questions name what the pronoun stood for. ``make bench-followups``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "evals" / "datasets" / "followups-sample.jsonl"


def _hit(paths: list[str], files: list[str], k: int = 5) -> bool:
    return any(path in files for path in paths[:k])


async def _run(index_dir: Path, base_url: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver

    from config import Node
    from graphs.agent.budget import fit_history
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph
    from graphs.agent.judgements import copies_example
    from graphs.agent.nodes import _dedupe, fuse_rankings
    from graphs.agent.resources import resources_for
    from ingest.tokens import identifiers_in
    from prompts.agent import PLAN

    context = Context(model=f"openai-compatible/smollm2-135m@{base_url}", index_dir=str(index_dir), max_rounds=0,
                      temperature=0, plan="auto")  # fmt: skip
    resources = resources_for(context)
    graph = build_graph().compile(checkpointer=InMemorySaver())

    def search(queries: list[str]) -> list[str]:
        rankings = resources.retriever.batch(queries)
        return [d.metadata["path"] for d in fuse_rankings(rankings, context.rrf_k)[: context.k]]

    results = []
    for row in rows:
        config = {"configurable": {"thread_id": row["id"]}}
        first = await graph.ainvoke({"messages": [HumanMessage(row["first"])]}, config, context=context)
        started = time.perf_counter()
        follow = await graph.ainvoke({"messages": [HumanMessage(row["question"])]}, config, context=context)
        seconds = time.perf_counter() - started
        # the plan the model gave, as it came (temperature 0: the reply the graph's plan node got)
        history = fit_history(follow["messages"][:-2], context.history_tokens).messages
        judgement = await resources.judges[Node.PLAN].ainvoke(
            PLAN.format_messages(history=history, question=row["question"])
        )
        raw = judgement.parsed
        raw_queries = list(raw.queries) if raw else []
        unchecked = _dedupe([row["question"], *raw_queries, *identifiers_in(row["question"]),
                             *identifiers_in(row["first"])])[:4]  # fmt: skip
        standalone = follow["question"].lower()
        results.append(
            {
                "id": row["id"],
                "first_answered": bool(first["answer"].strip()),
                "model_rewrite": raw.question if raw else None,
                "model_queries": raw_queries,
                "copied_example": any(copies_example(q) for q in [*(raw_queries), *([raw.question] if raw else [])]),
                "cairn_question": follow["question"],
                "cairn_queries": follow["queries"],
                "names_antecedent": any(word in standalone for word in row["antecedent"]),
                "hit@5": {
                    "as asked": _hit(search([row["question"]]), row["files"]),
                    "model plan, unchecked": _hit(search(unchecked), row["files"]),
                    "cairn": _hit(search(follow["queries"]), row["files"]),
                    "cairn (graph's documents)": _hit([d.metadata["path"] for d in follow["documents"]], row["files"]),
                },
                "answer_empty": bool(follow.get("empty_answer")),
                "follow_up_seconds": round(seconds, 2),
            }
        )
    ways = results[0]["hit@5"].keys() if results else []
    return {
        "pairs": len(results),
        "hit@5": {way: round(sum(r["hit@5"][way] for r in results) / len(results), 3) for way in ways},
        "plans copying the example": sum(r["copied_example"] for r in results),
        "standalone names the antecedent": sum(r["names_antecedent"] for r in results),
        "empty answers": sum(r["answer_empty"] for r in results),
        "per_pair": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "followups.json")
    args = parser.parse_args()

    from cairn.processes import free_port
    from config import Settings
    from evals.datasets import CORPORA
    from ingest.pipeline import ingest_repository
    from models.embedded import EmbeddedServer

    rows = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", index_dir=Path(tmp) / "index", embedded_port=free_port())
        ingest_repository(CORPORA["sample"]().root, settings)
        server = EmbeddedServer(settings)
        server.start(timeout=180)
        try:
            report = asyncio.run(_run(settings.resolved_index_dir, server.base_url, rows))
        finally:
            server.stop()
    report["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("per_pair", "machine")}, indent=2))
    for pair in report["per_pair"]:
        model = f"{pair['model_rewrite']!r} {pair['model_queries']}"
        print(f"{pair['id']}: model {model} -> cairn {pair['cairn_question']!r}")


if __name__ == "__main__":
    main()
