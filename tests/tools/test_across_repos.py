"""Tools across repositories: the text they return cites prefixed paths, and code stays as it is.

The wrapped tools themselves (a `repo` argument, prefixed artifacts, errors) are exercised through the
agent's resources in tests/graphs/test_repos.py.
"""

from __future__ import annotations

from tools.across_repos import _prefixed_text


def test_cited_ranges_get_the_repository_prefix_and_code_is_left_alone() -> None:
    text = "[pkg/mod.py:3-9] f\nvalue = items[i:2]\n[README.md:1-4]"
    expected = "[shop/pkg/mod.py:3-9] f\nvalue = items[i:2]\n[shop/README.md:1-4]"
    assert _prefixed_text("search_code", text, "shop") == expected


def test_only_grep_lines_are_rewritten_at_the_start_of_a_line() -> None:
    grep = "a/b.py:12: x = 1\n(first 50 matches)"
    assert _prefixed_text("grep", grep, "shop") == "shop/a/b.py:12: x = 1\n(first 50 matches)"
    assert _prefixed_text("read_file", "a/b.py:12: kept", "shop") == "a/b.py:12: kept"
