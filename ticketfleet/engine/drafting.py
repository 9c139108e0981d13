"""Reply drafts: batched greedy generation.

Generation is batched with LEFT padding: a decoder-only model appends new tokens after the last
position, so every row's prompt must end at the same column; right padding would make short prompts
continue after a run of pad tokens.

``generate_drafts`` runs its own greedy loop rather than ``model.generate``: prompts are prefilled on
top of their shared prefixes (the system prompt, see ``prefix_cache.SharedPrefixes``) in batches of
similar length, then decoded together from one preallocated KV cache, with finished rows dropped and
the loop ending once every row has stopped. It produces the tokens ``model.generate`` would (greedy, the
checkpoint's repetition penalty honoured) and falls back to it for models or generation settings it
does not cover (``fast_decoding``). ``decode_drafts`` runs the same loop from prompts the triage pass
has already run (``scoring.score_fields_and_continue``). What the thread of a draft prompt holds is
trimming.py's business.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ticketfleet.engine.prefix_cache import (
    DecodeStart,
    SharedPrefixes,
    base_decoder,
    build_prefix_tree,
    supports_custom_masks,
)


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
    """Greedy-decode a reply for each prompt (already chat-templated token ids), in input order.

    Greedy whatever the checkpoint's generation_config says (Qwen ships with sampling on): drafts must
    be reproducible for the same input and model revision. Its repetition penalty is honoured, as
    ``model.generate`` would. Prompts are decoded in batches of rows x (longest prompt + new tokens)
    within ``max_batch_tokens``; each stops at the first stop token (``stop_token_ids``).
    """
    if not prompts:
        return []
    pad_id = int(tokenizer.pad_token_id)
    stops = stop_token_ids(model, tokenizer)
    groups = _batches([len(p) for p in prompts], max_new_tokens, max_batch_tokens)
    results: list[Generated | None] = [None] * len(prompts)
    if not (supports_custom_masks(model) and _plain_greedy(model.generation_config)):
        _generate_with_hf(model, tokenizer, prompts, groups, pad_id, stops, max_new_tokens, results)
        return [result for result in results if result is not None]
    started = time.perf_counter()
    # Prompts share long prefixes (the system prompt and whatever follows it alike): run each once.
    shared = SharedPrefixes(model, prompts, build_prefix_tree(prompts))
    prefix_share = (time.perf_counter() - started) / len(prompts)
    for group in groups:
        started = time.perf_counter()
        starts = [
            DecodeStart.from_prefilled(batch, [len(prompts[row]) for row in batch.rows])
            for batch in (shared.prefill(chunk, pad_id) for chunk in shared.chunks(group, max_batch_tokens))
        ]
        new_tokens = _greedy_batch(model, starts, prompts, stops, max_new_tokens)
        share = prefix_share + (time.perf_counter() - started) / len(group)
        _store(tokenizer, group, [new_tokens[row] for row in group], share, results)
    return [result for result in results if result is not None]


def fast_decoding(model: Any) -> bool:
    """Whether ``decode_drafts`` can continue this model's prompts (else ``generate_drafts`` falls back)."""
    return supports_custom_masks(model) and _plain_greedy(model.generation_config)


@torch.inference_mode()
def decode_drafts(
    model: Any,
    tokenizer: Any,
    starts: Sequence[DecodeStart],
    prompts: Mapping[int, Sequence[int]],
    *,
    max_new_tokens: int,
    max_batch_tokens: int,
) -> dict[int, Generated]:
    """Greedy-decode from prompts already run (``scoring.score_fields_and_continue``), per prompt index.

    ``prompts[row]`` is the whole prompt of each row of ``starts`` (for the repetition penalty).
    Batches are decoded together while rows x (widest cache + ``max_new_tokens``) fits
    ``max_batch_tokens``; each ``Generated.seconds`` is its row's share of its decode batch only.
    """
    stops = stop_token_ids(model, tokenizer)
    results: dict[int, Generated] = {}
    groups: list[list[DecodeStart]] = []
    rows = width = 0
    for start in starts:
        wider = max(width, start.mask.shape[1])
        if groups and (rows + len(start.rows)) * (wider + max_new_tokens) <= max_batch_tokens:
            groups[-1].append(start)
            rows, width = rows + len(start.rows), wider
        else:
            groups.append([start])
            rows, width = len(start.rows), start.mask.shape[1]
    for group in groups:
        started = time.perf_counter()
        new_tokens = _greedy_batch(model, group, prompts, stops, max_new_tokens)
        share = (time.perf_counter() - started) / len(new_tokens)
        for row, tokens in new_tokens.items():
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            results[row] = Generated(text=text, tokens=len(tokens), seconds=share)
    return results


