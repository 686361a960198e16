"""Build a bm25s keyword index from token ids with sparse-matrix arithmetic instead of per-document loops."""

from __future__ import annotations

import bm25s
import numpy as np
import scipy.sparse as sp

K1 = 1.5
B = 0.75


def build_bm25(flat_ids: np.ndarray, offsets: np.ndarray, vocab: dict[str, int]) -> bm25s.BM25:
    """Return a ``bm25s.BM25`` (Lucene variant) over documents given as token ids.

    ``flat_ids`` holds every document's token ids back to back; document ``i`` is
    ``flat_ids[offsets[i]:offsets[i + 1]]``. The scores are those ``bm25s.BM25.index`` computes (a test
    checks it), but the term frequencies come from one COO-to-CSC conversion (a counting sort that
    sums duplicates) instead of a Python loop over documents: about 0.2 s for 8 million tokens, which
    keeps incremental re-ingest of a large repository within a couple of seconds.
    """
    n_docs = len(offsets) - 1
    vocab = dict(vocab)
    if "" not in vocab:  # bm25s scores empty queries against this token
        vocab[""] = len(vocab)
    n_vocab = len(vocab)
    lengths = np.diff(offsets)
    avg_len = float(lengths.mean()) if n_docs and lengths.sum() else 1.0

    doc_of_token = np.repeat(np.arange(n_docs, dtype=np.int32), lengths)
    counts = sp.csc_matrix(
        (np.ones(len(flat_ids), dtype=np.float32), (doc_of_token, flat_ids.astype(np.int32, copy=False))),
        shape=(max(n_docs, 1), n_vocab),
    )
    counts.sum_duplicates()  # CSC: for each token, the documents holding it and how often
    tf = counts.data
    doc = counts.indices
    df = np.diff(counts.indptr).astype(np.float64)

    idf = np.log(1.0 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    norm = (K1 * ((1 - B) + B * lengths / avg_len)).astype(np.float32)
    token_of_entry = np.repeat(np.arange(n_vocab, dtype=np.int32), np.diff(counts.indptr))
    data = idf[token_of_entry] * (tf / (norm[doc] + tf))

    retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
    retriever.scores = {
        "data": data.astype(np.float32, copy=False),
        "indices": doc.astype(np.int32, copy=False),
        "indptr": counts.indptr.astype(np.int64, copy=False),
        "num_docs": n_docs,
    }
    retriever.vocab_dict = vocab
    retriever.unique_token_ids_set = set(vocab.values())
    retriever.nonoccurrence_array = None
    return retriever
