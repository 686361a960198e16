"""Citations (path:start-end): find them in an answer, decide which retrieved code supports, list sources.

``supported`` is the one definition of "a citation is backed by retrieved code" that the agent
applies to its answers and the eval scores them by.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document

from graphs.agent.state import Source

# path:start-end, optionally in [brackets] or `backticks`; a path has a slash or a file extension.
CITATION = re.compile(
    r"[\[`(]?(?P<path>(?:[\w.\-]+/)*[\w.\-]+\.[A-Za-z0-9_]+|(?:[\w.\-]+/)+[\w.\-]+)"
    r":(?P<start>\d+)(?:\s*[-–]\s*(?P<end>\d+))?[\]`)]?"
)
SOURCES_HEADING = "Sources:"


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
        # removeprefix, not lstrip: ".github/ci.yml" must keep its dot
        found.append((match.group(0), Citation(match.group("path").removeprefix("./"), start, end)))
    return found


def supported(citation: Citation, documents: Iterable[Document]) -> bool:
    """Return True when every cited line lies inside retrieved code of the same file.

    Adjacent or overlapping chunks count together: a citation of lines 10-30 is supported by
    chunks 1-20 and 21-40, since every one of those lines was retrieved.
    """
    spans = sorted(
        (d.metadata["start_line"], d.metadata["end_line"]) for d in documents if d.metadata["path"] == citation.path
    )
    line = citation.start
    for first, last in spans:
        if first <= line <= last:
            line = last + 1
            if line > citation.end:
                return True
    return False


def check_citations(text: str, documents: Sequence[Document]) -> tuple[str, list[str], list[str]]:
    """Return the text without unsupported citations, the supported citations and the dropped ones."""
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


def source_of(document: Document, relevant: bool = True) -> Source:
    """Return the source entry of a document given to the answer model."""
    meta = document.metadata
    score = float(meta.get("score") or 0.0)
    return Source(citation=meta["citation"], symbol=meta.get("symbol"), score=score, relevant=relevant)


def source_documents(state: Mapping[str, Any]) -> list[Document]:
    """Return the documents the answer was given (its sources), in the sources' order."""
    by_citation = {d.metadata["citation"]: d for d in state.get("documents", [])}
    return [by_citation[s["citation"]] for s in state.get("sources", []) if s["citation"] in by_citation]


def sources_block(sources: Sequence[Source]) -> str:
    """Return the "Sources:" list that ends an answer (empty when there are no sources).

    Each citation and symbol is a code span, so a Markdown client shows ``tinykv/__init__.py:1-6`` and
    ``Store.__init__`` as written, not with "init" in bold.
    """
    if not sources:
        return ""
    listing = "\n".join(f"- `{s['citation']}`" + (f" (`{symbol}`)" if (symbol := s.get("symbol")) else "")
                        for s in sources)  # fmt: skip
    return f"{SOURCES_HEADING}\n{listing}"


#: A word Markdown would mangle: a citation, or an identifier with underscores that read as emphasis
#: (``__init__``, ``_private_``, ``snake_case_name``); with the punctuation around it kept apart.
_WORD = re.compile(r"^(?P<lead>[\[(\"'“‘]*)(?P<core>.*?)(?P<trail>[\])\"'”’.,;:!?]*)$", re.DOTALL)
_MANGLED = re.compile(r"__|(?<![\w])_\w|\w_(?![\w])|\w_\w+_\w")


class MarkdownGuard:
    """Make an answer's text safe for Markdown clients as it streams: citations and identifiers as code spans.

    ``feed`` returns the text that can be decided so far (whole words; a word still being written is
    held back until whitespace ends it); ``flush`` returns the rest. Text inside code spans or fenced
    blocks is left as it is.
    """

    def __init__(self) -> None:
        self._held = ""
        self._in_span = False
        self._in_fence = False
        self._line_start = True

    def feed(self, chunk: str) -> str:
        """Return the decided part of ``chunk`` (with what was held back before), made Markdown-safe."""
        text = self._held + chunk
        cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
        if cut < 0:
            self._held = text
            return ""
        self._held = text[cut + 1 :]
        return self._words(text[: cut + 1])

    def flush(self) -> str:
        """Return what is still held back (the stream ended)."""
        held, self._held = self._held, ""
        return self._words(held)

    def _words(self, text: str) -> str:
        out: list[str] = []
        for piece in re.split(r"(\s+)", text):
            if not piece or piece.isspace():
                out.append(piece)
                if "\n" in piece:
                    self._line_start = True
                continue
            fence = self._line_start and piece.startswith(("```", "~~~"))
            self._line_start = False
            if fence:
                self._in_fence = not self._in_fence
            out.append(piece if self._in_fence or fence else self._word(piece))
        return "".join(out)

    def _word(self, word: str) -> str:
        if self._in_span or "`" in word:
            self._in_span = (word.count("`") % 2 == 1) != self._in_span
            return word
        parts = _WORD.match(word)
        if parts is None or not parts["core"]:
            return word
        lead, core, trail = parts["lead"], parts["core"], parts["trail"]
        if CITATION.fullmatch(core) or CITATION.fullmatch(f"{lead[-1:]}{core}{trail[:1]}"):
            return f"{lead.removesuffix('[')}`{core}`{trail.removeprefix(']')}"  # its brackets become the span
        if _MANGLED.search(core) and re.fullmatch(r"[\w./-]+(?:\(\))?", core):
            return f"{lead}`{core}`{trail}"
        return word


def markdown_safe(text: str) -> str:
    """Return a whole answer made Markdown-safe as ``MarkdownGuard`` makes a streamed one."""
    guard = MarkdownGuard()
    return guard.feed(text) + guard.flush()


def render_answer(answer: str, sources: Sequence[Source]) -> str:
    """Return the answer as a reader sees it: its text, then the list of its sources."""
    block = sources_block(sources)
    return f"{answer}\n\n{block}" if answer and block else (answer or block)
