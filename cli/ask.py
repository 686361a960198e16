"""``cairn ask``: one turn of the agent (``graphs.agent.turn``), rendered on the terminal."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cairn.errors import CairnError
from cli.app import IndexOption, RepoOption, _reports_errors, _settings, app, err, out
from config import Settings
from graphs.agent.transcript import conversation
from graphs.agent.turn import describe_step


def _state_summary(state: dict[str, Any]) -> dict[str, Any]:
    keys = ("question", "queries", "lookups", "searched", "rounds", "relevant", "answer", "sources", "citations",
            "dropped_citations", "fallbacks", "tool_calls")  # fmt: skip
    summary = {key: state.get(key) for key in keys}
    summary["documents"] = [
        {k: d.metadata.get(k) for k in ("citation", "symbol", "score", "retriever")} for d in state.get("documents", [])
    ]
    summary["messages"] = [{"role": m.type, "content": m.content} for m in conversation(state)]  # moved out too
    return summary


class _Steps:
    """Show the agent's steps on stderr: one status line on a terminal, one line per step otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._status = err.status("starting") if enabled and err.is_terminal else None
        if self._status is not None:
            self._status.start()

    def show(self, step: dict[str, Any]) -> None:
        line = describe_step(step) if self.enabled else None
        if line is None:
            return
        if self._status is not None:
            self._status.update(line)
        else:
            err.print(f"· {line}", style="dim", highlight=False, markup=False)

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


async def _ask(question: str, settings: Settings, session: str | None, as_json: bool, context: Any) -> None:
    """Run one turn (``graphs.agent.turn``) and render it on the terminal: steps on stderr, the answer on stdout."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from graphs.agent.citations import sources_block
    from graphs.agent.graph import build_graph
    from graphs.agent.turn import Final, Session, Step, Thinking, Token, Turn

    async with contextlib.AsyncExitStack() as stack:
        where = None
        if session:
            Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
            path = Path(settings.data_dir) / "sessions.sqlite"
            saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
            where = Session(saver, session, session)
        graph = build_graph().compile(checkpointer=where.saver if where else None)
        turn = Turn(graph, context, [HumanMessage(question)], session=where, run_name="cairn-ask")
        try:
            await turn.check()
        except CairnError as exc:
            exc.hint = "continue it with the --repo it started with, or start another --session"
            raise
        final: dict[str, Any] = {}
        streamed = False
        steps = _Steps(enabled=not as_json)
        try:
            async for event in turn.events():
                if isinstance(event, Step):
                    steps.show(event.data)
                elif isinstance(event, Thinking):
                    steps.show({"node": "answer", "status": "thinking"})
                elif isinstance(event, Token):
                    if as_json:
                        continue
                    if not streamed:
                        steps.stop()
                        out.print()
                    streamed = True
                    out.print(event.text, end="", markup=False, highlight=False)
                elif isinstance(event, Final):
                    final = event.state
        finally:
            steps.stop()
    if as_json:
        out.print_json(json.dumps(_state_summary(final), default=str))
        return
    if not streamed:  # nothing found, answered without the model
        out.print(final.get("answer", ""), markup=False, highlight=False)
    else:
        out.print()
    if final.get("sources"):
        out.print("\n" + sources_block(final["sources"]), markup=False, highlight=False)
    if final.get("dropped_citations"):
        err.print(
            f"dropped {len(final['dropped_citations'])} citation(s) no retrieved code supports: "
            + ", ".join(final["dropped_citations"]),
            style="dim",
        )


@app.command()
@_reports_errors
def ask(
    question: Annotated[str, typer.Argument(help="Your question about the indexed code.")],
    index: IndexOption = None,
    repo: RepoOption = None,
    session: Annotated[
        str | None, typer.Option(help="Continue (or start) a named conversation, kept in DATA_DIR.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for every node (default: CAIRN_MODEL).")] = None,
    retriever: Annotated[str | None, typer.Option(help="hybrid, dense, keyword, or a plugin retriever's name.")] = None,
    max_rounds: Annotated[int | None, typer.Option(help="Refine rounds allowed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final state as JSON.")] = False,
) -> None:
    """Answer a question about the indexed code, streamed, with citations (path:start-end)."""
    import asyncio

    from graphs.agent.context import Context
    from graphs.agent.resources import load_indexes
    from models.embedded import embedded_model
    from models.errors import translate_model_error
    from retrievers import available_retrievers

    if not question.strip():
        raise CairnError("The question is empty", 'ask something, e.g. cairn ask "where is the config parsed?"')
    if retriever is not None and retriever not in available_retrievers():
        raise CairnError(f"Unknown --retriever {retriever!r}", f"choose one of: {', '.join(available_retrievers())}")
    settings = _settings(index, repo)
    if model:
        settings = settings.model_copy(update={"model": model})
    context = Context.from_settings(settings, retriever=retriever, max_rounds=max_rounds)
    load_indexes(context)  # fail fast (no index, wrong model, unknown repository) before starting anything
    with embedded_model(settings):
        try:
            asyncio.run(_ask(question, settings, session, as_json, context))
        except Exception as exc:
            translated = translate_model_error(exc, model=context.model, timeout=context.model_timeout,
                                               retries=context.model_max_retries)  # fmt: skip
            if translated is None:
                raise
            raise translated from exc
