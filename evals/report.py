"""Readable eval reports: Markdown, a PNG of per-question scores, and deltas against an older report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLOTTED = ("hit", "reciprocal_rank", "context_recall", "context_precision", "rouge_l", "citation_validity")


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: config, aggregate table, gate, one row per question."""
    config, summary, gate = report["config"], report["summary"], report["gate"]
    lines = [
        f"# Cairn eval: {report['dataset']['name']}",
        "",
        f"{report['dataset']['questions']} questions on corpus `{report['corpus']['name']}` "
        f"({report['corpus']['version']}), {report['duration_s']} s.",
        "",
        "## Configuration",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    index = config["index"]
    rows = {
        "models (plan / analyze / refine / answer)": " / ".join(config["models"].values()),
        "fallback model": config["model_fallback"] or "–",
        "temperature": config["temperature"],
        "judge": config["judge"] or "– (LLM metrics skipped)",
        "retriever, k, refine rounds": f"{config['retriever']}, {config['agent_k']}, {config['max_rounds']}",
        "chunking": f"{config['chunking']['max_chars']} chars, {config['chunking']['overlap_lines']} lines overlap",
        "embedding": f"{config['embedding']['model']} ({config['embedding']['max_tokens']} tokens)",
        "index": f"{index.get('generation')} — {index.get('counts', {}).get('chunks', '?')} chunks",
        "ragas": config["ragas"],
    }
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows.items()]
    lines += ["", "## Scores", "", "| metric | value | gate |", "|---|---|---|"]
    thresholds = gate["thresholds"]
    for name, value in summary.items():
        key = "hit_rate" if name.startswith("hit@") else name
        mark = ""
        if key in thresholds:
            mark = f"≥ {thresholds[key]}" + (" ❌" if key in gate["failed_metrics"] else " ✅")
        lines.append(f"| {name} | {_fmt(value)} | {mark} |")
    verdict = "passed" if gate["passed"] else "FAILED: " + ", ".join(gate["failed_metrics"])
    lines += ["", f"**Gate {verdict}**"]
    if gate["failing_questions"]:
        lines.append(f"Questions below the thresholds: {', '.join(gate['failing_questions'])}")
    lines += [
        "",
        "## Questions",
        "",
        "| id | rank | ctx recall | ctx precision | ROUGE-L | citations valid | latency s | question |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["questions"]:
        lines.append(
            f"| {row['id']} | {_fmt(row['rank'])} | {_fmt(row['context_recall'])} | {_fmt(row['context_precision'])} "
            f"| {_fmt(row['rouge_l'])} | {_fmt(row['citation_validity'])} | {row['latency_s']} "
            f"| {row['question']} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """A PNG with one group of bars per question (retrieval and answer scores)."""
    import matplotlib

    matplotlib.use("Agg")  # no display, no network
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report["questions"]
    ids = [r["id"] for r in rows]
    x = np.arange(len(rows))
    width = 0.8 / len(PLOTTED)
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.55), 4.5))
    for n, metric in enumerate(PLOTTED):
        values = [r.get(metric) if r.get(metric) is not None else 0.0 for r in rows]
        ax.bar(x + n * width - 0.4 + width / 2, values, width, label=metric)
    ax.set_xticks(x, ids, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(f"Cairn eval: {report['dataset']['name']} ({report['config']['models']['answer']})")
    ax.legend(ncols=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(new: dict[str, Any], old_path: Path) -> str:
    """Print-ready deltas of the summary metrics, and questions whose retrieval hit changed."""
    old = json.loads(Path(old_path).read_text(encoding="utf-8"))
    lines = [f"{'metric':<26}{'old':>10}{'new':>10}{'delta':>10}"]
    for name, value in new["summary"].items():
        before = old.get("summary", {}).get(name)
        if isinstance(value, int | float) and isinstance(before, int | float):
            lines.append(f"{name:<26}{before:>10.3f}{value:>10.3f}{value - before:>+10.3f}")
        else:
            lines.append(f"{name:<26}{_fmt(before):>10}{_fmt(value):>10}{'':>10}")
    old_rows = {r["id"]: r for r in old.get("questions", [])}
    for row in new["questions"]:
        before = old_rows.get(row["id"])
        if before is not None and before.get("hit") != row.get("hit"):
            change = "now found" if row["hit"] else "now MISSED"
            lines.append(f"  {row['id']}: {change} (rank {_fmt(before.get('rank'))} -> {_fmt(row['rank'])})")
    return "\n".join(lines)
