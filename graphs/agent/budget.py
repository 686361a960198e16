"""Token budgets: estimate tokens without a tokenizer download, fit history and code to a window."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import MessageLikeRepresentation, count_tokens_approximately

from graphs.agent.citations import CITATION, SOURCES_HEADING

#: Source code runs about 3.5 characters a token (prose about 4, LangChain's default).
CHARS_PER_TOKEN = 3.5
#: Tokens a document costs beyond its text in a prompt (its citation line and separators).
DOCUMENT_OVERHEAD_TOKENS = 20

count_tokens = partial(count_tokens_approximately, chars_per_token=CHARS_PER_TOKEN)
"""Estimate the tokens of messages (LangChain's approximate counter at code's characters per token)."""


def text_tokens(text: str) -> int:
    """Estimate the tokens of a text."""
    return count_tokens([HumanMessage(text)], extra_tokens_per_message=0, count_name=False) if text else 0


def message_tokens(messages: Iterable[MessageLikeRepresentation]) -> int:
    """Estimate the tokens of a conversation."""
    return count_tokens(list(messages))


def fit_budget(documents: Iterable[Document], budget: int) -> list[Document]:
    """Keep documents in order while their text fits ``budget`` tokens (a later, shorter one may still fit)."""
    kept, used = [], 0
    for document in documents:
        cost = text_tokens(document.page_content) + DOCUMENT_OVERHEAD_TOKENS
        if used + cost <= budget:
            kept.append(document)
            used += cost
    return kept


# ---------------------------------------------------------------- the conversation a turn sees

#: Of the history budget, the share recent turns may take word for word; the rest is the digest's.
VERBATIM_SHARE = 0.75
#: The most turns given word for word, however short (a long session's state keeps no more of them as messages).
VERBATIM_TURNS = 16
#: A question in the digest is cut to this many characters, and at most this many citations listed.
DIGEST_QUESTION_CHARS = 120
DIGEST_CITATIONS = 4
DIGEST_HEADING = "Earlier in this conversation (older turns, summarised: each question and the code its answer cited):"


@dataclass(frozen=True, slots=True)
class History:
    """The earlier conversation a turn's prompts get, and what the policy did to fit it in its budget.

    The policy, newest first: whole turns word for word (an answer without its "Sources:" list, whose
    citations are inline in its text) while they fit three quarters of the budget, at most
    ``VERBATIM_TURNS`` of them, the newest one cut to fit when even it does not; then older turns as
    one line each, the question and the citations its answer used, while the rest of the budget
    lasts; anything older is left out. The summary lines open the first turn kept word for word, so
    the roles still alternate.
    """

    messages: list[BaseMessage] = field(default_factory=list)
    verbatim: int = 0
    summarised: int = 0
    dropped: int = 0
    #: Whether the newest turn (its answer, and its question when that alone is too long) was cut to fit.
    clipped: bool = False
    tokens: int = 0
    budget: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the counts (not the messages), as steps, replies and session telemetry report them."""
        return {"verbatim": self.verbatim, "summarised": self.summarised, "dropped": self.dropped,
                "clipped": self.clipped, "tokens": self.tokens, "budget": self.budget}  # fmt: skip


def fit_history(messages: Sequence[AnyMessage], budget: int, earlier: Sequence[str] = (), moved: int = 0) -> History:
    """Return the earlier turns of ``messages`` as the policy in ``History`` fits them into ``budget`` tokens.

    ``earlier`` and ``moved`` are a long session's older turns, moved out of its messages
    (``graphs.agent.transcript``): their digest lines, oldest first, and how many turns they were.
    """
    turns = turns_of(messages)
    if not turns:
        return History(budget=budget, dropped=moved)
    verbatim_budget = int(budget * VERBATIM_SHARE) if len(turns) + moved > 1 else budget
    kept: list[tuple[str, str]] = []
    used, clipped = 0, False
    for question, answer in reversed(turns):
        cost = turn_tokens(question, answer)
        if len(kept) == VERBATIM_TURNS:
            break
        if used + cost > verbatim_budget:
            if not kept:  # the newest turn always comes: its question cut to half the room, its answer to the rest
                question = _clip(question, verbatim_budget // 2 - PER_MESSAGE_TOKENS)
                room = max(0, verbatim_budget - text_tokens(question) - 2 * PER_MESSAGE_TOKENS)
                kept.append((question, _clip(answer, room)))
                used, clipped = verbatim_budget, True
            break
        kept.append((question, answer))
        used += cost
    older = turns[: len(turns) - len(kept)]
    lines: list[str] = []
    room = budget - used - text_tokens(DIGEST_HEADING)
    for line in [*(digest_line(q, a) for q, a in reversed(older)), *reversed(earlier)]:
        if text_tokens(line) > room:
            break
        lines.append(line)
        room -= text_tokens(line)
    out: list[BaseMessage] = []
    for n, (question, answer) in enumerate(reversed(kept)):
        if n == 0 and lines:
            question = "\n".join([DIGEST_HEADING, *reversed(lines), "", question])
        out.append(HumanMessage(question))
        out.append(AIMessage(answer or NO_ANSWER))  # roles alternate, whatever was cut
    return History(out, verbatim=len(kept), summarised=len(lines), dropped=len(older) + moved - len(lines),
                   clipped=clipped, tokens=message_tokens(out), budget=budget)  # fmt: skip


def turn_tokens(question: str, answer: str) -> int:
    """Return what a turn costs word for word in a prompt."""
    return text_tokens(question) + text_tokens(answer) + 2 * PER_MESSAGE_TOKENS


#: What an earlier turn's answer reads as when it had none, or none was left after cutting.
NO_ANSWER = "(no answer)"
#: Tokens a message costs beyond its text (LangChain's approximate counter adds about this much).
PER_MESSAGE_TOKENS = 4


def turns_of(messages: Sequence[AnyMessage]) -> list[tuple[str, str]]:
    """Return the conversation as (question, answer) pairs, answers without their Sources list."""
    turns: list[tuple[str, str]] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            turns.append((message.text, ""))
        elif isinstance(message, AIMessage) and turns:
            question, earlier = turns[-1]
            answer = message.text.split(f"\n\n{SOURCES_HEADING}\n")[0].strip()
            turns[-1] = (question, f"{earlier}\n\n{answer}".strip())
    return turns


CUT_MARK = " … (cut to fit the model's window)"


def _clip(text: str, tokens: int) -> str:
    """Return ``text`` cut to about ``tokens`` tokens, at a word, marked as cut."""
    limit = int(tokens * CHARS_PER_TOKEN)
    if len(text) <= limit:
        return text
    if limit <= len(CUT_MARK) + 8:
        return ""
    return text[: limit - len(CUT_MARK)].rsplit(" ", 1)[0] + CUT_MARK


def digest_line(question: str, answer: str) -> str:
    """Return an older turn as one line: its question, and the citations its answer used."""
    asked = " ".join(question.split())
    if len(asked) > DIGEST_QUESTION_CHARS:
        asked = asked[:DIGEST_QUESTION_CHARS].rsplit(" ", 1)[0] + "…"
    cited = list(dict.fromkeys(m.group(0).strip("[]`()") for m in CITATION.finditer(answer)))
    cited_text = ", ".join(cited[:DIGEST_CITATIONS]) if cited else "no code cited"
    return f"- {asked} → {cited_text}"
