"""Which language a file is, and which tree-sitter grammar and syntax nodes describe its definitions."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter_language_pack import SupportedLanguage

#: File extension -> Cairn language name (also the tree-sitter grammar name where one is used).
EXTENSIONS: dict[str, str] = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".cu": "cpp", ".cuh": "cpp",
    ".cs": "csharp", ".rb": "ruby", ".php": "php", ".swift": "swift", ".lua": "lua",
    ".sh": "bash", ".bash": "bash", ".zsh": "bash",
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".ipynb": "notebook",
    ".rst": "rst", ".txt": "text", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json",
    ".cfg": "ini", ".ini": "ini", ".sql": "sql", ".html": "html", ".css": "css", ".proto": "proto",
}  # fmt: skip

FILENAMES: dict[str, str] = {
    "Makefile": "make", "Dockerfile": "dockerfile", "CMakeLists.txt": "cmake", "Jenkinsfile": "groovy",
}  # fmt: skip

#: Languages chunked through a tree-sitter grammar (grammar name where it differs from ours).
TREE_SITTER_GRAMMARS: dict[str, SupportedLanguage] = {
    "python": "python", "javascript": "javascript", "typescript": "typescript", "tsx": "tsx",
    "go": "go", "rust": "rust", "java": "java", "kotlin": "kotlin", "scala": "scala",
    "c": "c", "cpp": "cpp", "csharp": "csharp", "ruby": "ruby", "php": "php", "swift": "swift",
    "lua": "lua", "bash": "bash",
}  # fmt: skip

# A syntax node is a definition when its type names a definition construct; this one rule covers the
# grammars above without a per-language table, because tree-sitter grammars name these nodes alike.
_DEFINITION = re.compile(
    r"^(?:decorated_definition|"
    r"(?:async_)?(?:function|generator_function|method|class|struct|interface|enum|trait|impl|module|"
    r"namespace|constructor|object|type|protocol|record|singleton_method|abstract_class|union)"
    r"(?:_definition|_declaration|_item|_specifier)|method|class|module|singleton_method|function)$"
)
# Definitions whose body holds further definitions worth their own chunks.
_CONTAINER = re.compile(
    r"(?:class|struct|interface|trait|impl|module|namespace|object|protocol|record|abstract_class|enum)"
)


def detect_language(path: str) -> str:
    """Return the language name for a repository path (``text`` when nothing more is known)."""
    pure = PurePosixPath(path)
    if pure.name in FILENAMES:
        return FILENAMES[pure.name]
    return EXTENSIONS.get(pure.suffix.lower(), "text")


def is_definition(node_type: str) -> bool:
    """Return True for syntax nodes that start a function, class, method or similar definition."""
    return _DEFINITION.match(node_type) is not None


def is_container(node_type: str) -> bool:
    """Return True for definitions whose body contains further definitions (classes, impls, modules)."""
    return _CONTAINER.search(node_type) is not None and node_type != "decorated_definition"
