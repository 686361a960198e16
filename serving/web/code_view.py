"""An indexed file as highlighted lines for the page's code panel (Pygments, one HTML string per line)."""

from __future__ import annotations

import functools
from pathlib import Path

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name, get_lexer_for_filename
from pygments.util import ClassNotFound

from ingest.languages import detect_language
from ingest.walker import decode_text

#: The most lines one request returns, the read_file tool's cap.
MAX_LINES = 400
#: Lexer options that keep line numbers true to the file (Pygments strips leading blank lines by default).
LEXER_OPTIONS = {"stripnl": False, "stripall": False, "ensurenl": True}


def lexer_for(path: str, text: str) -> Lexer:
    """Return the lexer for a file: by its name, else by the language ingest gave it, else plain text."""
    try:
        return get_lexer_for_filename(path, text, **LEXER_OPTIONS)
    except ClassNotFound:
        pass
    language = detect_language(path)
    if language:
        try:
            return get_lexer_by_name(language, **LEXER_OPTIONS)
        except ClassNotFound:
            pass
    return TextLexer(**LEXER_OPTIONS)


def highlight_lines(path: str, text: str) -> tuple[str, list[str]]:
    """Return (lexer name, one HTML string per line of ``text``).

    The whole file is lexed at once, so a line inside a docstring or a multi-line string is coloured
    as one; Pygments' HTML formatter closes its spans at every newline, so splitting its output on
    newlines gives lines that each stand alone.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    count = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    lexer = lexer_for(path, text)
    html = highlight(text, lexer, HtmlFormatter(nowrap=True)).split("\n")
    return lexer.name, html[:count]


@functools.lru_cache(maxsize=32)
def _highlighted(target: Path, rel: str, mtime_ns: int, size: int) -> tuple[str, tuple[str, ...]]:
    # keyed by mtime and size as well, so an edited file is highlighted again
    language, lines = highlight_lines(rel, decode_text(target.read_bytes()))
    return language, tuple(lines)


def highlighted_file(target: Path, rel: str) -> tuple[str, tuple[str, ...]]:
    """Return (lexer name, highlighted lines) of a file, cached until it changes."""
    stat = target.stat()
    return _highlighted(target, rel, stat.st_mtime_ns, stat.st_size)


def excerpt_window(total: int, start: int, end: int | None, context: int) -> tuple[int, int, int, int, bool]:
    """Return (start, end, first, last, truncated): the range clamped to the file, and the lines to send.

    The range keeps at most MAX_LINES lines; context is added on both sides within what is left
    of the cap, so a short citation always comes with its surroundings.
    """
    start = max(1, min(start, total))
    end = max(start, min(end if end is not None else start, total))
    truncated = end - start + 1 > MAX_LINES
    if truncated:
        end = start + MAX_LINES - 1
    room = (MAX_LINES - (end - start + 1)) // 2
    context = min(context, room)
    return start, end, max(1, start - context), min(total, end + context), truncated
