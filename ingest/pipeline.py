"""Ingest a repository: walk, chunk, embed what changed, and swap in a new index generation."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cairn import __version__
from cairn.errors import CairnError, EmbeddingModelMismatch, IndexCorrupted, IndexMissing
from cairn.telemetry import span
from config import Settings
from ingest.chunk_table import ChunkTable, ChunkTableBuilder
from ingest.chunking import Chunk, ChunkingOptions, chunk_file, parse_code
from ingest.embedder import TextEmbedder, embedding_input, make_embedder
from ingest.embedding_endpoints import EndpointOptions
from ingest.embedding_endpoints import identity as embedding_identity
from ingest.languages import detect_language
from ingest.manifest import (
    FORMAT,
    FORMAT_VERSION,
    ChunkingInfo,
    Counts,
    EmbeddingInfo,
    FileRecord,
    KeywordInfo,
    Manifest,
)
from ingest.repos import live_manifest
from ingest.secrets import SecretPolicy
from ingest.store import (
    Generation,
    check_writable,
    index_kind,
    open_generation,
    take_token_rows,
    write_delta,
    writer_lock,
)
from ingest.store import write_generation as _write_generation
from ingest.symbol_graph import SymbolGraphUpdate, graph_file
from ingest.symbols import FileSymbols, extract_symbols, has_tag_query
from ingest.tokens import TOKENIZER, tokenize
from ingest.walker import SourceFile, decode_text, walk_repository

log = logging.getLogger("cairn.ingest")

RACY_WINDOW_NS = 2_000_000_000
SYMBOL_BOOST = 3


class IngestProgress(Protocol):
    """What ingest reports while it works; the CLI draws it as progress bars."""

    def files(self, total: int) -> None: ...
    def file_done(self) -> None: ...
    def embedding(self, total: int) -> None: ...
    def embedded(self, count: int) -> None: ...


class _Silent:
    def files(self, total: int) -> None: ...
    def file_done(self) -> None: ...
    def embedding(self, total: int) -> None: ...
    def embedded(self, count: int) -> None: ...


@dataclass(slots=True)
class IngestResult:
    """What an ingest did, for the CLI's summary and for benchmarks."""

    index_dir: Path
    generation: Path | None
    files_total: int = 0
    files_added: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    files_deleted: int = 0
    chunks_total: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    #: Every file (or folder) skipped because it looks like it holds a secret → why (``WalkReport.secrets``).
    secrets: dict[str, str] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)
    #: Files whose chunking raised (path → error); they are left out and tried again next time.
    failed: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: The generation written is a delta on the last whole one (only what changed).
    delta: bool = False

    @property
    def changed_anything(self) -> bool:
        """Return True when this ingest wrote a new generation."""
        return self.generation is not None


class _Rows:
    """The rows of the new generation: runs copied from the previous one, and new chunks."""

    def __init__(self, previous: Generation | None) -> None:
        self.previous = previous
        self.builder = ChunkTableBuilder()
        self.old_rows: list[int] = []  # row in the previous generation, or -1: embed and tokenize
        self.kept: list[bool] = []  # the row is the previous one's, whole (an unchanged file's), not a chunk again
        self.fresh: list[tuple[int, Chunk]] = []
        self._by_hash: dict[bytes, int] | None = None

    def __len__(self) -> int:
        return len(self.old_rows)

    def reuse_file(self, old: FileRecord, source: SourceFile, digest: str | None = None) -> FileRecord:
        """Copy an unchanged file's rows; return its manifest entry."""
        assert self.previous is not None
        first, begin, count = len(self), old["first_chunk"], old["chunks"]
        self.builder.add_rows(self.previous.chunks, begin, begin + count)
        self.old_rows.extend(range(begin, begin + count))
        self.kept.extend([True] * count)
        return {
            "sha256": digest or old["sha256"], "size": source.size, "mtime_ns": source.mtime_ns,
            "first_chunk": first, "chunks": count,
        }  # fmt: skip

    def add(self, chunk: Chunk) -> None:
        """Add a chunk of a changed file, reusing the previous vector when its content is unchanged."""
        old_row = self._hash_index().get(bytes.fromhex(chunk.content_hash), -1)
        if old_row < 0:
            self.fresh.append((len(self), chunk))
        self.old_rows.append(old_row)
        self.kept.append(False)
        self.builder.add(chunk)

    def _hash_index(self) -> dict[bytes, int]:
        if self._by_hash is None:
            hashes = self.previous.chunks.hashes if self.previous is not None else None
            self._by_hash = (
                {}
                if hashes is None
                else dict(zip(hashes.view("S16").ravel().tolist(), range(len(hashes)), strict=True))
            )
        return self._by_hash

    def table(self) -> ChunkTable:
        """Return the new generation's chunk table."""
        return self.builder.build()


