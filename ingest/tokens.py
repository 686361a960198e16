"""Tokenize code and questions alike for keyword search: identifiers whole and split into their words."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import lru_cache

import Stemmer

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


#: The keyword tokenizer new indexes are built with. The manifest records it (``keyword.tokenizer``), a
#: query is tokenized the way the index it searches was, and re-ingesting an index built with another
#: re-tokenizes its chunks (seconds: nothing is re-embedded).
TOKENIZER = "snowball-1"
#: What indexes written before the manifest named a tokenizer were built with.
LEGACY_TOKENIZER = "light-1"


def _light_stem(word: str) -> str:
    # The first tokenizer's fold: plurals and "-ing" only ("padding" -> "pad", "tokenizers" -> "tokenizer").
    if len(word) > 5 and word.endswith("ing"):
        base = word[:-3]
        return base[:-1] if len(base) > 2 and base[-1] == base[-2] else base
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_stemmers = threading.local()  # a PyStemmer stemmer is not thread-safe: one per thread


def _snowball_stem(word: str) -> str:
    # The Snowball English (Porter 2) stemmer: "unpadded" and "_unpad_input" meet on "unpad",
    # "resized" and "resize_token_embeddings" on "resiz". Measured on the golden set (docs/benchmarks.md).
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        stemmer = _stemmers.english = Stemmer.Stemmer("english")
    return stemmer.stemWord(word)


def _expander(stem: Callable[[str], str]) -> Callable[[str], tuple[str, ...]]:
    @lru_cache(maxsize=500_000)
    def expand(word: str) -> tuple[str, ...]:
        # The identifier whole and unstemmed (exact names match exactly), then its stemmed words.
        lower = word.lower()
        parts = [p.lower() for piece in word.split("_") if piece for p in _CAMEL.findall(piece)]
        out: list[str] = []
        if lower not in STOPWORDS and (len(lower) > 1 or lower.isdigit()):
            out.append(lower)
        if len(parts) > 1 or (parts and parts[0] != lower):
            for part in parts:
                if len(part) > 1 and part not in STOPWORDS:
                    out.append(stem(part))
        elif out:
            stemmed = stem(lower)
            if stemmed != lower:
                out.append(stemmed)
        return tuple(out)

    return expand


_EXPANDERS = {LEGACY_TOKENIZER: _expander(_light_stem), TOKENIZER: _expander(_snowball_stem)}
#: The tokenizers this Cairn can search an index with.
KNOWN_TOKENIZERS = frozenset(_EXPANDERS)


def tokenizer(name: str = TOKENIZER) -> Callable[[str], list[str]]:
    """Return the keyword tokenizer called ``name`` (what an index's manifest records); KeyError if unknown."""
    expand = _EXPANDERS[name]

    def tokenize(text: str) -> list[str]:
        tokens: list[str] = []
        extend = tokens.extend
        for word in _WORD.findall(text):
            extend(expand(word))
        return tokens

    tokenize.__doc__ = f"Return the {name} keyword tokens of code or prose."
    return tokenize


#: Return the keyword tokens of code or prose: lower-cased identifiers plus their stemmed sub-words.
tokenize = tokenizer(TOKENIZER)


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
