"""The symbol graph of a generation: definitions, references and imports in ``symbols.db`` (SQLite).

Written like the rest of a generation: an ingest copies the previous generation's file into its
``.tmp-*`` folder, deletes the rows of changed and deleted files, inserts the rows of changed and added
files, and the folder is fsynced and swapped in whole. An edited file therefore rewrites only its own
rows, and a killed ingest leaves the previous generation's graph live. Readers open the file read-only.

Tables (lines 1-based, inclusive)::

    files(id, path)
    defs(id, file, name, qualified, kind, start, end)
    refs(name, file, line, col, kind, scope)     scope: defs.id of the innermost enclosing definition;
        clustered by name (WITHOUT ROWID), so the uses of one name are read as a few adjacent pages;
        no index by file: removing files scans the table once per ingest (a one-file update of the
        transformers graph, copy included, takes 0.02–0.10 s)
    imports(file, line, module, name, target, target_name)
        target: a path stem, "/a/b" rooted at the repository or "a/b" for any path ending so;
        target_name: target + "/" + name, for "from a import b" where b is a module
"""

from __future__ import annotations

import posixpath
import shutil
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ingest.symbols import FileSymbols

SYMBOLS_FILE = "symbols.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE files(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
CREATE TABLE defs(id INTEGER PRIMARY KEY, file INTEGER NOT NULL, name TEXT NOT NULL, qualified TEXT NOT NULL,
                  kind TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL);
CREATE TABLE refs(name TEXT NOT NULL, file INTEGER NOT NULL, line INTEGER NOT NULL, col INTEGER NOT NULL,
                  kind TEXT NOT NULL, scope INTEGER, PRIMARY KEY (name, file, line, col)) WITHOUT ROWID;
CREATE TABLE imports(file INTEGER NOT NULL, line INTEGER NOT NULL, module TEXT NOT NULL, name TEXT,
                     target TEXT NOT NULL, target_name TEXT);
CREATE INDEX defs_name ON defs(name, file, start);
CREATE INDEX defs_qualified ON defs(qualified, file, start);
CREATE INDEX defs_file ON defs(file);
CREATE INDEX imports_file ON imports(file);
CREATE INDEX imports_target ON imports(target);
CREATE INDEX imports_target_name ON imports(target_name);
"""

#: File names that stand for their folder when imported (``import pkg`` → ``pkg/__init__.py``).
_PACKAGE_FILES = ("__init__", "index", "mod")


# ---------------------------------------------------------------- writing


@dataclass(slots=True)
class SymbolGraphUpdate:
    """What one ingest changes in the graph: files whose rows go, files whose rows come (replacing)."""

    base: Path | None
    """The previous generation's ``symbols.db`` to start from (None: start empty)."""
    removed: set[str] = field(default_factory=set)
    added: list[FileSymbols] = field(default_factory=list)

    def replace(self, symbols: FileSymbols) -> None:
        """Put one file's rows in place of whatever the graph held for it."""
        self.removed.add(symbols.path)
        self.added.append(symbols)

    def remove(self, paths: Iterable[str]) -> None:
        """Drop the rows of files that left the index."""
        self.removed.update(paths)

    def write(self, folder: Path) -> None:
        """Write ``symbols.db`` into a generation folder being built (the caller fsyncs and swaps it)."""
        target = folder / SYMBOLS_FILE
        if self.base is not None:
            shutil.copyfile(self.base, target)
        connection = sqlite3.connect(target, isolation_level=None)
        try:
            # The generation is fsynced and swapped whole, so SQLite's own journal buys nothing here.
            connection.execute("PRAGMA journal_mode=OFF")
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute("BEGIN")
            if self.base is None:
                _create(connection)
            self._apply(connection)
            connection.execute("COMMIT")
        finally:
            connection.close()

    def _apply(self, connection: sqlite3.Connection) -> None:
        if self.removed:
            connection.execute("CREATE TEMP TABLE gone(id INTEGER PRIMARY KEY)")
            connection.executemany(
                "INSERT OR IGNORE INTO gone SELECT id FROM files WHERE path = ?", ((p,) for p in self.removed)
            )
            for table in ("defs", "refs", "imports"):
                connection.execute(f"DELETE FROM {table} WHERE file IN (SELECT id FROM gone)")
            connection.execute("DELETE FROM files WHERE id IN (SELECT id FROM gone)")
        next_def = connection.execute("SELECT coalesce(max(id), 0) + 1 FROM defs").fetchone()[0]
        for symbols in self.added:
            file_id = connection.execute("INSERT INTO files(path) VALUES (?)", (symbols.path,)).lastrowid
            first = next_def
            connection.executemany(
                "INSERT INTO defs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (first + i, file_id, d.name, d.qualified, d.kind, d.start_line, d.end_line)
                    for i, d in enumerate(symbols.definitions)
                ),
            )
            next_def += len(symbols.definitions)
            connection.executemany(
                "INSERT INTO refs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (r.name, file_id, r.line, r.column, r.kind, None if r.scope is None else first + r.scope)
                    for r in symbols.references
                ),
            )
            connection.executemany(
                "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (file_id, i.line, i.module, i.name, i.target, f"{i.target}/{i.name}" if i.name else None)
                    for i in symbols.imports
                ),
            )