def _file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _chunks_and_symbols(path: str, text: str, options: ChunkingOptions) -> tuple[list[Chunk], FileSymbols | None]:
    """Chunk a file and read its symbols off the same parse (symbols None for languages without a query)."""
    text = text.replace("\r\n", "\n")
    language = detect_language(path)
    tree = parse_code(language, text) if has_tag_query(language) else None
    chunks = list(chunk_file(path, text, options, tree=tree))
    return chunks, (extract_symbols(path, language, tree) if tree is not None else None)


def _symbols_only(source: SourceFile) -> FileSymbols | None:
    """Return the symbols of an unchanged file (for a previous generation that has no graph yet)."""
    language = detect_language(source.path)
    if not has_tag_query(language):
        return None
    text = decode_text(source.abs_path.read_bytes()).replace("\r\n", "\n")
    tree = parse_code(language, text)
    return extract_symbols(source.path, language, tree) if tree is not None else None


def ingest_repository(
    repo: Path,
    settings: Settings,
    *,
    rebuild: bool = False,
    progress: IngestProgress | None = None,
    embedder_factory: Callable[[], TextEmbedder] | None = None,
    delta: bool = False,
) -> IngestResult:
    """Bring the index in ``settings.resolved_index_dir`` up to date with ``repo``.

    Unchanged files keep their chunks, vectors and tokens; changed files are re-chunked and only
    chunks whose content changed are re-embedded; deleted files' chunks are dropped, and so are those
    of files the walk now leaves out (a file that looks like a secret, ``ingest/secrets.py``, even
    when unchanged since an index built before that check). The new index is swapped in
    atomically; on any error the previous one stays live. Traced as an ``ingest`` span with
    ``walk``, ``chunk``, ``embed`` and ``write`` under it.

    With ``delta`` (the watcher's batches) a large index gets a delta generation, only what changed
    on the last whole one (``_delta_plan``); without it a live delta is merged into a whole
    generation even when nothing changed.
    """
    with span("ingest", **{"cairn.repository": str(repo), "cairn.index": str(settings.resolved_index_dir)}) as root:
        result = _ingest(repo, settings, rebuild, progress or _Silent(), embedder_factory, delta)
        root.set_attributes({
            "cairn.files": result.files_total, "cairn.files.changed": result.files_added + result.files_changed,
            "cairn.files.deleted": result.files_deleted, "cairn.chunks": result.chunks_total,
            "cairn.chunks.embedded": result.chunks_embedded,
        })  # fmt: skip
        return result


@dataclass(slots=True)
class _Baseline:
    """What the previous generation offers this ingest: its files, rows and symbol graph to reuse."""

    previous: Generation | None
    options: ChunkingOptions
    chunking: ChunkingInfo
    #: Chunks of an unchanged file can be reused only when they were cut the same way.
    same_chunking: bool
    old_files: dict[str, FileRecord]
    #: The previous symbol graph (None: there was none, so every file's symbols are read: a backfill).
    graph_base: Path | None
    #: Like git's "racy" check: a file modified within the clock granularity of the previous scan could
    #: have changed again with the same size and mtime, so its content is hashed regardless.
    racy_before: int

    @classmethod
    def of(cls, index_dir: Path, settings: Settings, rebuild: bool) -> _Baseline:
        previous = None if rebuild else _previous_generation(index_dir, settings)
        options = ChunkingOptions(settings.chunk_max_chars, settings.chunk_overlap_lines)
        chunking = ChunkingInfo(options.max_chars, options.overlap_lines)
        return cls(
            previous=previous,
            options=options,
            chunking=chunking,
            same_chunking=previous is not None and previous.manifest.chunking == chunking,
            old_files=previous.manifest.files if previous else {},
            graph_base=graph_file(previous.path) if previous is not None else None,
            racy_before=(previous.manifest.scanned_at_ns - RACY_WINDOW_NS) if previous else 0,
        )

    @property
    def backfill(self) -> bool:
        """Whether unchanged files' symbols must be read too (the previous generation has no graph)."""
        return self.previous is not None and self.graph_base is None

    def unchanged_by_stat(self, source: SourceFile) -> FileRecord | None:
        """Return a file's previous record when its size and mtime say it is unchanged (and it is not racy)."""
        old = self.old_files.get(source.path)
        if (self.same_chunking and old and old["size"] == source.size and old["mtime_ns"] == source.mtime_ns
                and source.mtime_ns < self.racy_before):  # fmt: skip
            return old
        return None


