"""Split files into chunks along their structure: definitions, headings, notebook cells, or line windows."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from ingest.languages import TREE_SITTER_GRAMMARS, detect_language, is_container, is_definition

if TYPE_CHECKING:
    from tree_sitter_language_pack import SupportedLanguage


@dataclass(frozen=True, slots=True)
class Chunk:
    """A span of one file, the unit that is embedded, indexed and cited as ``path:start-end``."""

    path: str
    start_line: int
    end_line: int
    language: str
    symbol: str | None
    kind: str
    text: str

    @property
    def citation(self) -> str:
        """Return ``path:start-end`` (1-based, inclusive)."""
        return f"{self.path}:{self.start_line}-{self.end_line}"

    @property
    def content_hash(self) -> str:
        """Return a digest of everything that goes into this chunk's embedding."""
        return content_hash(self.path, self.symbol, self.text)


def content_hash(path: str, symbol: str | None, text: str) -> str:
    """Return the digest that identifies a chunk's embedding input."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (path, symbol or "", text):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    """How large chunks get and how much consecutive windows overlap."""

    max_chars: int = 1500
    overlap_lines: int = 4


def chunk_file(path: str, text: str, options: ChunkingOptions, *, tree: Any = None) -> list[Chunk]:
    """Return the chunks of one file's text, choosing the chunker by the file's language.

    ``tree`` is the file's tree-sitter parse when the caller already has it (``parse_code``, on the text
    with ``\r\n`` already turned into ``\n``), so ingest parses each file once for chunks and symbols.
    """
    text = text.replace("\r\n", "\n")
    language = detect_language(path)
    if not text.strip():
        return []
    if language == "notebook":
        return _chunk_notebook(path, text, options)
    if language == "markdown":
        return _chunk_markdown(path, text, options)
    if language in TREE_SITTER_GRAMMARS:
        chunks = _chunk_code(path, text, language, options, tree)
        if chunks is not None:
            return chunks
    lines = text.split("\n")
    return _windows(path, lines, 0, len(lines) - 1, language, None, "text", options)


# ---------------------------------------------------------------- line windows


def _windows(
    path: str,
    lines: list[str],
    first: int,
    last: int,
    language: str,
    symbol: str | None,
    kind: str,
    options: ChunkingOptions,
) -> list[Chunk]:
    """Cover lines[first..last] (0-based, inclusive) with windows of at most max_chars, overlapping."""
    while first <= last and not lines[first].strip():
        first += 1
    while last >= first and not lines[last].strip():
        last -= 1
    chunks: list[Chunk] = []
    start = first
    while start <= last:
        size = 0
        end = start
        while end <= last and (end == start or size + len(lines[end]) + 1 <= options.max_chars):
            size += len(lines[end]) + 1
            end += 1
        end -= 1  # inclusive
        if len(lines[start]) > options.max_chars:
            # One enormous line (minified code, data): cut it into pieces so nothing is lost.
            line = lines[start]
            for offset in range(0, len(line), options.max_chars):
                piece = line[offset : offset + options.max_chars]
                chunks.append(Chunk(path, start + 1, start + 1, language, symbol, kind, piece))
            start += 1
            continue
        body = "\n".join(lines[start : end + 1])
        window_kind = kind if (start == first and end == last) else f"{kind}-window"
        chunks.append(Chunk(path, start + 1, end + 1, language, symbol, window_kind, body))
        if end >= last:
            break
        start = max(end + 1 - options.overlap_lines, start + 1)
    return chunks


# ---------------------------------------------------------------- code (tree-sitter)


@cache
def _parser(grammar: SupportedLanguage) -> Any:
    from tree_sitter_language_pack import get_parser

    try:
        return get_parser(grammar)
    except Exception:  # an unknown grammar name: chunk that language by lines instead
        return None


_WRAPPERS = frozenset({"export_statement", "template_declaration", "annotated_definition"})


def _unwrap(node: Any) -> Any:
    """Return the definition inside wrappers such as ``export function f() {}``."""
    if node.type in _WRAPPERS:
        for child in node.named_children:
            if is_definition(child.type):
                return child
    return node


def _is_definition_node(node: Any) -> bool:
    return is_definition(_unwrap(node).type)


def _name_of(node: Any) -> str | None:
    node = _unwrap(node)
    if node.type == "decorated_definition":
        inner = node.child_by_field_name("definition")
        return _name_of(inner) if inner is not None else None
    for field_name in ("name", "type"):
        named = node.child_by_field_name(field_name)
        if named is not None and named.type in {
            "identifier", "type_identifier", "field_identifier", "property_identifier", "constant",
            "name", "simple_identifier", "scoped_type_identifier", "generic_type", "scoped_identifier",
        }:  # fmt: skip
            return named.text.decode("utf-8", "replace")
    declarator = node.child_by_field_name("declarator")
    while declarator is not None:
        if declarator.type in {"identifier", "field_identifier", "qualified_identifier", "operator_name"}:
            return declarator.text.decode("utf-8", "replace")
        declarator = declarator.child_by_field_name("declarator")
    return None


def _kind_of(node: Any, inside_container: bool) -> str:
    node = _unwrap(node)
    node_type = node.type
    if node_type == "decorated_definition":
        inner = node.child_by_field_name("definition")
        node_type = inner.type if inner is not None else node_type
    if is_container(node_type):
        return "class"
    if inside_container or "method" in node_type:
        return "method"
    return "function"


def _body_of(node: Any) -> Any:
    node = _unwrap(node)
    if node.type == "decorated_definition":
        inner = node.child_by_field_name("definition")
        if inner is not None:
            node = inner
    body = node.child_by_field_name("body")
    if body is None:  # some grammars (rust impl, go type) hold the body as a plain child
        for child in node.named_children:
            if child.type.endswith(("body", "block", "declaration_list", "field_declaration_list")):
                return child
    return body


class _CodeChunker:
    def __init__(self, path: str, lines: list[str], language: str, options: ChunkingOptions) -> None:
        self.path = path
        self.lines = lines
        self.language = language
        self.options = options
        self.chunks: list[Chunk] = []

    def _span_chars(self, first: int, last: int) -> int:
        return sum(len(line) + 1 for line in self.lines[first : last + 1])

    def _emit(self, first: int, last: int, symbol: str | None, kind: str) -> None:
        self.chunks.extend(_windows(self.path, self.lines, first, last, self.language, symbol, kind, self.options))

    def block(self, children: list[Any], parent: str | None, first_line: int, last_line: int) -> None:
        """Chunk the statements of a block: definitions alone, the lines between them grouped."""
        cursor = first_line
        for child in children:
            if not _is_definition_node(child):
                continue
            start = child.start_point[0]
            # Comments right above a definition belong to it.
            while start - 1 >= cursor and self.lines[start - 1].lstrip().startswith(("#", "//", "/*", "*")):
                start -= 1
            if start > cursor:
                if parent is not None and self._span_chars(cursor, start - 1) <= self.options.max_chars // 5:
                    # A class header or a few class attributes: context for the method that follows,
                    # too small to be worth a chunk (and an embedding) of its own.
                    start = cursor
                else:
                    self._emit(cursor, start - 1, parent, "module" if parent is None else "class-body")
            self.definition(child, start, parent)
            cursor = max(cursor, child.end_point[0] + 1)
        if cursor <= last_line:
            self._emit(cursor, last_line, parent, "module" if parent is None else "class-body")

    def definition(self, node: Any, start: int, parent: str | None) -> None:
        name = _name_of(node)
        symbol = f"{parent}.{name}" if parent and name else (name or parent)
        end = node.end_point[0]
        kind = _kind_of(node, inside_container=parent is not None)
        if self._span_chars(start, end) <= self.options.max_chars:
            self._emit(start, end, symbol, kind)
            return
        body = _body_of(node)
        if kind == "class" and body is not None and any(_is_definition_node(c) for c in body.named_children):
            self.block(body.named_children, symbol, start, end)
            return
        self._emit(start, end, symbol, kind)


def parse_code(language: str, text: str) -> Any:
    """Return the tree-sitter parse of ``text`` (with ``\n`` line ends), or None when no grammar reads it."""
    grammar = TREE_SITTER_GRAMMARS.get(language)
    parser = _parser(grammar) if grammar else None
    return None if parser is None else parser.parse(text.encode("utf-8", "surrogatepass"))


def _chunk_code(path: str, text: str, language: str, options: ChunkingOptions, tree: Any = None) -> list[Chunk] | None:
    tree = tree if tree is not None else parse_code(language, text)
    if tree is None:
        return None
    lines = text.split("\n")
    chunker = _CodeChunker(path, lines, language, options)
    chunker.block(tree.root_node.named_children, None, 0, len(lines) - 1)
    return chunker.chunks


# ---------------------------------------------------------------- markdown

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _chunk_markdown(path: str, text: str, options: ChunkingOptions) -> list[Chunk]:
    lines = text.split("\n")
    sections: list[tuple[int, str | None]] = [(0, None)]
    trail: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            level = len(match.group(1))
            trail = [(lvl, title) for lvl, title in trail if lvl < level] + [(level, match.group(2))]
            sections.append((number, " > ".join(title for _, title in trail)))
    chunks: list[Chunk] = []
    for index, (first, title) in enumerate(sections):
        last = sections[index + 1][0] - 1 if index + 1 < len(sections) else len(lines) - 1
        if last >= first:
            chunks.extend(_windows(path, lines, first, last, "markdown", title, "section", options))
    return chunks


# ---------------------------------------------------------------- notebooks

_SOURCE_KEY = re.compile(r'^\s*"source"\s*:\s*(\[)?')


def _chunk_notebook(path: str, text: str, options: ChunkingOptions) -> list[Chunk]:
    """Chunk a notebook by cells; line numbers point at each cell's source lines in the .ipynb file."""
    try:
        notebook = json.loads(text)
        cells = notebook.get("cells", [])
        kernel_language = (
            notebook.get("metadata", {}).get("kernelspec", {}).get("language")
            or notebook.get("metadata", {}).get("language_info", {}).get("name")
            or "python"
        )
    except (ValueError, AttributeError):
        lines = text.split("\n")
        return _windows(path, lines, 0, len(lines) - 1, "json", None, "text", options)
    raw_lines = text.split("\n")
    source_lines = [n for n, line in enumerate(raw_lines) if _SOURCE_KEY.match(line)]
    chunks: list[Chunk] = []
    for index, cell in enumerate(cells):
        source = cell.get("source", "")
        body = "".join(source) if isinstance(source, list) else str(source)
        if not body.strip():
            continue
        cell_type = cell.get("cell_type", "code")
        language = "markdown" if cell_type == "markdown" else str(kernel_language)
        symbol = f"cell {index + 1}"
        # nbformat writes one JSON string per source line after '"source": ['; when the file has
        # that layout the citation points at the real lines, otherwise at the cell's "source" key.
        if len(source_lines) == len(cells):
            key_line = source_lines[index]
            count = len(source) if isinstance(source, list) else 1
            offset = 1 if raw_lines[key_line].rstrip().endswith("[") else 0
            first_line = key_line + offset
            last_line = max(first_line, first_line + count - 1)
        else:
            first_line = last_line = source_lines[index] if index < len(source_lines) else 0
        cell_lines = body.split("\n")
        if len(body) <= options.max_chars:
            chunks.append(Chunk(path, first_line + 1, last_line + 1, language, symbol, "cell", body))
            continue
        for window in _windows(path, cell_lines, 0, len(cell_lines) - 1, language, symbol, "cell", options):
            # Map window lines (relative to the cell) back onto the file's lines.
            start = min(first_line + window.start_line, last_line + 1)
            end = min(first_line + window.end_line, last_line + 1)
            chunks.append(Chunk(path, start, end, language, symbol, window.kind, window.text))
    return chunks


