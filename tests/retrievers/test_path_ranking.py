"""Hybrid search prefers the folder or file a question names: "in BERT" ranks models/bert/ first."""

from __future__ import annotations

import pytest

from config import Settings
from ingest.pipeline import ingest_repository
from ingest.store import open_generation
from retrievers import SearchIndex
from tests.conftest import FakeEmbedder

MODELS = ["bert", "roberta", "electra", "albert", "deberta"]
ATTENTION = '''
class SelfAttention:
    """Scaled dot-product self attention over the hidden states."""

    def forward(self, hidden_states, attention_mask=None):
        scores = hidden_states @ hidden_states.transpose(-1, -2)
        scores = scores / math.sqrt(hidden_states.shape[-1])
        if attention_mask is not None:
            scores = scores + attention_mask
        return scores.softmax(-1) @ hidden_states
'''


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    root = tmp_path_factory.mktemp("paths")
    repo = root / "repo"
    for model in MODELS:  # the same code copied into each model's folder, as transformers does
        folder = repo / "models" / model
        folder.mkdir(parents=True)
        (folder / f"modeling_{model}.py").write_text(f"import math\n{ATTENTION}")
    (repo / "trainer.py").write_text("def default_timeout():\n    return 30\n")
    (repo / "data_collator.py").write_text("def collate(batch):\n    return list(batch)\n")
    for i in range(20):
        (repo / f"util_{i}.py").write_text(f"def helper_{i}():\n    return {i}\n")
    ingest_repository(repo, Settings(index_dir=root / "index"), embedder_factory=FakeEmbedder)
    return SearchIndex(open_generation(root / "index"), FakeEmbedder())


QUESTIONS = [
    "In {}, how are the self attention scores scaled?",
    "How does {}'s self attention scale the scores?",
    "How does the {} model scale the self attention scores?",
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("question", QUESTIONS)
def test_a_question_naming_a_model_ranks_that_models_copy_first(index: SearchIndex, model: str, question: str) -> None:
    assert index.hybrid(question.format(model.upper()), 3)[0].chunk.path == f"models/{model}/modeling_{model}.py"


def test_without_the_path_ranking_the_copies_tie_and_most_questions_miss(index: SearchIndex) -> None:
    index.rank_paths = False
    try:
        questions = [f"In {m.upper()}, how are the self attention scores scaled?" for m in MODELS]
        firsts = [index.hybrid(question, 3)[0].chunk.path for question in questions]
    finally:
        index.rank_paths = True
    assert sum(path.startswith(f"models/{m}/") for path, m in zip(firsts, MODELS, strict=True)) < len(MODELS)


def test_which_words_name_paths(index: SearchIndex) -> None:
    assert index.paths_named("in BERT")[0] == ["bert"]
    assert index.paths_named("inside the roberta folder, what is scaled")[0] == ["roberta"]
    assert index.paths_named("how does electra's attention work")[0] == ["electra"]
    assert index.paths_named("Llama's attention")[0] == []  # no such folder here
    # a word without a mark of place is a concept, not a folder
    assert index.paths_named("how does bert scale attention scores")[0] == []
    # a file stem counts when written as code, not as an ordinary word
    assert index.paths_named("what is the default trainer timeout")[0] == []
    assert index.paths_named("what does trainer.py time out")[0] == ["trainer"]
    assert index.paths_named("how does data_collator batch")[0] == ["data_collator"]
    # a folder holding more than its share of the files (here 3: "models" holds 5 of 27) names no place
    names, rows = index.paths_named("models")
    assert names == [] and rows is None