class _Scan:
    """The per-file pass: reuse what did not change, chunk what did, skip what cannot or must not be read."""

    def __init__(self, baseline: _Baseline, result: IngestResult, secrets: SecretPolicy, progress: IngestProgress):
        self.baseline, self.result, self.secrets, self.progress = baseline, result, secrets, progress
        self.rows = _Rows(baseline.previous)
        self.files: dict[str, FileRecord] = {}
        # The symbol graph follows the same rules: start from the previous generation's, replace the rows
        # of files that changed. A previous generation without one gets it for every file (backfill).
        self.graph = SymbolGraphUpdate(base=baseline.graph_base)

    def file(self, source: SourceFile) -> None:
        """Take one file of the walk into the new generation (or skip it, counted by why)."""
        try:
            self._file(source)
        finally:
            self.progress.file_done()

    def _file(self, source: SourceFile) -> None:
        if (old := self.baseline.unchanged_by_stat(source)) is not None:
            return self._reuse(source, old)
        try:
            data = source.abs_path.read_bytes()
        except OSError:
            self.result.unreadable.append(source.path)
            self.result.skipped["unreadable"] += 1
            return None
        if (kind := self.secrets.secret_content(source.path, data)) is not None:
            return self._secret(source, kind)  # written between the walk's scan and this read
        digest = _file_digest(data)
        old = self.baseline.old_files.get(source.path)
        if self.baseline.same_chunking and old and old["sha256"] == digest:
            return self._reuse(source, old, digest)
        try:
            chunks, symbols = _chunks_and_symbols(source.path, decode_text(data), self.baseline.options)
        except Exception as exc:  # a parser bug on one file must not stop the ingest, nor a watcher
            self.result.failed[source.path] = f"{type(exc).__name__}: {exc}"
            self.result.skipped["unparsable"] += 1
            self.result.skipped_examples.setdefault("unparsable", []).append(source.path)
            return None
        return self._add(source, digest, chunks, symbols, changed=old is not None)

    def _reuse(self, source: SourceFile, old: FileRecord, digest: str | None = None) -> None:
        self.files[source.path] = self.rows.reuse_file(old, source, digest=digest)
        if self.baseline.backfill:
            # Best effort: a file that cannot be read or parsed now keeps its chunks and has no symbols
            # until it changes, rather than failing an ingest that embeds nothing.
            with contextlib.suppress(Exception):
                if (symbols := _symbols_only(source)) is not None:
                    self.graph.replace(symbols)
        self.result.files_unchanged += 1

    def _secret(self, source: SourceFile, kind: str) -> None:
        self.result.skipped["secret"] += 1
        if len(examples := self.result.skipped_examples.setdefault("secret", [])) < 3:
            examples.append(source.path)
        self.result.secrets[source.path] = kind

    def _add(self, source: SourceFile, digest: str, chunks: list[Chunk], symbols: FileSymbols | None,
             changed: bool) -> None:  # fmt: skip
        if symbols is not None:
            self.graph.replace(symbols)
        first = len(self.rows)
        for chunk in chunks:
            self.rows.add(chunk)
        self.files[source.path] = {
            "sha256": digest, "size": source.size, "mtime_ns": source.mtime_ns,
            "first_chunk": first, "chunks": len(self.rows) - first,
        }  # fmt: skip
        if changed:
            self.result.files_changed += 1
        else:
            self.result.files_added += 1

    def finish(self) -> None:
        """Count the files that went away (deleted, or now left out by the walk) and drop their symbols."""
        gone = set(self.baseline.old_files) - set(self.files)
        self.result.files_total = len(self.files)
        self.result.files_deleted = len(gone)
        self.graph.remove(gone)
        self.result.chunks_total = len(self.rows)

    def changed_nothing(self, settings: Settings, repo_root: Path, delta: bool) -> bool:
        """Whether the live generation already is what this ingest would write (a delta only if allowed)."""
        previous, result = self.baseline.previous, self.result
        return (
            previous is not None
            and (delta or previous.delta is None)
            and result.files_added == result.files_changed == result.files_deleted == 0
            and previous.manifest.counts.chunks == len(self.rows)
            and previous.manifest.faiss_index == index_kind(settings.faiss_index, len(self.rows))
            and previous.whole().manifest.format_version == FORMAT_VERSION
            and previous.manifest.keyword.tokenizer == TOKENIZER
            and previous.manifest.repo_root == str(repo_root)  # a moved repository gets a manifest saying so
            and previous.manifest.walk_checks == self.secrets.fingerprint  # else every walk reads every file
            and self.baseline.graph_base is not None
            and _same_stats(self.baseline.old_files, self.files)
        )


