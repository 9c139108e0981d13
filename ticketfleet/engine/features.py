"""Hidden-state features of a thread, for trained heads (heads.py): one pooled vector per item.

The vector is the hidden state of one layer (an ``output_hidden_states`` index: 0 the embeddings, -1 the
last layer after its norm), pooled over the tokens of the item's *thread* as the triage prompt encodes
it: the defused, trimmed thread after the system prompt (``TransformersEngine._prepare`` builds it).
The system prompt is the same for every item, so it carries nothing about the ticket and is left out
of the pooling; ``"mean"`` averages the thread's tokens, ``"last"`` takes its last token.

Cost and design (two passes when some fields are still prompted): this is a forward pass of its own
over each thread, on top of the system prompt's KV cache (computed once and kept in the model's prefix
cache), so each thread token runs once more; the label turn and the answer tries do not. When heads
cover every prompted field, the engine's ``classify`` runs only this pass (no label scoring at all);
when they cover some, label scoring still reads the thread for the others and the thread is read
twice. Taking the states from the label-scoring prefill instead would save that second read, but that
prefill runs only each batch's unshared rest of every prompt (prefix_cache.py shares longer prefixes
too, e.g. two messages of one ticket) and returns only the last layer. A layer below the last stops the
pass there (a pre-hook on that layer): the layers above it never run.

Measured on SmolLM2-135M (GGUF, CPU, 2 threads, 64 sample tickets, threads 146 tokens on average after
a 220-token system prompt): prompted classify 15.4-16.5 s, this pass alone at layer -1 11.7-12.1 s
(~0.75 of it: the thread dominates the label scoring's cost), classify with heads on every field at
layer -1 12.0 s (1.3x faster), at layer 6 of 30 2.5-2.7 s (~6x faster).

Batches are right-padded, so a row's tokens attend to exactly the system prompt and the tokens before
them in the row whatever the batch, and rows are cut to ``max_batch_tokens`` (rows x (prefix + longest
thread)) like the scoring passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ticketfleet.engine.prefix_cache import (
    DEFAULT_PADDING_SLACK,
    FREE_PADDING_TOKENS,
    KV,
    PADDING_SLACK,
    base_decoder,
    pad_right,
    prefix_cache,
)

POOLINGS: tuple[str, ...] = ("mean", "last")


def shared_length(prompt: Sequence[int], prefix: Sequence[int]) -> int:
    """How many leading tokens ``prompt`` shares with ``prefix``, leaving ``prompt`` at least one token."""
    limit = min(len(prompt) - 1, len(prefix))
    n = 0
    while n < limit and prompt[n] == prefix[n]:
        n += 1
    return n


def check_recipe(model: Any, layer: int, pooling: str) -> None:
    """Refuse a layer the model does not have and a pooling this module does not know."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    states = int(model.config.num_hidden_layers) + 1
    if not -states <= layer < states:
        raise ValueError(f"layer {layer} is out of range: the model has hidden states 0..{states - 1}")


@torch.inference_mode()
def pooled_hidden_states(
    model: Any,
    prompts: Sequence[Sequence[int]],
    starts: Sequence[int],
    *,
    layer: int,
    pooling: str = "mean",
    max_batch_tokens: int,
    pad_id: int = 0,
) -> np.ndarray:
    """``[len(prompts), hidden]`` float32: layer ``layer`` pooled over ``prompts[i][starts[i]:]``.

    ``prompts[i][:starts[i]]`` is a prefix whose KV cache is taken from (or put into) the model's
    prefix cache; prompts that share it run together on top of it.
    """
    check_recipe(model, layer, pooling)
    hidden_size = int(model.config.hidden_size)
    out = np.zeros((len(prompts), hidden_size), dtype=np.float32)
    if not prompts:
        return out
    decoder = base_decoder(model)
    device = model.device
    states = int(model.config.num_hidden_layers) + 1
    last_layer = layer % states == states - 1
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    for row, (prompt, start) in enumerate(zip(prompts, starts, strict=True)):
        if not 0 <= start < len(prompt):
            raise ValueError(f"prompt {row}: start {start} leaves no token to pool")
        by_prefix.setdefault(tuple(prompt[:start]), []).append(row)

    for prefix, rows in by_prefix.items():
        kv = _prefix_kv(model, decoder, prefix)
        width = len(prefix)
        for batch in _batches(
            rows, [len(prompts[row]) - width for row in rows], width, max_batch_tokens, device
        ):
            rests = [prompts[row][width:] for row in batch]
            ids, rest_mask = pad_right(rests, pad_id, device)
            n = len(batch)
            cache = _cache_for(kv, n)
            mask = torch.cat([torch.ones((n, width), dtype=rest_mask.dtype, device=device), rest_mask], 1)
            positions = width + torch.arange(ids.shape[1], device=device).unsqueeze(0).expand(n, -1)
            hidden = _run_to(
                decoder,
                None if last_layer else layer % states,
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            ).float()
            if pooling == "mean":
                weights = rest_mask.to(hidden.dtype).unsqueeze(-1)
                pooled = (hidden * weights).sum(1) / weights.sum(1)
            else:
                last = torch.tensor([len(rest) - 1 for rest in rests], device=device)
                pooled = hidden[torch.arange(n, device=device), last]
            out[batch] = pooled.cpu().numpy()
    return out


