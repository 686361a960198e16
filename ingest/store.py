"""The index on disk: immutable generations, swapped in atomically, read whole or not at all.

Layout of an index folder::

    CURRENT              name of the live generation (replaced atomically with os.replace)
    .lock                held (flock) by the one ingest allowed to write at a time
    gen-<ns>/            a complete generation, never modified after it is swapped in
        manifest.json    format, embedding model, chunking, per-file hashes, counts
        chunks.json      chunk metadata as columns (path, lines, language, symbol, kind), row order
        texts.bin        the chunks' UTF-8 texts back to back; text_offsets.npy says where each starts
        hashes.npy       each chunk's content hash, to reuse its vector when a file changes
        faiss.index      normalised vectors, inner product; row i is chunk i
        tokens.npy       keyword token ids of all chunks back to back
        token_offsets.npy  chunk i's tokens are tokens[offsets[i]:offsets[i+1]]
        bm25/            the bm25s index (scores matrix and vocabulary)
        symbols.db       the symbol graph: definitions, references, imports (ingest/symbol_graph.py);
                         absent in generations written before it existed (the next ingest adds it)

A *delta* generation (format 3; written by the watcher's incremental ingests of a large index, see
``ingest.pipeline``) holds only what changed since a whole generation, its ``base`` (named in its
manifest), so a save does not rewrite hundreds of megabytes::

    gen-<ns>/            a delta generation on gen-<base>
        manifest.json    like a whole one (every file, every count) plus "base": "gen-<base>"
        base_rows.npy    the base rows that stay, in row order: rows 0..len-1 of this generation
        chunks.json, texts.bin, text_offsets.npy, hashes.npy, faiss.index (flat), tokens.npy,
        token_offsets.npy    the rows added since the base (changed and new files), rows len.. on
        vocab_added.json the keyword vocabulary's words added since the base
        symbols.db       the whole symbol graph

A reader joins the two (``JoinedChunkTable``; dense search over the base's kept rows and the delta's
own vectors; ``JoinedKeywordIndex``: BM25 over the joined rows from the base's term counts and the
delta's, with the joined corpus's statistics, as a whole generation's keyword index would score them);
the next whole generation (the watcher writes one once it is idle, or an ingest when
the delta outgrows a tenth of the index) replaces both, and a base is kept while a kept generation
stands on it.

An ingest builds a generation in ``.tmp-*``, fsyncs it, renames it to ``gen-*`` and only then points
CURRENT at it; a reader resolves CURRENT once and reads that generation. A killed ingest therefore
leaves the previous generation live and untouched, and a reader never sees a half-written one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cairn.errors import IndexCorrupted, IndexLocked, IndexMissing
from ingest.bm25 import JoinedKeywordIndex, TermCounts
from ingest.chunk_table import ChunkTable, JoinedChunkTable, legacy_rows_to_table, runs
from ingest.manifest import DELTA_FORMAT_VERSION, FORMAT, FORMAT_VERSION, Manifest
from ingest.symbol_graph import SymbolGraph, SymbolGraphUpdate, graph_file
from ingest.tokens import KNOWN_TOKENIZERS

READABLE_VERSIONS = (1, 2, 3)  # format 1 (chunks.jsonl) is read, and rewritten as 2 by the next ingest; 3: a delta
CURRENT = "CURRENT"
KEEP_GENERATIONS = 2  # the live one and its predecessor, which a reader may still be opening


@dataclass(slots=True)
class Generation:
    """One complete, loaded index generation."""

    path: Path
    manifest: Manifest
    chunks: ChunkTable
    faiss_index: Any
    bm25: Any
    #: What a delta generation adds to its base (None for a whole generation).
    delta: Delta | None = None
    _tokens: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _symbols: SymbolGraph | None = field(default=None, repr=False)
    _term_counts: TermCounts | None = field(default=None, repr=False)

    @property
    def embedding_model(self) -> str:
        """Return the name of the model the vectors were made with."""
        return self.manifest.embedding.model

    def tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (token ids back to back, per-chunk offsets), loaded on first use."""
        if self._tokens is None:
            own = (np.load(self.path / "tokens.npy", mmap_mode="r"), np.load(self.path / "token_offsets.npy"))
            if self.delta is not None:
                kept_tokens, kept_offsets = take_token_rows(*self.delta.base.tokens(), self.delta.base_rows)
                own = (np.concatenate([kept_tokens, own[0]]),
                       np.concatenate([kept_offsets, own[1][1:] + kept_offsets[-1]]))  # fmt: skip
            self._tokens = own
        return self._tokens

    def symbols(self) -> SymbolGraph | None:
        """Return the symbol graph, opened on first use; None for a generation written without one."""
        if self._symbols is None:
            path = graph_file(self.path)
            root_name = Path(self.manifest.repo_root).name
            self._symbols = SymbolGraph(path, root_name) if path is not None else None
        return self._symbols

    def vocabulary(self) -> dict[str, int]:
        """Return the keyword vocabulary (token -> id) the token ids refer to."""
        vocab = dict(self.bm25.vocab_dict)
        vocab.pop("", None)
        return vocab

    def vectors(self) -> np.ndarray:
        """Return all chunk vectors as an (n, dim) float32 array, row i for chunk i.

        For a flat index it is a view into the FAISS index's memory, no copy: valid only while this
        generation is referenced (``open_generation(path).vectors()`` on one line reads freed memory).
        An IVF index's vectors are gathered from its lists (a copy).
        """
        if self.delta is not None:  # a copy: the base's kept rows, then the delta's own
            return np.concatenate([self.delta.base.vectors()[self.delta.base_rows], index_vectors(self.delta.index)])
        return index_vectors(self.faiss_index)

    def base_rows(self) -> np.ndarray:
        """Return, for each row, the row of the whole generation under it that holds it (-1: the delta's own).

        For a whole generation, every row is its own; the next delta keeps the rows that map to one.
        """
        if self.delta is None:
            return np.arange(len(self.chunks), dtype=np.int64)
        own = np.full(len(self.chunks) - len(self.delta.base_rows), -1, dtype=np.int64)
        return np.concatenate([self.delta.base_rows, own])

    def term_counts(self) -> TermCounts:
        """Return how often each token occurs in each row (a whole generation's, for the deltas on it)."""
        if self._term_counts is None:
            tokens, offsets = self.tokens()
            counts = TermCounts.of_bm25(self.bm25, np.diff(offsets)) if self.bm25 is not None else None
            self._term_counts = counts or TermCounts.of_tokens(tokens, offsets, len(self.bm25.vocab_dict))
        return self._term_counts

    def whole(self) -> Generation:
        """Return the whole generation this one is (itself) or stands on (a delta's base)."""
        return self.delta.base if self.delta is not None else self

    def ivf_centroids(self) -> np.ndarray | None:
        """Return the trained IVF quantizer's centroids (None for another kind), for the next generation."""
        import faiss

        if not isinstance(self.faiss_index, faiss.IndexIVF):
            return None
        quantizer = self.faiss_index.quantizer
        return quantizer.reconstruct_n(0, quantizer.ntotal)


