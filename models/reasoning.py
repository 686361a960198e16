"""Reasoning models' thinking: kept out of answers, citations and history; available as a step.

Reasoning models (DeepSeek-R1 distills, Qwen3, …) either write a ``<think>…</think>`` block before
their reply or return the thinking apart (``reasoning_content``, which LangChain providers put in
``additional_kwargs``). Both forms are handled here: ``split_thinking`` for a whole reply,
``ThinkingFilter`` for a reply arriving token by token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage

OPEN, CLOSE = "<think>", "</think>"
_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)
#: Where providers put thinking they return apart from the reply.
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")


def split_thinking(text: str) -> tuple[str, str]:
    """Return (the reply without <think> blocks, the thinking); an unclosed block runs to the end."""
    thinking = "\n".join(m.group(0).removeprefix(OPEN).removesuffix(CLOSE).strip() for m in _BLOCK.finditer(text))
    # Some templates open the block in the prompt, so the reply starts inside it: "…</think>answer".
    if CLOSE in text and OPEN not in text.split(CLOSE, 1)[0]:
        head, text = text.split(CLOSE, 1)
        thinking = f"{head.strip()}\n{thinking}".strip()
    return _BLOCK.sub("", text).strip(), thinking


def thinking_of(message: BaseMessage) -> str:
    """Return the thinking a message carries apart from its content (empty when none)."""
    extra = message.additional_kwargs or {}
    for key in REASONING_KEYS:
        value = extra.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


@dataclass
class ThinkingFilter:
    """Split a streamed reply into visible text and thinking, chunk by chunk.

    ``feed`` returns (visible, thinking) for what can be decided so far; a chunk that might be the
    start of a tag is held back until the next one shows whether it is.
    """

    inside: bool = False
    _held: str = field(default="", repr=False)

    def feed(self, chunk: str) -> tuple[str, str]:
        """Return the visible text and the thinking in ``chunk`` (with what was held back before)."""
        text, self._held = self._held + chunk, ""
        visible: list[str] = []
        thinking: list[str] = []
        while text:
            tag = CLOSE if self.inside else OPEN
            at = text.find(tag)
            if at < 0:
                keep = _partial_tag_suffix(text, tag)
                if keep:
                    text, self._held = text[:-keep], text[-keep:]
                (thinking if self.inside else visible).append(text)
                break
            (thinking if self.inside else visible).append(text[:at])
            text = text[at + len(tag) :]
            self.inside = not self.inside
        return "".join(visible), "".join(thinking)

    def flush(self) -> tuple[str, str]:
        """Return what is still held back (the stream ended)."""
        held, self._held = self._held, ""
        return ("", held) if self.inside else (held, "")


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Return the length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