def _ingest(
    repo: Path,
    settings: Settings,
    rebuild: bool,
    progress: IngestProgress,
    embedder_factory: Callable[[], TextEmbedder] | None,
    delta: bool = False,
) -> IngestResult:
    index_dir = Path(settings.resolved_index_dir)
    clock = time.perf_counter()
    secrets = SecretPolicy(settings.secrets_allow)
    with span("walk"):
        report = walk_repository(repo, max_file_bytes=settings.max_file_bytes, exclude=settings.exclude,
                                 secrets_allow=settings.secrets_allow,
                                 unchanged=None if rebuild else _unchanged_since(index_dir, secrets))  # fmt: skip
    repo_root = Path(repo).expanduser().resolve()
    timings = {"walk": time.perf_counter() - clock}
    result = IngestResult(index_dir=index_dir, generation=None, skipped=report.skipped,
                          skipped_examples=report.examples, secrets=report.secrets)  # fmt: skip

    check_writable(index_dir)
    with writer_lock(index_dir):
        baseline = _Baseline.of(index_dir, settings, rebuild)
        scanned_at_ns = time.time_ns()
        scan = _Scan(baseline, result, secrets, progress)
        with span("chunk") as chunking:
            progress.files(len(report.files))
            for source in report.files:
                scan.file(source)
            scan.finish()
            chunking.set_attribute("cairn.chunks", len(scan.rows))
        timings["scan_and_chunk"] = time.perf_counter() - clock - timings["walk"]
        if scan.changed_nothing(settings, repo_root, delta):
            result.chunks_reused = len(scan.rows)
            result.timings = timings | {"total": time.perf_counter() - clock}
            return result  # nothing to do: leave the live generation as it is
        _embed_and_write(scan, settings, repo_root, scanned_at_ns, progress, embedder_factory, timings, delta)
    result.timings = timings | {"total": time.perf_counter() - clock}
    return result


