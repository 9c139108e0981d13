"""Shared prompt prefixes: the KV tree of a batch, the cache kept across calls, and batched prefill.

Prompts of a batch share long prefixes: every triage and draft prompt starts with the same system
prompt, and the prompts of one thread share the thread. Such prefixes are run through the model once
(``build_prefix_tree``, ``SharedPrefixes``) and kept across calls (``PrefixCache``); each prompt's own
remainder runs on top of them, in batches of similar length so that little padding is computed.
Label scoring (scoring.py) and drafting (drafting.py) both start from here: ``SharedPrefixes.prefill``
gives a batch's cache and hidden states, and ``DecodeStart`` is a prefilled batch a draft decodes from.

All of it relies on the model taking arbitrary attention masks (``supports_custom_masks``); callers
fall back to plain full sequences where it does not.

Over 400 lines because it is one idea: the prefix tree, the cache of its nodes and the batched prefill
on top of them only make sense together.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


def base_decoder(model: Any) -> Any:
    """The transformer without its vocabulary head (``model.model`` for Llama/Qwen-style models)."""
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        decoder = None
    return decoder if decoder is not None else model.base_model


def pad_right(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` on ``device`` with every row left-aligned (padding on the right)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def supports_custom_masks(model: Any) -> bool:
    """Whether every layer is full attention under sdpa or eager, which take arbitrary masks.

    Prefix sharing (and the trie pass) relies on that; flash/flex kernels and sliding-window or
    linear-attention layers do not qualify.
    """
    layer_types = getattr(model.config, "layer_types", None) or ()
    if any(kind != "full_attention" for kind in layer_types):
        return False
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")


# --- the prefix tree, its cache and the batched prefill -----------------------------------------

MIN_SHARED_TOKENS = 16
"""A prefix is run once for all the prompts that start with it only if it is at least this long
(beyond the shorter prefix it extends): each one costs a forward call of its own."""

PADDING_SLACK = {"cpu": 0.1}
"""How many padded tokens a forward pass may carry per real token before rows go to separate passes.

On a CPU a padded token costs as much as a real one and an extra call very little, so rows of very
different lengths run separately; on accelerators wide batches matter more than padding.
"""
DEFAULT_PADDING_SLACK = 1.0
FREE_PADDING_TOKENS = {"cpu": 48}
"""Padded tokens a pass may carry on top of the slack: about what a forward call costs by itself.

On a CPU a pass of SmolLM2-135M has ~60 ms of fixed cost (Python and per-layer dispatch over 30
layers), the price of ~40 tokens at ~1.5 ms each: short prompts are cheaper padded together than
run one call each.
"""

KV = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer ``(keys, values)``, each ``[batch, kv_heads, length, head_dim]``."""


@dataclass(frozen=True)
class PrefixTree:
    """Prompt prefixes shared by at least two prompts of a batch, as a tree.

    Node ``k`` is the first ``ends[k]`` tokens of prompt ``sources[k]``; it extends node ``parents[k]``
    (-1: none), and parents come before their children. ``row_nodes[i]`` is the longest node prompt
    ``i`` starts with (-1: none). Every prompt keeps at least one token of its own.
    """

    parents: list[int]
    ends: list[int]
    sources: list[int]
    row_nodes: list[int]

    def prefix_length(self, row: int) -> int:
        node = self.row_nodes[row]
        return self.ends[node] if node >= 0 else 0


def build_prefix_tree(prompts: Sequence[Sequence[int]], min_shared: int = MIN_SHARED_TOKENS) -> PrefixTree:
    """Split prompts by their first differing token, recursively; shared runs become nodes.

    E.g. triage prompts share the system prompt, and those of one channel share the instructions after
    it; draft prompts share a system prompt per reply language.
    """
    parents: list[int] = []
    ends: list[int] = []
    sources: list[int] = []
    row_nodes = [-1] * len(prompts)
    # (rows that agree on their first `start` tokens, start, deepest node they share)
    pending: list[tuple[list[int], int, int]] = [(list(range(len(prompts))), 0, -1)]
    while pending:
        rows, start, parent = pending.pop()
        if len(rows) == 1:
            row_nodes[rows[0]] = parent
            continue
        limit = min(len(prompts[row]) for row in rows) - 1
        first = prompts[rows[0]]
        end = min(start, limit)
        while end < limit and all(prompts[row][end] == first[end] for row in rows):
            end += 1
        if end - (ends[parent] if parent >= 0 else 0) >= min_shared:
            parents.append(parent)
            ends.append(end)
            sources.append(rows[0])
            parent = len(ends) - 1
        groups: dict[int, list[int]] = {}
        for row in rows:
            if len(prompts[row]) - 1 <= end:  # no token left to share beyond `end`: stops here
                row_nodes[row] = parent
            else:
                groups.setdefault(prompts[row][end], []).append(row)
        pending.extend((group, end + 1, parent) for group in groups.values())
    return PrefixTree(parents=parents, ends=ends, sources=sources, row_nodes=row_nodes)


