"""Find citations (path:start-end) in an answer and keep only those the retrieved chunks support."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# path:start-end, optionally in [brackets] or `backticks`; a path has a slash or a file extension.
CITATION = re.compile(
    r"[\[`(]?(?P<path>(?:[\w.\-]+/)*[\w.\-]+\.[A-Za-z0-9_]+|(?:[\w.\-]+/)+[\w.\-]+)"
    r":(?P<start>\d+)(?:\s*[-–]\s*(?P<end>\d+))?[\]`)]?"
)


@dataclass(frozen=True, slots=True)
class Citation:
    """A cited line range of a file."""

    path: str
    start: int
    end: int

    def __str__(self) -> str:
        return f"{self.path}:{self.start}-{self.end}"


def find_citations(text: str) -> list[tuple[str, Citation]]:
    """Return (matched text, citation) for every path:start-end in the text, in order."""
    found = []
    for match in CITATION.finditer(text):
        start = int(match.group("start"))
        end = int(match.group("end") or start)
        if end < start:
            start, end = end, start
        found.append((match.group(0), Citation(match.group("path").lstrip("./"), start, end)))
    return found


def supported(citation: Citation, documents: Iterable[dict[str, Any]]) -> bool:
    """Return True when every cited line lies inside retrieved chunks of the same file."""
    spans = sorted((d["start_line"], d["end_line"]) for d in documents if d["path"] == citation.path)
    line = citation.start
    for first, last in spans:
        if first <= line <= last:
            line = last + 1
            if line > citation.end:
                return True
    return False


def check_citations(text: str, documents: list[dict[str, Any]]) -> tuple[str, list[str], list[str]]:
    """Return the text without unsupported citations, the valid citations and the dropped ones."""
    valid: list[str] = []
    dropped: list[str] = []
    cleaned = text
    for matched, citation in find_citations(text):
        if supported(citation, documents):
            if str(citation) not in valid:
                valid.append(str(citation))
        else:
            dropped.append(str(citation))
            cleaned = cleaned.replace(matched, "")
    cleaned = re.sub(r"[ \t]+([.,;:])", r"\1", cleaned)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
    return cleaned.strip(), valid, dropped