def _embed_and_write(
    scan: _Scan,
    settings: Settings,
    repo_root: Path,
    scanned_at_ns: int,
    progress: IngestProgress,
    embedder_factory: Callable[[], TextEmbedder] | None,
    timings: dict[str, float],
    delta: bool = False,
) -> None:
    """Embed and tokenize the new rows, then write the generation (whole, or a delta) and swap it in."""
    rows, result, baseline = scan.rows, scan.result, scan.baseline
    table = rows.table()
    with span("embed", **{"cairn.chunks.embedded": len(rows.fresh)}):
        vectors, tokens, offsets, vocab, embed_seconds = _assemble(
            rows, table, baseline.previous, settings, progress, embedder_factory
        )
    timings["embed"] = embed_seconds
    result.chunks_embedded = len(rows.fresh)
    result.chunks_reused = len(rows) - len(rows.fresh)

    write_start = time.perf_counter()
    kind = index_kind(settings.faiss_index, len(rows))
    if baseline.previous is not None and baseline.previous.manifest.faiss_index != kind:
        log.warning("the vector index becomes %s at %d chunks (CAIRN_FAISS_INDEX=%s; was %s)%s", kind, len(rows),
                    settings.faiss_index, baseline.previous.manifest.faiss_index,
                    ": its lists are trained once, a minute or more" if kind == "ivf" else "")  # fmt: skip
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        cairn_version=__version__,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        scanned_at_ns=scanned_at_ns,
        repo_root=str(repo_root),
        embedding=EmbeddingInfo(
            embedding_identity(settings.embedding_model), int(vectors.shape[1]), settings.embedding_max_tokens
        ),
        chunking=baseline.chunking,
        faiss_index=kind,
        counts=Counts(files=len(scan.files), chunks=len(rows), skipped=dict(result.skipped)),
        files=scan.files,
        keyword=KeywordInfo(TOKENIZER),
        walk_checks=scan.secrets.fingerprint,
    )
    # an index that held a file now taken for a secret keeps no copy of it on disk
    keep_previous = not (set(baseline.old_files) & set(result.secrets))
    plan = _delta_plan(rows, baseline.previous, settings, kind, vocab) if delta and keep_previous else None
    with span("write", **{"cairn.delta": plan is not None}):
        if plan is not None:
            result.generation = _write_delta(result.index_dir, manifest, plan, table, vectors, tokens, offsets,
                                             scan.graph)  # fmt: skip
        else:
            result.generation = _write_generation(
                result.index_dir,
                manifest=manifest,
                chunks=table,
                vectors=vectors,
                tokens=tokens,
                token_offsets=offsets,
                vocab=vocab,
                faiss_kind=manifest.faiss_index,
                hnsw_m=settings.hnsw_m,
                ivf_centroids=baseline.previous.ivf_centroids() if baseline.previous is not None else None,
                symbols=scan.graph,
                keep_previous=keep_previous,
            )
    result.delta = plan is not None
    timings["write"] = time.perf_counter() - write_start


#: A delta may hold at most this share of the generation's rows, and drop at most this share of its base's;
#: past either, the ingest writes a whole generation (the merge).
DELTA_SHARE = 0.1


@dataclass(slots=True)
class _DeltaPlan:
    """How the new rows split into a delta: the base and its rows kept, then the rows the delta holds."""

    base: Generation
    #: The new rows in the delta generation's order: the kept base rows first, then the delta's.
    order: np.ndarray
    base_rows: np.ndarray
    #: The keyword vocabulary's words added since the base, with the id of the first.
    vocab_added: tuple[int, list[str]]


def _delta_plan(
    rows: _Rows, previous: Generation | None, settings: Settings, kind: str, vocab: dict[str, int]
) -> _DeltaPlan | None:
    """Return how to write the new rows as a delta on the last whole generation, or None to write a whole one.

    A row stays in the base when it is an unchanged file's row that the base holds; the others (changed
    and new files, and files a previous delta already holds) go to the delta. Not for an index under
    ``CAIRN_INDEX_DELTA_FROM`` chunks (a whole generation of it is quick to write), nor when the index
    changes kind or keyword tokenizer, nor past ``DELTA_SHARE``.
    """
    if previous is None or settings.index_delta_from <= 0:
        return None
    base = previous.whole()
    if (
        len(base.chunks) < settings.index_delta_from
        or base.manifest.faiss_index != kind
        or base.manifest.format_version != FORMAT_VERSION
        or previous.manifest.keyword.tokenizer != TOKENIZER
    ):
        return None  # fmt: skip
    old = np.asarray(rows.old_rows, dtype=np.int64)
    kept = np.asarray(rows.kept, dtype=bool) & (old >= 0)
    base_of = np.full(len(old), -1, dtype=np.int64)
    base_of[kept] = previous.base_rows()[old[kept]]
    in_base = base_of >= 0
    kept_count = int(in_base.sum())
    if len(old) - kept_count > DELTA_SHARE * len(old) or kept_count < (1 - DELTA_SHARE) * len(base.chunks):
        return None
    known = base.vocabulary()
    added = sorted((i, word) for word, i in vocab.items() if word not in known)
    first = len(known)
    if [i for i, _ in added] != list(range(first, first + len(added))):
        return None  # a vocabulary that does not extend the base's (not written by this Cairn): start afresh
    order = np.concatenate([np.flatnonzero(in_base), np.flatnonzero(~in_base)])
    return _DeltaPlan(base=base, order=order, base_rows=base_of[in_base], vocab_added=(first, [w for _, w in added]))


