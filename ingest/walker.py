"""Find the files of a repository worth indexing, honouring .gitignore and reporting what was skipped."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from cairn.errors import RepositoryNotFound
from config import DEFAULT_EXCLUDES

#: Extensions that are never text worth indexing; checked before a file is opened.
BINARY_EXTENSIONS = frozenset(
    """
    png jpg jpeg gif bmp ico tif tiff webp svgz psd heic avif mp3 wav ogg flac m4a mp4 mov avi mkv webm
    zip tar gz tgz bz2 xz zst 7z rar jar war whl egg so dylib dll exe o a lib obj class pyc pyo pyd wasm
    pdf doc docx xls xlsx ppt pptx odt bin dat pkl pickle npy npz h5 hdf5 pt pth ckpt safetensors onnx
    gguf tflite pb parquet arrow feather db sqlite sqlite3 woff woff2 ttf otf eot
    """.split()
)

SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file chosen for indexing: its repository-relative POSIX path and what stat said of it."""

    path: str
    abs_path: Path
    size: int
    mtime_ns: int


@dataclass(slots=True)
class WalkReport:
    """What a walk found: the files to index and the files skipped, counted by reason."""

    files: list[SourceFile] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, path: str) -> None:
        """Count a skipped file, keeping a few example paths per reason for the report."""
        self.skipped[reason] += 1
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < 3:
            bucket.append(path)


def _load_ignore_file(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


class _IgnoreRules:
    """Gitignore rules of nested .gitignore files, each applying below its own folder."""

    def __init__(self, root: Path, extra: Iterable[str]) -> None:
        self._specs: list[tuple[str, pathspec.PathSpec]] = []
        base = [*DEFAULT_EXCLUDES, *extra, *_load_ignore_file(root / ".git" / "info" / "exclude")]
        self._excluded = pathspec.GitIgnoreSpec.from_lines(base)

    def add_gitignore(self, rel_dir: str, lines: list[str]) -> None:
        if lines:
            self._specs.append((rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))

    def reason(self, rel_path: str, is_dir: bool) -> str | None:
        probe = rel_path + "/" if is_dir else rel_path
        if self._excluded.match_file(probe):
            return "excluded"
        for rel_dir, spec in self._specs:
            if rel_dir:
                if not probe.startswith(rel_dir + "/"):
                    continue
                local = probe[len(rel_dir) + 1 :]
            else:
                local = probe
            if spec.match_file(local):
                return "gitignored"
        return None


class IgnoreMatcher:
    """Say whether one path below a repository is left out by the walk's rules, without walking.

    The same rules as ``walk_repository``: the built-in excludes, ``CAIRN_EXCLUDE``,
    ``.git/info/exclude`` and the ``.gitignore`` of the root and of every folder on the way down (a
    path inside an ignored folder is ignored). The ``.gitignore`` files read are cached until
    ``forget()``; a watcher calls it when one of them changes.
    """

    def __init__(self, root: Path, exclude: Iterable[str] = ()) -> None:
        self.root = Path(root).expanduser().resolve()
        self._exclude = tuple(exclude)
        self._rules: _IgnoreRules | None = None
        self._loaded: set[str] = set()

    def forget(self) -> None:
        """Drop the cached ignore files (one of them changed)."""
        self._rules = None
        self._loaded = set()

    def ignored(self, rel_path: str, *, is_dir: bool = False) -> bool:
        """Return True when the repository-relative POSIX path (or a folder above it) is ignored."""
        if self._rules is None:
            self._rules = _IgnoreRules(self.root, self._exclude)
        rules = self._rules
        parts = [part for part in rel_path.split("/") if part]
        rel_dir = ""
        for depth, part in enumerate(parts):
            if rel_dir not in self._loaded:
                self._loaded.add(rel_dir)
                rules.add_gitignore(rel_dir, _load_ignore_file(self.root / rel_dir / ".gitignore"))
            rel = f"{rel_dir}/{part}" if rel_dir else part
            last = depth == len(parts) - 1
            if rules.reason(rel, is_dir=is_dir or not last) is not None:
                return True
            rel_dir = rel
        return False


def looks_binary(head: bytes) -> bool:
    """Return True when the first bytes of a file look like binary data rather than text."""
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is still text.
        return exc.start < len(head) - 4
    return False


def walk_repository(root: Path, *, max_file_bytes: int, exclude: Iterable[str] = ()) -> WalkReport:
    """Return the indexable files below ``root`` in a stable order, with skip counts by reason."""
    root = Path(root).expanduser()
    if not root.exists():
        raise RepositoryNotFound(f"No such repository: {root}", "check the path and try again")
    if not root.is_dir():
        raise RepositoryNotFound(f"Not a folder: {root}", "give the repository's top folder, not a file")
    root = root.resolve()
    rules = _IgnoreRules(root, exclude)
    report = WalkReport()
    for rel_dir, dirnames, filenames in _walk(root):
        if ".gitignore" in filenames:
            rules.add_gitignore(rel_dir, _load_ignore_file(root / rel_dir / ".gitignore"))
        kept_dirs = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if (root / rel).is_symlink():
                report.skip("symlinked folder", rel)
            elif (why := rules.reason(rel, is_dir=True)) is not None:
                report.skip(why, rel + "/")
            else:
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            _consider_file(root, rel, rules, report, max_file_bytes)
    return report


def _walk(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        yield ("" if rel_dir == "." else rel_dir.replace(os.sep, "/")), dirnames, filenames


def _consider_file(root: Path, rel: str, rules: _IgnoreRules, report: WalkReport, max_bytes: int) -> None:
    if (why := rules.reason(rel, is_dir=False)) is not None:
        report.skip(why, rel)
        return
    abs_path = root / rel
    if abs_path.is_symlink():
        try:
            abs_path.resolve(strict=True).relative_to(root)
        except (OSError, ValueError):
            report.skip("symlink leaving the repository", rel)
            return
    suffix = abs_path.suffix.lower().lstrip(".")
    if suffix in BINARY_EXTENSIONS:
        report.skip("binary", rel)
        return
    try:
        stat = abs_path.stat()
        if stat.st_size > max_bytes:
            report.skip("too large", rel)
            return
        if stat.st_size == 0:
            report.skip("empty", rel)
            return
        with abs_path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        report.skip("unreadable", rel)
        return
    if looks_binary(head):
        report.skip("binary", rel)
        return
    report.files.append(SourceFile(rel, abs_path, stat.st_size, stat.st_mtime_ns))
