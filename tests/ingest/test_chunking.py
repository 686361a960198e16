from __future__ import annotations

import itertools
import json

from ingest.chunking import ChunkingOptions, chunk_file
from tests.conftest import SAMPLE_REPO

OPTIONS = ChunkingOptions(max_chars=600, overlap_lines=2)

METHODS = "".join(
    f"    def {name}(self):\n        return {name!r} + {('#' * 220)!r}\n\n" for name in ("first", "second", "third")
)
PYTHON = (
    '"""Module docstring."""\n\nimport os\n\n\ndef small():\n    return 1\n\n\n'
    'class Big:\n    """A class too large for one chunk."""\n\n'
    + METHODS
    + "\ndef long_function():\n"
    + "".join(f"    value_{i} = compute({i})\n" for i in range(60))
)


def _assert_spans_match_file(path: str, text: str, chunks) -> None:
    lines = text.split("\n")
    for chunk in chunks:
        if len(chunk.text) > OPTIONS.max_chars:  # only one enormous line may exceed the budget
            assert chunk.start_line == chunk.end_line
            continue
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line]), chunk.citation


def test_python_is_chunked_on_definitions_with_symbols() -> None:
    chunks = chunk_file("pkg/mod.py", PYTHON, OPTIONS)
    by_symbol = {c.symbol: c for c in chunks}
    assert by_symbol["small"].kind == "function"
    assert by_symbol["small"].text.startswith("def small")
    assert {"Big.first", "Big.second", "Big.third"} <= set(by_symbol)
    assert by_symbol["Big.second"].kind == "method"
    assert all(c.language == "python" and c.path == "pkg/mod.py" for c in chunks)
    _assert_spans_match_file("pkg/mod.py", PYTHON, chunks)


def test_long_definitions_become_overlapping_windows_that_keep_the_symbol() -> None:
    chunks = [c for c in chunk_file("pkg/mod.py", PYTHON, OPTIONS) if c.symbol == "long_function"]
    assert len(chunks) >= 3
    assert all(c.kind == "function-window" and len(c.text) <= OPTIONS.max_chars for c in chunks)
    for previous, current in itertools.pairwise(chunks):
        assert current.start_line == previous.end_line + 1 - OPTIONS.overlap_lines
    assert chunks[-1].end_line == PYTHON.rstrip("\n").count("\n") + 1


def test_every_nonblank_line_is_in_some_chunk() -> None:
    text = (SAMPLE_REPO / "tinykv" / "store.py").read_text()
    chunks = chunk_file("tinykv/store.py", text, OPTIONS)
    covered = {n for c in chunks for n in range(c.start_line, c.end_line + 1)}
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            assert number in covered, (number, line)
    _assert_spans_match_file("tinykv/store.py", text, chunks)


def test_javascript_exports_are_definitions() -> None:
    text = (SAMPLE_REPO / "web" / "client.js").read_text()
    chunks = chunk_file("web/client.js", text, ChunkingOptions(max_chars=500, overlap_lines=1))
    symbols = {c.symbol for c in chunks}
    assert "parseKeyList" in symbols
    assert any(s and s.startswith("TinyKVClient") for s in symbols)
    assert all(c.language == "javascript" for c in chunks)


def test_markdown_is_chunked_by_headings_with_their_trail() -> None:
    text = "# Title\nintro\n\n## Install\npip it\n\n```\n# not a heading\n```\n\n### Linux\napt it\n\n## Use\nrun it\n"
    chunks = chunk_file("README.md", text, OPTIONS)
    assert [c.symbol for c in chunks] == [
        "Title",
        "Title > Install",
        "Title > Install > Linux",
        "Title > Use",
    ]
    assert "# not a heading" in chunks[1].text
    assert chunks[2].start_line == 11 and chunks[2].text.startswith("### Linux")


def test_notebook_cells_cite_their_lines_in_the_ipynb_file() -> None:
    path = SAMPLE_REPO / "notebooks" / "benchmark.ipynb"
    text = path.read_text()
    chunks = chunk_file("notebooks/benchmark.ipynb", text, OPTIONS)
    assert [c.symbol for c in chunks] == ["cell 1", "cell 2", "cell 3"]
    assert chunks[0].language == "markdown" and chunks[1].language == "python"
    raw = text.split("\n")
    for chunk, cell in zip(chunks, json.loads(text)["cells"], strict=True):
        cited = raw[chunk.start_line - 1 : chunk.end_line]
        assert [json.loads(line.strip().rstrip(",")) for line in cited] == cell["source"]


def test_broken_notebook_and_unknown_text_fall_back_to_line_windows() -> None:
    broken = chunk_file("bad.ipynb", "{not json\n" * 3, OPTIONS)
    assert broken and broken[0].language == "json"
    text = "\n".join(f"line {i}" for i in range(300))
    chunks = chunk_file("notes.txt", text, OPTIONS)
    assert len(chunks) > 1 and chunks[0].start_line == 1 and chunks[-1].end_line == 300
    _assert_spans_match_file("notes.txt", text, chunks)


def test_a_minified_line_is_cut_into_pieces_not_lost() -> None:
    line = "var a=1;" * 400
    chunks = chunk_file("app.min.txt", line, OPTIONS)
    assert "".join(c.text for c in chunks) == line
    assert all(c.start_line == c.end_line == 1 for c in chunks)


def test_windows_line_endings_and_blank_files() -> None:
    assert chunk_file("a.py", "\n\n   \n", OPTIONS) == []
    chunks = chunk_file("a.py", "def f():\r\n    return 1\r\n", OPTIONS)
    assert chunks[0].text == "def f():\n    return 1" and chunks[0].citation == "a.py:1-2"