def _write_delta(
    index_dir: Path,
    manifest: Manifest,
    plan: _DeltaPlan,
    table: ChunkTable,
    vectors: np.ndarray,
    tokens: np.ndarray,
    offsets: np.ndarray,
    graph: SymbolGraphUpdate,
) -> Path:
    """Write the rows as ``plan`` splits them: a delta generation on the plan's base."""
    order, kept = plan.order, len(plan.base_rows)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    files = {
        path: {**record, "first_chunk": int(position[record["first_chunk"]]) if record["chunks"] else 0}
        for path, record in manifest.files.items()
    }  # a file's rows stay together: they are all in the base, or all in the delta
    own = order[kept:]
    own_tokens, own_offsets = take_token_rows(tokens, offsets, own)
    return write_delta(
        index_dir,
        manifest=dataclasses.replace(manifest, files=files),  # type: ignore[arg-type]
        base=plan.base,
        base_rows=plan.base_rows,
        chunks=table.take(own),
        vectors=vectors[own],
        tokens=own_tokens,
        token_offsets=own_offsets,
        vocab_added=plan.vocab_added,
        symbols=graph,
    )


def _unchanged_since(index_dir: Path, secrets: SecretPolicy) -> Callable[[str, int, int], bool] | None:
    """Return the walk's test for "the live generation read this file, with these checks, and it is unchanged".

    Only the manifest is read (before the writer lock: a newer generation swapped in meanwhile changes
    nothing, since a file whose content passed these checks passes them again). None when there is no
    index, or it was walked with other content checks (another Cairn, another CAIRN_SECRETS_ALLOW).
    """
    try:
        manifest = live_manifest(index_dir)
    except CairnError:  # unreadable: the ingest reports it when it opens the index
        return None
    if manifest is None or manifest.walk_checks != secrets.fingerprint:
        return None
    files, racy_before = manifest.files, manifest.scanned_at_ns - RACY_WINDOW_NS

    def unchanged(path: str, size: int, mtime_ns: int) -> bool:
        old = files.get(path)
        return old is not None and old["size"] == size and old["mtime_ns"] == mtime_ns and mtime_ns < racy_before

    return unchanged


def _previous_generation(index_dir: Path, settings: Settings) -> Generation | None:
    try:
        previous = open_generation(index_dir)
    except IndexMissing:
        return None
    except IndexCorrupted as exc:
        raise IndexCorrupted(exc.message, "run 'cairn ingest PATH --rebuild' to build it afresh") from exc
    if previous.embedding_model != embedding_identity(settings.embedding_model):
        raise EmbeddingModelMismatch(
            f"The index at {index_dir} was built with embedding model {previous.embedding_model!r}, "
            f"but {settings.embedding_model!r} is configured",
            f"set CAIRN_EMBEDDING_MODEL={previous.embedding_model} or re-run with --rebuild",
        )
    return previous


def _same_stats(old: dict[str, FileRecord], new: dict[str, FileRecord]) -> bool:
    return all(
        old[path]["size"] == meta["size"] and old[path]["mtime_ns"] == meta["mtime_ns"] for path, meta in new.items()
    )


