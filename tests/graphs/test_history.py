"""The history policy: recent turns word for word, older ones as a question and its citations, the rest left out."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage

from graphs.agent.budget import DIGEST_HEADING, fit_history, message_tokens


def conversation(turns: int, answer_words: int = 60) -> list:
    messages = []
    for n in range(turns):
        messages.append(HumanMessage(f"Question {n}: how does part{n} work?"))
        body = " ".join(f"word{i}" for i in range(answer_words))
        sources = f"Sources:\n- `pkg/mod{n}.py:1-9`"
        messages.append(AIMessage(f"part{n} is in [pkg/mod{n}.py:{n + 1}-{n + 9}]. {body}\n\n{sources}"))
    return messages


def test_a_short_conversation_is_kept_whole_without_its_sources_lists() -> None:
    fitted = fit_history(conversation(2), budget=512)
    assert (fitted.verbatim, fitted.summarised, fitted.dropped, fitted.clipped) == (2, 0, 0, False)
    assert [type(m) for m in fitted.messages] == [HumanMessage, AIMessage, HumanMessage, AIMessage]
    assert "Sources:" not in fitted.messages[1].text and "[pkg/mod0.py:1-9]" in fitted.messages[1].text
    assert fitted.tokens == message_tokens(fitted.messages) <= 512


def test_thirty_turns_keep_the_newest_word_for_word_summarise_older_ones_and_fit_the_budget() -> None:
    fitted = fit_history(conversation(30), budget=512)
    assert fitted.verbatim >= 1 and fitted.summarised >= 3 and fitted.dropped > 0
    assert fitted.verbatim + fitted.summarised + fitted.dropped == 30
    assert fitted.tokens <= 512
    first, last = fitted.messages[0].text, fitted.messages[-1].text
    assert first.startswith(DIGEST_HEADING)
    # the summarised turns are the ones just before those kept whole, oldest first, each with its citation
    newest_summarised = 29 - fitted.verbatim
    lines = [line for line in first.splitlines() if line.startswith("- ")]
    assert len(lines) == fitted.summarised
    assert (
        lines[-1] == f"- Question {newest_summarised}: how does part{newest_summarised} work? → "
        f"pkg/mod{newest_summarised}.py:{newest_summarised + 1}-{newest_summarised + 9}"
    )
    assert first.endswith(f"Question {30 - fitted.verbatim}: how does part{30 - fitted.verbatim} work?")
    assert "part29 is in" in last
    # roles alternate: the summary opens the first turn kept whole
    assert [type(m) for m in fitted.messages[:2]] == [HumanMessage, AIMessage]


def test_a_newest_turn_longer_than_the_budget_is_cut_to_fit() -> None:
    fitted = fit_history(conversation(3, answer_words=2000), budget=512)
    assert fitted.verbatim == 1 and fitted.clipped and fitted.tokens <= 560
    assert fitted.messages[-1].text.endswith("(cut to fit the model's window)")


def test_no_earlier_turns_no_history() -> None:
    assert fit_history([], 512).messages == [] and fit_history([], 512).verbatim == 0


def test_a_question_longer_than_the_budget_is_cut_too_and_roles_still_alternate() -> None:
    pasted = "Why does this fail? " + " ".join(f"frame{n} at line {n}" for n in range(600))
    messages = [HumanMessage("first"), AIMessage("the first answer"), HumanMessage(pasted), AIMessage("because")]
    fitted = fit_history(messages, budget=512)
    assert fitted.clipped and fitted.tokens <= 512
    roles = [type(m) for m in fitted.messages]
    assert roles == [HumanMessage, AIMessage] * (len(roles) // 2) and len(roles) % 2 == 0
    assert fitted.messages[-2].text.endswith("(cut to fit the model's window)")
