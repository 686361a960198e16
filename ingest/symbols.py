"""Read a file's definitions, references and imports off its tree-sitter parse, with tag queries.

The rules per language are data: ``ingest/queries/<language>-tags.scm``, written in the captures
the grammars' own ``tags.scm`` files (and aider's) use:

- ``@definition.KIND`` around a definition, ``@name.definition.KIND`` on its name;
- ``@reference.KIND`` / ``@name.reference.KIND`` for a use (``call``, ``class``, ``type``, ``use``);
- ``@import`` around an import, ``@import.module`` on what it imports from, ``@import.name`` on
  each imported name;
- ``@qualifier`` inside a definition (a Go receiver, C++ ``Foo::``) and ``@scope`` / ``@scope.name``
  around a block that qualifies what it holds without being a definition (a Rust ``impl``).

Qualified names follow nesting (``Class.method``); each reference records the innermost definition
that holds it, which is what groups callers by function.
"""

from __future__ import annotations

import bisect
import posixpath
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ingest.languages import TREE_SITTER_GRAMMARS

#: Our language name -> the query file that describes it (TSX shares TypeScript's rules).
QUERY_FILES: dict[str, str] = {
    "python": "python", "javascript": "javascript", "typescript": "typescript", "tsx": "typescript",
    "go": "go", "rust": "rust", "java": "java", "c": "c", "cpp": "cpp",
}  # fmt: skip

#: Definition kinds whose body qualifies the names inside it.
CONTAINER_KINDS = frozenset({"class", "interface", "enum", "module"})
_REFERENCE_PRIORITY = {"call": 0, "class": 1, "type": 2, "use": 3}


@dataclass(frozen=True, slots=True)
class Definition:
    """A named definition: ``qualified`` follows nesting (``Class.method``); lines 1-based, inclusive."""

    name: str
    qualified: str
    kind: str
    start_line: int
    end_line: int


@dataclass(frozen=True, slots=True)
class Reference:
    """A use of a name: a call, a base class, a type or a class-like identifier, at a 1-based line.

    ``scope`` is the index, in the file's definitions, of the innermost definition holding it (None at
    module level).
    """

    name: str
    kind: str
    line: int
    column: int
    scope: int | None


@dataclass(frozen=True, slots=True)
class Import:
    """One import: ``module`` as written, resolved against the file for relative forms; ``name`` imported."""

    line: int
    module: str
    name: str | None
    target: str
    """Where it points, as a path stem: ``/a/b`` rooted at the repository, ``a/b`` any path ending so."""


@dataclass(frozen=True, slots=True)
class FileSymbols:
    """Everything the symbol graph holds about one file."""

    path: str
    definitions: list[Definition]
    references: list[Reference]
    imports: list[Import]


def has_tag_query(language: str) -> bool:
    """Return True when a tag query describes ``language``."""
    return language in QUERY_FILES and language in TREE_SITTER_GRAMMARS


@cache
def _query(language: str) -> Any:
    import tree_sitter
    from tree_sitter_language_pack import get_language

    source = resources.files("ingest").joinpath("queries", f"{QUERY_FILES[language]}-tags.scm").read_text("utf-8")
    return tree_sitter.Query(get_language(TREE_SITTER_GRAMMARS[language]), source)


def _line_column(node: Any) -> tuple[int, int]:
    row, column = node.start_point
    return row + 1, column


def _text(node: Any) -> str:
    return node.text.decode("utf-8", "replace")


def extract_symbols(path: str, language: str, tree: Any) -> FileSymbols:
    """Return the definitions, references and imports of a parsed file (``tree`` from tree-sitter)."""
    import tree_sitter

    if not has_tag_query(language):
        return FileSymbols(path, [], [], [])
    # (start byte, -end byte, name, kind, qualifier, end line, is_scope): sorted so parents come first.
    spans: list[tuple[int, int, str, str, str | None, int, int, bool]] = []
    refs: dict[int, tuple[str, str, int, int]] = {}  # start byte of the name -> (name, kind, line, column)
    imports: list[Import] = []
    name_bytes: set[int] = set()
    for _pattern, captures in tree_sitter.QueryCursor(_query(language)).matches(tree.root_node):
        if not captures:
            continue  # a pattern whose predicate failed
        for capture, nodes in captures.items():
            head, _, kind = capture.partition(".")
            if head == "definition" and "." not in kind:
                name_node = captures.get(f"name.definition.{kind}", [None])[0]
                if name_node is None:
                    continue
                node = nodes[0]
                qualifier = _text(captures["qualifier"][0]) if "qualifier" in captures else None
                name_bytes.add(name_node.start_byte)
                spans.append((
                    node.start_byte, -node.end_byte, _text(name_node), kind, qualifier,
                    node.start_point[0] + 1, node.end_point[0] + 1, False,
                ))  # fmt: skip
            elif capture == "scope":
                name_node = captures.get("scope.name", [None])[0]
                if name_node is not None:
                    node = nodes[0]
                    spans.append((
                        node.start_byte, -node.end_byte, _text(name_node), "scope", None,
                        node.start_point[0] + 1, node.end_point[0] + 1, True,
                    ))  # fmt: skip
            elif head == "name" and kind.startswith("reference."):
                ref_kind = kind.removeprefix("reference.")
                for node in nodes:
                    known = refs.get(node.start_byte)
                    if known is None or _REFERENCE_PRIORITY.get(ref_kind, 9) < _REFERENCE_PRIORITY.get(known[1], 9):
                        refs[node.start_byte] = (_text(node), ref_kind, *_line_column(node))
            elif capture == "import":
                imports.extend(_imports(path, language, captures))
    spans.sort(key=lambda s: (s[0], s[1]))
    definitions, starts, ends, parents = _nest(spans)
    references: list[Reference] = []
    for start_byte in sorted(refs):
        if start_byte in name_bytes:
            continue  # the name of a definition is not a use of it
        name, kind, line, column = refs[start_byte]
        references.append(Reference(name, kind, line, column, _innermost(start_byte, starts, ends, parents)))
    return FileSymbols(path, definitions, references, imports)


