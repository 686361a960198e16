"""The built-in tools: search_code, read_file, grep and outline, all confined to the indexed files."""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath

import regex
from langchain_core.documents import Document
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field

from ingest.chunking import outline_symbols
from ingest.languages import detect_language
from ingest.secrets import find_secret
from ingest.walker import decode_text
from retrievers import SearchFilter, code_document, hit_to_document
from tools.registry import ToolContext, register_tool

MAX_READ_LINES = 400
MAX_READ_CHARS = 24_000
MAX_GREP_MATCHES = 50
GREP_SECONDS = 2.0
MAX_OUTLINE_FILES = 40


def _refuse(message: str) -> ToolException:
    return ToolException(message)


def confine(context: ToolContext, path: str, *, allow_folder: bool = False) -> tuple[str, Path]:
    """Return (relative path, absolute path) for a path inside the repository, or refuse it.

    Refused: absolute paths, '~', any '..' part, paths that are not indexed (so files that
    .gitignore, the size cap or the secret scan kept out of the index stay unreadable), symlinks
    that resolve outside the repository, and an indexed file that changed since it was indexed and
    now looks like it holds a secret (its size or mtime differ from the index's: only then is it
    read and scanned again, so an unchanged file costs one stat).
    """
    raw = path.strip().replace("\\", "/")
    if not raw or raw.startswith(("/", "~")) or (len(raw) > 1 and raw[1] == ":"):
        raise _refuse(f"refused: {path!r} is not a path relative to the repository root")
    pure = PurePosixPath(raw)
    if ".." in pure.parts:
        raise _refuse(f"refused: {path!r} leaves the repository ('..' is not allowed)")
    rel = str(pure).removeprefix("./") if str(pure) != "." else ""
    is_folder = rel == "" or any(f.startswith(rel.rstrip("/") + "/") for f in context.indexed_files)
    if rel not in context.indexed_files and not (allow_folder and is_folder):
        raise _refuse(f"{path!r} is not an indexed file of this repository")
    root = context.repo_root.resolve()
    target = (root / rel).resolve()
    try:
        target.relative_to(root)
    except ValueError:
        raise _refuse(f"refused: {path!r} resolves outside the repository") from None
    if rel in context.indexed_files and (kind := _secret_since_indexed(context, rel, target)) is not None:
        raise _refuse(
            f"refused: {path!r} changed since it was indexed and now looks like it holds a secret ({kind}); "
            "re-index it to check again"
        )
    return rel, target


