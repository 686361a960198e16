"""A 30-turn session on a 4,096-token model: tokens sent and latency per turn, with and without the history policy.

Two sessions ask the same 30 questions on the bundled SmolLM2-135M (embedded llama.cpp server, n_ctx 4,096,
temperature 0, one round), turn by turn, interleaved (which goes first alternates):

- ``cairn``: the history policy (``graphs.agent.budget.fit_history``): recent turns word for word, older
  ones summarised as question and citations, the rest left out, within an eighth of the window;
- ``whole history``: every earlier turn word for word, as a chat that resends its history does (no
  policy, and no turns moved out of the session's messages; the same graph otherwise).

The questions are the sample corpus's first questions and follow-ups (evals/datasets/followups-sample.jsonl)
and its golden questions, cycled. Per turn: prompt tokens sent to the model over the whole turn (plan,
analyze and answer; from the server's usage), seconds, what the policy kept, and whether the turn failed
(a prompt over the window is refused by the server). ``make bench-long-session``; results in
benchmarks/results/long-session.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
TURNS = 30


def _questions(count: int) -> list[str]:
    followups = [json.loads(line) for line in (ROOT / "evals/datasets/followups-sample.jsonl").read_text().splitlines()
                 if line.strip()]  # fmt: skip
    golden = [json.loads(line)["question"] for line in (ROOT / "evals/datasets/sample.jsonl").read_text().splitlines()
              if line.strip()]  # fmt: skip
    pool = [q for row in followups for q in (row["first"], row["question"])] + golden
    return [pool[n % len(pool)] for n in range(count)]


async def _run(index_dir: Path, base_url: str, turns: int) -> dict[str, Any]:
    from langchain_core.callbacks import UsageMetadataCallbackHandler
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver

    import graphs.agent.nodes as nodes
    from graphs.agent.budget import History, message_tokens, turns_of
    from graphs.agent.context import Context
    from graphs.agent.graph import build_graph
    from graphs.agent.transcript import history_of, move_out

    def whole(messages: Any, budget: int, values: Any) -> History:
        turns = turns_of(messages)
        out = [m for q, a in turns for m in (HumanMessage(q), AIMessage(a))]
        return History(out, verbatim=len(turns), tokens=message_tokens(out), budget=budget)

    context = Context(model=f"openai-compatible/smollm2-135m@{base_url}", index_dir=str(index_dir), max_rounds=0,
                      temperature=0, plan="auto", context_tokens=4096)  # fmt: skip
    graph = build_graph().compile(checkpointer=InMemorySaver())
    questions = _questions(turns)
    ways = {"cairn": (history_of, move_out), "whole history": (whole, lambda *args: {})}
    rows: dict[str, list[dict[str, Any]]] = {way: [] for way in ways}

    async def one(way: str, n: int) -> None:
        nodes.history_of, nodes.move_out = ways[way]  # type: ignore[assignment]
        usage = UsageMetadataCallbackHandler()
        config = {"configurable": {"thread_id": way}, "callbacks": [usage]}
        started = time.perf_counter()
        row: dict[str, Any] = {"turn": n + 1}
        try:
            state = await graph.ainvoke({"messages": [HumanMessage(questions[n])]}, config, context=context)
            row.update(ok=True, history=state.get("history"), answered=bool(state["answer"].strip()),
                       citations=len(state.get("citations", [])))  # fmt: skip
        except Exception as exc:  # a prompt over the window: the server refuses it
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:160]}")
        finally:
            nodes.history_of, nodes.move_out = history_of, move_out
        row["seconds"] = round(time.perf_counter() - started, 2)
        row["prompt_tokens"] = sum(u.get("input_tokens", 0) for u in usage.usage_metadata.values())
        rows[way].append(row)
        print(f"turn {n + 1:2d} {way:13s} {'ok ' if row['ok'] else 'ERR'} {row['prompt_tokens']:6d} tokens "
              f"{row['seconds']:6.1f} s {row.get('history') or row.get('error', '')}", flush=True)  # fmt: skip

    for n in range(turns):
        order = list(ways) if n % 2 == 0 else list(reversed(ways))
        for way in order:
            await one(way, n)

    def summary(items: list[dict[str, Any]]) -> dict[str, Any]:
        ok = [r for r in items if r["ok"]]
        last10 = [r for r in ok if r["turn"] > turns - 10]
        return {
            "turns_answered": len(ok),
            "first_failed_turn": next((r["turn"] for r in items if not r["ok"]), None),
            "prompt_tokens_median": statistics.median(r["prompt_tokens"] for r in ok) if ok else None,
            "prompt_tokens_max": max((r["prompt_tokens"] for r in ok), default=None),
            "prompt_tokens_median_last_10": statistics.median(r["prompt_tokens"] for r in last10) if last10 else None,
            "seconds_median": statistics.median(r["seconds"] for r in ok) if ok else None,
            "seconds_median_last_10": statistics.median(r["seconds"] for r in last10) if last10 else None,
        }

    return {"turns": turns, "window": 4096, "summary": {way: summary(rows[way]) for way in ways}, "per_turn": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--out", type=Path, default=RESULTS / "long-session.json")
    args = parser.parse_args()

    from cairn.processes import free_port
    from config import Settings
    from evals.datasets import CORPORA
    from ingest.pipeline import ingest_repository
    from models.embedded import EmbeddedServer

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", index_dir=Path(tmp) / "index", embedded_port=free_port(),
                            model_context_tokens=4096)  # fmt: skip
        ingest_repository(CORPORA["sample"]().root, settings)
        server = EmbeddedServer(settings)
        server.start(timeout=180)
        try:
            report = asyncio.run(_run(settings.resolved_index_dir, server.base_url, args.turns))
        finally:
            server.stop()
    report["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