@dataclass(slots=True)
class Delta:
    """What a delta generation adds to its whole base: the base rows kept, and the rows added."""

    base: Generation
    #: The base row of each of this generation's first ``len(base_rows)`` rows.
    base_rows: np.ndarray
    #: A flat inner-product index of the added rows' vectors (its row i is the generation's kept + i).
    index: Any
    _to_row: np.ndarray | None = field(default=None, repr=False)
    _kept: np.ndarray | None = field(default=None, repr=False)

    def rows_of_base(self) -> np.ndarray:
        """Return, for each base row, the generation's row that holds it now (-1: dropped)."""
        if self._to_row is None:
            to_row = np.full(self.base.faiss_index.ntotal, -1, dtype=np.int64)
            to_row[self.base_rows] = np.arange(len(self.base_rows))
            self._to_row = to_row
        return self._to_row

    def base_mask(self, mask: np.ndarray | None) -> np.ndarray:
        """Return which base rows a search may return: kept ones (that pass a row ``mask`` over the generation)."""
        if mask is None and self._kept is not None:
            return self._kept
        kept = np.zeros(self.base.faiss_index.ntotal, dtype=bool)
        kept[self.base_rows if mask is None else self.base_rows[mask[: len(self.base_rows)]]] = True
        if mask is None:
            self._kept = kept
        return kept


