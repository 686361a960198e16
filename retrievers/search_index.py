"""A loaded index that answers dense, keyword and hybrid searches, with path and language filters."""

from __future__ import annotations

import hashlib
import posixpath
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pathspec

from cairn.errors import EmbeddingModelMismatch, InvalidPattern
from cairn.telemetry import span
from config import Settings
from ingest.chunking import Chunk
from ingest.embedder import Embedder, TextEmbedder, make_embedder
from ingest.embedding_endpoints import EndpointEmbedder, EndpointOptions
from ingest.embedding_endpoints import identity as embedding_identity
from ingest.store import CURRENT, Generation, ivf_probes, open_generation, publications
from ingest.symbol_graph import DefinitionSite
from ingest.tokens import identifiers_in, tokenizer

#: A name defined in more places than this says little about which chunk a query means: not ranked.
MAX_SYMBOL_SITES = 8
#: How much deeper than k a single-method search looks, so copies collapsed still leave k results.
COPY_SLACK = 20
#: A folder or file name shared by more than this share of the files (and MIN_PATH_FILES) names no place.
MAX_PATH_SHARE = 0.02
MIN_PATH_FILES = 3
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.py\b)?")
#: Where a question marks a word as a place: "in BERT", "Llama's attention", "the whisper model".
_PLACE = re.compile(
    r"\b(?:in|inside|under|within)\s+(?:the\s+)?(?P<word>[A-Za-z_][A-Za-z0-9_]*)\b(?!['’]s)"
    r"|\b(?P<owner>[A-Za-z_][A-Za-z0-9_]*)['’]s\b"
    r"|\b(?P<kind_of>[A-Za-z_][A-Za-z0-9_]*)\s+(?:module|package|folder|directory|model|implementation)s?\b",
    re.IGNORECASE,
)
#: Words that name folders in many repositories without saying where to look.
_NOT_PATH_WORDS = frozenset(
    "the and for how what does are with from this that when where which into can should use used using "
    "code file files function class method src lib test tests docs".split()
)


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Restrict a search to paths matching any glob and to any of the languages; empty means all."""

    path_globs: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()

    @classmethod
    def of(cls, path_glob: str | Iterable[str] | None = None, language: str | Iterable[str] | None = None):
        """Build a filter from one value or many for each field."""

        def as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
            if value is None:
                return ()
            return (value,) if isinstance(value, str) else tuple(value)

        globs = as_tuple(path_glob)
        for glob in globs:  # refused here, with the pattern named, not deep inside a search
            try:
                pathspec.PathSpec.from_lines("gitwildmatch", [glob])
            except (ValueError, TypeError) as exc:
                raise InvalidPattern(f"The path filter {glob!r} is not a valid gitignore-style pattern ({exc})",
                                     "e.g. 'src/', '*.py' or 'tests/**/test_*.py'") from exc  # fmt: skip
        return cls(globs, tuple(v.lower() for v in as_tuple(language)))

    def __bool__(self) -> bool:
        return bool(self.path_globs or self.languages)


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: a chunk, its score under the method that found it, and its rank (1-based).

    ``copies`` are the other chunks with exactly the same text that the search met among its
    candidates (``collapse_copies``): the text is listed once, here.
    """

    chunk: Chunk
    row: int
    score: float
    rank: int
    copies: tuple[Chunk, ...] = ()


