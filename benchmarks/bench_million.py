"""A million-chunk index: build time, RSS, disk and search latency of flat, IVF and HNSW FAISS, and their recall.

    .venv/bin/python benchmarks/bench_million.py [--chunks 1000000] [--embed 12000] [--work /tmp/cairn-million]

Embedding runs at 30-58 chunks/s on these 2-core machines, so a million unique vectors would take
days. The corpus is therefore built like this (docs/benchmarks.md, "A million chunks", says the same):

1. The installed transformers source is chunked with Cairn's walker and chunker (63 k real chunks).
2. ``--embed`` of them are embedded for real with the bundled model (every chunk of the files the
   golden questions name, then a seeded random sample); the vectors are cached in
   ``.cairn/bench-cache/`` under the model, its token limit and each chunk's content hash, so only the
   first run pays for them.
3. The index is filled to ``--chunks`` rows with variants of those chunks: variant ``r`` of a chunk
   lives in ``copyNNN/<path>`` (a copy of the package, like transformers' per-model copies), its
   CapWords identifiers (class names) get the suffix ``V<r>``, and its vector is the source chunk's
   vector plus Gaussian noise (sigma ``--noise`` per dimension), normalised again. Each real chunk thus
   heads a cluster of near-duplicates, the hard case for HNSW.

Each stage then runs in its own process so its peak RSS is its own: prepare (corpus and inputs),
build flat and build HNSW (``ingest.store.write_generation``, the code ``cairn ingest`` writes with, BM25
included), and query each (``retrievers.load_search_index``, then ``SearchIndex.hybrid`` / ``dense`` /
``keyword`` with the query embedding included) with the golden questions of transformers and httpx.
IVF's and HNSW's recall@10 are measured against flat's exact top 10, with an nprobe sweep (IVF, Cairn's
default of one list in 32 among them) and an efSearch sweep (HNSW). A last stage builds
BM25 alone over real, unvaried chunks of every installed package (up to ``--chunks``), which shows the
keyword side at scale on real text. ``--alternatives`` adds a plain FAISS IVF (4,096 lists, nprobe
8-128) and HNSW with efConstruction 200, built straight from the vectors outside the store, with their
recall against flat. ``--reuse-builds`` queries the indexes the last run left in ``--work``. Results go to
benchmarks/results/million.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import du, machine, summary_ms, transformers_source, write_result  # noqa: E402

CACHE = ROOT / ".cairn" / "bench-cache"
K = 10
EF_SWEEP = (16, 32, 64, 128, 256, 512)
NPROBE_SWEEP = (32, 64, 128, 256)
_CAPWORD = re.compile(r"\b([A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*)\b")


def peak_rss_mb() -> float:
    """Return this process's peak resident set size in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float:
    """Return this process's resident set size now, in MiB."""
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _settings():
    from config import Settings

    return Settings()


# ---------------------------------------------------------------- real chunks


def chunk_tree(root: Path, prefix: str, settings: Any) -> list[Any]:
    """Return the chunks of every indexable file below root, cut as ``cairn ingest`` cuts them."""
    from ingest.chunking import ChunkingOptions, chunk_file
    from ingest.walker import walk_repository

    options = ChunkingOptions(settings.chunk_max_chars, settings.chunk_overlap_lines)
    report = walk_repository(root, max_file_bytes=settings.max_file_bytes, exclude=settings.exclude)
    chunks = []
    for source in report.files:
        text = source.abs_path.read_bytes().decode("utf-8", "replace")
        try:
            found = chunk_file(prefix + source.path, text, options)
        except Exception:  # the pipeline skips a file its parser fails on; so does the benchmark
            continue
        chunks.extend(found)
    return chunks


def cached_table(name: str, build: Any) -> Any:
    """Return a ChunkTable cached under CACHE/name, building it with ``build()`` the first time."""
    from ingest.chunk_table import ChunkTable

    folder = CACHE / name
    if (folder / "hashes.npy").exists():
        return ChunkTable.load(folder)
    tmp = CACHE / f"{name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    ChunkTable.from_chunks(build()).save(tmp)
    tmp.rename(folder)
    return ChunkTable.load(folder)


def _versions_key(*parts: str) -> str:
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=6).hexdigest()