def _store(
    tokenizer: Any,
    group: Sequence[int],
    new_tokens: Sequence[list[int]],
    share: float,
    results: list[Generated | None],
) -> None:
    """Decode each row's new tokens (already cut after the stop token) into ``results[index]``."""
    for index, tokens in zip(group, new_tokens, strict=True):
        text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        results[index] = Generated(text=text, tokens=len(tokens), seconds=share)


def hf_greedy_generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    stops: Sequence[int],
    pad_id: int,
) -> list[list[int]]:
    """``model.generate`` forced to plain greedy; each row's new tokens, cut after its first stop token.

    The reference decoder: the fallback of ``generate_drafts`` and the naive baseline of bench/engine.py.
    """
    output = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention_mask.to(model.device),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=list(stops),
        pad_token_id=pad_id,
    )
    rows: list[list[int]] = output[:, input_ids.shape[1] :].cpu().tolist()
    stop_set = set(stops)
    return [
        tokens[: next((i + 1 for i, token in enumerate(tokens) if token in stop_set), len(tokens))]
        for tokens in rows
    ]


# Generation settings that would add a logits processor to greedy decoding in ``model.generate``,
# with their neutral values; the repetition penalty is the one ``_greedy_batch`` applies itself.
_NEUTRAL_GENERATION_SETTINGS: dict[str, tuple[Any, ...]] = {
    "guidance_scale": (None, 1, 1.0),
    "sequence_bias": (None,),
    "no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "remove_invalid_values": (None, False),
    "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "watermarking_config": (None,),
    "dola_layers": (None,),
}


def _plain_greedy(generation_config: Any) -> bool:
    """Whether greedy decoding under this config is argmax of the logits (after a repetition penalty)."""
    return all(
        getattr(generation_config, name, None) in neutral
        for name, neutral in _NEUTRAL_GENERATION_SETTINGS.items()
    )


