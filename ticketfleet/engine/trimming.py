"""Fitting a thread into the model's input budget: whole messages, oldest dropped first.

``trim_thread`` keeps the newest message (the one being answered) and as many of the messages before
it as fit ``max_input_tokens``, counting the chat template's tokens around each message too; it never
leaves a hole in the conversation. Only the newest message is ever cut, and only when it alone is over
budget (``truncate_to_tokens``, which keeps the head: customers state the problem first). The engine
records whether the model saw less than the whole thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ticketfleet.core.schemas import ThreadMessage

# Chat-template tokens around each message (<|im_start|>role\n ... <|im_end|>\n), counted against
# the thread budget so that max_input_tokens bounds what the model really reads.
MESSAGE_OVERHEAD_TOKENS = 5


@dataclass(frozen=True)
class TrimmedThread:
    messages: list[tuple[str, str]]
    """``(role, text)`` pairs that fit the budget, oldest first; the last one is always the newest."""
    dropped: int
    """How many of the oldest messages were left out."""
    truncated_last: bool
    """The newest message alone was over budget and was cut."""

    @property
    def truncated(self) -> bool:
        """Whether the model sees less than the whole thread."""
        return self.dropped > 0 or self.truncated_last


def truncate_to_tokens(tokenizer: Any, text: str, max_tokens: int) -> tuple[str, bool]:
    """Keep the first ``max_tokens`` tokens of ``text``; returns ``(text, was_cut)``.

    The head is kept because customers usually state the problem first.
    """
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text, False
    # A cut can split a multi-byte character; drop the replacement character it decodes to.
    return tokenizer.decode(ids[: max(max_tokens, 1)]).rstrip("\ufffd"), True


def trim_thread(
    thread: Sequence[ThreadMessage], tokenizer: Any, max_tokens: int, *, texts: Sequence[str] | None = None
) -> TrimmedThread:
    """Fit a thread into ``max_tokens``, dropping the oldest messages first.

    The newest message (the one being answered) is always kept; if it alone is over budget it is
    truncated. Older messages are kept newest-first while they fit, and once one does not fit, it and
    everything older are dropped, so the model never sees a conversation with holes in it.
    ``texts`` overrides the message texts (e.g. defused copies) while roles come from ``thread``.
    """
    bodies = list(texts) if texts is not None else [message.text for message in thread]
    if len(bodies) != len(thread) or not thread:
        raise ValueError("trim_thread needs a non-empty thread and one text per message")
    last_budget = max(max_tokens - MESSAGE_OVERHEAD_TOKENS, 1)
    last_text, cut = truncate_to_tokens(tokenizer, bodies[-1], last_budget)
    kept: list[tuple[str, str]] = [(thread[-1].role, last_text)]
    if cut:
        return TrimmedThread(messages=kept, dropped=len(thread) - 1, truncated_last=True)

    used = len(tokenizer.encode(last_text, add_special_tokens=False)) + MESSAGE_OVERHEAD_TOKENS
    for index in range(len(thread) - 2, -1, -1):
        cost = len(tokenizer.encode(bodies[index], add_special_tokens=False)) + MESSAGE_OVERHEAD_TOKENS
        if used + cost > max_tokens:
            return TrimmedThread(messages=kept, dropped=index + 1, truncated_last=False)
        kept.insert(0, (thread[index].role, bodies[index]))
        used += cost
    return TrimmedThread(messages=kept, dropped=0, truncated_last=False)
