"""Replies survive Markdown: citations and identifiers render as written in the clients' renderers.

Rendered with marked (the page's, run by Node), Python-Markdown and markdown-it (CommonMark), the
renderers Open WebUI, `llm` and most chat clients use or resemble.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import markdown
import pytest
from markdown_it import MarkdownIt

from graphs.agent.citations import MarkdownGuard, markdown_safe, render_answer

MARKED = Path(__file__).resolve().parents[2] / "serving/web/static/vendor/marked/marked.esm.js"

ANSWER = (
    "The store is opened in Store.__init__ [tinykv/__init__.py:1-6], which calls _load_index_ and "
    "snake_case_helper(); see tinykv/__init__.py for the module and **this** for emphasis."
)
SOURCES = [
    {"citation": "tinykv/__init__.py:1-6", "symbol": "Store.__init__", "score": 0.9},
    {"citation": "tinykv/_private_/wal.py:3-4", "symbol": None, "score": 0.1},
]


def _marked(texts: list[str]) -> list[str]:
    script = (
        f"import {{ marked }} from {json.dumps(MARKED.as_uri())};"
        "let input = '';"
        "process.stdin.on('data', (d) => { input += d });"
        "process.stdin.on('end', () => { console.log(JSON.stringify(JSON.parse(input).map((t) => marked.parse(t)))) });"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _renderers() -> dict[str, object]:
    renderers = {
        "python-markdown": lambda texts: [markdown.markdown(t) for t in texts],
        "markdown-it": lambda texts: [MarkdownIt("commonmark").render(t) for t in texts],
    }
    if shutil.which("node"):
        renderers["marked"] = _marked
    return renderers


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


@pytest.mark.parametrize("renderer", sorted(_renderers()))
def test_citations_and_identifiers_survive_each_renderer(renderer: str) -> None:
    reply = render_answer(markdown_safe(ANSWER), SOURCES)
    raw = render_answer(ANSWER, [{**s, "symbol": None} for s in SOURCES])
    [html, unguarded] = _renderers()[renderer]([reply, raw])  # type: ignore[operator]

    text = _text(html)
    for written in ("tinykv/__init__.py:1-6", "Store.__init__", "_load_index_", "snake_case_helper()",
                    "tinykv/__init__.py", "tinykv/_private_/wal.py:3-4"):  # fmt: skip
        assert written in text, (renderer, written, html)
    assert "<code>tinykv/__init__.py:1-6</code>" in html and "<code>Store.__init__</code>" in html
    assert "<strong>this</strong>" in html  # the model's own Markdown still renders
    assert "<strong>init</strong>" not in html and "<em>" not in html
    # and without the guard the renderer does mangle them (what the test is about)
    assert "<strong>init</strong>" in unguarded or "<em>" in unguarded


def test_the_guard_streams_as_it_renders_whole() -> None:
    whole = markdown_safe(ANSWER)
    for size in (1, 3, 7, 40):
        guard = MarkdownGuard()
        streamed = "".join(guard.feed(ANSWER[i : i + size]) for i in range(0, len(ANSWER), size)) + guard.flush()
        assert streamed == whole, size


def test_code_spans_and_fences_are_left_as_written() -> None:
    text = "Call `Store.__init__` here:\n```python\ndef __init__(self):\n    self._a_ = 1\n```\nThen __init__ runs."
    safe = markdown_safe(text)
    assert "Call `Store.__init__` here:" in safe
    assert "```python\ndef __init__(self):\n    self._a_ = 1\n```" in safe
    assert safe.endswith("Then `__init__` runs.")
    assert markdown_safe("See [a/b.py:3-9].") == "See `a/b.py:3-9`."
    assert markdown_safe("plain words, no names") == "plain words, no names"
