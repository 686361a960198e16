"""Agent benchmarks: graph overhead with an instant model, and time to first token with the bundled model.

    .venv/bin/python benchmarks/bench_agent.py [--index /tmp/cairn-bench/index] [--rounds 2] [--ttft 5]

1. Overhead: the whole graph (plan → retrieve → analyze → answer, hybrid retrieval on the index, the
   query embeddings included) with chat models that answer instantly, over the golden questions;
   p50/p95 per question. For reference, in the same process and interleaved: hybrid retrieval alone
   for the same queries (what the graph necessarily does).
2. TTFT: the embedded llama.cpp server on SmolLM2-135M; time to the first streamed token of a direct
   chat request (the official openai client) vs time to the first answer token through the graph
   (which first runs plan and analyze, each a model call), on the sample repository's index.
Results go to benchmarks/results/agent.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from benchmarks.common import machine, summary_ms, write_result
from cairn.processes import free_port
from config import Settings
from evals.retrieval import load_golden
from graphs.agent.context import Context
from graphs.agent.graph import graph
from models import PROVIDERS
from retrievers import load_search_index, make_retriever

ROOT = Path(__file__).resolve().parents[1]


class InstantModel(BaseChatModel):
    """Replies at once with valid JSON for plan/analyze and a cited answer."""

    @property
    def _llm_type(self) -> str:
        return "instant"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        prompt = str(messages[0].content)
        last = str(messages[-1].content)
        if "standalone question" in prompt:
            text = json.dumps({"question": last.removeprefix("Latest question: "), "queries": ["generate"]})
        elif "judge which numbered" in prompt:
            text = '{"relevant": [1, 2, 3], "sufficient": true, "missing": ""}'
        else:
            first = re.search(r"\[([^\[\]\s]+:\d+-\d+)\]", last)
            text = f"See [{first.group(1)}]." if first else "Nothing relevant."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])


async def overhead(index_dir: Path, rounds: int) -> dict[str, object]:
    PROVIDERS.register("bench-instant", lambda spec, config: InstantModel())
    context = Context(model="bench-instant/x", index_dir=str(index_dir), max_rounds=0)
    index = load_search_index(Settings(index_dir=index_dir))
    retriever = make_retriever("hybrid", index, k=6)
    questions = [g.question for g in load_golden()]
    await graph.ainvoke({"messages": [HumanMessage(questions[0])]}, context=context)  # warm-up
    graph_times, retrieval_times = [], []
    for _ in range(rounds):
        for question in questions:
            t0 = time.perf_counter()
            state = await graph.ainvoke({"messages": [HumanMessage(question)]}, context=context)
            graph_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            retriever.batch(state["queries"])
            retrieval_times.append(time.perf_counter() - t0)
    return {
        "graph": summary_ms(graph_times),
        "hybrid_retrieval_alone": summary_ms(retrieval_times),
        "queries_per_question": len(state["queries"]),
        "chunks_in_index": len(index),
    }


async def ttft(runs: int, data_dir: Path) -> dict[str, object]:
    import openai

    from ingest.pipeline import ingest_repository
    from models.embedded import EmbeddedServer

    settings = Settings(data_dir=data_dir, index_dir=data_dir / "sample-index", embedded_port=free_port())
    ingest_repository(ROOT / "examples" / "sample-repo", settings)
    server = EmbeddedServer(settings)
    server.start(timeout=120)
    try:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="not-needed")
        question = "How does the LRU cache evict entries when it is full?"
        context = Context(model=f"openai-compatible/smollm2-135m@{server.base_url}",
                          index_dir=str(settings.resolved_index_dir), max_rounds=0)  # fmt: skip
        direct, through_graph, graph_total = [], [], []
        for _ in range(runs + 1):  # the first of each is a warm-up
            t0 = time.perf_counter()
            stream = await client.chat.completions.create(
                model="smollm2-135m", messages=[{"role": "user", "content": question}], stream=True, max_tokens=64
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    direct.append(time.perf_counter() - t0)
                    break
            await stream.close()
            t0 = time.perf_counter()
            first = None
            async for mode, payload in graph.astream(
                {"messages": [HumanMessage(question)]}, context=context, stream_mode=["messages", "values"]
            ):
                if mode == "messages" and first is None:
                    message, meta = payload
                    if (
                        meta.get("langgraph_node") == "answer"
                        and isinstance(message, AIMessageChunk)
                        and message.content
                    ):
                        first = time.perf_counter() - t0
            through_graph.append(first or float("nan"))
            graph_total.append(time.perf_counter() - t0)
        direct, through_graph, graph_total = direct[1:], through_graph[1:], graph_total[1:]
    finally:
        server.stop()
    return {
        "direct_request_ttft": summary_ms(direct),
        "graph_answer_ttft": summary_ms(through_graph),
        "graph_total": summary_ms(graph_total),
        "note": "graph TTFT includes the plan and analyze model calls that precede the answer",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, default=Path("/tmp/cairn-bench/index"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ttft", type=int, default=5, help="TTFT runs (0 skips the model part)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cairn-bench-agent"))
    args = parser.parse_args()
    result: dict[str, object] = {"machine": machine()}
    result["overhead"] = asyncio.run(overhead(args.index, args.rounds))
    print(json.dumps(result["overhead"], indent=1), flush=True)
    if args.ttft:
        result["ttft"] = asyncio.run(ttft(args.ttft, args.work))
        print(json.dumps(result["ttft"], indent=1), flush=True)
    print(f"written to {write_result('agent', result)}")


if __name__ == "__main__":
    main()
