"""Ingest a repository: walk, chunk, embed what changed, and swap in a new index generation."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from cairn import __version__
from cairn.errors import EmbeddingModelMismatch, IndexCorrupted, IndexMissing
from cairn.telemetry import span, tracer
from config import Settings
from ingest.chunk_table import ChunkTable, ChunkTableBuilder
from ingest.chunking import Chunk, ChunkingOptions, chunk_file, parse_code
from ingest.embedder import Embedder, TextEmbedder, embedding_input
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
from ingest.secrets import SecretPolicy
from ingest.store import Generation, check_writable, open_generation, writer_lock
from ingest.store import write_generation as _write_generation
from ingest.symbol_graph import SymbolGraphUpdate, graph_file
from ingest.symbols import FileSymbols, extract_symbols, has_tag_query
from ingest.tokens import TOKENIZER, tokenize
from ingest.walker import SourceFile, decode_text, walk_repository

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
) -> IngestResult:
    """Bring the index in ``settings.resolved_index_dir`` up to date with ``repo``.

    Unchanged files keep their chunks, vectors and tokens; changed files are re-chunked and only
    chunks whose content changed are re-embedded; deleted files' chunks are dropped, and so are those
    of files the walk now leaves out (a file that looks like a secret, ``ingest/secrets.py``, even
    when unchanged since an index built before that check). The new index is swapped in
    atomically; on any error the previous one stays live. Traced as an ``ingest`` span with
    ``walk``, ``chunk``, ``embed`` and ``write`` under it.
    """
    with span("ingest", **{"cairn.repository": str(repo), "cairn.index": str(settings.resolved_index_dir)}) as root:
        result = _ingest(repo, settings, rebuild, progress or _Silent(), embedder_factory)
        root.set_attributes({
            "cairn.files": result.files_total, "cairn.files.changed": result.files_added + result.files_changed,
            "cairn.files.deleted": result.files_deleted, "cairn.chunks": result.chunks_total,
            "cairn.chunks.embedded": result.chunks_embedded,
        })  # fmt: skip
        return result


def _ingest(
    repo: Path,
    settings: Settings,
    rebuild: bool,
    progress: IngestProgress,
    embedder_factory: Callable[[], TextEmbedder] | None,
) -> IngestResult:
    index_dir = Path(settings.resolved_index_dir)
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    with span("walk"):
        report = walk_repository(
            repo,
            max_file_bytes=settings.max_file_bytes,
            exclude=settings.exclude,
            secrets_allow=settings.secrets_allow,
        )
    repo_root = Path(repo).expanduser().resolve()
    timings["walk"] = time.perf_counter() - clock
    result = IngestResult(index_dir=index_dir, generation=None, skipped=report.skipped)
    result.skipped_examples = report.examples
    result.secrets = report.secrets
    secrets = SecretPolicy(settings.secrets_allow)

    check_writable(index_dir)
    with writer_lock(index_dir):
        previous = None if rebuild else _previous_generation(index_dir, settings)
        options = ChunkingOptions(settings.chunk_max_chars, settings.chunk_overlap_lines)
        chunking = ChunkingInfo(options.max_chars, options.overlap_lines)
        same_chunking = previous is not None and previous.manifest.chunking == chunking
        old_files: dict[str, FileRecord] = previous.manifest.files if previous else {}
        # The symbol graph follows the same rules: start from the previous generation's, replace the rows
        # of files that changed. A previous generation without one gets it for every file (backfill).
        graph_base = graph_file(previous.path) if previous is not None else None
        graph = SymbolGraphUpdate(base=graph_base)
        backfill = previous is not None and graph_base is None

        def reuse_symbols(source: SourceFile) -> None:
            # Backfilling is best effort: a file that cannot be read or parsed now keeps its chunks and
            # simply has no symbols until it changes, rather than failing an ingest that embeds nothing.
            if backfill:
                with contextlib.suppress(Exception):
                    if (symbols := _symbols_only(source)) is not None:
                        graph.replace(symbols)

        # Like git's "racy" check: a file modified within the clock granularity of the previous scan
        # could have changed again with the same size and mtime, so its content is hashed regardless.
        racy_before = (previous.manifest.scanned_at_ns - RACY_WINDOW_NS) if previous else 0
        scanned_at_ns = time.time_ns()
        rows = _Rows(previous)
        files_meta: dict[str, FileRecord] = {}
        chunking_span = tracer().start_span("chunk")
        progress.files(len(report.files))
        for source in report.files:
            old = old_files.get(source.path)
            if (
                same_chunking
                and old
                and old["size"] == source.size
                and old["mtime_ns"] == source.mtime_ns
                and source.mtime_ns < racy_before
            ):
                files_meta[source.path] = rows.reuse_file(old, source)
                reuse_symbols(source)
                result.files_unchanged += 1
                progress.file_done()
                continue
            try:
                data = source.abs_path.read_bytes()
            except OSError:
                result.unreadable.append(source.path)
                result.skipped["unreadable"] += 1
                progress.file_done()
                continue
            if (kind := secrets.secret_content(source.path, data)) is not None:
                # Written between the walk's scan and this read: skipped like the walk would have.
                result.skipped["secret"] += 1
                if len(examples := result.skipped_examples.setdefault("secret", [])) < 3:
                    examples.append(source.path)
                result.secrets[source.path] = kind
                progress.file_done()
                continue
            digest = _file_digest(data)
            if same_chunking and old and old["sha256"] == digest:
                files_meta[source.path] = rows.reuse_file(old, source, digest=digest)
                reuse_symbols(source)
                result.files_unchanged += 1
                progress.file_done()
                continue
            try:
                chunks, symbols = _chunks_and_symbols(source.path, decode_text(data), options)
            except Exception as exc:  # a parser bug on one file must not stop the ingest, nor a watcher
                result.failed[source.path] = f"{type(exc).__name__}: {exc}"
                result.skipped["unparsable"] += 1
                result.skipped_examples.setdefault("unparsable", []).append(source.path)
                progress.file_done()
                continue
            if symbols is not None:
                graph.replace(symbols)
            first = len(rows)
            for chunk in chunks:
                rows.add(chunk)
            files_meta[source.path] = {
                "sha256": digest, "size": source.size, "mtime_ns": source.mtime_ns,
                "first_chunk": first, "chunks": len(rows) - first,
            }  # fmt: skip
            if old:
                result.files_changed += 1
            else:
                result.files_added += 1
            progress.file_done()
        timings["scan_and_chunk"] = time.perf_counter() - clock - timings["walk"]
        chunking_span.set_attribute("cairn.chunks", len(rows))
        chunking_span.end()

        result.files_total = len(files_meta)
        result.files_deleted = len(set(old_files) - set(files_meta))
        graph.remove(set(old_files) - set(files_meta))
        result.chunks_total = len(rows)
        if (
            previous is not None
            and result.files_added == result.files_changed == result.files_deleted == 0
            and previous.manifest.counts.chunks == len(rows)
            and previous.manifest.faiss_index == settings.faiss_index
            and previous.manifest.format_version == FORMAT_VERSION
            and previous.manifest.keyword.tokenizer == TOKENIZER
            and previous.manifest.repo_root == str(repo_root)  # a moved repository gets a manifest saying so
            and graph_base is not None
            and _same_stats(old_files, files_meta)
        ):
            result.chunks_reused = len(rows)
            result.timings = timings | {"total": time.perf_counter() - clock}
            return result  # nothing to do: leave the live generation as it is

        table = rows.table()
        with span("embed", **{"cairn.chunks.embedded": len(rows.fresh)}):
            vectors, tokens, offsets, vocab, embed_seconds = _assemble(
                rows, table, previous, settings, progress, embedder_factory
            )
        embedded = len(rows.fresh)
        timings["embed"] = embed_seconds
        result.chunks_embedded = embedded
        result.chunks_reused = len(rows) - embedded

        write_start = time.perf_counter()
        manifest = Manifest(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            cairn_version=__version__,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            scanned_at_ns=scanned_at_ns,
            repo_root=str(repo_root),
            embedding=EmbeddingInfo(settings.embedding_model, int(vectors.shape[1]), settings.embedding_max_tokens),
            chunking=chunking,
            faiss_index=settings.faiss_index,
            counts=Counts(files=len(files_meta), chunks=len(rows), skipped=dict(result.skipped)),
            files=files_meta,
            keyword=KeywordInfo(TOKENIZER),
        )
        with span("write"):
            result.generation = _write_generation(
                index_dir,
                manifest=manifest,
                chunks=table,
                vectors=vectors,
                tokens=tokens,
                token_offsets=offsets,
                vocab=vocab,
                faiss_kind=settings.faiss_index,
                hnsw_m=settings.hnsw_m,
                symbols=graph,
                # an index that held a file now taken for a secret keeps no copy of it on disk
                keep_previous=not (set(old_files) & set(result.secrets)),
            )
        timings["write"] = time.perf_counter() - write_start
    timings["total"] = time.perf_counter() - clock
    result.timings = timings
    return result


def _previous_generation(index_dir: Path, settings: Settings) -> Generation | None:
    try:
        previous = open_generation(index_dir)
    except IndexMissing:
        return None
    except IndexCorrupted as exc:
        raise IndexCorrupted(exc.message, "run 'cairn ingest PATH --rebuild' to build it afresh") from exc
    if previous.embedding_model != settings.embedding_model:
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


def _default_embedder(settings: Settings) -> Embedder:
    return Embedder(
        settings.embedding_model, device=settings.embedding_device, max_tokens=settings.embedding_max_tokens
    )