def _secret_since_indexed(context: ToolContext, rel: str, target: Path) -> str | None:
    """Return the kind of secret an indexed file holds now, if it changed since ingest; else None."""
    record = context.index.generation.manifest.files.get(rel)
    try:
        stat = target.stat()
        if record is not None and (record["size"], record["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return None  # as indexed, and the ingest scanned it then
        data = target.read_bytes()
    except OSError:
        return None  # the caller's own read reports it
    return find_secret(rel, data)


def read_text(target: Path) -> str:
    """Return a confined file's text, decoded as ingest decodes it (UTF-8, else Windows-1252)."""
    return decode_text(target.read_bytes())


class SearchCodeArgs(BaseModel):
    query: str = Field(description="What to look for: words, identifiers or a question.")
    k: int = Field(default=5, ge=1, le=20, description="How many results.")
    path_glob: str | None = Field(default=None, description="Only files matching this glob, e.g. 'src/**/*.py'.")
    language: str | None = Field(default=None, description="Only this language, e.g. 'python'.")


class ReadFileArgs(BaseModel):
    path: str = Field(description="File path relative to the repository root, as cited (e.g. 'src/app.py').")
    start_line: int = Field(default=1, ge=1, description="First line to read (1-based).")
    end_line: int | None = Field(default=None, ge=1, description="Last line to read (inclusive).")


class GrepArgs(BaseModel):
    pattern: str = Field(description="A regular expression (Python syntax) searched line by line.")
    path_glob: str | None = Field(default=None, description="Only files matching this glob.")
    ignore_case: bool = Field(default=False, description="Match without regard to case.")


class OutlineArgs(BaseModel):
    path: str = Field(description="A file or folder relative to the repository root ('.' for everything).")


def _tool(function, *, name: str, description: str, args_schema: type[BaseModel]) -> BaseTool:
    """A structured tool whose failures come back as ToolMessage(status="error") and whose cited code
    comes back as Documents (the artifact), so the agent never parses the text to tell either."""
    return StructuredTool.from_function(
        function,
        name=name,
        description=description,
        args_schema=args_schema,
        response_format="content_and_artifact",
        handle_tool_error=True,
        handle_validation_error=True,
    )


def search_code_tool(context: ToolContext) -> BaseTool:
    """Hybrid search over the index, returning cited chunks."""

    def search_code(
        query: str, k: int = 5, path_glob: str | None = None, language: str | None = None
    ) -> tuple[str, list[Document]]:
        hits = context.index.hybrid(query, k, SearchFilter.of(path_glob, language))
        if not hits:
            return "no results", []
        text = "\n\n".join(f"[{h.chunk.citation}] {h.chunk.symbol or ''}\n{h.chunk.text}" for h in hits)
        return text, [hit_to_document(h, "tool:search_code") for h in hits]

    return _tool(
        search_code,
        name="search_code",
        description="Search the indexed repository (keywords and meaning); returns code with path:start-end.",
        args_schema=SearchCodeArgs,
    )


def read_file_tool(context: ToolContext) -> BaseTool:
    """Lines of an indexed file, numbered, capped in size."""

    def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> tuple[str, list[Document]]:
        rel, target = confine(context, path)
        try:
            lines = read_text(target).split("\n")
        except OSError as exc:
            raise ToolException(f"cannot read {rel}: {exc.strerror or exc}") from exc
        last = min(end_line or len(lines), len(lines), start_line + MAX_READ_LINES - 1)
        if start_line > len(lines):
            raise ToolException(f"{rel} has only {len(lines)} lines")
        out, shown, size = [], [], 0
        for number in range(start_line, last + 1):
            text = lines[number - 1]
            size += len(text) + 8
            if size > MAX_READ_CHARS:
                if number > start_line:
                    last = number - 1
                    break
                # One line longer than a whole read (data, minified code): its start, rather than nothing.
                last, text = number, text[:MAX_READ_CHARS] + f" … (cut: the line has {len(text)} characters)"
            out.append(f"{number:>5}  {text}")
            shown.append(text)
            if number == last:
                break
        more = f"\n(truncated; the file has {len(lines)} lines)" if last < (end_line or len(lines)) else ""
        read = code_document(
            "\n".join(shown),
            path=rel,
            start_line=start_line,
            end_line=last,
            retriever="tool:read_file",
            language=detect_language(rel),
        )
        return f"[{rel}:{start_line}-{last}]\n" + "\n".join(out) + more, [read]

    return _tool(
        read_file,
        name="read_file",
        description=f"Read lines of an indexed file (at most {MAX_READ_LINES} lines per call).",
        args_schema=ReadFileArgs,
    )


def grep_tool(context: ToolContext) -> BaseTool:
    """Regular-expression search over the indexed files, bounded in time and output."""
    import pathspec

    def grep(pattern: str, path_glob: str | None = None, ignore_case: bool = False) -> tuple[str, list[Document]]:
        try:
            compiled = regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)
        except regex.error as exc:
            raise ToolException(f"invalid pattern: {exc}") from exc
        spec = pathspec.PathSpec.from_lines("gitwildmatch", [path_glob]) if path_glob else None
        deadline = time.monotonic() + GREP_SECONDS
        matches: list[str] = []
        for rel in sorted(context.indexed_files):
            if spec is not None and not spec.match_file(rel):
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                matches.append(f"(stopped after {GREP_SECONDS:.0f}s; narrow the pattern or the path_glob)")
                break
            try:
                _, target = confine(context, rel)
                text = read_text(target)
            except (ToolException, OSError):
                continue
            try:
                for number, line in enumerate(text.split("\n"), start=1):
                    if compiled.search(line[:2000], timeout=max(remaining, 0.01)):
                        matches.append(f"{rel}:{number}: {line.strip()[:200]}")
                        if len(matches) >= MAX_GREP_MATCHES:
                            return "\n".join(matches) + f"\n(first {MAX_GREP_MATCHES} matches)", []
            except TimeoutError:
                matches.append(f"(pattern took longer than {GREP_SECONDS:.0f}s; simplify it)")
                break
        return ("\n".join(matches) if matches else "no matches"), []

    return _tool(
        grep,
        name="grep",
        description="Find lines matching a regular expression in the indexed files; returns path:line: text.",
        args_schema=GrepArgs,
    )


def outline_tool(context: ToolContext) -> BaseTool:
    """Symbols (classes, functions, methods, headings) of a file or folder."""

    def outline(path: str) -> tuple[str, list[Document]]:
        rel, _ = confine(context, path, allow_folder=True)
        files = (
            [rel]
            if rel in context.indexed_files
            else sorted(f for f in context.indexed_files if rel == "" or f.startswith(rel.rstrip("/") + "/"))
        )
        lines: list[str] = []
        for name in files[:MAX_OUTLINE_FILES]:
            _, target = confine(context, name)
            try:
                symbols = outline_symbols(name, read_text(target))
            except OSError:
                continue
            if symbols:
                lines.append(name)
                lines.extend(f"  {s.kind} {s.name} [{name}:{s.start_line}-{s.end_line}]" for s in symbols)
        if len(files) > MAX_OUTLINE_FILES:
            lines.append(f"({len(files) - MAX_OUTLINE_FILES} more files; outline a narrower folder)")
        return ("\n".join(lines) if lines else "no symbols found"), []

    return _tool(
        outline,
        name="outline",
        description="List the classes, functions and methods of a file or folder with their line ranges.",
        args_schema=OutlineArgs,
    )


register_tool("search_code", search_code_tool)
register_tool("read_file", read_file_tool)
register_tool("grep", grep_tool)
register_tool("outline", outline_tool)
