"""Several repositories under one data folder: one index per repository, found by name.

Layout::

    DATA_DIR/repos/<name>/index/    the repository's index (the layout of ingest/store.py)

A name is a safe slug (lowercase letters, digits, ``.``, ``_``, ``-``; at most 64 characters, starting
with a letter or digit), by default the source folder's name. Everything else about a repository (its
source folder, embedding model, counts, last ingest) is read from its index's manifest, so the
folder is the whole registry: removing it removes the repository, and nothing can disagree with it.

``default_repo`` says which repository a command or the model ``cairn-agent`` uses when none is
named; an explicit index folder (CAIRN_INDEX_DIR or ``--index``) keeps working as before.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cairn.errors import CairnError, IndexCorrupted, RepositoryNameTaken, RepositoryNotFound, UnknownRepository
from config import Settings
from ingest.embedding_endpoints import identity as embedding_identity
from ingest.manifest import Manifest
from ingest.store import CURRENT, is_index_folder, writer_lock

#: What a repository name may be: it is a folder name, part of a model id and a citation prefix.
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
#: The name that stands for every repository at once (the model ``cairn/*``).
ALL = "*"
REPOS_FOLDER = "repos"
INDEX_FOLDER = "index"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid repository name, else raise an error saying what is allowed."""
    if not NAME.match(name):
        raise CairnError(
            f"{name!r} is not a valid repository name",
            "use lowercase letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)",
        )
    return name


def default_name(source: Path) -> str:
    """Return the name a source folder gets without ``--name``: its folder name as a valid slug."""
    folder = Path(source).expanduser().resolve().name.lower()
    slug = re.sub(r"[^a-z0-9._-]+", "-", folder).lstrip("._-")[:64].rstrip("-")
    return slug or "repo"


@dataclass(frozen=True, slots=True)
class RepoInfo:
    """What `cairn repos` and ``/ready`` say about one repository."""

    name: str
    index_dir: str
    source: str | None
    source_exists: bool
    chunks: int | None
    files: int | None
    last_ingest: str | None
    embedding_model: str | None
    size_bytes: int
    problem: str | None = None
    hint: str | None = None

    @property
    def ok(self) -> bool:
        """True when the index can serve (a missing source does not stop it)."""
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready mapping, with ``ok``."""
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True, slots=True)
class Claim:
    """Where an ingest of a repository writes, and the source it replaces if that one moved away."""

    name: str
    index_dir: Path
    moved_from: str | None = None


@dataclass(frozen=True, slots=True)
class Repositories:
    """The repositories of one data folder (``DATA_DIR/repos``)."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> Repositories:
        """Return the repositories of the settings' data folder."""
        return cls.in_data_dir(settings.data_dir)

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> Repositories:
        """Return the repositories of a data folder (``DATA_DIR/repos``)."""
        return cls(Path(data_dir) / REPOS_FOLDER)

    def index_dir(self, name: str) -> Path:
        """Return the index folder of a repository name (whether or not it exists)."""
        return self.root / check_name(name) / INDEX_FOLDER

    def names(self) -> list[str]:
        """Return the names of the repositories that have an index, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if NAME.match(entry.name) and is_index_folder(entry / INDEX_FOLDER)
        )

    def unknown(self, name: str) -> UnknownRepository:
        """Return the error for a name that is not a repository, listing the names there are."""
        names = self.names()
        listing = f"the repositories are: {', '.join(names)}" if names else "there are none yet"
        return UnknownRepository(
            f"No repository named {name!r} in {self.root} ({listing})",
            "run 'cairn repos' to list them, or 'cairn ingest PATH --name NAME' to add one",
        )

    def get(self, name: str) -> Path:
        """Return the index folder of an existing repository, or raise an error listing the names."""
        if not NAME.match(name) or not is_index_folder(self.root / name / INDEX_FOLDER):
            raise self.unknown(name)
        return self.root / name / INDEX_FOLDER

    def resolve(self, name: str) -> dict[str, Path]:
        """Return name → index folder for a repository name, or for every repository when it is ``*``."""
        if name != ALL:
            return {name: self.get(name)}
        names = self.names()
        if not names:
            raise self.unknown(name)
        return {n: self.root / n / INDEX_FOLDER for n in names}

    def claim(self, name: str, source: Path) -> Claim:
        """Return where an ingest of ``source`` as ``name`` writes; refuse a name another source holds.

        A name stays with its source folder. When that folder no longer exists (the repository
        moved), the name passes to the new one, and the ingest stays incremental: files are matched
        by their path inside the repository.
        """
        index_dir = self.index_dir(name)
        if not Path(source).expanduser().is_dir():
            raise RepositoryNotFound(f"No such repository: {source}", "give the repository's top folder")
        source = Path(source).expanduser().resolve()
        recorded = live_manifest(index_dir)
        if recorded is None or Path(recorded.repo_root) == source:
            return Claim(name, index_dir)
        if Path(recorded.repo_root).is_dir():
            raise RepositoryNameTaken(
                f"The repository name {name!r} is already taken by {recorded.repo_root}",
                f"give {source} another name with --name NAME, or remove the other one: cairn repos remove {name}",
            )
        return Claim(name, index_dir, moved_from=recorded.repo_root)

    def describe(self, name: str, embedding_model: str) -> RepoInfo:
        """Return what is known about a repository; an index built with another model is a problem."""
        index_dir = self.get(name)
        size = size_on_disk(self.root / name)
        try:
            manifest = live_manifest(index_dir)
        except IndexCorrupted as exc:
            return RepoInfo(name, str(index_dir), None, False, None, None, None, None, size, exc.message, exc.hint)
        assert manifest is not None  # get() checked the CURRENT pointer
        problem = hint = None
        if manifest.embedding.model != embedding_identity(embedding_model):
            problem = f"built with embedding model {manifest.embedding.model!r}, but {embedding_model!r} is configured"
            hint = f"re-ingest it: cairn ingest {manifest.repo_root} --name {name} --rebuild"
        return RepoInfo(
            name=name,
            index_dir=str(index_dir),
            source=manifest.repo_root,
            source_exists=Path(manifest.repo_root).is_dir(),
            chunks=manifest.counts.chunks,
            files=manifest.counts.files,
            last_ingest=manifest.created_at or None,
            embedding_model=manifest.embedding.model,
            size_bytes=size,
            problem=problem,
            hint=hint,
        )

    def describe_all(self, embedding_model: str) -> list[RepoInfo]:
        """Return ``describe`` of every repository, sorted by name."""
        return [self.describe(name, embedding_model) for name in self.names()]

    def remove(self, name: str) -> Path:
        """Delete a repository's folder (its index and nothing else); refuse while an ingest writes it."""
        index_dir = self.get(name)
        with writer_lock(index_dir):  # raises IndexLocked while an ingest is writing it
            shutil.rmtree(self.root / name)
        return self.root / name