# ---------------------------------------------------------------- outline


@dataclass(frozen=True, slots=True)
class Symbol:
    """A definition found by the parser: qualified name, kind and 1-based line span."""

    name: str
    kind: str
    start_line: int
    end_line: int


def outline_symbols(path: str, text: str) -> list[Symbol]:
    """Return the definitions of a source file (classes, functions, methods), nested names qualified."""
    language = detect_language(path)
    if language not in TREE_SITTER_GRAMMARS or (parser := _parser(TREE_SITTER_GRAMMARS[language])) is None:
        if language == "markdown":
            return [
                Symbol(c.symbol or "", "section", c.start_line, c.end_line)
                for c in _chunk_markdown(path, text.replace("\r\n", "\n"), ChunkingOptions(max_chars=10**9))
                if c.symbol
            ]
        return []
    tree = parser.parse(text.replace("\r\n", "\n").encode("utf-8", "surrogatepass"))
    symbols: list[Symbol] = []

    def visit(nodes: list[Any], parent: str | None) -> None:
        for node in nodes:
            if not _is_definition_node(node):
                continue
            name = _name_of(node) or "?"
            qualified = f"{parent}.{name}" if parent else name
            kind = _kind_of(node, inside_container=parent is not None)
            symbols.append(Symbol(qualified, kind, node.start_point[0] + 1, node.end_point[0] + 1))
            body = _body_of(node)
            if kind == "class" and body is not None:
                visit(body.named_children, qualified)

    visit(tree.root_node.named_children, None)
    return symbols