def _batches(
    rows: list[int], rests: list[int], width: int, max_tokens: int, device: torch.device
) -> list[list[int]]:
    """``rows`` (rest lengths ``rests``) longest first, cut where a batch would exceed ``max_tokens``
    (rows x (``width`` + longest rest)) or carry more padding than the device's slack (the rule of
    ``SharedPrefixes.chunks``: on a CPU every padded token costs as much as a real one)."""
    slack = PADDING_SLACK.get(device.type, DEFAULT_PADDING_SLACK)
    free = FREE_PADDING_TOKENS.get(device.type, 0)
    order = sorted(range(len(rows)), key=lambda i: -rests[i])
    batches: list[list[int]] = []
    current: list[int] = []
    real = longest = 0
    for i in order:
        rest = rests[i]
        size = len(current) + 1
        if current and (
            size * (width + longest) > max_tokens
            or size * longest - (real + rest) > slack * (real + rest) + free
        ):
            batches.append(current)
            current, real = [], 0
        if not current:
            longest = rest
        current.append(rows[i])
        real += rest
    if current:
        batches.append(current)
    return batches


class _Reached(Exception):
    """Raised from a forward pre-hook once the wanted layer's input is known: later layers never run."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden


def _run_to(decoder: Any, index: int | None, **inputs: Any) -> torch.Tensor:
    """``hidden_states[index]`` of a decoder forward (None: the last layer, after its norm).

    ``hidden_states[i]`` for ``i`` below the number of layers is the input of layer ``i``: a pre-hook
    takes it there and stops the pass, so the layers above it cost nothing. A decoder without a
    ``layers`` list runs whole with ``output_hidden_states``.
    """
    if index is None:
        return decoder(**inputs).last_hidden_state
    layers = getattr(decoder, "layers", None)
    if layers is None or index >= len(layers):
        return decoder(**inputs, output_hidden_states=True).hidden_states[index]

    def stop(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise _Reached(args[0] if args else kwargs["hidden_states"])

    handle = layers[index].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        decoder(**inputs)
    except _Reached as reached:
        return reached.hidden
    finally:
        handle.remove()
    raise RuntimeError(f"the decoder never ran layer {index}")


def _prefix_kv(model: Any, decoder: Any, prefix: tuple[int, ...]) -> KV:
    """The KV cache of ``prefix`` (empty: none), from the model's prefix cache or computed and kept."""
    if not prefix:
        return []
    store = prefix_cache(model)
    kv = store.get(prefix)
    if kv is not None:
        return kv
    from transformers.cache_utils import DynamicCache

    cache: Any = DynamicCache()
    ids = torch.tensor([list(prefix)], dtype=torch.long, device=model.device)
    decoder(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        position_ids=torch.arange(len(prefix), device=model.device).unsqueeze(0),
        past_key_values=cache,
        use_cache=True,
    )
    kv = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    store.put(prefix, kv)
    return kv


def _cache_for(kv: KV, rows: int) -> Any:
    from transformers.cache_utils import DynamicCache

    if not kv:
        return DynamicCache()
    return DynamicCache(
        ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in kv]
    )