def default_repo(settings: Settings) -> str | None:
    """Return the repository used when none is named; None means the settings' index folder.

    In order: CAIRN_INDEX_DIR (or --index) when set: None, the index folder as before; then
    CAIRN_DEFAULT_REPO; then an index at DATA_DIR/index (the single-index layout): None; then the
    only repository, or ``*`` (all of them) when there are several; with none: None.
    """
    if settings.index_dir is not None:
        return None
    if settings.default_repo:
        return settings.default_repo
    if is_index_folder(settings.data_dir / INDEX_FOLDER):
        return None
    names = Repositories.of(settings).names()
    if len(names) == 1:
        return names[0]
    return ALL if names else None


def adopt_single_index(settings: Settings, claim: Claim, source: Path) -> bool:
    """Move DATA_DIR/index into the repository's folder when it was built from the same source.

    An index from before repositories had names lives at DATA_DIR/index; moving it (a rename)
    keeps its vectors, so the first ``cairn ingest PATH`` after an upgrade stays incremental.
    Returns whether it moved.
    """
    single = Path(settings.data_dir) / INDEX_FOLDER
    if settings.index_dir is not None or claim.index_dir.exists() or not is_index_folder(single):
        return False
    try:
        recorded = live_manifest(single)
    except IndexCorrupted:
        return False
    if recorded is None or Path(recorded.repo_root) != Path(source).expanduser().resolve():
        return False
    claim.index_dir.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(single):
        os.rename(single, claim.index_dir)
    return True


def live_manifest(index_dir: Path) -> Manifest | None:
    """Read the live generation's manifest only (not the index), or None when there is no index."""
    pointer = index_dir / CURRENT
    if not pointer.is_file():
        return None
    path = index_dir / pointer.read_text(encoding="utf-8").strip() / "manifest.json"
    try:
        return Manifest.read(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexCorrupted(
            f"The index manifest {path} cannot be read ({exc})", "re-ingest it with --rebuild"
        ) from exc


def size_on_disk(folder: Path) -> int:
    """Return the bytes of the files under a folder (every generation kept, as `du` would count them)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


@dataclass(frozen=True, slots=True)
class Freshness:
    """How an index stands against its source folder now: indexed files changed or gone since the ingest."""

    checked: int
    changed: int
    missing: int
    #: Whether every indexed file was looked at (at most ``limit`` are).
    complete: bool

    @property
    def fresh(self) -> bool:
        """True when no indexed file changed or went away (files added since are not seen)."""
        return self.changed == 0 and self.missing == 0

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready mapping, with ``fresh``."""
        return {**asdict(self), "fresh": self.fresh}


def freshness(manifest: Manifest, limit: int = 50_000) -> Freshness:
    """Compare an index's files with its source folder by size and modification time (no reading).

    A file counts as changed when its size or mtime differs from what the ingest recorded; one stat
    per file, at most ``limit`` files, so it stays a few milliseconds for a large repository.
    """
    root = Path(manifest.repo_root)
    checked = changed = missing = 0
    for rel_path, record in manifest.files.items():
        if checked >= limit:
            break
        checked += 1
        try:
            stat = os.stat(root / rel_path)
        except OSError:
            missing += 1
            continue
        if stat.st_size != record["size"] or stat.st_mtime_ns != record["mtime_ns"]:
            changed += 1
    return Freshness(checked, changed, missing, complete=checked == len(manifest.files))