def _nest(
    spans: list[tuple[int, int, str, str, str | None, int, int, bool]],
) -> tuple[list[Definition], list[int], list[int], list[int]]:
    """Qualify nested definitions; return them with their byte spans and each span's parent span."""
    definitions: list[Definition] = []
    # (end byte, qualified name, kind, position of the innermost definition span, -1 for none)
    stack: list[tuple[int, str, str, int]] = []
    starts: list[int] = []
    ends: list[int] = []
    parents: list[int] = []
    seen: set[tuple[int, int]] = set()
    for start, neg_end, name, kind, qualifier, first, last, is_scope in spans:
        end = -neg_end
        if (start, end) in seen:
            continue  # two patterns describing one node (a Rust impl of a generic type, say)
        seen.add((start, end))
        while stack and stack[-1][0] <= start:
            stack.pop()
        parent = stack[-1] if stack else None
        prefix = qualifier or (parent[1] if parent else None)
        qualified = f"{prefix}.{name}" if prefix else name
        if kind == "function" and (qualifier or (parent and parent[2] in CONTAINER_KINDS | {"scope"})):
            kind = "method"
        parent_position = parent[3] if parent else -1
        if is_scope:
            stack.append((end, qualified, "scope", parent_position))
            continue
        definitions.append(Definition(name, qualified, kind, first, last))
        starts.append(start)
        ends.append(end)
        parents.append(parent_position)
        stack.append((end, qualified, kind, len(starts) - 1))
    return definitions, starts, ends, parents


def _innermost(byte: int, starts: list[int], ends: list[int], parents: list[int]) -> int | None:
    """Return the innermost definition whose span holds ``byte``.

    Spans nest or are disjoint, so when the last span starting before ``byte`` does not hold it, only
    its ancestors can: walk up the parents, never across siblings.
    """
    position = bisect.bisect_right(starts, byte) - 1
    while position >= 0 and ends[position] <= byte:
        position = parents[position]
    return position if position >= 0 else None


# ---------------------------------------------------------------- imports


def _imports(path: str, language: str, captures: dict[str, list[Any]]) -> list[Import]:
    modules = captures.get("import.module")
    if not modules:
        return []
    line = captures["import"][0].start_point[0] + 1
    module = _text(modules[0]).strip()
    names: list[str | None] = [_text(n) for n in captures.get("import.name", [])] or [None]
    if language == "python":
        target = _python_target(path, module)
        return [Import(line, module, name, target) for name in names]
    module = module.strip("\"'<>`")
    if language in {"javascript", "typescript", "tsx", "c", "cpp"}:
        if module.startswith("."):
            target = "/" + posixpath.normpath(posixpath.join(posixpath.dirname(path), module)).lstrip("/")
        else:
            target = module
        target = target.removesuffix("/")
        return [Import(line, module, None, _strip_extension(target) if language not in {"c", "cpp"} else target)]
    if language == "java":
        return [Import(line, module, None, module.removeprefix("static ").replace(".", "/"))]
    if language == "rust":
        cleaned = module.split("{", 1)[0].rstrip(":")
        for prefix in ("crate::", "self::", "super::"):
            cleaned = cleaned.removeprefix(prefix)
        return [Import(line, module, None, cleaned.replace("::", "/"))]
    return [Import(line, module, None, module)]  # go: a package path


def _strip_extension(target: str) -> str:
    stem, ext = posixpath.splitext(target)
    return stem if ext in {".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".mts", ".cts"} else target


def _python_target(path: str, module: str) -> str:
    """Return the path stem a Python import points at: rooted for relative imports, a suffix otherwise."""
    if not module.startswith("."):
        return module.replace(".", "/")
    dots = len(module) - len(module.lstrip("."))
    package = posixpath.dirname(path).split("/") if posixpath.dirname(path) else []
    package = package[: len(package) - (dots - 1)] if dots > 1 else package
    rest = module[dots:].replace(".", "/")
    return "/" + "/".join([*package, *([rest] if rest else [])])