class SearchIndex:
    """An index generation loaded once, plus the embedding model its vectors were made with."""

    def __init__(
        self,
        generation: Generation,
        embedder: TextEmbedder | Callable[[], TextEmbedder],
        *,
        ef_search: int = 128,
        nprobe: int = 0,
        rank_paths: bool = True,
        collapse: bool = True,
    ) -> None:
        self.generation = generation
        self._embedder = embedder
        self.chunks = generation.chunks
        self._faiss = generation.faiss_index
        self._bm25 = generation.bm25
        # Queries are tokenized the way the index's chunks were (an older index keeps its tokenizer).
        self._tokenize = tokenizer(generation.manifest.keyword.tokenizer)
        self._ef_search = ef_search
        self._nprobe = nprobe
        self._languages = self.chunks.language_column()
        self._masks: OrderedDict[SearchFilter, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._path_ids: dict[str, int] | None = None
        self._path_terms: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None
        self.rank_paths = rank_paths
        #: Exact copies of a text are listed once (``collapse_copies``); off only to measure what that does.
        self.collapse = collapse
        self._text_keys: dict[int, bytes] = {}

    @property
    def embedder(self) -> TextEmbedder:
        """Return the embedding model, loading it on first use (keyword search never needs it)."""
        if not isinstance(self._embedder, TextEmbedder):
            self._embedder = self._embedder()
        return self._embedder

    @property
    def repo_root(self) -> Path:
        """Return the repository folder the index was built from."""
        return Path(self.generation.manifest.repo_root)

    def __len__(self) -> int:
        return len(self.chunks)

    # ------------------------------------------------------------ filters

    def mask(self, flt: SearchFilter) -> np.ndarray | None:
        """Return a boolean row mask for a filter (cached), or None when the filter is empty."""
        if not flt:
            return None
        with self._lock:
            cached = self._masks.get(flt)
            if cached is not None:
                self._masks.move_to_end(flt)
                return cached
        mask = np.ones(len(self.chunks), dtype=bool)
        if flt.path_globs:
            spec = pathspec.PathSpec.from_lines("gitwildmatch", flt.path_globs)
            paths = self.chunks.paths  # each file once; chunks point at them by id
            matching = np.fromiter((spec.match_file(p) for p in paths), dtype=bool, count=len(paths))
            mask &= matching[self.chunks.path_ids]
        if flt.languages:
            mask &= np.isin(self._languages, list(flt.languages))
        with self._lock:
            self._masks[flt] = mask
            if len(self._masks) > 64:
                self._masks.popitem(last=False)
        return mask

    # ------------------------------------------------------------ searches

    def dense(self, query: str, k: int, flt: SearchFilter = SearchFilter()) -> list[Hit]:
        """Return the k chunks whose embeddings are nearest the query's."""
        return self.dense_by_vector(self.embedder.embed_query(query), k, flt)

    def dense_by_vector(self, vector: np.ndarray, k: int, flt: SearchFilter = SearchFilter()) -> list[Hit]:
        """Return the k chunks nearest an already-embedded query vector, each distinct text once."""
        with span("search dense", **{"cairn.k": k, "cairn.filtered": bool(flt)}) as current:
            hits = self._distinct(lambda wide: self._dense(vector, wide, flt), k)
            current.set_attribute("cairn.documents.count", len(hits))
            return hits

    def _distinct(self, search: Callable[[int], list[Hit]], k: int) -> list[Hit]:
        """Return the first k hits of ``search(depth)`` with copies collapsed, searching deeper while copies
        leave fewer than k (a function copied into dozens of model folders fills a shallow ranking)."""
        if not self.collapse:
            return search(k)
        wide = max(k, min(2 * k, k + COPY_SLACK))
        while True:
            hits = search(wide)
            distinct = collapse_copies([hits], self.text_key)[0]
            if len(distinct) >= k or len(hits) < wide or wide >= 8 * k + COPY_SLACK:
                return distinct[:k]
            wide *= 2

    def text_key(self, row: int) -> bytes:
        """Return a digest of a chunk's text: equal for exact copies, wherever they live.

        Kept once computed, since the same chunks come up query after query: about 100 bytes for each
        chunk a search has met, at most one entry per chunk of the index.
        """
        key = self._text_keys.get(row)
        if key is None:
            text = self.chunks.text(row).encode("utf-8", "surrogatepass")
            key = self._text_keys[row] = hashlib.blake2b(text, digest_size=8).digest()
        return key

    def _dense(self, vector: np.ndarray, k: int, flt: SearchFilter, mask: np.ndarray | None = None) -> list[Hit]:
        if not len(self.chunks) or k <= 0:
            return []
        if vector.shape[-1] != self._faiss.d:  # an endpoint now serving another model: refused, not a FAISS crash
            built = self.generation.manifest.embedding
            raise EmbeddingModelMismatch(
                f"The embedding model makes {vector.shape[-1]}-dimensional vectors; the index holds "
                f"{self._faiss.d}-dimensional ones from {built.model!r}",
                "point CAIRN_EMBEDDING_MODEL at the model the index was built with, or re-ingest with --rebuild",
            )
        if mask is None:
            mask = self.mask(flt)
        if mask is not None and not mask.any():
            return []
        delta = self.generation.delta
        if delta is None:
            scores, rows = self._search(self._faiss, vector, min(k, len(self.chunks)), mask)
        else:  # the base's kept rows and the delta's own, merged by score
            base_scores, base_ids = self._search(self._faiss, vector, min(k, int(self._faiss.ntotal)),
                                                 delta.base_mask(mask))  # fmt: skip
            kept = len(delta.base_rows)
            own = None if mask is None else mask[kept:]
            own_scores, own_ids = self._search(delta.index, vector, min(k, int(delta.index.ntotal)), own)
            base_rows = np.where(base_ids >= 0, delta.rows_of_base()[np.maximum(base_ids, 0)], -1)
            scores = np.concatenate([base_scores, own_scores])
            rows = np.concatenate([base_rows, np.where(own_ids >= 0, own_ids + kept, -1)])
            best = np.argsort(-np.where(rows >= 0, scores, -np.inf), kind="stable")[:k]
            scores, rows = scores[best], rows[best]
        return [
            Hit(self.chunks[row], int(row), float(score), rank)
            for rank, (row, score) in enumerate(zip(rows, scores, strict=True), start=1)
            if row >= 0
        ]

    def _search(self, index: Any, vector: np.ndarray, k: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Return one FAISS index's top-k scores and ids for a vector, only among ``mask``'s ids if given."""
        import faiss

        if k <= 0 or (mask is not None and not mask.any()):
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        options: dict[str, Any] = {}
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")
            options["sel"] = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        params = None
        if isinstance(index, faiss.IndexHNSWFlat):
            # faiss's bundled stubs (1.15) leave out SearchParametersHNSW, which every faiss since 1.7.3 has
            params = faiss.SearchParametersHNSW(efSearch=max(self._ef_search, k), **options)  # type: ignore[attr-defined]
        elif isinstance(index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(nprobe=self._probes(mask), **options)  # type: ignore[call-arg]
        elif options:
            params = faiss.SearchParameters(**options)
        scores, ids = _search_one_thread(index, vector.reshape(1, -1), k, params)
        return scores[0], ids[0]

    def _probes(self, mask: np.ndarray | None) -> int:
        """Return the IVF lists to probe: the setting (or ``ivf_probes``), widened by a filter's selectivity.

        ``ivf_probes`` picks enough lists to scan about 32 k vectors. A filter that keeps a tenth of the
        chunks keeps about a tenth of each list, so ten times the lists are probed to find as many
        candidates (all of them, for a narrow filter).
        """
        lists = int(self._faiss.nlist)
        probes = self._nprobe or ivf_probes(lists, int(self._faiss.ntotal))
        if mask is not None:
            kept = max(float(mask.mean()), 1.0 / len(mask))
            probes = int(np.ceil(probes / kept))
        return max(1, min(lists, probes))

    def keyword(self, query: str, k: int, flt: SearchFilter = SearchFilter()) -> list[Hit]:
        """Return the k chunks with the highest BM25 score for the query's tokens, each distinct text once."""
        with span("search keyword", **{"cairn.k": k, "cairn.filtered": bool(flt)}) as current:
            hits = self._distinct(lambda wide: self._keyword(query, wide, flt), k)
            current.set_attribute("cairn.documents.count", len(hits))
            return hits

    def _keyword(self, query: str, k: int, flt: SearchFilter, mask: np.ndarray | None = None) -> list[Hit]:
        tokens = self._tokenize(query)
        if not len(self.chunks) or k <= 0 or not tokens:  # no word in the query (e.g. "???"): nothing matches
            return []
        scores = self._bm25.get_scores(tokens)
        if mask is None:
            mask = self.mask(flt)
        if mask is not None:
            scores = np.where(mask, scores, 0.0)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [
            Hit(self.chunks[row], int(row), float(scores[row]), rank)
            for rank, row in enumerate(top, start=1)
            if scores[row] > 0
        ]

    def symbols(self, query: str, k: int, flt: SearchFilter = SearchFilter()) -> list[Hit]:
        """Return the chunks that define the identifiers a query names (``LRUCache.put``, ``encode_record``).

        Read from the symbol graph, in the order the query names them; empty when the query names no
        identifier, the index has no graph, or a name is defined in more than MAX_SYMBOL_SITES places.
        """
        names = identifiers_in(query)
        graph = self.generation.symbols() if names else None
        if graph is None:
            return []
        with span("search symbols", **{"cairn.k": k, "cairn.filtered": bool(flt)}) as current:
            mask = self.mask(flt)
            rows: list[int] = []
            for name in names:
                sites = graph.definitions(name, limit=MAX_SYMBOL_SITES + 1)
                if len(sites) > MAX_SYMBOL_SITES:
                    continue
                for site in sites:
                    row = self.definition_row(site)
                    if row is not None and row not in rows and (mask is None or mask[row]):
                        rows.append(row)
            hits = [Hit(self.chunks[row], row, 1.0, rank) for rank, row in enumerate(rows[:k], start=1)]
            current.set_attribute("cairn.documents.count", len(hits))
            return hits

    def definition_row(self, site: DefinitionSite) -> int | None:
        """Return the chunk that holds a definition's first line (the one named after it, if several)."""
        return self.row_at(site.path, site.start_line, symbol=site.qualified)

    def row_at(self, path: str, line: int, *, symbol: str | None = None) -> int | None:
        """Return the chunk of ``path`` that holds ``line``: the one named ``symbol`` if several, else the innermost."""
        if self._path_ids is None:
            self._path_ids = {p: i for i, p in enumerate(self.chunks.paths)}
        path_id = self._path_ids.get(path)
        if path_id is None:
            return None
        table = self.chunks
        rows = np.flatnonzero((table.path_ids == path_id) & (table.starts <= line) & (table.ends >= line))
        if not len(rows):
            return None
        named = [int(row) for row in rows if symbol is not None and table.symbols[row] == symbol]
        if named:
            return named[0]
        return int(rows[np.argmin(table.ends[rows] - table.starts[rows])])

    def paths_named(self, query: str) -> tuple[list[str], np.ndarray | None]:
        """Return the folders and files a query names ("in BERT", "Llama's attention") and their rows.

        A plain word names a folder of the index (``models/bert/`` for "BERT") only where the question
        marks it as a place: "in X" (inside, under, within), "X's", or "X" followed by module, package,
        folder, directory, model or implementation. Without a mark the word is taken as a concept
        ("how does generation stop", "rope scaling for Llama 3": measured, ranking those by path hurt).
        A file is named by its stem written as code (``trainer.py``, ``data_collator``, whatever the
        wording). Leading underscores are ignored (``_config.py``). Only selective names count: at most
        MAX_PATH_SHARE of the files (or MIN_PATH_FILES), and never a folder holding every file.
        """
        candidates: list[tuple[str, bool]] = []
        for match in _PLACE.finditer(query):
            word = match.group("word") or match.group("owner") or match.group("kind_of")
            if word:
                candidates.append((word.lower().strip("_"), False))
        for word in _WORD.findall(query):
            if "_" in word.strip("_") or word.endswith(".py"):
                candidates.append((word.lower().removesuffix(".py").strip("_"), True))
        folders, files = self._path_vocabulary()
        names, selected = [], None
        for term, as_file in dict.fromkeys(candidates):
            if term in _NOT_PATH_WORDS or len(term) < 2:
                continue
            found = folders.get(term)
            if as_file and term in files:
                found = files[term] if found is None else found | files[term]
            if found is None:
                continue
            names.append(term)
            selected = found if selected is None else selected | found
        if selected is None:
            return [], None
        return names, selected[self.chunks.path_ids]

    def _path_vocabulary(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Map each selective folder name, and each file stem, to the files it names (masks over paths)."""
        if self._path_terms is None:
            paths = self.chunks.paths
            limit = max(MIN_PATH_FILES, int(MAX_PATH_SHARE * len(paths)))
            vocabularies: list[dict[str, np.ndarray]] = []
            for of_path in (lambda p: p.split("/")[:-1], lambda p: [posixpath.splitext(p.rsplit("/", 1)[-1])[0]]):
                where: dict[str, list[int]] = {}
                for i, path in enumerate(paths):
                    for term in {name.lower().strip("_") for name in of_path(path)}:
                        where.setdefault(term, []).append(i)
                vocabulary = {}
                for term, ids in where.items():
                    if term and len(ids) <= limit and len(ids) < len(paths):
                        mask = np.zeros(len(paths), dtype=bool)
                        mask[ids] = True
                        vocabulary[term] = mask
                vocabularies.append(vocabulary)
            self._path_terms = (vocabularies[0], vocabularies[1])
        return self._path_terms

    def by_path(
        self, query: str, vector: np.ndarray, k: int, flt: SearchFilter = SearchFilter(), *, rrf_k: int = 60
    ) -> list[Hit]:
        """Return the best chunks under the paths the query names (``paths_named``), dense and keyword fused.

        Empty when the query names no path. Joined to hybrid's fusion as one more ranking, it lifts the
        chunks of the folder or file a question names ("Llama's attention") over copies elsewhere.
        """
        names, named = self.paths_named(query)
        if named is None:
            return []
        with span("search paths", **{"cairn.k": k, "cairn.paths": ", ".join(names)}) as current:
            user = self.mask(flt)
            mask = named if user is None else named & user
            if not mask.any():
                return []
            hits = fuse([self._dense(vector, k, flt, mask), self._keyword(query, k, flt, mask)], k, rrf_k=rrf_k)
            current.set_attribute("cairn.documents.count", len(hits))
            return hits

    def hybrid(
        self,
        query: str,
        k: int,
        flt: SearchFilter = SearchFilter(),
        *,
        depth: int = 50,
        rrf_k: int = 60,
    ) -> list[Hit]:
        """Fuse dense, keyword, symbol and path rankings by reciprocal rank fusion and return the top k.

        The symbol ranking (``symbols``) joins only when the query names identifiers the symbol graph
        defines, so a chunk that defines a named symbol outranks chunks that only mention it; the path
        ranking (``by_path``) only when it names a folder or file, so "in BERT" prefers ``models/bert/``.
        """
        return self.hybrid_by_vector(query, self.embedder.embed_query(query), k, flt, depth=depth, rrf_k=rrf_k)

    def hybrid_by_vector(
        self,
        query: str,
        vector: np.ndarray,
        k: int,
        flt: SearchFilter = SearchFilter(),
        *,
        depth: int = 50,
        rrf_k: int = 60,
    ) -> list[Hit]:
        """Hybrid search for a query whose vector is already computed."""
        wide = max(depth, k)
        rankings = [self.dense_by_vector(vector, wide, flt), self.keyword(query, wide, flt)]
        named: list[list[Hit]] = []  # the rankings of what the query names: their copies stand for a text
        if symbols := self.symbols(query, wide, flt):
            named.append(symbols)
        if self.rank_paths and (by_path := self.by_path(query, vector, wide, flt, rrf_k=rrf_k)):
            named.append(by_path)
        rankings += named
        with span("search fusion", **{"cairn.k": k, "cairn.rrf_k": rrf_k}) as current:
            # One row stands for each text in every ranking, so RRF adds up what each method says of it.
            if self.collapse:
                rankings = collapse_copies(rankings, self.text_key, prefer=named[::-1])
            hits = fuse(rankings, k, rrf_k=rrf_k)
            current.set_attribute("cairn.documents.count", len(hits))
            return hits

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Embed several queries in one batch (one forward pass instead of one per query)."""
        with span("embed queries", **{"cairn.queries.count": len(queries)}):
            embedder = self.embedder
            if isinstance(embedder, Embedder | EndpointEmbedder):
                return embedder.embed_queries(list(queries))
            return embedder.embed_documents(list(queries), batch_size=max(1, len(queries)))


def _search_one_thread(index: Any, queries: np.ndarray, k: int, params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Search with one OpenMP thread.

    A single query has nothing to parallelise, and FAISS's threads would fight the threads torch
    leaves spinning after embedding the query: measured on 2 cores, embed + search took 32 ms with
    FAISS's default threads and 16 ms with one. The setting is per calling thread and is restored.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k, params=params)
    finally:
        faiss.omp_set_num_threads(before)


def fuse(rankings: Sequence[Sequence[Hit]], k: int, *, rrf_k: int = 60) -> list[Hit]:
    """Combine rankings by reciprocal rank fusion: each list adds 1/(rrf_k + rank) to a chunk's score."""
    fused: dict[int, float] = {}
    hits: dict[int, Hit] = {}
    for ranking in rankings:
        for hit in ranking:
            fused[hit.row] = fused.get(hit.row, 0.0) + 1.0 / (rrf_k + hit.rank)
            if len(hit.copies) >= len(hits.get(hit.row, hit).copies):
                hits[hit.row] = hit
    best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [Hit(hits[row].chunk, row, score, rank, hits[row].copies) for rank, (row, score) in enumerate(best, start=1)]


def collapse_copies(
    rankings: Sequence[Sequence[Hit]], key: Callable[[int], bytes], *, prefer: Sequence[Sequence[Hit]] = ()
) -> list[list[Hit]]:
    """Return the rankings with exact copies collapsed: one row stands for each distinct text.

    Large repositories hold the same code in many places (transformers copies a function into dozens
    of model folders, and each ``modular_*.py`` repeats its ``modeling_*.py``). Left alone, the copies
    take a ranking's places one after another and push different code down; in a fusion each method
    may pick another copy, so no copy gets the credit both methods give the text. The copy met first
    (the ``prefer`` rankings, then the rankings, read in order, each from its top) stands for the text
    in every ranking, at the rank of the text's best copy there, ranks renumbered; it carries the other
    copies (``Hit.copies``). Hybrid prefers the path ranking's copies, then the symbol ranking's, so
    "in BERT" keeps the copy under ``models/bert/``.
    """
    keys: dict[int, bytes] = {}
    standing: dict[bytes, Hit] = {}
    others: dict[bytes, dict[str, Chunk]] = {}
    for ranking in (*prefer, *rankings):
        for hit in ranking:
            text = keys[hit.row] = keys.get(hit.row) or key(hit.row)
            first = standing.setdefault(text, hit)
            copies = others.setdefault(text, {})
            for chunk in (hit.chunk, *hit.copies):
                if chunk.citation != first.chunk.citation:
                    copies.setdefault(chunk.citation, chunk)
    collapsed: list[list[Hit]] = []
    for ranking in rankings:
        seen: set[bytes] = set()
        distinct: list[Hit] = []
        for hit in ranking:
            text = keys[hit.row]
            if text in seen:
                continue
            seen.add(text)
            first = standing[text]
            distinct.append(Hit(first.chunk, first.row, hit.score, len(distinct) + 1, tuple(others[text].values())))
        collapsed.append(distinct)
    return collapsed


# ---------------------------------------------------------------- loading, once per process


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """Which index to open, how to embed queries for it, and the memory budget of loaded indexes."""

    index_dir: Path
    embedding_model: str
    embedding_device: str = "cpu"
    ef_search: int = 128
    nprobe: int = 0
    memory_budget_bytes: int = Settings.model_fields["index_memory_mb"].default * 1024 * 1024
    embedding_backend: str = "auto"
    onnx_dir: Path | None = None
    """Where the ONNX export goes when the model's own folder is read-only."""
    query_threads: int = 1
    endpoint: EndpointOptions | None = None
    """How to reach an embedding endpoint, when the model is one."""

    @classmethod
    def from_settings(cls, settings: Settings, index_dir: Path | None = None) -> IndexSpec:
        """Return the spec of an index folder (default: the settings' CAIRN_INDEX_DIR) under the settings."""
        return cls(
            Path(index_dir if index_dir is not None else settings.resolved_index_dir),
            settings.embedding_model,
            settings.embedding_device,
            ef_search=settings.hnsw_ef_search,
            nprobe=settings.ivf_nprobe,
            memory_budget_bytes=settings.index_memory_mb * 1024 * 1024,
            embedding_backend=settings.embedding_backend,
            onnx_dir=settings.data_dir / "onnx",
            query_threads=settings.embedding_query_threads,
            endpoint=EndpointOptions.from_settings(settings),
        )


@lru_cache(maxsize=4)
def _embedder(
    model: str,
    device: str,
    max_tokens: int,
    backend: str = "auto",
    onnx_dir: Path | None = None,
    threads: int = 1,
    endpoint: EndpointOptions | None = None,
) -> TextEmbedder:
    return make_embedder(
        model,
        device=device,
        max_tokens=max_tokens,
        backend=backend,
        onnx_fallback_dir=onnx_dir,
        query_threads=threads,
        endpoint=endpoint,
    )


_embedder_lock = threading.Lock()


def cached_embedder(settings: Settings) -> TextEmbedder:
    """Return the settings' embedding model as loaded once per process, shared with query embedding."""
    with _embedder_lock:  # several watchers warming up at once load it once
        return _embedder(
            settings.embedding_model,
            settings.embedding_device,
            settings.embedding_max_tokens,
            settings.embedding_backend,
            settings.data_dir / "onnx",
            settings.embedding_query_threads,
            EndpointOptions.from_settings(settings),
        )


@dataclass(slots=True)
class _Loaded:
    generation: str
    index: SearchIndex
    size_bytes: int
    #: When the pointer was last read (monotonic seconds) and the process's publication count then.
    checked_at: float = 0.0
    publications: int = -1


#: How long a loaded index is served without reading its ``CURRENT`` pointer again. A generation this
#: process publishes is seen at once (``publications``); one another process publishes, within this.
#: Measured with the path resolved once: 64.2 → 77.0 requests/s in ``make bench-profile`` when the
#: pointer stopped being read (and the path resolved) on every search.
POINTER_TTL_S = 0.2

#: Loaded indexes, least recently used first; unloaded beyond the memory budget (``_evict``).
_open_indexes: OrderedDict[tuple[Path, str, int, int], _Loaded] = OrderedDict()
_open_lock = threading.Lock()


def load_search_index(source: Settings | IndexSpec) -> SearchIndex:
    """Return the search index of a spec (or of the settings' index folder), loading it only when it changed.

    A loaded index is kept until the indexes loaded after it exceed the spec's memory budget (the
    least recently used go first; the one asked for always stays); a new generation is picked up on
    the next call when this process published it, within ``POINTER_TTL_S`` when another did, and never
    half-way through a search.
    """
    spec = IndexSpec.from_settings(source) if isinstance(source, Settings) else source
    index_dir = _resolved(str(spec.index_dir))
    pointer = index_dir / CURRENT
    key = (index_dir, spec.embedding_device, spec.ef_search, spec.nprobe)
    # Every search asks, so the usual answer makes no system call and takes no lock (each call gives up
    # the GIL, and with 8 requests in flight a thread then queues to get it back: resolving the path and
    # reading the pointer per search held 45 % of the busy samples in ``make bench-profile``). Loading a
    # new generation takes the lock.
    cached = _open_indexes.get(key)
    now, published = time.monotonic(), publications()
    if cached is not None and cached.publications == published and now - cached.checked_at < POINTER_TTL_S:
        _touch(key)  # read the pointer a moment ago; nothing published here since
        return _checked_model(cached.index, spec)
    try:
        current = pointer.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        current = ""
    if cached is not None and cached.generation == current:
        cached.checked_at, cached.publications = now, published
        index = cached.index
        _touch(key)
    else:
        with _open_lock:
            cached = _open_indexes.get(key)
            if cached is not None and cached.generation == current:
                index = cached.index
            else:
                index = _open(index_dir, spec)
                _open_indexes.pop(key, None)
                _open_indexes[key] = _Loaded(index.generation.path.name, index,
                                             generation_bytes(index.generation.path), now, published)  # fmt: skip
                _evict(spec.memory_budget_bytes)
    return _checked_model(index, spec)


def _touch(key: tuple[Path, str, int, int]) -> None:
    """Mark a loaded index most recently used: best effort, never waited for (a search must not queue here)."""
    if _open_lock.acquire(blocking=False):
        try:
            if key in _open_indexes:
                _open_indexes.move_to_end(key)
        finally:
            _open_lock.release()


@lru_cache(maxsize=256)
def _resolved(index_dir: str) -> Path:
    """Return an index folder's absolute, resolved path (a system call per part: once per folder, not per search)."""
    return Path(index_dir).resolve()


def _checked_model(index: SearchIndex, spec: IndexSpec) -> SearchIndex:
    """Return the index, or refuse it when it was built with another embedding model than the spec's."""
    index_dir = index.generation.path.parent
    built_with = index.generation.embedding_model
    if built_with != embedding_identity(spec.embedding_model):
        raise EmbeddingModelMismatch(
            f"The index at {index_dir} was built with embedding model {built_with!r}, "
            f"but {spec.embedding_model!r} is configured",
            f"set CAIRN_EMBEDDING_MODEL={built_with} or re-ingest with --rebuild",
        )
    return index


def _evict(budget_bytes: int) -> None:
    """Unload the least recently used indexes while the loaded ones exceed the budget (keep the newest)."""
    while len(_open_indexes) > 1 and sum(loaded.size_bytes for loaded in _open_indexes.values()) > budget_bytes:
        _open_indexes.popitem(last=False)  # a search still holding it finishes; then it is freed


def loaded_indexes() -> list[Path]:
    """Return the index folders loaded in this process, least recently used first."""
    with _open_lock:
        return [key[0] for key in _open_indexes]


def generation_bytes(path: Path) -> int:
    """Return the size on disk of a generation's files: what loading it may page into memory."""
    return sum(entry.stat().st_size for entry in Path(path).rglob("*") if entry.is_file())


def _open(index_dir: Path, spec: IndexSpec) -> SearchIndex:
    generation = open_generation(index_dir)
    # The query must be embedded exactly as the chunks were: same model, same truncation.
    embedding = generation.manifest.embedding
    # Indexes from before the manifest recorded it were embedded at the setting's default.
    max_tokens = embedding.max_tokens or Settings.model_fields["embedding_max_tokens"].default
    # An endpoint is recorded without its address (provider/model): the setting says where it is served.
    model = spec.embedding_model if embedding_identity(spec.embedding_model) == embedding.model else embedding.model
    device = spec.embedding_device
    options = (spec.embedding_backend, spec.onnx_dir, spec.query_threads, spec.endpoint)
    return SearchIndex(generation, lambda: _embedder(model, device, max_tokens, *options), ef_search=spec.ef_search,
                       nprobe=spec.nprobe)  # fmt: skip
