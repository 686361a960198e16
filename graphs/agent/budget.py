"""Token budgets: estimate tokens without a tokenizer download, trim history and code to fit a window."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial

from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, trim_messages
from langchain_core.messages.utils import MessageLikeRepresentation, count_tokens_approximately

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


def trim_history(messages: Sequence[AnyMessage], budget: int) -> list[BaseMessage]:
    """Return the most recent earlier turns that fit ``budget`` tokens, starting on a user turn."""
    earlier = [m for m in messages if isinstance(m, HumanMessage | AIMessage)]
    if not earlier:
        return []
    return trim_messages(earlier, max_tokens=budget, token_counter=count_tokens, strategy="last", start_on="human")


def fit_budget(documents: Iterable[Document], budget: int) -> list[Document]:
    """Keep documents in order while their text fits ``budget`` tokens (a later, shorter one may still fit)."""
    kept, used = [], 0
    for document in documents:
        cost = text_tokens(document.page_content) + DOCUMENT_OVERHEAD_TOKENS
        if used + cost <= budget:
            kept.append(document)
            used += cost
    return kept