def _create(connection: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def graph_file(generation_path: Path) -> Path | None:
    """Return a generation's ``symbols.db`` when it has one this Cairn reads, else None."""
    path = generation_path / SYMBOLS_FILE
    if not path.is_file():
        return None
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError:
        return None
    finally:
        connection.close()
    return path if version == SCHEMA_VERSION else None


# ---------------------------------------------------------------- reading
# Results are named tuples: a lookup may build a thousand of them, and a frozen dataclass costs several
# times more per object (measured: 500 references took 6 ms as dataclasses against 1.7 ms in SQLite).


class DefinitionSite(NamedTuple):
    """Where a symbol is defined, citable as ``path:start-end``."""

    name: str
    qualified: str
    kind: str
    path: str
    start_line: int
    end_line: int

    @property
    def citation(self) -> str:
        """Return ``path:start-end``."""
        return f"{self.path}:{self.start_line}-{self.end_line}"


class ReferenceSite(NamedTuple):
    """A use of a name at one line, with the definition that holds it (None at module level)."""

    name: str
    kind: str
    path: str
    line: int
    scope: DefinitionSite | None

    @property
    def citation(self) -> str:
        """Return ``path:line-line``."""
        return f"{self.path}:{self.line}-{self.line}"


class ImportSite(NamedTuple):
    """One import statement: the importing file and line, what it names, and the indexed file it reaches."""

    path: str
    line: int
    module: str
    name: str | None
    resolved: str | None

    @property
    def citation(self) -> str:
        """Return ``path:line-line`` of the import statement."""
        return f"{self.path}:{self.line}-{self.line}"


class SymbolGraph:
    """Read-only lookups over one generation's ``symbols.db``; safe to share between threads."""

    def __init__(self, path: Path, root_name: str = "") -> None:
        """Open ``path``; ``root_name`` is the repository folder's name, which absolute imports may start with
        when the repository is itself a package (``from transformers.utils import x`` inside transformers)."""
        self.path = path
        self.root_name = root_name
        self._connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        self._stems: dict[str, list[str]] | None = None

    def close(self) -> None:
        """Close the database."""
        self._connection.close()

    def _rows(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple]:
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    # ------------------------------------------------------------ definitions and references

    def definitions(self, name: str, *, limit: int = 50) -> list[DefinitionSite]:
        """Return where ``name`` is defined: a plain name, or a qualified one (``Class.method``)."""
        name = name.strip()
        columns = 'd.name, d.qualified, d.kind, f.path, d.start, d."end"'
        # One index range scan, already in (file, line) order, no sort: a name such as "forward" has
        # thousands of definitions in a large repository and only the first ``limit`` are wanted.
        column = "qualified" if "." in name else "name"
        rows = self._rows(
            f"SELECT {columns} FROM defs d JOIN files f ON f.id = d.file "
            f"WHERE d.{column} = ? ORDER BY d.file, d.start LIMIT ?",
            (name, limit),
        )
        if not rows and "." in name:
            # A partly qualified name (``Inner.method``) or one with its module (``pkg.mod.Class``).
            rows = [
                row
                for row in self._rows(
                    f"SELECT {columns} FROM defs d JOIN files f ON f.id = d.file "
                    "WHERE d.name = ? ORDER BY d.file, d.start",
                    (name.rsplit(".", 1)[1],),
                )
                if _qualified_matches(name, row[1], row[3])
            ][:limit]
        return sorted((DefinitionSite(*row) for row in rows), key=lambda s: (s.path, s.start_line))

    def references(self, name: str, *, limit: int = 200) -> list[ReferenceSite]:
        """Return the uses of ``name`` (its last part, when qualified), each with its enclosing definition.

        At most ``limit``, in file order: a name like ``__init__`` has thousands of uses in a large
        repository (9,455 in transformers), and building each costs more than finding it.
        """
        last = name.strip().rsplit(".", 1)[-1]
        rows = self._rows(
            'SELECT r.name, r.kind, f.path, r.line, d.name, d.qualified, d.kind, d.start, d."end" '
            "FROM refs r JOIN files f ON f.id = r.file LEFT JOIN defs d ON d.id = r.scope "
            "WHERE r.name = ? ORDER BY r.file, r.line LIMIT ?",
            (last, limit),
        )
        sites = [
            ReferenceSite(ref_name, kind, path, line, _site(d_name, d_qualified, d_kind, path, d_start, d_end))
            for ref_name, kind, path, line, d_name, d_qualified, d_kind, d_start, d_end in rows
        ]
        return sorted(sites, key=lambda site: (site.path, site.line))

    def references_within(self, path: str, start_line: int, end_line: int) -> list[ReferenceSite]:
        """Return the uses of names on lines ``start_line``..``end_line`` of ``path``: what a definition calls."""
        rows = self._rows(
            'SELECT r.name, r.kind, f.path, r.line, d.name, d.qualified, d.kind, d.start, d."end" '
            "FROM refs r JOIN files f ON f.id = r.file LEFT JOIN defs d ON d.id = r.scope "
            "WHERE f.path = ? AND r.line BETWEEN ? AND ? ORDER BY r.line",
            (path, start_line, end_line),
        )
        return [
            ReferenceSite(ref_name, kind, ref_path, line, _site(d_name, d_qualified, d_kind, ref_path, d_start, d_end))
            for ref_name, kind, ref_path, line, d_name, d_qualified, d_kind, d_start, d_end in rows
        ]

    def definitions_within(self, path: str, start_line: int, end_line: int) -> list[DefinitionSite]:
        """Return the definitions that begin on lines ``start_line``..``end_line`` of ``path`` (a class's methods)."""
        rows = self._rows(
            'SELECT d.name, d.qualified, d.kind, f.path, d.start, d."end" FROM defs d JOIN files f ON f.id = d.file '
            "WHERE f.path = ? AND d.start BETWEEN ? AND ? ORDER BY d.start",
            (path, start_line, end_line),
        )
        return [DefinitionSite(*row) for row in rows]

    def count_references(self, name: str) -> int:
        """Return how many uses of ``name`` (its last part) the graph holds, however many are listed."""
        return self._rows("SELECT count(*) FROM refs WHERE name = ?", (name.strip().rsplit(".", 1)[-1],))[0][0]

    # ------------------------------------------------------------ imports

    def imports(self, path: str) -> list[ImportSite]:
        """Return what ``path`` imports, each resolved to an indexed file where one matches."""
        rows = self._rows(
            "SELECT f.path, i.line, i.module, i.name, i.target FROM imports i JOIN files f ON f.id = i.file "
            "WHERE f.path = ? ORDER BY i.line",
            (path,),
        )
        return [ImportSite(p, line, module, name, self.resolve(target, name)) for p, line, module, name, target in rows]

    def imported_by(self, path: str) -> list[ImportSite]:
        """Return the imports, in other files, that resolve to ``path``."""
        stems = _stems_of(path)
        if not stems:
            return []
        if self.root_name:
            stems += [f"{self.root_name}{stem}" for stem in stems if stem.startswith("/")]
        marks = ", ".join("?" * len(stems))
        rows = self._rows(
            "SELECT f.path, i.line, i.module, i.name, i.target FROM imports i JOIN files f ON f.id = i.file "
            f"WHERE i.target IN ({marks}) OR i.target_name IN ({marks}) ORDER BY f.path, i.line",
            (*stems, *stems),
        )
        sites = [ImportSite(p, line, mod, name, self.resolve(target, name)) for p, line, mod, name, target in rows]
        return [site for site in sites if site.resolved == path and site.path != path]

    def resolve(self, target: str, name: str | None = None) -> str | None:
        """Return the indexed file an import target reaches (``target/name`` first), or None."""
        prefix = f"{self.root_name}/" if self.root_name else None
        for candidate in [f"{target}/{name}", target] if name else [target]:
            found = self._stem_index().get(candidate)
            if not found and prefix and candidate.startswith(prefix):
                found = self._stem_index().get("/" + candidate.removeprefix(prefix))
            if found:
                return found[0]
        return None

    def _stem_index(self) -> dict[str, list[str]]:
        """Map every rooted and suffix stem of every file to the files it names, shortest path first.

        A Python suffix counts only from a folder that is not itself a package: ``import logging`` must
        not reach ``utils/logging.py`` (whose package is ``utils``), while ``import pkg.mod`` reaches
        ``src/pkg/mod.py`` (``src`` holds no ``__init__.py``).
        """
        if self._stems is None:
            paths = [path for (path,) in self._rows("SELECT path FROM files ORDER BY length(path), path")]
            packages = {posixpath.dirname(p) for p in paths if posixpath.basename(p) in {"__init__.py", "__init__.pyi"}}
            index: dict[str, list[str]] = {}
            for path in paths:
                python = path.endswith((".py", ".pyi"))
                for stem in _stems_of(path):
                    if python and not stem.startswith("/") and _suffix_owner(path, stem) in packages:
                        continue
                    index.setdefault(stem, []).append(path)
            self._stems = index
        return self._stems

    def reference_edges(self, max_files: int = 5) -> list[tuple[str, str, int, str, int]]:
        """Return (referencing file, defining file, definition id, name, uses) for uses across files.

        Only names defined in at most ``max_files`` files link anything (``forward`` or ``__init__``,
        defined in thousands, would tie every file to every other) and ``__dunder__`` names not at all.
        """
        rows = self._rows(
            "WITH linking AS (SELECT name FROM defs WHERE name NOT LIKE '\\_\\_%' ESCAPE '\\' "
            "                 GROUP BY name HAVING count(DISTINCT file) <= ?) "
            "SELECT r.file, d.file, d.id, d.name, count(*) FROM refs r JOIN defs d ON d.name = r.name "
            "WHERE r.name IN linking AND r.file != d.file GROUP BY r.file, d.id",
            (max_files,),
        )
        paths = dict(self._rows("SELECT id, path FROM files"))
        return [(paths[src], paths[dst], def_id, name, uses) for src, dst, def_id, name, uses in rows]

    def definitions_by_id(self, ids: list[int]) -> dict[int, DefinitionSite]:
        """Return the definitions with these ids."""
        found: dict[int, DefinitionSite] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for def_id, *row in self._rows(
                f'SELECT d.id, d.name, d.qualified, d.kind, f.path, d.start, d."end" FROM defs d '
                f"JOIN files f ON f.id = d.file WHERE d.id IN ({marks})",
                tuple(chunk),
            ):
                found[def_id] = DefinitionSite(*row)
        return found

    def counts(self) -> dict[str, int]:
        """Return how many files, definitions, references and imports the graph holds."""
        return {
            table: self._rows(f"SELECT count(*) FROM {table}")[0][0] for table in ("files", "defs", "refs", "imports")
        }


def _site(name: str | None, qualified: str, kind: str, path: str, start: int, end: int) -> DefinitionSite | None:
    return None if name is None else DefinitionSite(name, qualified, kind, path, start, end)


def _qualified_matches(name: str, qualified: str, path: str) -> bool:
    module = posixpath.splitext(path)[0].replace("/", ".").removesuffix(".__init__")
    full = f"{module}.{qualified}"
    return qualified.endswith("." + name) or full == name or full.endswith("." + name)


def _suffix_owner(path: str, stem: str) -> str:
    """Return the folder a suffix stem of ``path`` starts below ("" for the repository root)."""
    depth = stem.count("/") + 1
    folder = posixpath.dirname(path)
    parts = folder.split("/") if folder else []
    is_package_file = posixpath.splitext(posixpath.basename(path))[0] == "__init__"
    kept = len(parts) - (depth - (0 if is_package_file else 1))
    return "/".join(parts[: max(kept, 0)])


def _stems_of(path: str) -> list[str]:
    """Return the stems an import may use for ``path``: rooted ("/a/b/c"), then every suffix ("b/c", "c")."""
    stem, ext = posixpath.splitext(path)
    forms = [stem] if ext not in {".h", ".hpp", ".hh"} else [path]
    if ext in {".h", ".hpp", ".hh", ".c", ".cc", ".cpp"}:
        forms.append(path)  # includes name the file with its extension
    parts = stem.split("/")
    if parts[-1] in _PACKAGE_FILES and len(parts) > 1:
        forms.append("/".join(parts[:-1]))
    stems: list[str] = []
    for form in dict.fromkeys(forms):
        pieces = form.split("/")
        stems.append("/" + form)
        stems.extend("/".join(pieces[i:]) for i in range(len(pieces)))
    return list(dict.fromkeys(stems))
