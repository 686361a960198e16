"""The model judgements of plan, analyze and refine, as schemas the model is constrained to.

The bounds are what keeps a judgement short: with constrained decoding the model cannot write more
queries, longer queries or a longer "missing" than these allow, so a judgement costs a few dozen
tokens, and a model that wanders still stops at the closing brace.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

Query = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


class PlanJudgement(BaseModel):
    """The latest question rewritten to stand alone, and one to three search queries for it."""

    question: str = Field(max_length=300, description="The latest question, rewritten to stand alone.")
    queries: list[Query] = Field(min_length=1, max_length=3, description="Short search queries.")


class AnalyzeJudgement(BaseModel):
    """Which numbered excerpts help answer the question, whether they suffice, what is missing."""

    relevant: list[Annotated[int, Field(ge=1, le=99)]] = Field(max_length=12, description="Excerpt numbers.")
    sufficient: bool = Field(description="Whether the relevant excerpts are enough to answer.")
    missing: str = Field(default="", max_length=160, description="What is still needed, if anything.")


class RefineJudgement(BaseModel):
    """New search queries for what is still missing."""

    queries: list[Query] = Field(min_length=1, max_length=3, description="New, different search queries.")


# ---------------------------------------------------------------- checking a plan

#: The prompt's own example (prompts/agent.py: PLAN), which a small model copies instead of planning.
PLAN_EXAMPLES = frozenset({"how does x handle y?", "x handle y", "handle_y", "how does x handle y"})
#: Placeholders in a rewrite ("How does X handle Y?"): single capital letters standing for names.
_PLACEHOLDERS = re.compile(r"\b[XYZ]\b")
_CONTENT_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_CAMEL_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_FILLER = frozenset(
    "the and for with that this what where which when how does did are was were has have from into about "
    "code function method class file module repository there their them they its it's".split()
)
#: Words that point back at an earlier turn ("where is its capacity set?").
#: Not "that", "there" or "one": most questions have them ("the helper that encodes one record").
_PRONOUNS = re.compile(r"\b(?:it|its|they|them|their|theirs|these|those)\b", re.IGNORECASE)


def content_words(text: str) -> set[str]:
    """The words of ``text`` that carry meaning, lowercased, with identifiers' parts (``snake_case`` → snake, case)."""
    words: set[str] = set()
    for word in _CONTENT_WORD.findall(text):
        for part in [word, *word.split("_"), *_CAMEL_PART.findall(word)]:
            lowered = part.lower()
            if len(lowered) >= 3 and lowered not in _FILLER:
                words.add(lowered.rstrip("s") if len(lowered) > 4 else lowered)
    return words


def key_words(text: str) -> list[str]:
    """The words of ``text`` that carry meaning, as written and in order (for a search query)."""
    return list(dict.fromkeys(w for w in _CONTENT_WORD.findall(text) if w.lower() not in _FILLER))


def copies_example(text: str) -> bool:
    """Whether a planned question or query is the prompt's example, or keeps its placeholders (X, Y, Z)."""
    normal = " ".join(text.lower().split())
    placeholders = len(_PLACEHOLDERS.findall(text))
    # "X handle Y", or a short query built on one placeholder ("X is corrupt")
    return normal in PLAN_EXAMPLES or placeholders >= 2 or (placeholders == 1 and len(text.split()) <= 4)


def about(text: str, conversation: str) -> bool:
    """Whether a planned query shares a meaningful word with the conversation (the question and before it)."""
    return bool(content_words(text) & content_words(conversation))


def points_back(question: str) -> bool:
    """Whether a question leans on an earlier turn through a pronoun ("And where is its capacity set?")."""
    return bool(_PRONOUNS.search(question))