def take_token_rows(tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the token ids and offsets of ``rows`` (in that order), copying each run of consecutive rows at once."""
    lengths = offsets[rows + 1] - offsets[rows] if len(rows) else np.zeros(0, dtype=np.int64)
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    pieces = [tokens[offsets[rows[begin]] : offsets[rows[end - 1] + 1]] for begin, end in runs(rows)]
    joined = np.concatenate(pieces).astype(np.int32, copy=False) if pieces else np.zeros(0, dtype=np.int32)
    return joined, new_offsets


def index_vectors(index: Any) -> np.ndarray:
    """Return a FAISS index's vectors as an (n, dim) float32 array, row i for id i (a view for a flat one)."""
    import faiss

    total, dim = index.ntotal, index.d
    if total == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if isinstance(index, faiss.IndexIVF):
        return _ivf_vectors(index)
    storage = faiss.downcast_index(getattr(index, "storage", None) or index)
    if hasattr(storage, "get_xb"):
        raw = faiss.rev_swig_ptr(storage.get_xb(), total * dim)
        return np.asarray(raw, dtype=np.float32).reshape(total, dim)
    return index.reconstruct_n(0, total)


def _ivf_vectors(index: Any) -> np.ndarray:
    """Return an IVF-Flat index's vectors in id order, read from its inverted lists."""
    import faiss

    out = np.empty((index.ntotal, index.d), dtype=np.float32)
    lists = index.invlists
    for number in range(index.nlist):
        size = lists.list_size(number)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(lists.get_ids(number), size).copy()
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * index.code_size)
        out[ids] = np.frombuffer(bytes(codes), dtype=np.float32).reshape(size, index.d)
    return out


# ---------------------------------------------------------------- reading


def is_index_folder(index_dir: Path) -> bool:
    """Return True when ``index_dir`` holds a Cairn index (a CURRENT pointer)."""
    return (index_dir / CURRENT).is_file()


def _foreign_entries(index_dir: Path) -> list[str]:
    ours = {CURRENT, ".lock"}
    return sorted(
        entry.name
        for entry in index_dir.iterdir()
        if entry.name not in ours and not entry.name.startswith((".tmp-", "gen-", f"{CURRENT}."))
    )


def open_generation(index_dir: Path) -> Generation:
    """Load the live generation of an index, or raise an error that says what to do."""
    index_dir = Path(index_dir)
    if not index_dir.exists() or not is_index_folder(index_dir):
        if index_dir.is_dir() and _foreign_entries(index_dir):
            raise IndexCorrupted(
                f"{index_dir} is not a Cairn index",
                "point CAIRN_INDEX_DIR (or --index) at the folder 'cairn ingest' wrote",
            )
        raise IndexMissing(f"No index at {index_dir}", "run 'cairn ingest PATH' first")
    # A concurrent ingest may swap CURRENT and collect an old generation between our two reads;
    # resolving CURRENT again and retrying is enough, since generations are immutable.
    for attempt in range(3):
        name = (index_dir / CURRENT).read_text(encoding="utf-8").strip()
        try:
            return _load_generation(index_dir / name)
        except FileNotFoundError:
            if attempt == 2 or not (index_dir / name).exists():
                if (index_dir / CURRENT).read_text(encoding="utf-8").strip() != name:
                    continue
                raise IndexCorrupted(
                    f"Index generation {name!r} named by {index_dir / CURRENT} is missing",
                    "re-run 'cairn ingest PATH --rebuild'",
                ) from None
    raise IndexCorrupted(f"Could not open {index_dir}", "re-run 'cairn ingest PATH --rebuild'")


