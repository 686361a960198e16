"""Citations: found in text, checked against retrieved code, listed as sources."""

from __future__ import annotations

from graphs.agent.citations import check_citations, find_citations, render_answer, supported
from retrievers import code_document


def _doc(path: str, start: int, end: int):
    return code_document("...", path=path, start_line=start, end_line=end, retriever="hybrid")


def test_paths_starting_with_a_dot_keep_it() -> None:
    (_, citation), (_, relative) = find_citations("see [.github/ci.yml:3-9] and ./src/app.py:1-2")
    assert str(citation) == ".github/ci.yml:3-9"  # lstrip("./") used to make this github/ci.yml
    assert str(relative) == "src/app.py:1-2"
    text, valid, dropped = check_citations("CI runs lint [.github/ci.yml:3-9].", [_doc(".github/ci.yml", 1, 20)])
    assert valid == [".github/ci.yml:3-9"] and not dropped and "[.github/ci.yml:3-9]" in text


def test_a_citation_across_adjacent_retrieved_chunks_is_supported() -> None:
    (_, citation), *_ = find_citations("a.py:10-30")
    assert supported(citation, [_doc("a.py", 1, 20), _doc("a.py", 21, 40)])
    assert not supported(citation, [_doc("a.py", 1, 20), _doc("a.py", 22, 40)])  # line 21 was not retrieved
    assert not supported(citation, [_doc("b.py", 1, 40)])


def test_the_rendered_answer_is_the_text_then_its_sources() -> None:
    sources = [
        {"citation": "a.py:1-9", "symbol": "f", "score": 0.5},
        {"citation": "b.md:3-4", "symbol": None, "score": 0.1},
    ]
    rendered = render_answer("It works [a.py:1-9].", sources)
    assert rendered == "It works [a.py:1-9].\n\nSources:\n- `a.py:1-9` (`f`)\n- `b.md:3-4`"
    assert render_answer("Nothing found.", []) == "Nothing found."
