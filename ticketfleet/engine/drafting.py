"""Reply drafts: thread trimming and batched greedy generation.

Generation is batched with LEFT padding: a decoder-only model appends new tokens after the last
position, so every row's prompt must end at the same column; right padding would make short prompts
continue after a run of pad tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ticketfleet.schemas import ThreadMessage

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


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` with every row right-aligned (padding on the left)."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence) :] = torch.tensor(list(sequence), dtype=torch.long)
            mask[row, width - len(sequence) :] = 1
    return ids, mask


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a reply: the tokenizer's eos, the model's eos list and ChatML's ``<|im_end|>``."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if marker in vocab:
            ids.add(int(vocab[marker]))
    return sorted(ids)


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int
    """New tokens produced for this row, up to and including the stop token."""
    seconds: float
    """This row's share of its batch's wall time."""


def _batches(lengths: Sequence[int], extra: int, max_tokens: int) -> list[list[int]]:
    """Group prompts (longest first) so rows x (longest prompt + new tokens) stays within budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for index in order:
        if groups and (len(groups[-1]) + 1) * (lengths[groups[-1][0]] + extra) <= max_tokens:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


@torch.inference_mode()
def generate_drafts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    max_batch_tokens: int,
) -> list[Generated]:
    """Greedy-decode a reply for each prompt (already chat-templated token ids), in input order."""
    if not prompts:
        return []
    pad_id = int(tokenizer.pad_token_id)
    stops = stop_token_ids(model, tokenizer)
    results: list[Generated | None] = [None] * len(prompts)
    for group in _batches([len(p) for p in prompts], max_new_tokens, max_batch_tokens):
        started = time.perf_counter()
        input_ids, attention_mask = left_pad([prompts[i] for i in group], pad_id)
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            # Greedy, whatever the checkpoint's generation_config says (Qwen ships with sampling on):
            # drafts must be reproducible for the same input and model revision.
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=stops,
            pad_token_id=pad_id,
        )
        new_tokens = output[:, input_ids.shape[1] :].cpu().tolist()
        share = (time.perf_counter() - started) / len(group)
        for row, index in enumerate(group):
            tokens = new_tokens[row]
            end = next((i + 1 for i, token in enumerate(tokens) if token in stops), len(tokens))
            text = tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()
            results[index] = Generated(text=text, tokens=end, seconds=share)
    return [result for result in results if result is not None]