@functools.cache
def _buffer_layer() -> Any:
    """The cache layer class (built on first use: importing transformers is slow)."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A layer cache in a preallocated buffer: appending writes in place instead of copying it all."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
            super().__init__()
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self._key_buffer, self._value_buffer, self._length = keys, values, length
            self._refresh()

        def _refresh(self) -> tuple[torch.Tensor, torch.Tensor]:
            keys = self.keys = self._key_buffer[:, :, : self._length]
            values = self.values = self._value_buffer[:, :, : self._length]
            return keys, values

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            end = self._length + key_states.shape[-2]
            self._key_buffer[:, :, self._length : end] = key_states
            self._value_buffer[:, :, self._length : end] = value_states
            self._length = end
            return self._refresh()

        def select(self, rows: torch.Tensor) -> None:
            """Keep only ``rows`` of the batch."""
            self._key_buffer = self._key_buffer.index_select(0, rows)
            self._value_buffer = self._value_buffer.index_select(0, rows)
            self._refresh()

    return BufferLayer


def _next_token_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _greedy_batch(
    model: Any,
    starts: Sequence[DecodeStart],
    prompts: Sequence[Sequence[int]] | Mapping[int, Sequence[int]],
    stops: Sequence[int],
    max_new_tokens: int,
) -> dict[int, list[int]]:
    """New tokens (up to and including the stop token) for every row of ``starts``, by prompt index.

    The batches are merged into one cache (rows left-padded to a common width, room for the new tokens
    preallocated) and decoded together. Rows that are done drop out of the batch once they are a
    quarter of it; decoding ends when all are.
    """
    from transformers.cache_utils import Cache

    device = model.device
    decoder = base_decoder(model)
    rows = [row for start in starts for row in start.rows]
    width = max(start.mask.shape[1] for start in starts)
    capacity = width + max_new_tokens
    layers: list[Any] = []
    buffer_layer = _buffer_layer()
    for index, (first_keys, first_values) in enumerate(starts[0].kv):
        keys = first_keys.new_zeros((len(rows), first_keys.shape[1], capacity, first_keys.shape[3]))
        values = first_values.new_zeros((len(rows), first_values.shape[1], capacity, first_values.shape[3]))
        offset = 0
        for start in starts:
            end, used = offset + len(start.rows), start.mask.shape[1]
            keys[offset:end, :, width - used : width] = start.kv[index][0]
            values[offset:end, :, width - used : width] = start.kv[index][1]
            offset = end
        layers.append(buffer_layer(keys, values, width))
    mask = torch.zeros((len(rows), capacity), dtype=torch.long, device=device)
    offset = 0
    for start in starts:
        mask[offset : offset + len(start.rows), width - start.mask.shape[1] : width] = start.mask
        offset += len(start.rows)
    hidden = torch.cat([start.last for start in starts])
    cache = Cache(layers=layers)
    positions = torch.tensor([position for start in starts for position in start.positions], device=device)

    penalty = getattr(model.generation_config, "repetition_penalty", None)
    seen: torch.Tensor | None = None
    stop_ids = set(stops)
    outputs: list[list[int]] = [[] for _ in rows]
    live = list(range(len(rows)))  # output index of each batch row
    done = [False] * len(rows)  # per batch row
    for step in range(max_new_tokens):
        logits = _next_token_logits(model, hidden)
        if penalty is not None and penalty != 1.0:
            if seen is None:
                seen = torch.zeros(logits.shape, dtype=torch.bool, device=device)
                for i, row in enumerate(rows):
                    seen[i, torch.tensor(list(prompts[row]), device=device)] = True
            penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
            logits = torch.where(seen, penalised, logits)
        tokens = logits.argmax(dim=-1)
        for i, token in enumerate(tokens.tolist()):
            if not done[i]:
                outputs[live[i]].append(token)
                done[i] = token in stop_ids
        if all(done) or step == max_new_tokens - 1:
            break
        if seen is not None:
            seen[torch.arange(len(live), device=device), tokens] = True
        finished = sum(done)
        if finished and 4 * finished >= len(live):
            keep = [i for i, row_done in enumerate(done) if not row_done]
            selected = torch.tensor(keep, device=device)
            for layer in layers:
                layer.select(selected)
            mask, positions, tokens = mask[selected], positions[selected], tokens[selected]
            seen = seen[selected] if seen is not None else None
            live = [live[i] for i in keep]
            done = [False] * len(keep)
        mask[:, width + step] = 1
        hidden = decoder(
            input_ids=tokens.unsqueeze(1),
            attention_mask=mask[:, : width + step + 1],
            position_ids=(positions + step).unsqueeze(1),
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state[:, -1]
    return dict(zip(rows, outputs, strict=True))


def _generate_with_hf(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    groups: Sequence[Sequence[int]],
    pad_id: int,
    stops: Sequence[int],
    max_new_tokens: int,
    results: list[Generated | None],
) -> None:
    """``model.generate`` on left-padded batches ``groups``: for models the fast path cannot take."""
    for group in groups:
        started = time.perf_counter()
        input_ids, attention_mask = left_pad([prompts[i] for i in group], pad_id)
        new_tokens = hf_greedy_generate(
            model, input_ids, attention_mask, max_new_tokens=max_new_tokens, stops=stops, pad_id=pad_id
        )
        _store(tokenizer, group, new_tokens, (time.perf_counter() - started) / len(group), results)
