"""Exact copies of code are listed once: the copy that stands for them carries the others."""

from __future__ import annotations

import pytest

from config import Settings
from ingest.chunking import Chunk
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers import Hit, SearchIndex, collapse_copies, fuse, make_retriever
from tests.conftest import FakeEmbedder

ROPE = '''
def rotate_half(x):
    """Rotate half the hidden dimensions of the input for rotary position embeddings."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)
'''
MODELS = ["llama", "mistral", "gemma", "qwen", "phi", "falcon"]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    root = tmp_path_factory.mktemp("copies")
    repo = root / "repo"
    for model in MODELS:  # one function copied verbatim into every model's file, as transformers does
        folder = repo / "models" / model
        folder.mkdir(parents=True)
        (folder / f"modeling_{model}.py").write_text(f"import torch\n{ROPE}")
    (repo / "cache.py").write_text("def evict_oldest(entries):\n    return entries.popitem(last=False)\n")
    (repo / "rope_utils.py").write_text(
        "def rope_frequencies(dim, base=10000.0):\n"
        '    """Inverse frequencies of rotary position embeddings (rotate half the dimensions)."""\n'
        "    return 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))\n"
    )
    for i in range(12):
        (repo / f"util_{i}.py").write_text(f"def helper_{i}(x):\n    return x + {i}\n")
    ingest_repository(repo, Settings(index_dir=root / "index"), embedder_factory=FakeEmbedder)
    return SearchIndex(open_generation(root / "index"), FakeEmbedder())


def _copies_of_rotate_half(hits: list[Hit]) -> list[Hit]:
    return [hit for hit in hits if "def rotate_half" in hit.chunk.text]


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_each_search_lists_copied_code_once_with_its_copies(index: SearchIndex, mode: str) -> None:
    hits = getattr(index, mode)("How does rotate_half rotate the hidden dimensions?", 5)

    copied = _copies_of_rotate_half(hits)
    assert len(copied) == 1
    places = {copied[0].chunk.path, *(copy.path for copy in copied[0].copies)}
    # The copies the search met: all six for keyword and hybrid; dense embeds each copy with its own
    # path, so copies far down its ranking are not looked for.
    assert places <= {f"models/{m}/modeling_{m}.py" for m in MODELS}
    assert len(places) == len(MODELS) or (mode == "dense" and len(places) > 1)
    assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))
    assert len({hit.chunk.text for hit in hits}) == len(hits)
    if mode != "keyword":  # (keyword search lists only chunks sharing a word with the question)
        assert len(hits) == 5  # the copies' places went to other code: k distinct results


def test_without_collapsing_the_copies_fill_the_ranking(index: SearchIndex) -> None:
    index.collapse = False
    try:
        hits = index.keyword("How does rotate_half rotate the hidden dimensions?", 5)
    finally:
        index.collapse = True
    assert len(_copies_of_rotate_half(hits)) == 5


def test_a_question_naming_a_place_keeps_that_places_copy(index: SearchIndex) -> None:
    for model in MODELS:
        top = index.hybrid(f"In {model.upper()}, how does rotate_half rotate the hidden dimensions?", 3)[0]
        assert top.chunk.path == f"models/{model}/modeling_{model}.py"
        assert len(top.copies) == len(MODELS) - 1


def test_retrieved_documents_cite_the_copies(index: SearchIndex) -> None:
    documents = make_retriever("hybrid", index, k=5).invoke("rotate_half hidden dimensions")
    copied = [d for d in documents if "def rotate_half" in d.page_content]
    assert len(copied) == 1 and len(copied[0].metadata["copies"]) == len(MODELS) - 1
    assert all(":" in citation for citation in copied[0].metadata["copies"])
    assert len({d.page_content for d in documents}) == len(documents)


def _hit(row: int, rank: int, path: str) -> Hit:
    return Hit(Chunk(path, 1, 3, "python", None, "function", f"text of {path}"), row, 1.0 / rank, rank)


def test_one_copy_stands_for_a_text_in_every_ranking_so_fusion_adds_up_both_methods() -> None:
    # Rows 1 and 2 hold the same text. Dense ranks copy 1 first, keyword copy 2 first: left alone,
    # each copy gets one method's credit and both fall below row 3, which both methods rank second.
    text = {1: b"same", 2: b"same", 3: b"three", 4: b"four"}
    dense = [_hit(1, 1, "a.py"), _hit(3, 2, "c.py"), _hit(4, 3, "d.py")]
    keyword = [_hit(2, 1, "b.py"), _hit(3, 2, "c.py")]
    assert next(iter(fuse([dense, keyword], 3))).row == 3

    collapsed = collapse_copies([dense, keyword], text.__getitem__)
    assert [[h.row for h in ranking] for ranking in collapsed] == [[1, 3, 4], [1, 3]]
    assert [h.rank for h in collapsed[1]] == [1, 2]
    fused = fuse(collapsed, 3)
    assert [h.row for h in fused] == [1, 3, 4]
    assert [c.path for c in fused[0].copies] == ["b.py"]


def test_a_preferred_ranking_chooses_which_copy_stands() -> None:
    text = {1: b"same", 2: b"same"}
    dense = [_hit(1, 1, "models/albert/x.py")]
    by_path = [_hit(2, 1, "models/bert/x.py")]
    collapsed = collapse_copies([dense, by_path], text.__getitem__, prefer=[by_path])
    assert [h.chunk.path for ranking in collapsed for h in ranking] == ["models/bert/x.py"] * 2
    assert [c.path for c in collapsed[0][0].copies] == ["models/albert/x.py"]
