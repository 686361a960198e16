"""``cairn eval``: the offline evaluation and its CI gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cairn.errors import GateFailed
from cli.app import _reports_errors, app, err, out
from config import Settings


@app.command("eval")
@_reports_errors
def eval_(
    dataset: Annotated[
        str, typer.Argument(help="A JSONL dataset, or the name of one in evals/datasets (sample, httpx).")
    ] = "sample",
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: DATA_DIR/evals/<dataset>).")
    ] = None,
    compare: Annotated[Path | None, typer.Option(help="An older report.json to print deltas against.")] = None,
    judge: Annotated[
        str | None, typer.Option(help="Model for RAGAS' LLM-judged metrics (default: CAIRN_EVAL_JUDGE).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of every node (0: repeatable).")] = 0.0,
    model: Annotated[str | None, typer.Option(help="Model for every node (default: CAIRN_MODEL).")] = None,
) -> None:
    """Run the agent over an eval dataset, score it (RAGAS + retrieval + citations), gate on thresholds.

    There is no --repo: a dataset pins its corpus (the sample repository, the installed httpx), which
    the eval ingests into DATA_DIR/eval-indexes itself, so its scores never depend on your repositories.
    """
    import asyncio

    from evals.datasets import resolve_dataset
    from evals.navigation import is_navigation_dataset
    from evals.report import compare as compare_reports
    from evals.runner import run_eval, write_report
    from models import parse_model_spec
    from models.embedded import embedded_model

    path = resolve_dataset(dataset)
    if is_navigation_dataset(path):
        _navigation_eval(path, out_dir or Path(Settings().data_dir) / "evals" / path.stem)
        return
    settings = Settings()
    if model:
        settings = settings.model_copy(update={"model": model})
    judge = judge or settings.eval_judge
    for spec in [*settings.model_specs(), *([judge] if judge else [])]:
        parse_model_spec(spec)  # a malformed setting is reported before anything starts
    target = out_dir or Path(settings.data_dir) / "evals" / path.stem

    def progress(row: dict[str, Any]) -> None:
        rank = row["rank"] if row["rank"] is not None else "-"
        err.print(f"  {row['id']:<8} rank {rank!s:>2}  ctx-recall {row['context_recall']:.2f}  "
                  f"rouge-L {row['rouge_l']:.2f}  {row['latency_s']:.1f}s", highlight=False)  # fmt: skip

    judged = settings.model_copy(update={"model": judge}) if judge else settings
    err.print(f"evaluating {path} with {settings.model} ...")
    with embedded_model(settings), embedded_model(judged):
        try:
            report = asyncio.run(
                run_eval(path, settings, temperature=temperature, judge=judge, limit=limit, on_question=progress)
            )
        except Exception as exc:
            from models.errors import translate_model_error

            translated = translate_model_error(exc, model=settings.model, timeout=settings.model_timeout)
            if translated is None:
                raise
            raise translated from exc
    paths = write_report(report, target)
    out.print()
    for name, value in report.summary.items():
        out.print(f"  {name:<26} {value if value is not None else '–'}", highlight=False)
    out.print(f"\nreport: {paths['markdown']}  ({paths['json'].name}, {paths['plot'].name}); "
              f"{report.duration_s} s", highlight=False)  # fmt: skip
    if compare is not None:
        out.print("\n" + compare_reports(report.to_dict(), compare), highlight=False, markup=False)
    gate = report.gate
    if not gate.passed:
        failed = ", ".join(f"{m} {v['value']} < {v['threshold']}" for m, v in gate.failed_metrics.items())
        raise GateFailed(
            f"Eval gate failed: {failed}; questions: {', '.join(gate.failing_questions) or '-'}",
            f"see {paths['markdown']}; thresholds are CAIRN_EVAL_MIN_*",
        )
    out.print("[green]gate passed[/]")


def _navigation_eval(path: Path, target: Path) -> None:
    """Score the symbol graph on a navigation dataset against Python's ast; gate on precision and recall."""
    from evals.navigation import run_navigation_eval

    err.print(f"evaluating {path} (symbol graph against Python's ast) ...")
    report = run_navigation_eval(path)
    target.mkdir(parents=True, exist_ok=True)
    (target / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    for kind, scores in report["kinds"].items():
        out.print(f"  {kind:<11} {scores['questions']:>3} questions  precision {scores['precision']}  "
                  f"recall {scores['recall']}  ({scores['answers']} answers)", highlight=False)  # fmt: skip
    out.print(f"\nreport: {target / 'report.json'}; graph {report['graph_s']} s, ast {report['ast_s']} s",
              highlight=False)  # fmt: skip
    if not report["gate"]["passed"]:
        failed = ", ".join(f"{m} {v['value']} < {v['threshold']}" for m, v in report["gate"]["failed_metrics"].items())
        raise GateFailed(f"Navigation eval gate failed: {failed}", f"see {target / 'report.json'}")
    out.print("[green]gate passed[/]")
