"""Find the files of a repository worth indexing, honouring .gitignore and reporting what was skipped."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from cairn.errors import RepositoryNotFound
from config import DEFAULT_EXCLUDES
from ingest.languages import detect_language
from ingest.secrets import SecretPolicy

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

#: A file whose lines average more characters than this is minified code or a data dump (a whole
#: bundle or JSON document on one line): its chunks could only be cited as line 1, so it is skipped.
#: Hand-written code averages 30-40; a file with a few long lines among short ones stays far below.
MINIFIED_LINE_CHARS = 1000

#: Control characters that text in a single-byte encoding has no use for (tab, line ends, form feed,
#: backspace and escape are allowed); more than 1 in 100 bytes and the file is binary.
_CONTROL_BYTES = bytes([*range(0x01, 0x08), 0x0E, 0x0F, *range(0x10, 0x1B), *range(0x1C, 0x20), 0x7F])

# A character beyond ASCII that UTF-8 decoding produced from a valid sequence (not U+FFFD).
_NON_ASCII_DECODED = re.compile(r"[^\x00-\x7f\ufffd]")


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
    #: Every path skipped as a secret and why: "credentials file" (by name) or the kind of secret found.
    secrets: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, path: str) -> None:
        """Count a skipped file, keeping a few example paths per reason for the report."""
        self.skipped[reason] += 1
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < 3:
            bucket.append(path)

    def skip_secret(self, path: str, kind: str) -> None:
        """Count a file (or folder) skipped because it looks like it holds a secret, and remember why."""
        self.skip("secret", path)
        self.secrets[path] = kind


def _load_ignore_file(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


class _IgnoreRules:
    """Gitignore rules of nested .gitignore files, each applying below its own folder."""

    def __init__(self, root: Path, extra: Iterable[str], secrets_allow: Iterable[str] = ()) -> None:
        self._specs: list[tuple[str, pathspec.PathSpec]] = []
        base = [*DEFAULT_EXCLUDES, *extra, *_load_ignore_file(root / ".git" / "info" / "exclude")]
        self._excluded = pathspec.GitIgnoreSpec.from_lines(base)
        self.secrets = SecretPolicy(secrets_allow)

    def add_gitignore(self, rel_dir: str, lines: list[str]) -> None:
        if lines:
            self._specs.append((rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))

    def reason(self, rel_path: str, is_dir: bool) -> str | None:
        probe = rel_path + "/" if is_dir else rel_path
        # Before the other rules, so that the summary counts every credentials file, gitignored or not.
        if self.secrets.secret_name(rel_path, is_dir=is_dir):
            return "secret"
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

    The same rules as ``walk_repository``: credentials files by name (``ingest/secrets.py``, less
    ``secrets_allow``), the built-in excludes, ``CAIRN_EXCLUDE``, ``.git/info/exclude`` and the
    ``.gitignore`` of the root and of every folder on the way down (a path inside an ignored folder
    is ignored). Not the content checks: a file is not read here. The ``.gitignore`` files read are
    cached until ``forget()``; a watcher calls it when one of them changes.
    """

    def __init__(self, root: Path, exclude: Iterable[str] = (), secrets_allow: Iterable[str] = ()) -> None:
        self.root = Path(root).expanduser().resolve()
        self._exclude = tuple(exclude)
        self._secrets_allow = tuple(secrets_allow)
        self._rules: _IgnoreRules | None = None
        self._loaded: set[str] = set()

    def forget(self) -> None:
        """Drop the cached ignore files (one of them changed)."""
        self._rules = None
        self._loaded = set()

    def ignored(self, rel_path: str, *, is_dir: bool = False) -> bool:
        """Return True when the repository-relative POSIX path (or a folder above it) is ignored."""
        if self._rules is None:
            self._rules = _IgnoreRules(self.root, self._exclude, self._secrets_allow)
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
    """Return True when the first bytes of a file look like binary data rather than text.

    Text is UTF-8, or else a single-byte encoding (Latin-1, Windows-1252): no NUL byte and few
    control characters either way.
    """
    if b"\x00" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is still text.
        if exc.start >= len(head) - 4:
            return False
        return len(head.translate(None, _CONTROL_BYTES)) < len(head) * 0.99
    return False


