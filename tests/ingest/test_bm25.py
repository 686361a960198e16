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