def transformers_table(settings: Any) -> Any:
    """Return the chunks of the installed transformers source (cached)."""
    import transformers

    key = _versions_key(transformers.__version__, str(settings.chunk_max_chars), str(settings.chunk_overlap_lines))
    return cached_table(f"chunks-transformers-{key}", lambda: chunk_tree(transformers_source(), "", settings))


def site_packages_table(settings: Any) -> Any:
    """Return the chunks of every installed package's source (cached), each path under its package folder."""
    site = transformers_source().parent
    packages = sorted(p for p in site.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", "__pycache__")))
    key = _versions_key(*(p.name for p in packages), *(d.name for d in site.glob("*.dist-info")))

    def build() -> list[Any]:
        chunks = []
        for package in packages:
            chunks.extend(chunk_tree(package, package.name + "/", settings))
        return chunks

    return cached_table(f"chunks-site-packages-{key}", build)


# ---------------------------------------------------------------- vectors, cached by content hash


def cached_vectors(table: Any, rows: np.ndarray, settings: Any) -> np.ndarray:
    """Return the vectors of ``table``'s rows, embedding (and caching) those not embedded before."""
    from ingest.embedder import Embedder, embedding_input

    key = _versions_key(settings.embedding_model, str(settings.embedding_max_tokens))
    path = CACHE / f"vectors-{key}.npz"
    known: dict[bytes, np.ndarray] = {}
    if path.exists():
        data = np.load(path)
        known = {h.tobytes(): v for h, v in zip(data["hashes"], data["vectors"], strict=True)}
    hashes = [table.hashes[row].tobytes() for row in rows]
    missing = [i for i, h in enumerate(hashes) if h not in known]
    if missing:
        embedder = Embedder(settings.embedding_model, max_tokens=settings.embedding_max_tokens)
        started = time.perf_counter()
        step = 1024
        for begin in range(0, len(missing), step):
            part = missing[begin : begin + step]
            chunks = [table[int(rows[i])] for i in part]
            texts = [embedding_input(c.path, c.symbol, c.text) for c in chunks]
            vectors = embedder.embed_documents(texts, batch_size=settings.embedding_batch_size)
            known.update((hashes[i], v) for i, v in zip(part, vectors, strict=True))
            _save_vectors(path, known)  # an interrupted run keeps what it embedded
            done = begin + len(part)
            rate = done / (time.perf_counter() - started)
            print(f"  embedded {done}/{len(missing)} ({rate:.1f} chunks/s)", file=sys.stderr, flush=True)
    return np.stack([known[h] for h in hashes]).astype(np.float32)


def _save_vectors(path: Path, known: dict[bytes, np.ndarray]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    hashes = np.frombuffer(b"".join(known), dtype=np.uint8).reshape(-1, 16)
    np.savez(tmp, hashes=hashes, vectors=np.stack(list(known.values())))
    tmp.rename(path)


# ---------------------------------------------------------------- stages (each in its own process)


def stage_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Chunk, embed the real subset, and write the varied million-row inputs under WORK/inputs."""
    from ingest.chunk_table import ChunkTableBuilder
    from ingest.chunking import Chunk
    from ingest.pipeline import SYMBOL_BOOST
    from ingest.tokens import tokenize

    settings = _settings()
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    table = transformers_table(settings)
    timings["chunk_transformers"] = time.perf_counter() - clock

    golden_files = {f for q in _golden() if q.corpus == "transformers" for f in q.files}
    paths = np.asarray(table.paths, dtype=object)[table.path_ids]
    must = np.flatnonzero(np.isin(paths, list(golden_files)))
    rng = np.random.default_rng(14)
    others = np.setdiff1d(np.arange(len(table)), must)
    wanted = max(0, min(args.embed, args.chunks) - len(must))
    chosen = np.concatenate([must, rng.choice(others, size=min(wanted, len(others)), replace=False)])
    chosen = np.sort(chosen[: min(len(chosen), args.chunks)])
    clock = time.perf_counter()
    base_vectors = cached_vectors(table, chosen, settings)
    timings["embed_or_cache"] = time.perf_counter() - clock

    clock = time.perf_counter()
    inputs = args.work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    n, e, dim = args.chunks, len(chosen), base_vectors.shape[1]
    vectors = np.lib.format.open_memmap(inputs / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    builder = ChunkTableBuilder()
    vocab: dict[str, int] = {}
    token_parts: list[np.ndarray] = []
    lengths = np.zeros(n, dtype=np.int64)
    step = 65_536
    for begin in range(0, n, step):
        end = min(n, begin + step)
        block = np.arange(begin, end)
        source = block % e
        copy = block // e
        noise = rng.standard_normal((end - begin, dim), dtype=np.float32) * np.float32(args.noise)
        noise[copy == 0] = 0.0  # the first copy of each chunk is the real chunk, with its real vector
        block_vectors = base_vectors[source] + noise
        block_vectors /= np.linalg.norm(block_vectors, axis=1, keepdims=True)
        vectors[begin:end] = block_vectors
        for offset, (src, r) in enumerate(zip(source.tolist(), copy.tolist(), strict=True)):
            chunk = _variant(table[int(chosen[src])], r, Chunk)
            builder.add(chunk)
            words = tokenize(chunk.symbol or "") * SYMBOL_BOOST + tokenize(chunk.text)
            ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.int32)
            token_parts.append(ids)
            lengths[begin + offset] = len(ids)
        print(f"  prepared {end}/{n} rows", file=sys.stderr, flush=True)
    vectors.flush()
    del vectors
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(inputs / "tokens.npy", np.concatenate(token_parts))
    np.save(inputs / "token_offsets.npy", offsets)
    del token_parts
    (inputs / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    chunks_dir = inputs / "chunks"
    chunks_dir.mkdir(exist_ok=True)
    builder.build().save(chunks_dir)
    timings["vary_tokenize_write"] = time.perf_counter() - clock
    return {
        "real_chunks_in_transformers": len(table),
        "embedded_real_chunks": e,
        "golden_file_chunks": len(must),
        "rows": n,
        "copies_per_real_chunk": round(n / e, 1),
        "noise_sigma_per_dim": args.noise,
        "mean_cosine_copy_to_source": round(_mean_copy_cosine(base_vectors, args.noise, rng), 4),
        "tokens": int(offsets[-1]),
        "vocabulary": len(vocab),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "peak_rss_mb": peak_rss_mb(),
    }


def _variant(chunk: Any, copy: int, chunk_type: Any) -> Any:
    """Return copy number ``copy`` of a chunk (copy 0 is the chunk itself)."""
    if copy == 0:
        return chunk
    suffix = f"V{copy}"

    def rename(text: str) -> str:
        return _CAPWORD.sub(lambda m: m.group(1) + suffix, text)

    return chunk_type(
        f"copy{copy:03d}/{chunk.path}",
        chunk.start_line,
        chunk.end_line,
        chunk.language,
        rename(chunk.symbol) if chunk.symbol else None,
        chunk.kind,
        rename(chunk.text),
    )


def _mean_copy_cosine(base: np.ndarray, sigma: float, rng: np.random.Generator) -> float:
    sample = base[: min(len(base), 2000)]
    noisy = sample + rng.standard_normal(sample.shape, dtype=np.float32) * np.float32(sigma)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return float(np.mean(np.sum(sample * noisy, axis=1)))


def stage_build(args: argparse.Namespace) -> dict[str, Any]:
    """Write one index generation of the inputs with ``write_generation``, flat or HNSW."""
    import datetime as dt

    from cairn import __version__
    from ingest.chunk_table import ChunkTable
    from ingest.manifest import (
        FORMAT,
        FORMAT_VERSION,
        ChunkingInfo,
        Counts,
        EmbeddingInfo,
        KeywordInfo,
        Manifest,
    )
    from ingest.store import write_generation
    from ingest.tokens import TOKENIZER

    settings = _settings()
    inputs = args.work / "inputs"
    chunks = ChunkTable.load(inputs / "chunks")
    vectors = np.load(inputs / "vectors.npy", mmap_mode="r")
    tokens = np.load(inputs / "tokens.npy", mmap_mode="r")
    offsets = np.load(inputs / "token_offsets.npy")
    vocab = json.loads((inputs / "vocab.json").read_text(encoding="utf-8"))
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        cairn_version=__version__,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        scanned_at_ns=time.time_ns(),
        repo_root=str(transformers_source()),
        embedding=EmbeddingInfo(settings.embedding_model, int(vectors.shape[1]), settings.embedding_max_tokens),
        chunking=ChunkingInfo(settings.chunk_max_chars, settings.chunk_overlap_lines),
        faiss_index=args.kind,
        counts=Counts(files=len(chunks.paths), chunks=len(chunks)),
        keyword=KeywordInfo(TOKENIZER),
    )
    before = peak_rss_mb()
    started = time.perf_counter()
    generation = write_generation(
        args.work / args.kind,
        manifest=manifest,
        chunks=chunks,
        vectors=vectors,
        tokens=tokens,
        token_offsets=offsets,
        vocab=vocab,
        faiss_kind=args.kind,
        hnsw_m=settings.hnsw_m,
    )
    seconds = time.perf_counter() - started
    files = {p.name: p.stat().st_size for p in generation.iterdir() if p.is_file()}
    files["bm25/"] = du(generation / "bm25")
    return {
        "kind": args.kind,
        "hnsw_m": settings.hnsw_m if args.kind == "hnsw" else None,
        "write_generation_seconds": round(seconds, 1),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_build_mb": before,
        "disk_mb": round(du(generation) / 2**20, 1),
        "disk_mb_by_file": {name: round(size / 2**20, 1) for name, size in sorted(files.items())},
    }


def stage_query(args: argparse.Namespace) -> dict[str, Any]:
    """Load one index the way the service does and time hybrid, dense and keyword searches on it."""
    from ingest.store import ivf_probes
    from retrievers import load_search_index
    from retrievers.search_index import IndexSpec, SearchIndex

    settings = _settings()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    spec = IndexSpec.from_settings(settings, args.work / args.kind)
    rss_start = current_rss_mb()
    started = time.perf_counter()
    index = load_search_index(spec)
    load_seconds = time.perf_counter() - started
    rss_loaded = current_rss_mb()
    index.dense("warm up the model", 1)
    questions = [q.question for q in _golden()]
    result: dict[str, Any] = {
        "kind": args.kind,
        "chunks": len(index),
        "queries": len(questions),
        "rounds": args.rounds,
        "torch_threads": args.torch_threads or "default",
        "load_seconds": round(load_seconds, 2),
        "rss_start_mb": rss_start,
        "rss_index_loaded_mb": rss_loaded,
    }
    vectors = index.embed_queries(questions)

    def timed(indexes: dict[str, SearchIndex], with_embedding: str) -> dict[str, dict[str, float]]:
        """Time every method on every question, interleaved, so all see the same machine noise."""
        methods: dict[str, Any] = {
            "embed_query": lambda i: index.embedder.embed_query(questions[i]),
            "keyword": lambda i: index.keyword(questions[i], K),
        }
        for name, idx in indexes.items():
            if name == with_embedding:  # the figures a user sees: the query embedded, then searched
                methods[f"hybrid{name}"] = lambda i, idx=idx: idx.hybrid(questions[i], K)
                methods[f"dense{name}"] = lambda i, idx=idx: idx.dense(questions[i], K)
            methods[f"hybrid_search{name}"] = lambda i, idx=idx: idx.hybrid_by_vector(questions[i], vectors[i], K)
            methods[f"dense_search{name}"] = lambda i, idx=idx: idx.dense_by_vector(vectors[i], K)
        for method in methods.values():
            for i in range(3):  # warm-up: page in what the first searches touch
                method(i)
        samples: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.rounds):
            for i in range(len(questions)):
                for name, method in methods.items():
                    t0 = time.perf_counter()
                    method(i)
                    samples[name].append(time.perf_counter() - t0)
        return {name: summary_ms(values) for name, values in samples.items()}

    # recall is over rows, so copies with the same text are not collapsed into one hit here
    exact_rows = SearchIndex(index.generation, index.embedder, collapse=False)
    top = np.asarray([[h.row for h in exact_rows.dense_by_vector(v, K)] for v in vectors], dtype=np.int64)
    if args.kind == "flat":
        result["latency"] = timed({"": index}, "")
        np.save(args.work / "flat-top10.npy", top)
    else:
        exact = np.load(args.work / "flat-top10.npy")
        if args.kind == "ivf":  # the lists probed, Cairn's default (1 in 32) among them
            lists = int(index.generation.faiss_index.nlist)
            result["ivf_lists"] = lists
            result["ivf_default_nprobe"] = probes = ivf_probes(lists, len(index.chunks))
            sweep = sorted({*NPROBE_SWEEP, probes})
            by_ef = {f"@nprobe{n}": SearchIndex(index.generation, index.embedder, nprobe=n) for n in sweep}
            rows_by = {name: SearchIndex(index.generation, index.embedder, nprobe=int(name[7:]), collapse=False)
                       for name in by_ef}  # fmt: skip
            default = f"@nprobe{probes}"
        else:
            by_ef = {f"@ef{ef}": SearchIndex(index.generation, index.embedder, ef_search=ef) for ef in EF_SWEEP}
            rows_by = {name: SearchIndex(index.generation, index.embedder, ef_search=int(name[3:]), collapse=False)
                       for name in by_ef}  # fmt: skip
            default = f"@ef{settings.hnsw_ef_search}"
        result["latency"] = timed(by_ef, default)
        real = _real_rows(index.chunks)
        result["recall_at_10_vs_flat"], result["source_recall_at_10_vs_flat"] = {}, {}
        for name, idx in rows_by.items():
            got = [[h.row for h in idx.dense_by_vector(v, K)] for v in vectors]
            found = sum(len(set(g) & set(e.tolist())) for g, e in zip(got, exact, strict=True))
            result["recall_at_10_vs_flat"][name[1:]] = round(found / exact.size, 4)
            # A copy differs from its real chunk only by noise: did HNSW find the same real chunks?
            found_sources = wanted_sources = 0
            for g, e in zip(got, exact, strict=True):
                wanted = {r % real for r in e.tolist()}
                found_sources += len({r % real for r in g} & wanted)
                wanted_sources += len(wanted)
            ratio = found_sources / wanted_sources
            result["source_recall_at_10_vs_flat"][name[1:]] = round(ratio, 4)
    result["hit_at_5"] = _hit_rates(index)
    result["rss_after_queries_mb"] = current_rss_mb()
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def _real_rows(chunks: Any) -> int:
    """Return how many real chunks head the table (row r is a copy of real chunk r % that number)."""
    for row in range(len(chunks)):
        if chunks.paths[chunks.path_ids[row]].startswith("copy"):
            return row
    return len(chunks)


def _hit_rates(index: Any) -> dict[str, float]:
    """Return hit@5 on transformers' golden questions; a copy of a reference file counts as that file."""
    from evals.metrics import first_relevant_rank

    golden = [q for q in _golden() if q.corpus == "transformers"]
    out = {}
    for method in ("hybrid", "dense", "keyword"):
        search = getattr(index, method)
        hits = 0
        for q in golden:
            paths = [re.sub(r"^copy\d+/", "", h.chunk.path) for h in search(q.question, K)]
            rank = first_relevant_rank(paths, q.files)
            hits += rank is not None and rank <= 5
        out[method] = round(hits / len(golden), 4)
    return out


def stage_bm25_real(args: argparse.Namespace) -> dict[str, Any]:
    """Build, save, load and query BM25 over real unvaried chunks of every installed package."""
    import bm25s

    from ingest.bm25 import build_bm25
    from ingest.pipeline import SYMBOL_BOOST
    from ingest.store import Generation
    from ingest.tokens import tokenize
    from retrievers.search_index import SearchIndex

    settings = _settings()
    clock = time.perf_counter()
    table = site_packages_table(settings)
    chunk_seconds = time.perf_counter() - clock
    n = min(args.chunks, len(table))
    clock = time.perf_counter()
    vocab: dict[str, int] = {}
    parts, lengths = [], np.zeros(n, dtype=np.int64)
    for row in range(n):
        symbol = table.symbols[row]
        words = tokenize(symbol or "") * SYMBOL_BOOST + tokenize(table.text(row))
        parts.append(np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.int32))
        lengths[row] = len(parts[-1])
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(parts)
    del parts
    tokenize_seconds = time.perf_counter() - clock
    rss_before = current_rss_mb()
    clock = time.perf_counter()
    bm25 = build_bm25(tokens, offsets, vocab)
    build_seconds = time.perf_counter() - clock
    folder = args.work / "bm25-real"
    clock = time.perf_counter()
    bm25.save(str(folder), show_progress=False)
    save_seconds = time.perf_counter() - clock
    del bm25, tokens
    loaded = bm25s.BM25.load(str(folder), mmap=True, show_progress=False, verbosity=0)
    subset = _table_head(table, n)
    generation = Generation(path=folder, manifest=None, chunks=subset, faiss_index=None, bm25=loaded)  # type: ignore[arg-type]
    index = SearchIndex(generation, embedder=lambda: None)  # type: ignore[arg-type,return-value]
    questions = [q.question for q in _golden()]
    for q in questions[:3]:
        index.keyword(q, K)
    samples = []
    for _ in range(args.rounds):
        for q in questions:
            t0 = time.perf_counter()
            index.keyword(q, K)
            samples.append(time.perf_counter() - t0)
    return {
        "real_chunks_in_site_packages": len(table),
        "rows": n,
        "files": len(set(table.path_ids[:n].tolist())),
        "tokens": int(offsets[-1]),
        "vocabulary": len(vocab),
        "seconds": {
            "chunk_or_cache": round(chunk_seconds, 1),
            "tokenize": round(tokenize_seconds, 1),
            "build_bm25": round(build_seconds, 1),
            "save": round(save_seconds, 1),
        },
        "rss_before_build_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "disk_mb": round(du(folder) / 2**20, 1),
        "keyword_latency": summary_ms(samples),
    }


def stage_alternatives(args: argparse.Namespace) -> dict[str, Any]:
    """Build IVF and a denser HNSW straight from the vectors (not Cairn's store) and measure their recall."""
    import faiss
    import torch

    from ingest.embedder import Embedder

    torch.set_num_threads(1)
    settings = _settings()
    embedder = Embedder(settings.embedding_model, max_tokens=settings.embedding_max_tokens)
    queries = np.stack([embedder.embed_query(q.question) for q in _golden()]).astype(np.float32)
    exact = np.load(args.work / "flat-top10.npy")
    vectors = np.load(args.work / "inputs" / "vectors.npy", mmap_mode="r")
    out: dict[str, Any] = {}

    def measure(index: Any, label: str) -> None:
        faiss.omp_set_num_threads(1)  # as SearchIndex searches: one query, one thread
        seconds = []
        for vector in queries:
            t0 = time.perf_counter()
            index.search(vector.reshape(1, -1), K)
            seconds.append(time.perf_counter() - t0)
        _, ids = index.search(queries, K)
        faiss.omp_set_num_threads(2)
        found = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, exact, strict=True))
        out[label] = {"recall_at_10_vs_flat": round(found / exact.size, 4), **summary_ms(seconds)}
        print(f"  {label}: {out[label]}", file=sys.stderr, flush=True)

    def add_all(index: Any) -> None:
        for begin in range(0, len(vectors), 100_000):
            index.add(np.ascontiguousarray(vectors[begin : begin + 100_000]))

    faiss.omp_set_num_threads(2)
    started = time.perf_counter()
    lists = min(4096, max(1, len(vectors) // 40))  # FAISS wants about 40 training points per list
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    sample = rng.choice(len(vectors), min(150_000, len(vectors)), replace=False)
    ivf.train(np.ascontiguousarray(vectors[np.sort(sample)]))
    add_all(ivf)
    out[f"ivf{lists}_build_seconds"] = round(time.perf_counter() - started, 1)
    for nprobe in (8, 16, 32, 64, 128):
        ivf.nprobe = nprobe
        measure(ivf, f"ivf{lists}_nprobe{nprobe}")
    del ivf
    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 200
    add_all(hnsw)
    out["hnsw32_efc200_build_seconds"] = round(time.perf_counter() - started, 1)
    for ef in (64, 128, 256, 512):
        hnsw.hnsw.efSearch = ef
        measure(hnsw, f"hnsw32_efc200_ef{ef}")
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _table_head(table: Any, n: int) -> Any:
    """Return the first n rows of a ChunkTable without copying its texts."""
    from ingest.chunk_table import ChunkTable

    return ChunkTable(
        paths=table.paths,
        path_ids=table.path_ids[:n],
        starts=table.starts[:n],
        ends=table.ends[:n],
        languages=table.languages,
        language_ids=table.language_ids[:n],
        kinds=table.kinds,
        kind_ids=table.kind_ids[:n],
        symbols=table.symbols[:n],
        texts=table.texts,
        text_offsets=table.text_offsets[: n + 1],
        hashes=table.hashes[:n],
    )


class _Question:
    def __init__(self, corpus: str, question: str, files: tuple[str, ...]) -> None:
        self.corpus, self.question, self.files = corpus, question, files


def _golden() -> list[_Question]:
    """Return the real questions: transformers' golden set, then httpx's eval questions."""
    from evals.retrieval import load_golden

    questions = [_Question("transformers", g.question, g.files) for g in load_golden()]
    for line in (ROOT / "evals" / "datasets" / "httpx.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            questions.append(_Question("httpx", json.loads(line)["question"], ()))
    return questions


STAGES = {
    "prepare": stage_prepare,
    "build": stage_build,
    "query": stage_query,
    "bm25-real": stage_bm25_real,
    "alternatives": stage_alternatives,
}


# ---------------------------------------------------------------- driver


def run_stage(args: argparse.Namespace, stage: str, kind: str = "") -> dict[str, Any]:
    """Run one stage in a fresh process and return what it reported (its last stdout line)."""
    command = [sys.executable, __file__, "--stage", stage, "--chunks", str(args.chunks), "--embed", str(args.embed)]
    command += ["--work", str(args.work), "--noise", str(args.noise), "--rounds", str(args.rounds)]
    command += ["--torch-threads", str(args.torch_threads)]
    if kind:
        command += ["--kind", kind]
    print(f"== {stage} {kind}".rstrip(), file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["stage_wall_seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]  # other work on the shared machine
    print(json.dumps(report), file=sys.stderr, flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1_000_000, help="rows in the index")
    parser.add_argument("--embed", type=int, default=12_000, help="real chunks embedded (cached after the first run)")
    parser.add_argument("--noise", type=float, default=0.015, help="Gaussian noise per dimension of a copy's vector")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cairn-million"), help="where the indexes are built")
    parser.add_argument("--kinds", default="flat,ivf,hnsw", help="FAISS index kinds to build and query")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads for query embedding (0: torch's)")
    parser.add_argument("--no-bm25-real", action="store_true", help="skip BM25 over real site-packages chunks")
    parser.add_argument(
        "--alternatives", action="store_true", help="also IVF and HNSW efConstruction 200, outside Cairn (~20 min)"
    )
    parser.add_argument(
        "--reuse-builds", action="store_true", help="query the indexes the last run built (its results file has them)"
    )
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="flat", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(STAGES[args.stage](args)))
        return

    import shutil

    started = time.perf_counter()
    kinds = [k for k in args.kinds.split(",") if k]
    name = "million" if args.chunks >= 1_000_000 else f"million-{args.chunks}"
    result: dict[str, Any] = {"machine": machine(), "chunks": args.chunks, "k": K, "build": {}, "query": {}}
    if args.reuse_builds:  # the inputs and indexes are still in --work; their figures in the last results
        earlier = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text(encoding="utf-8"))
        result.update(prepare=earlier["prepare"], build=earlier["build"])
        result["query"] = {kind: q for kind, q in earlier.get("query", {}).items() if kind not in kinds}
    else:
        for kind in kinds:
            shutil.rmtree(args.work / kind, ignore_errors=True)

    def record(key: str, report: dict[str, Any], kind: str = "") -> None:
        """Keep a stage's report and rewrite the results, so a later failure loses nothing measured."""
        if kind:
            result[key][kind] = report
        else:
            result[key] = report
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        write_result(name, result)

    if not args.reuse_builds:
        record("prepare", run_stage(args, "prepare"))
        for kind in kinds:
            record("build", run_stage(args, "build", kind), kind)
    for kind in kinds:
        record("query", run_stage(args, "query", kind), kind)
    if not args.no_bm25_real:
        record("bm25_real", run_stage(args, "bm25-real"))
    if args.alternatives and "flat" in kinds:
        record("faiss_alternatives", run_stage(args, "alternatives"))
    path = write_result(name, result)
    print(json.dumps(result, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