def _load_generation(path: Path) -> Generation:
    import bm25s

    try:
        data = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IndexCorrupted(
            f"Index manifest {path / 'manifest.json'} is not valid JSON",
            "re-run 'cairn ingest PATH --rebuild'",
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IndexCorrupted(f"{path} is not a Cairn index", "point --index at a folder 'cairn ingest' wrote")
    if data.get("format_version") not in READABLE_VERSIONS:
        raise IndexCorrupted(
            f"Index format {data.get('format_version')} is not supported (this Cairn reads {FORMAT_VERSION})",
            "re-run 'cairn ingest PATH --rebuild'",
        )
    try:
        manifest = Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexCorrupted(
            f"Index manifest {path / 'manifest.json'} is missing or has a malformed field ({exc})",
            "re-run 'cairn ingest PATH --rebuild'",
        ) from exc
    if manifest.keyword.tokenizer not in KNOWN_TOKENIZERS:
        raise IndexCorrupted(
            f"The index at {path} was built with keyword tokenizer {manifest.keyword.tokenizer!r}, which this "
            f"Cairn does not know (it knows {', '.join(sorted(KNOWN_TOKENIZERS))})",
            "upgrade Cairn to the version that built it, or re-run 'cairn ingest PATH --rebuild'",
        )
    if (manifest.base is not None) != (manifest.format_version == DELTA_FORMAT_VERSION):
        raise IndexCorrupted(f"Index manifest {path / 'manifest.json'} is inconsistent (a delta needs a base)",
                             "re-run 'cairn ingest PATH --rebuild'")  # fmt: skip
    delta = None
    try:
        if manifest.format_version == 1:
            chunks = legacy_rows_to_table([json.loads(line) for line in _read_lines(path / "chunks.jsonl")])
        else:
            chunks = ChunkTable.load(path)
        faiss_index = _read_faiss(path / "faiss.index")
        if manifest.base is not None:
            base = _load_base(path.parent / manifest.base, path.name)
            delta = Delta(base=base, base_rows=np.load(path / "base_rows.npy"), index=faiss_index)
            _check_delta(path, base, delta)
            bm25 = _joined_keywords(path, base, delta, len(chunks))
            chunks = JoinedChunkTable(base.chunks, delta.base_rows, chunks)
            faiss_index = base.faiss_index
        else:
            bm25 = bm25s.BM25.load(str(path / "bm25"), mmap=True, show_progress=False, verbosity=0)
    except FileNotFoundError:
        raise
    except IndexCorrupted:
        raise
    except Exception as exc:  # any decoding failure means the same thing: the files are damaged
        raise IndexCorrupted(
            f"Index files in {path} are damaged: {exc}", "re-run 'cairn ingest PATH --rebuild'"
        ) from exc
    expected = manifest.counts.chunks
    vectors = faiss_index.ntotal if delta is None else len(delta.base_rows) + delta.index.ntotal
    if not (len(chunks) == vectors == bm25.scores["num_docs"] == expected):
        raise IndexCorrupted(
            f"Index files in {path} disagree on the number of chunks",
            "re-run 'cairn ingest PATH --rebuild'",
        )
    generation = Generation(path=path, manifest=manifest, chunks=chunks, faiss_index=faiss_index, bm25=bm25,
                            delta=delta)  # fmt: skip
    if delta is None and manifest.format_version == FORMAT_VERSION:
        _remember_base(generation)  # the next delta stands on it: not loaded a second time
    return generation


#: The whole generation of each index folder that deltas stand on, loaded once per process (generations
#: never change): path -> generation. Opening another whole generation of the folder replaces it.
_BASES: dict[Path, Generation] = {}
_BASES_LOCK = threading.RLock()


#: Index folders whose whole generation is remembered (the least recently opened goes first).
MAX_BASES = 8


def _remember_base(generation: Generation) -> None:
    with _BASES_LOCK:
        for old in [p for p in _BASES if p.parent == generation.path.parent]:
            del _BASES[old]
        _BASES[generation.path] = generation
        while len(_BASES) > MAX_BASES:
            del _BASES[next(iter(_BASES))]


def _check_delta(path: Path, base: Generation, delta: Delta) -> None:
    """Refuse a delta whose parts do not fit its base (damaged, or a base that is not the one it was written on)."""
    rows, total = delta.base_rows, base.faiss_index.ntotal
    fits = (
        rows.ndim == 1
        and np.issubdtype(rows.dtype, np.integer)
        and (not len(rows) or (int(rows[0]) >= 0 and int(rows[-1]) < total and bool((np.diff(rows) > 0).all())))
        and delta.index.d == base.faiss_index.d
    )
    if not fits:
        raise IndexCorrupted(f"The delta generation {path} does not fit its base {base.path.name}",
                             "re-run 'cairn ingest PATH --rebuild'")  # fmt: skip


def _joined_keywords(path: Path, base: Generation, delta: Delta, own_rows: int) -> JoinedKeywordIndex:
    """Return the keyword index of a delta generation: the base's term counts and the delta's, scored as one."""
    added = json.loads((path / "vocab_added.json").read_text(encoding="utf-8"))
    vocab = base.vocabulary()
    if int(added["first_id"]) != len(vocab) or any(word in vocab for word in added["words"]):
        raise IndexCorrupted(f"The keyword vocabulary of {path} does not extend its base's",
                             "re-run 'cairn ingest PATH --rebuild'")  # fmt: skip
    vocab.update((word, int(added["first_id"]) + i) for i, word in enumerate(added["words"]))
    tokens, offsets = np.load(path / "tokens.npy"), np.load(path / "token_offsets.npy")
    if len(offsets) != own_rows + 1:
        raise IndexCorrupted(f"Index files in {path} disagree on the number of chunks",
                             "re-run 'cairn ingest PATH --rebuild'")  # fmt: skip
    own = TermCounts.of_tokens(tokens, offsets, len(vocab) + 1)
    return JoinedKeywordIndex(base.term_counts(), delta.base_rows, delta.rows_of_base(), base.tokens(), own, vocab)


def _load_base(path: Path, delta: str) -> Generation:
    """Return a delta's base (chunk table, vectors, keyword index and its term counts), loaded once."""
    with _BASES_LOCK:  # one load at a time: two threads opening the same delta share one base
        cached = _BASES.get(path)
        if cached is not None and path.is_dir():
            return cached
        if not path.is_dir():
            raise IndexCorrupted(f"The whole generation {path.name} that the delta {delta} stands on is missing",
                                 "re-run 'cairn ingest PATH --rebuild'")  # fmt: skip
        manifest = Manifest.read(path / "manifest.json")
        if manifest.base is not None or manifest.format_version != FORMAT_VERSION:
            raise IndexCorrupted(f"{path} is not a whole generation a delta can stand on",
                                 "re-run 'cairn ingest PATH --rebuild'")  # fmt: skip
        base = _load_generation(path)  # remembered by _load_generation
        base.term_counts()  # computed now, once, not by the first keyword search
        return base


def _read_faiss(path: Path) -> Any:
    import faiss

    if not path.exists():
        raise FileNotFoundError(path)
    try:  # memory-mapped: the vectors are paged in as searched, not read up front
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    except RuntimeError:
        return faiss.read_index(str(path))
    if isinstance(index, faiss.IndexIVF) and index.invlists is not None:
        # mapped IVF lists are OnDiskInvertedLists, which start 32 prefetch threads for every search
        # (faiss#5010); a query probes a few lists on one thread (see retrievers' _search_one_thread)
        lists = faiss.downcast_InvertedLists(index.invlists)
        if hasattr(lists, "prefetch_nthread"):
            lists.prefetch_nthread = 0
    return index


def _read_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index's writer lock, or raise IndexLocked if another ingest holds it."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with (index_dir / ".lock").open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLocked(
                f"Another 'cairn ingest' is writing {index_dir}",
                "wait for it to finish; the current index stays usable meanwhile",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_writable(index_dir: Path) -> None:
    """Refuse to write into a folder that holds something other than a Cairn index."""
    if index_dir.exists() and not index_dir.is_dir():
        raise IndexCorrupted(f"{index_dir} is a file, not an index folder", "choose another --index path")
    if index_dir.is_dir() and not is_index_folder(index_dir) and (foreign := _foreign_entries(index_dir)):
        raise IndexCorrupted(
            f"{index_dir} already holds files that are not a Cairn index ({', '.join(foreign[:3])})",
            "choose an empty folder for the index; Cairn will not overwrite it",
        )


def write_generation(
    index_dir: Path,
    *,
    manifest: Manifest,
    chunks: ChunkTable,
    vectors: np.ndarray,
    tokens: np.ndarray,
    token_offsets: np.ndarray,
    vocab: dict[str, int],
    faiss_kind: str = "flat",
    hnsw_m: int = 32,
    ivf_centroids: np.ndarray | None = None,
    symbols: SymbolGraphUpdate | None = None,
    keep_previous: bool = True,
) -> Path:
    """Write a complete generation beside the live one and swap it in; return its folder.

    ``faiss_kind`` is the manifest's resolved kind (``flat``, ``hnsw`` or ``ivf``; see ``index_kind``).
    An IVF index reuses ``ivf_centroids`` (the previous generation's) while the corpus stays within 4× of
    the size they suit, so an incremental ingest does not train again (``ivf_index``).
    ``keep_previous=False`` deletes the previous generation at once instead of keeping it for readers
    still opening it (they retry): for a generation that drops files which must not stay on disk.
    """
    import faiss

    from ingest.bm25 import build_bm25

    def fill(tmp: Path) -> None:
        chunks.save(tmp)
        dim = manifest.embedding.dimension
        index: faiss.Index
        if faiss_kind == "ivf":
            index = ivf_index(vectors, dim, ivf_centroids)
        elif faiss_kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
        else:
            index = faiss.IndexFlatIP(dim)
        _add(index, vectors)
        faiss.write_index(index, str(tmp / "faiss.index"))
        del index  # freed before BM25 is built: at a million chunks it holds 1.5 GB of vectors
        np.save(tmp / "tokens.npy", tokens.astype(np.int32, copy=False))
        np.save(tmp / "token_offsets.npy", token_offsets.astype(np.int64, copy=False))
        build_bm25(tokens, token_offsets, vocab).save(str(tmp / "bm25"), show_progress=False)
        if symbols is not None:
            symbols.write(tmp)
        manifest.write(tmp / "manifest.json")

    return _publish(index_dir, fill, keep_previous=keep_previous)


def write_delta(
    index_dir: Path,
    *,
    manifest: Manifest,
    base: Generation,
    base_rows: np.ndarray,
    chunks: ChunkTable,
    vectors: np.ndarray,
    tokens: np.ndarray,
    token_offsets: np.ndarray,
    vocab_added: tuple[int, list[str]],
    symbols: SymbolGraphUpdate | None = None,
) -> Path:
    """Write a delta generation on ``base`` (a whole one) and swap it in; return its folder.

    ``base_rows`` are the base rows kept, in row order; ``chunks``, ``vectors`` and ``tokens`` are the
    rows added after them; ``vocab_added`` the first id and the words the keyword vocabulary gained
    since the base (the keyword index is joined at load: ``JoinedKeywordIndex``). ``manifest``
    describes the joined generation (its ``base`` and format are set here).
    """
    import dataclasses

    import faiss

    assert base.delta is None, "a delta stands on a whole generation"
    manifest = dataclasses.replace(manifest, base=base.path.name, format_version=DELTA_FORMAT_VERSION)

    def fill(tmp: Path) -> None:
        chunks.save(tmp)
        np.save(tmp / "base_rows.npy", base_rows.astype(np.int64, copy=False))
        index = faiss.IndexFlatIP(manifest.embedding.dimension)
        _add(index, vectors)
        faiss.write_index(index, str(tmp / "faiss.index"))
        np.save(tmp / "tokens.npy", tokens.astype(np.int32, copy=False))
        np.save(tmp / "token_offsets.npy", token_offsets.astype(np.int64, copy=False))
        first_id, words = vocab_added
        (tmp / "vocab_added.json").write_text(json.dumps({"first_id": first_id, "words": words}), encoding="utf-8")
        if symbols is not None:
            symbols.write(tmp)
        manifest.write(tmp / "manifest.json")

    return _publish(index_dir, fill)


def _add(index: Any, vectors: np.ndarray) -> None:
    for start in range(0, len(vectors), ADD_BATCH):  # a bounded copy at a time of a memory-mapped array
        index.add(np.ascontiguousarray(vectors[start : start + ADD_BATCH], dtype=np.float32))


_publications = 0


def publications() -> int:
    """Return how many generations this process has published (readers re-read a pointer when it changes)."""
    return _publications


def _publish(index_dir: Path, fill: Callable[[Path], None], *, keep_previous: bool = True) -> Path:
    """Build a generation with ``fill`` in a temporary folder, fsync it, name it ``gen-*`` and swap it in."""
    tmp = index_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        _fsync_tree(tmp)
        final = index_dir / f"gen-{time.time_ns()}"
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_current(index_dir, final.name)
    global _publications
    _publications += 1
    _collect_garbage(index_dir, keep=final.name, keep_previous=keep_previous)
    return final


#: Vectors handed to FAISS at once while writing (64 k × 384 float32 = 96 MB).
ADD_BATCH = 65_536
#: ``CAIRN_FAISS_INDEX=auto`` keeps an exact flat index below this many chunks and builds IVF from it on:
#: flat's search time grows with the corpus (hybrid p95 with the query embedded: 35.9 ms at 100 k chunks,
#: 65.4 ms at 200 k, 424 ms at 1 M on 2 cores, against a 50 ms goal), IVF's with the lists probed
#: (docs/benchmarks.md, "A million chunks"); the switch between the two measured sizes is interpolated.
AUTO_IVF_FROM = 120_000
#: Training points per IVF list: k-means on a sample, not on every vector.
IVF_TRAIN_PER_LIST = 40


def index_kind(setting: str, chunks: int) -> str:
    """Return the FAISS index kind a generation of ``chunks`` rows gets under ``CAIRN_FAISS_INDEX``."""
    if setting == "auto":
        return "ivf" if chunks >= AUTO_IVF_FROM else "flat"
    return setting


def ivf_lists(chunks: int) -> int:
    """Return the IVF list count for a corpus: the power of two nearest 4·√n, between 16 and 65,536 (and ≤ n)."""
    target = 4 * max(chunks, 1) ** 0.5
    return int(max(1, min(chunks, 65_536, max(16, 2 ** round(np.log2(target))))))


#: Vectors a query's probed lists should hold between them by default (about 5 ms of scanning on 2 cores).
IVF_SCAN = 32_768


def ivf_probes(lists: int, vectors: int) -> int:
    """Return the lists a query probes by default: enough to scan about ``IVF_SCAN`` vectors, at least one
    in 32 and 16 (measured: recall@10 0.961 at 1 M, 4,096 lists; a smaller corpus has fuller-relative
    lists, and one in 32 of 2,048 gave 0.931 at 200 k, so the scan, not the share, is kept)."""
    per_list = max(1.0, vectors / max(lists, 1))
    return min(lists, max(16, lists // 32, int(np.ceil(IVF_SCAN / per_list))))


def ivf_index(vectors: np.ndarray, dim: int, centroids: np.ndarray | None = None) -> Any:
    """Return an empty IVF-Flat inner-product index for ``vectors``: on ``centroids`` while their count is
    within a factor of two of the 4·√n this size suits (the corpus within 4× of the size they suit: an
    incremental ingest), else trained on a sample."""
    import faiss

    lists = ivf_lists(len(vectors))
    suits = 4 * len(vectors) ** 0.5  # the list count this size suits, before rounding
    if (
        centroids is not None
        and centroids.shape[1:] == (dim,)
        and len(centroids) / 2 <= suits <= 2 * len(centroids)
        and len(centroids) <= len(vectors)
    ):
        lists = len(centroids)  # lists at most 4× fuller or emptier than this size's own: kept, not trained again
    else:
        centroids = None
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.own_fields = True  # the index frees its quantizer
    quantizer.this.disown()  # type: ignore[attr-defined]
    if centroids is None and not len(vectors):
        centroids = np.zeros((lists, dim), dtype=np.float32)  # nothing to train on, nothing to find
    if centroids is not None and centroids.shape == (lists, dim):
        quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        index.is_trained = True
        return index
    sample_size = min(len(vectors), IVF_TRAIN_PER_LIST * lists)
    rows = np.sort(np.random.default_rng(0).choice(len(vectors), sample_size, replace=False))
    index.cp.niter = 10  # the lists need to be good, not converged: 10 rounds of k-means
    index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    return index


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_current(index_dir: Path, name: str) -> None:
    tmp = index_dir / f"{CURRENT}.{uuid.uuid4().hex}"
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, index_dir / CURRENT)
    _fsync_dir(index_dir)


def _collect_garbage(index_dir: Path, keep: str, keep_previous: bool = True) -> None:
    """Remove generations older than the previous one (or than ``keep``) that no kept delta stands on, and
    leftovers of killed ingests."""
    generations = sorted((p for p in index_dir.glob("gen-*") if p.is_dir()), key=lambda p: int(p.name.split("-", 1)[1]))
    survivors = {keep, *(p.name for p in generations[-KEEP_GENERATIONS:])} if keep_previous else {keep}
    for name in list(survivors):  # a kept delta keeps its base
        try:
            if (base := Manifest.read(index_dir / name / "manifest.json").base) is not None:
                survivors.add(base)
        except (OSError, ValueError, KeyError, TypeError):
            return  # which base it needs is unknown: nothing is deleted this time
    for path in generations:
        if path.name not in survivors:
            shutil.rmtree(path, ignore_errors=True)
    for leftover in [*index_dir.glob(".tmp-*"), *index_dir.glob(f"{CURRENT}.*")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
