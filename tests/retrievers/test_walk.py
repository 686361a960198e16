"""Resolve, then navigate: a question that describes its target reaches the target's callers, callees, importers."""

from __future__ import annotations

import pytest

from retrievers import make_retriever
from retrievers.walk import Trail, described_in, described_kind, hops_for, relation_in, walk

ENCODE = "Which functions call the helper that encodes one log record (header, then key length, key and value)?"


@pytest.mark.parametrize(
    ("question", "relation"),
    [
        (ENCODE, "callers"),
        ("Where is the shared Host-header parsing helper used?", "callers"),
        ("Who calls the function that retries with backoff?", "callers"),
        ("What does the method that compacts the store call?", "callees"),
        ("Which modules import the module that holds the write-ahead log?", "importers"),
        ("Which classes inherit from the base transport?", "subclasses"),
        ("Which store operations go through the method that appends a record?", "callers"),
        ("Which code raises the error for content that was already streamed?", "callers"),
        ("How does the LRU cache evict entries?", None),
        ("Where is the write-ahead log replayed?", None),
    ],
)
def test_the_relation_a_question_asks_about(question: str, relation: str | None) -> None:
    assert relation_in(question) == relation


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Which classes subclass the class that parses headers?", "class"),
        ("What calls the helper that encodes a record?", "function"),
        ("Who uses the utilities that encode text?", "function"),
        ("Which code raises the error for a closed client?", "class"),
        ("What calls the method that drops an entry?", "method"),
    ],
)
def test_the_kind_of_definition_a_question_names(question: str, kind: str) -> None:
    assert described_kind(question) == kind


@pytest.mark.parametrize(
    ("question", "described"),
    [
        (ENCODE, "encodes one log record (header, then key length, key and value)"),
        ("Which renderers use the iteration helper that flags the first item?", "iteration flags the first item"),
        ("What calls the cookie-jar method that writes the cookies?", "cookie-jar writes the cookies"),
        ("Who calls encode_record?", None),
    ],
)
def test_what_a_question_says_about_the_code_it_describes(question: str, described: str | None) -> None:
    assert described_in(question) == described


def test_two_hops_only_when_asked_for_indirect_relations() -> None:
    assert hops_for(ENCODE) == 1 and hops_for("What indirectly calls the encoder?") == 2


def test_callers_of_the_described_helper_are_found(sample_index) -> None:
    ranked = make_retriever("hybrid", sample_index, k=8).invoke(ENCODE)
    assert ranked[0].metadata["symbol"] == "encode_record"  # the search finds the helper itself
    found, trail = walk(sample_index, ranked, "callers")
    described, callers = found[0], found[1:]
    assert described.metadata["symbol"] == "encode_record"  # what the question describes leads
    assert described.metadata["walk"] == "described: encode_record"
    assert "Store.compact" in {d.metadata["symbol"] for d in callers}  # and the chunk holding WriteAheadLog.append
    assert {d.metadata["path"] for d in callers} == {"tinykv/store.py", "tinykv/wal.py"}
    assert trail == [Trail("encode_record", "callers", 2)]
    assert str(trail[0]) == "following `encode_record` → 2 callers"
    assert all(d.metadata["retriever"] == "walk:callers" for d in found)


def test_callees_and_importers_of_the_described_code(sample_index) -> None:
    retriever = make_retriever("hybrid", sample_index, k=8)
    callees, trail = walk(sample_index, retriever.invoke("What does the method that compacts the store call?"),
                          "callees")  # fmt: skip
    assert trail[0].seed == "Store.compact" and "tinykv/wal.py:16-21" in {d.metadata["citation"] for d in callees}
    asked = "Which modules import the module that holds the write-ahead log?"
    importers, _ = walk(sample_index, retriever.invoke(asked), "importers")
    assert "tinykv/store.py" in {d.metadata["path"] for d in importers}


def test_a_walk_is_bounded_and_empty_without_a_graph(sample_index, monkeypatch: pytest.MonkeyPatch) -> None:
    ranked = make_retriever("hybrid", sample_index, k=8).invoke(ENCODE)
    found, _ = walk(sample_index, ranked, "callers", limit=1)
    assert [d.metadata["symbol"] for d in found][:1] == ["encode_record"] and len(found) == 2  # itself + 1 caller
    monkeypatch.setattr(type(sample_index.generation), "symbols", lambda self: None)
    assert walk(sample_index, ranked, "callers") == ([], [])
