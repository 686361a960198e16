import bm25s
import numpy as np
from bm25s.tokenization import Tokenized

from ingest.bm25 import build_bm25
from ingest.tokens import tokenize

DOCS = [
    "def pad_sequence(batch, padding_value=0): return torch.stack(batch)",
    "class Tokenizer: def encode(self, text): return self.vocab[text]",
    "the attention mask hides padding tokens from attention",
    "def load_weights(path): state = torch.load(path)",
    "",
    "mask mask mask attention",
]


def test_scores_equal_bm25s_own_index() -> None:
    tokens = [tokenize(d) for d in DOCS]
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in tokens]
    flat = np.array([i for doc in ids for i in doc], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(doc) for doc in ids])])

    reference = bm25s.BM25(method="lucene")
    reference.index(Tokenized(ids=ids, vocab=dict(vocab)), show_progress=False)
    ours = build_bm25(flat, offsets, vocab)

    for query in ["attention mask", "pad batch", "load torch weights", "unknown words only"]:
        expected = reference.get_scores(tokenize(query))
        actual = ours.get_scores(tokenize(query))
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    assert ours.get_scores(tokenize("attention mask")).argmax() == 5


def _corpus(rng: np.random.Generator, docs: int, vocab: dict[str, int], words: list[str]) -> tuple:
    ids = [[vocab.setdefault(w, len(vocab)) for w in rng.choice(words, rng.integers(0, 40))] for _ in range(docs)]
    flat = np.array([i for doc in ids for i in doc], dtype=np.int32)
    return flat, np.concatenate([[0], np.cumsum([len(doc) for doc in ids])]).astype(np.int64)


def test_term_counts_come_back_exactly_from_the_stored_scores() -> None:
    from ingest.bm25 import TermCounts

    rng = np.random.default_rng(7)
    vocab: dict[str, int] = {}
    flat, offsets = _corpus(rng, 400, vocab, [f"w{i}" for i in range(300)] + ["the"] * 50)
    stored = build_bm25(flat, offsets, vocab)
    recovered = TermCounts.of_bm25(stored, np.diff(offsets))
    counted = TermCounts.of_tokens(flat, offsets, len(stored.vocab_dict))
    assert recovered is not None
    np.testing.assert_array_equal(recovered.indptr, counted.indptr)
    np.testing.assert_array_equal(recovered.docs, counted.docs)
    np.testing.assert_array_equal(recovered.counts, counted.counts)
    # scores that do not come from these counts (another k1, say) are refused, not misread
    stored.scores["data"] = stored.scores["data"] * np.float32(1.01)
    assert TermCounts.of_bm25(stored, np.diff(offsets)) is None


def test_a_joined_keyword_index_scores_exactly_as_one_built_over_the_joined_rows() -> None:
    """A delta's keyword scores: the base's kept rows and the delta's own, with the joined corpus's statistics."""
    from ingest.bm25 import JoinedKeywordIndex, TermCounts
    from ingest.store import take_token_rows

    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(200)] + ["common"] * 80
    vocab: dict[str, int] = {}
    base_flat, base_offsets = _corpus(rng, 300, vocab, words)
    base = build_bm25(base_flat, base_offsets, vocab)
    base_vocab = dict(base.vocab_dict)
    base_vocab.pop("")
    grown = dict(base_vocab)
    delta_flat, delta_offsets = _corpus(rng, 25, grown, [*words, "fresh", "newer"])  # new words get new ids
    base_rows = np.array([r for r in range(300) if r % 9 != 4])  # a ninth of the base dropped
    rows_of_base = np.full(300, -1)
    rows_of_base[base_rows] = np.arange(len(base_rows))
    joined = JoinedKeywordIndex(
        TermCounts.of_bm25(base, np.diff(base_offsets)), base_rows, rows_of_base, (base_flat, base_offsets),
        TermCounts.of_tokens(delta_flat, delta_offsets, len(grown) + 1), grown,
    )  # fmt: skip
    kept_flat, kept_offsets = take_token_rows(base_flat, base_offsets, base_rows)
    whole = build_bm25(np.concatenate([kept_flat, delta_flat]),
                       np.concatenate([kept_offsets, delta_offsets[1:] + kept_offsets[-1]]), grown)  # fmt: skip
    assert joined.scores["num_docs"] == whole.scores["num_docs"] == len(base_rows) + 25
    for query in (["common"], ["w3", "w7", "w7"], ["fresh"], ["w1", "fresh", "newer", "unknown"], ["nothing"]):
        np.testing.assert_array_equal(joined.get_scores(query), whole.get_scores(query))
