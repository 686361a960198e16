"""Checking a plan: the prompt's example, placeholders, and queries about nothing in the conversation."""

from __future__ import annotations

import pytest

from graphs.agent.judgements import about, content_words, copies_example, key_words, points_back


@pytest.mark.parametrize(
    ("text", "copied"),
    [
        ("How does X handle Y?", True),
        ("X handle Y", True),
        ("handle_y", True),
        ("X is corrupt", True),  # a short query on one placeholder
        ("Which exception marks a torn record as corrupt?", False),
        ("Store the X coordinate of the point before the flush", False),
        ("LRUCache capacity", False),
    ],
)
def test_the_prompts_example_and_its_placeholders_are_recognised(text: str, copied: bool) -> None:
    assert copies_example(text) is copied


def test_identifiers_count_by_their_parts() -> None:
    assert {"tiny", "client"} <= content_words("TinyKVClient") and {"parse", "url"} <= content_words("parse_url")
    assert about("TinyKVClient", "How does the JavaScript client retry failed requests?")
    assert not about("Durability", "How does the JavaScript client retry failed requests?")


def test_pronouns_and_the_words_a_follow_up_carries() -> None:
    assert points_back("And where is its capacity set?") and not points_back("Where is LRUCache's capacity set?")
    assert key_words("How does the LRU cache evict entries?") == ["LRU", "cache", "evict", "entries"]


def test_that_there_and_one_are_not_pronouns_pointing_back() -> None:
    assert not points_back("Which functions call the helper that encodes one record, and is there a test?")