def _assemble(
    rows: _Rows,
    table: ChunkTable,
    previous: Generation | None,
    settings: Settings,
    progress: IngestProgress,
    embedder_factory: Callable[[], TextEmbedder] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int], float]:
    """Return vectors, token ids, offsets and vocabulary for the rows, computing only what is new."""
    old_rows = np.asarray(rows.old_rows, dtype=np.int64)
    embed_seconds = 0.0
    new_vectors: np.ndarray | None = None
    if rows.fresh:
        embed_start = time.perf_counter()
        embedder = embedder_factory() if embedder_factory else _default_embedder(settings)
        texts = [embedding_input(chunk.path, chunk.symbol, chunk.text) for _, chunk in rows.fresh]
        progress.embedding(len(texts))
        new_vectors = embedder.embed_documents(
            texts, batch_size=settings.embedding_batch_size, on_batch=progress.embedded
        )
        embed_seconds = time.perf_counter() - embed_start
        dim = new_vectors.shape[1]
        if previous is not None and previous.faiss_index.d != dim:
            raise EmbeddingModelMismatch(
                f"The embedding model now makes {dim}-dimensional vectors, the index holds "
                f"{previous.faiss_index.d}-dimensional ones",
                "re-run with --rebuild",
            )
    else:
        assert previous is not None
        dim = previous.faiss_index.d

    vectors = np.empty((len(old_rows), dim), dtype=np.float32)
    reused = np.flatnonzero(old_rows >= 0)
    if len(reused):
        assert previous is not None
        vectors[reused] = previous.vectors()[old_rows[reused]]
    if new_vectors is not None:
        vectors[[row for row, _ in rows.fresh]] = new_vectors

    if previous is not None and previous.manifest.keyword.tokenizer != TOKENIZER:
        # Built with another tokenizer: every chunk is tokenized afresh (the vectors above are kept).
        tokens, offsets, vocab = tokenize_all(table)
    else:
        tokens, offsets, vocab = _carry_tokens(rows, old_rows, previous)
    return vectors, tokens, offsets, vocab, embed_seconds


def _keyword_ids(
    chunk_symbol: str | None, text: str, vocab: dict[str, int], tokenize: Callable[[str], list[str]] = tokenize
) -> np.ndarray:
    # The defined name counts as a boosted field, so a definition outranks mere mentions.
    words = tokenize(chunk_symbol or "") * SYMBOL_BOOST + tokenize(text)
    return np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.int32)


def tokenize_all(
    table: ChunkTable, tokenize: Callable[[str], list[str]] = tokenize
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Return token ids, offsets and vocabulary for every chunk of the table (``tokenize``: another tokenizer)."""
    vocab: dict[str, int] = {}
    pieces = [_keyword_ids(table.symbols[row], table.text(row), vocab, tokenize) for row in range(len(table))]
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(piece) for piece in pieces], out=offsets[1:])
    tokens = np.concatenate(pieces).astype(np.int32, copy=False) if pieces else np.zeros(0, dtype=np.int32)
    return tokens, offsets, vocab


def _carry_tokens(
    rows: _Rows, old_rows: np.ndarray, previous: Generation | None
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Return token ids, offsets and vocabulary: the previous generation's where rows were carried over."""
    # Keyword tokens: whole runs of the previous generation's arrays where rows were carried over
    # (one slice per unchanged file), the tokenizer only for new chunks.
    vocab: dict[str, int] = previous.vocabulary() if previous is not None else {}
    fresh_tokens: dict[int, np.ndarray] = {}
    for row, chunk in rows.fresh:
        fresh_tokens[row] = _keyword_ids(chunk.symbol, chunk.text, vocab)
    pieces: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    if len(old_rows):
        breaks = np.ones(len(old_rows), dtype=bool)
        # A run continues while rows are consecutive in the previous generation; a new chunk
        # (-1) stands alone, and so does whatever follows it.
        breaks[1:] = (old_rows[1:] != old_rows[:-1] + 1) | (old_rows[1:] < 0) | (old_rows[:-1] < 0)
        starts = np.flatnonzero(breaks)
        ends = np.append(starts[1:], len(old_rows))
        old_tokens, old_offsets = previous.tokens() if previous is not None else (None, None)
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            first = int(old_rows[start])
            if first < 0:
                pieces.append(fresh_tokens[start])
                lengths.append(np.array([len(fresh_tokens[start])], dtype=np.int64))
                continue
            last = first + (end - start)
            assert old_offsets is not None and old_tokens is not None
            pieces.append(old_tokens[old_offsets[first] : old_offsets[last]])
            lengths.append(np.diff(old_offsets[first : last + 1]))
    offsets = np.zeros(len(old_rows) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    tokens = np.concatenate(pieces).astype(np.int32, copy=False) if pieces else np.zeros(0, dtype=np.int32)
    return tokens, offsets, vocab


def _default_embedder(settings: Settings) -> TextEmbedder:
    return make_embedder(
        settings.embedding_model,
        device=settings.embedding_device,
        max_tokens=settings.embedding_max_tokens,
        endpoint=EndpointOptions.from_settings(settings),
    )