def decode_text(data: bytes) -> str:
    """Return a text file's bytes as text: UTF-8, or Windows-1252 (Latin-1) when they are not UTF-8.

    A file that is UTF-8 but for a stray byte or two stays UTF-8 (with a replacement character
    there), so its other non-ASCII characters are not garbled; a file with no valid UTF-8 sequence
    beyond ASCII is read in the single-byte encoding that legacy editors wrote, byte for character,
    so its lines and their numbers are the same either way.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", "replace")
    if _NON_ASCII_DECODED.search(text):
        return text
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined
        return data.decode("latin-1")


def looks_minified(path: str, data: bytes) -> bool:
    """Return True for minified code or a one-line data dump: lines averaging over MINIFIED_LINE_CHARS."""
    if len(data) <= MINIFIED_LINE_CHARS or detect_language(path) == "notebook":
        return False  # a notebook's long lines are its outputs, which are not indexed
    return len(data) > MINIFIED_LINE_CHARS * (data.count(b"\n") + 1)


def walk_repository(
    root: Path,
    *,
    max_file_bytes: int,
    exclude: Iterable[str] = (),
    secrets_allow: Iterable[str] = (),
    unchanged: Callable[[str, int, int], bool] | None = None,
) -> WalkReport:
    """Return the indexable files below ``root`` in a stable order, with skip counts by reason.

    Every file that would be kept is read whole and scanned for secrets (``ingest/secrets.py``);
    ``secrets_allow`` (gitignore-style) names the paths let in all the same. A file for which
    ``unchanged(path, size, mtime_ns)`` is true (the last ingest read it, with the same content
    checks, and it has not changed since) is kept without being read again: an incremental walk of a
    large repository reads only what changed.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise RepositoryNotFound(f"No such repository: {root}", "check the path and try again")
    if not root.is_dir():
        raise RepositoryNotFound(f"Not a folder: {root}", "give the repository's top folder, not a file")
    root = root.resolve()
    rules = _IgnoreRules(root, exclude, secrets_allow)
    report = WalkReport()
    for rel_dir, dirnames, filenames in _walk(root):
        if ".gitignore" in filenames:
            rules.add_gitignore(rel_dir, _load_ignore_file(root / rel_dir / ".gitignore"))
        kept_dirs = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if (root / rel).is_symlink():
                report.skip("symlinked folder", rel)
            elif (why := rules.reason(rel, is_dir=True)) == "secret":
                report.skip_secret(rel + "/", "credentials folder")
            elif why is not None:
                report.skip(why, rel + "/")
            else:
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            _consider_file(root, rel, rules, report, max_file_bytes, unchanged)
    return report


def _walk(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        yield ("" if rel_dir == "." else rel_dir.replace(os.sep, "/")), dirnames, filenames


def _consider_file(
    root: Path,
    rel: str,
    rules: _IgnoreRules,
    report: WalkReport,
    max_bytes: int,
    unchanged: Callable[[str, int, int], bool] | None = None,
) -> None:
    if (why := rules.reason(rel, is_dir=False)) == "secret":
        report.skip_secret(rel, "credentials file")
        return
    if why is not None:
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
        if unchanged is not None and unchanged(rel, stat.st_size, stat.st_mtime_ns):
            report.files.append(SourceFile(rel, abs_path, stat.st_size, stat.st_mtime_ns))
            return
        with abs_path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
            if looks_binary(head):
                report.skip("binary", rel)
                return
            data = head + handle.read()
    except OSError:
        report.skip("unreadable", rel)
        return
    if (kind := rules.secrets.secret_content(rel, data)) is not None:
        report.skip_secret(rel, kind)
        return
    if looks_minified(rel, data):
        report.skip("minified", rel)
        return
    report.files.append(SourceFile(rel, abs_path, stat.st_size, stat.st_mtime_ns))