class PrefixCache:
    """KV caches of prompt prefixes kept across calls, least recently used first out, within a byte budget.

    The instructions before the customer's text (triage prompt per channel, draft system prompt per
    reply language) recur in every batch; a worker computes each of them once. Entries are keyed by
    the prefix's token ids; a cache belongs to one model (``prefix_cache(model)``).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._sizes: dict[tuple[int, ...], int] = {}
        self._lengths: Counter[int] = Counter()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[int, ...]) -> KV | None:
        with self._lock:
            kv = self._entries.get(key)
            if kv is not None:
                self._entries.move_to_end(key)
            return kv

    def put(self, key: tuple[int, ...], kv: KV) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        with self._lock:
            if key in self._entries or size > self.max_bytes:
                return
            self._entries[key], self._sizes[key] = kv, size
            self._lengths[len(key)] += 1
            self._bytes += size
            while self._bytes > self.max_bytes:
                old, _ = self._entries.popitem(last=False)
                self._bytes -= self._sizes.pop(old)
                self._lengths[len(old)] -= 1

    def longest_prefix(self, prompt: Sequence[int], longer_than: int) -> int:
        """Length of the longest cached prefix of ``prompt`` (leaving it one token), if > ``longer_than``."""
        with self._lock:
            lengths = sorted((n for n, count in self._lengths.items() if count > 0), reverse=True)
        for length in lengths:
            if length <= longer_than:
                break
            if length < len(prompt) and tuple(prompt[:length]) in self._entries:
                return length
        return 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self._lengths.clear()
            self._bytes = 0


PREFIX_CACHE_BYTES = 256 * 2**20
"""Per model. SmolLM2-135M in fp32 takes 46 KB of KV per token, Qwen2.5-0.5B 24 KB (12 KB in bf16)."""

_PREFIX_CACHES: weakref.WeakKeyDictionary[Any, PrefixCache] = weakref.WeakKeyDictionary()
_PREFIX_CACHES_LOCK = threading.Lock()


def prefix_cache(model: Any) -> PrefixCache:
    """The prefix cache of ``model`` (created on first use)."""
    with _PREFIX_CACHES_LOCK:
        cache = _PREFIX_CACHES.get(model)
        if cache is None:
            cache = _PREFIX_CACHES[model] = PrefixCache(PREFIX_CACHE_BYTES)
        return cache


class SharedPrefixes:
    """The KV cache of every node of a :class:`PrefixTree`, each computed once, ready to batch.

    Nodes already in the model's :class:`PrefixCache` are not computed again, and a prompt whose
    longest node is shorter than a cached prefix of it starts from that one instead. ``prefill(rows)``
    starts a batch from these: each row's prefix is copied into the batch cache right-aligned (left
    padding), and the rest of every prompt runs on top of it in one pass.
    """

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], tree: PrefixTree) -> None:
        self.model = model
        self.decoder = base_decoder(model)
        self.device = model.device
        self.prompts = prompts
        store = prefix_cache(model)
        parents, ends, sources = list(tree.parents), list(tree.ends), list(tree.sources)
        row_nodes = list(tree.row_nodes)
        extended: dict[tuple[int, ...], int] = {}
        for row, prompt in enumerate(prompts):
            length = store.longest_prefix(prompt, tree.prefix_length(row))
            if length:
                key = tuple(prompt[:length])
                if key not in extended:
                    parents.append(row_nodes[row])
                    ends.append(length)
                    sources.append(row)
                    extended[key] = len(ends) - 1
                row_nodes[row] = extended[key]
        self.tree = tree = PrefixTree(parents=parents, ends=ends, sources=sources, row_nodes=row_nodes)

        node_kv = self._node_kv(store, prompts, tree)
        # The nodes rows start from, stacked per layer and right-aligned to the longest, plus an all-zero
        # entry for rows without a prefix.
        used = sorted({node for node in tree.row_nodes if node >= 0})
        self._slot = {node: slot for slot, node in enumerate(used)}
        self._empty_slot = len(used)
        self.width = max((tree.ends[node] for node in used), default=0)
        self._stacked: KV = []
        if used:
            for layer in range(len(node_kv[used[0]])):
                keys, values = node_kv[used[0]][layer]
                stacked_keys = keys.new_zeros((len(used) + 1, keys.shape[1], self.width, keys.shape[3]))
                stacked_values = values.new_zeros(
                    (len(used) + 1, values.shape[1], self.width, values.shape[3])
                )
                for slot, node in enumerate(used):
                    length = tree.ends[node]
                    stacked_keys[slot, :, self.width - length :] = node_kv[node][layer][0][0]
                    stacked_values[slot, :, self.width - length :] = node_kv[node][layer][1][0]
                self._stacked.append((stacked_keys, stacked_values))

    def _node_kv(self, store: PrefixCache, prompts: Sequence[Sequence[int]], tree: PrefixTree) -> list[KV]:
        """The KV cache of every node: from ``store``, else computed (and stored).

        Nodes that extend the same parent (e.g. the draft system prompt of each reply language after
        their common opening) are computed together in one batch, right-padded: one wide forward pass
        keeps a CPU's matrix units busier than one pass per node.
        """
        from transformers.cache_utils import DynamicCache

        keys = [tuple(prompts[source][:end]) for source, end in zip(tree.sources, tree.ends, strict=True)]
        node_kv: list[KV | None] = [store.get(key) for key in keys]
        siblings: dict[int, list[int]] = {}
        for node, kv in enumerate(node_kv):
            if kv is None:
                siblings.setdefault(tree.parents[node], []).append(node)
        # Parents precede their children, so by the time a parent's children run, the parent is known.
        for parent in sorted(siblings):
            nodes = siblings[parent]
            start = tree.ends[parent] if parent >= 0 else 0
            parent_kv = node_kv[parent] if parent >= 0 else None
            segments = [prompts[tree.sources[node]][start : tree.ends[node]] for node in nodes]
            ids, segment_mask = pad_right(segments, 0, self.device)
            cache: Any = (
                DynamicCache(
                    ddp_cache_data=[
                        (k.expand(len(nodes), -1, -1, -1), v.expand(len(nodes), -1, -1, -1))
                        for k, v in parent_kv
                    ]
                )
                if parent_kv is not None
                else DynamicCache()
            )
            prefix_mask = torch.ones((len(nodes), start), dtype=torch.long, device=self.device)
            self.decoder(
                input_ids=ids,
                attention_mask=torch.cat([prefix_mask, segment_mask], 1),
                position_ids=torch.arange(start, start + ids.shape[1], device=self.device)
                .unsqueeze(0)
                .expand(len(nodes), -1),
                past_key_values=cache,
                use_cache=True,
            )
            for row, node in enumerate(nodes):
                # Right padding: a node's own tokens come first; clone so that the batch can be freed.
                end = tree.ends[node]
                kv = [
                    (layer.keys[row : row + 1, :, :end].clone(), layer.values[row : row + 1, :, :end].clone())
                    for layer in cache.layers
                ]
                store.put(keys[node], kv)
                node_kv[node] = kv
        return [kv for kv in node_kv if kv is not None]

    def prefix_length(self, row: int) -> int:
        return self.tree.prefix_length(row)

    def rest_length(self, row: int) -> int:
        return len(self.prompts[row]) - self.prefix_length(row)

    def prefill(self, rows: Sequence[int], pad_id: int) -> Prefilled:
        """Run the rest of each prompt in ``rows`` on top of its shared prefix, as one batch."""
        from transformers.cache_utils import DynamicCache

        device = self.device
        prefixes = [self.prefix_length(row) for row in rows]
        width = max(prefixes)
        layers: KV = []
        if width > 0:
            index = torch.tensor(
                [
                    self._slot[self.tree.row_nodes[row]] if prefix else self._empty_slot
                    for row, prefix in zip(rows, prefixes, strict=True)
                ],
                device=device,
            )
            for keys, values in self._stacked:
                layers.append(
                    (
                        keys[:, :, self.width - width :].index_select(0, index),
                        values[:, :, self.width - width :].index_select(0, index),
                    )
                )
        cache = DynamicCache(ddp_cache_data=layers) if layers else DynamicCache()
        prefix_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, prefix in enumerate(prefixes):
            prefix_mask[i, width - prefix :] = 1
        rest_ids, rest_mask = pad_right(
            [self.prompts[row][prefix:] for row, prefix in zip(rows, prefixes, strict=True)], pad_id, device
        )
        mask = torch.cat([prefix_mask.to(device), rest_mask], 1)
        positions = torch.tensor(prefixes, device=device).unsqueeze(1) + torch.arange(
            rest_ids.shape[1], device=device
        ).unsqueeze(0)
        hidden = self.decoder(
            input_ids=rest_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
        rest_lengths = [len(self.prompts[row]) - prefix for row, prefix in zip(rows, prefixes, strict=True)]
        return Prefilled(rows=list(rows), cache=cache, mask=mask, hidden=hidden, rest_lengths=rest_lengths)

    def chunks(self, rows: Sequence[int], max_tokens: int, *, extra: int = 0) -> list[list[int]]:
        """Split ``rows`` into prefill batches: similar rest lengths, within ``max_tokens``.

        A batch costs rows x (longest prefix + longest rest + ``extra``) of the token budget; rows join
        a batch while its padding stays within the device's slack (``PADDING_SLACK``) plus
        ``FREE_PADDING_TOKENS``.
        """
        slack = PADDING_SLACK.get(self.device.type, DEFAULT_PADDING_SLACK)
        free = FREE_PADDING_TOKENS.get(self.device.type, 0)
        order = sorted(rows, key=lambda row: -self.rest_length(row))
        groups: list[list[int]] = []
        current: list[int] = []
        real = longest = widest = 0
        for row in order:
            rest, prefix = self.rest_length(row), self.prefix_length(row)
            if current:
                size = len(current) + 1
                fits = size * (max(widest, prefix) + longest + extra) <= max_tokens
                if fits and size * longest - (real + rest) <= slack * (real + rest) + free:
                    current.append(row)
                    real += rest
                    widest = max(widest, prefix)
                    continue
                groups.append(current)
            current, real, longest, widest = [row], rest, rest, prefix
        if current:
            groups.append(current)
        return groups


@dataclass
class Prefilled:
    """A batch of prompts run through the decoder: cache, 2D mask over it, and the rest's hidden states."""

    rows: list[int]
    cache: Any
    mask: torch.Tensor
    """``[rows, width]``: 1 for every real token (prefix, then the prompt's own rest) in the cache."""
    hidden: torch.Tensor
    """``[rows, longest rest, hidden]``: decoder output of each prompt's own tokens (right-padded)."""
    rest_lengths: list[int]


@dataclass
class DecodeStart:
    """A batch of prompts already run through the decoder, for drafting.py to decode from."""

    rows: list[int]
    """The prompt (request) index of each batch row."""
    kv: KV
    """Per layer ``(keys, values)``, ``[rows, kv_heads, width, head_dim]``."""
    mask: torch.Tensor
    """``[rows, width]``: 1 for every cache column the row's prompt consists of."""
    last: torch.Tensor
    """``[rows, hidden]``: decoder output at each prompt's last token (it predicts the first new one)."""
    positions: list[int]
    """Position of each row's first new token: its prompt's length."""

    @classmethod
    def from_prefilled(cls, batch: Prefilled, lengths: Sequence[int]) -> DecodeStart:
        """Prompts prefilled as they are (``lengths``: the prompts' lengths, per batch row)."""
        device = batch.hidden.device
        last = batch.hidden[
            torch.arange(len(batch.rows), device=device), torch.tensor(batch.rest_lengths) - 1
        ]
        kv = [(layer.keys, layer.values) for layer in batch.cache.layers]
        return cls(rows=batch.rows, kv=kv, mask=batch.mask, last=last, positions=list(lengths))
