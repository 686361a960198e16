import threading

import pytest

from ingest.tokens import LEGACY_TOKENIZER, TOKENIZER, _snowball_stem, tokenize, tokenizer


def test_identifiers_are_kept_whole_and_split_into_words() -> None:
    tokens = tokenize("def load_tf_weights(model): return getUserName(HTTPServerError)")
    for expected in ["load_tf_weights", "load", "tf", "weight", "getusername", "user", "name",
                     "httpservererror", "http", "server", "error", "model", "def", "return"]:  # fmt: skip
        assert expected in tokens, expected


def test_prose_drops_function_words_and_keeps_each_word_whole_and_stemmed() -> None:
    tokens = tokenize("How does the tokenizer handle padding of sequences?")
    assert "the" not in tokens and "how" not in tokens and "does" not in tokens
    assert {"tokenizer", "padding", "pad", "sequences", "sequenc"} <= set(tokens)


@pytest.mark.parametrize(
    ("question", "code", "shared"),
    [
        (
            "how are sequences padded in a batch",
            "def pad_sequence(batch, padding_value=0):",
            {"pad", "sequenc", "batch"},
        ),
        # Forms the first tokenizer missed (it folded plurals and "-ing" only): measured on the golden set.
        ("How are padded inputs unpadded?", "def _unpad_input(hidden_states, attention_mask):", {"unpad", "input"}),
        ("How are the embeddings resized?", "def resize_token_embeddings(self, new_num_tokens):", {"resiz", "embed"}),
        ("Which generated tokens?", "def generate(self, inputs):", {"generat"}),
    ],
)
def test_question_and_code_meet_on_shared_stems(question: str, code: str, shared: set[str]) -> None:
    assert shared <= set(tokenize(code)) & set(tokenize(question))


def test_the_legacy_tokenizer_is_kept_for_indexes_built_with_it() -> None:
    legacy = tokenizer(LEGACY_TOKENIZER)
    assert tokenizer(TOKENIZER)("unpadded inputs") == ["unpadded", "unpad", "inputs", "input"]
    assert legacy("unpadded inputs") == ["unpadded", "inputs", "input"]
    assert legacy("padding tokenizers") == ["padding", "pad", "tokenizers", "tokenizer"]
    with pytest.raises(KeyError):
        tokenizer("no-such-tokenizer")


def test_stemming_from_many_threads_gives_the_same_stems() -> None:
    # A PyStemmer stemmer is not thread-safe and the service searches from worker threads, so each
    # thread has its own (the tokenizer's cache is bypassed here: every word reaches the stemmer).
    words = [f"{stem}{suffix}" for stem in ("rescal", "token", "generat", "embedd", "pad") for suffix in
             ("ed", "ing", "ings", "er", "ers", "ation", "ations", "ness", "ly", "s")] * 40  # fmt: skip
    expected = [_snowball_stem(word) for word in words]
    results: dict[int, list[str]] = {}

    def work(n: int) -> None:
        results[n] = [_snowball_stem(word) for word in words]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and all(result == expected for result in results.values())
