"""Tokenize code and questions alike for keyword search: identifiers whole and split into their words."""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
# Splits "HTTPServerError" into HTTP/Server/Error and "utf8Decode" into utf/8/Decode.
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# English function words only: words that are common in code ("self", "return", "import") are left to
# BM25's IDF, which already gives them little weight.
STOPWORDS = frozenset(
    """
    a an and are as at be been but by can could did do does doing for from had has have how i if in into
    is it its me my of on or our should so than that the their them then there these they this those to
    was we were what when where which while who whom why will with would you your
    """.split()
)


def _stem(word: str) -> str:
    # A light plural/verb-form fold so "tokenizers" finds "tokenizer" and "padding" finds "pad";
    # identifiers are also kept unstemmed, so exact names still match exactly.
    if len(word) > 5 and word.endswith("ing"):
        base = word[:-3]
        return base[:-1] if len(base) > 2 and base[-1] == base[-2] else base
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=500_000)
def _expand(word: str) -> tuple[str, ...]:
    lower = word.lower()
    parts = [p.lower() for piece in word.split("_") if piece for p in _CAMEL.findall(piece)]
    out: list[str] = []
    if lower not in STOPWORDS and (len(lower) > 1 or lower.isdigit()):
        out.append(lower)
    if len(parts) > 1 or (parts and parts[0] != lower):
        for part in parts:
            if len(part) > 1 and part not in STOPWORDS:
                out.append(_stem(part))
    elif out:
        stemmed = _stem(lower)
        if stemmed != lower:
            out.append(stemmed)
    return tuple(out)


def tokenize(text: str) -> list[str]:
    """Return the keyword tokens of code or prose: lower-cased identifiers plus their sub-words."""
    tokens: list[str] = []
    extend = tokens.extend
    for word in _WORD.findall(text):
        extend(_expand(word))
    return tokens


_IDENTIFIER = re.compile(
    r"\b(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+"  # dotted.names
    r"|[a-z0-9]+_[a-z0-9_]+"  # snake_case
    r"|[A-Za-z][a-z0-9]+[A-Z][A-Za-z0-9]*"  # camelCase
    r"|(?=[A-Za-z0-9]*[a-z])[A-Z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*"  # CapWords with two capitals (not HTTP)
    r"|[A-Za-z_]\w*\(\))"  # calls()
)


def identifiers_in(text: str) -> list[str]:
    """Return code-like names in text: dotted.names, snake_case, camelCase, CapWords, calls()."""
    seen: list[str] = []
    for match in _IDENTIFIER.findall(text):
        name = match.rstrip("()")
        if name not in seen:
            seen.append(name)
    return seen
