from ingest.tokens import tokenize


def test_identifiers_are_kept_whole_and_split_into_words() -> None:
    tokens = tokenize("def load_tf_weights(model): return getUserName(HTTPServerError)")
    for expected in ["load_tf_weights", "load", "tf", "weight", "getusername", "user", "name",
                     "httpservererror", "http", "server", "error", "model", "def", "return"]:  # fmt: skip
        assert expected in tokens, expected


def test_prose_drops_function_words_and_folds_simple_forms() -> None:
    tokens = tokenize("How does the tokenizer handle padding of sequences?")
    assert "the" not in tokens and "how" not in tokens and "does" not in tokens
    assert {"tokenizer", "padding", "pad", "sequence"} <= set(tokens)


def test_question_and_code_meet_on_shared_tokens() -> None:
    code = set(tokenize("def pad_sequence(batch, padding_value=0):"))
    question = set(tokenize("how are sequences padded in a batch"))
    assert {"sequence", "batch"} <= code & question
