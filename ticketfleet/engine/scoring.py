"""Constrained label scoring: pick each triage label by how likely the model is to say it.

For a prompt and a field (``"Sentiment:"``), every allowed label is scored as the sum of the
log-probabilities of *all* its tokens, teacher-forced after the prompt and the answer prefix. A softmax
over those scores gives the confidences, so they sum to 1 and the answer can never fall outside the
allowed set (unlike parsing free text the model generated).

Two things keep this fast on a CPU:

* The vocabulary projection (``lm_head``, 151,936 x hidden for Qwen) is applied only at the few
  positions that predict label tokens, not at every position; on small models it otherwise costs more
  than the transformer itself.
* Each prompt is run once and all of its (answer prefix + label) continuations are scored in one
  more pass on top of its KV cache, packed as a token trie under a tree-shaped attention mask.
  ``share_prompt=False`` runs every prompt + continuation as its own full sequence instead: slower,
  but the plain reference the tests compare against (both paths give the same scores).
* Prefixes that several prompts share (the system prompt) are run once (``build_prefix_tree``,
  ``SharedPrefixes``) and kept across calls (``PrefixCache``); each prompt's own remainder runs on
  top of them, in batches of similar length so that little padding is computed. Drafting
  (drafting.py) prefills its prompts the same way.
* A request's ``continuation`` (the reply turn after a thread) runs in the trie pass too, and
  ``score_options_and_continue`` hands its cache back (``DecodeStart``): drafts decode from there, so
  a thread is read once for its labels and its reply.

Small models favour some labels whatever the text says (SmolLM2-135M answers "refund" for nearly every
ticket). ``label_priors`` and ``FieldScores.calibrated`` implement contextual calibration ("Calibrate
Before Use", Zhao et al. 2021): score the labels once for content-free prompts, and divide each item's
label probabilities by that prior (subtract it in log space) before normalising.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ticketfleet.core.schemas import FieldPrediction
from ticketfleet.engine.prompts import LabelField


@dataclass(frozen=True)
class ScoreRequest:
    """One prompt and the continuations to score after it: ``(prefix_ids, label_ids)`` pairs.

    The prefix (e.g. ``"Sentiment:"``) is conditioned on but not scored; the label tokens are scored.
    """

    prompt_ids: Sequence[int]
    options: Sequence[tuple[Sequence[int], Sequence[int]]]
    continuation: Sequence[int] = ()
    """Tokens to run after the prompt alongside the options, scored nothing, for a caller to continue
    from (a draft's reply turn): the shared-prompt path hands their cache back as a ``DecodeStart``."""


@dataclass(frozen=True)
class FieldScores:
    """Scores of every allowed label of one field, for one item."""

    field: LabelField
    logprobs: tuple[float, ...]
    """Sum of the label tokens' log-probabilities, per label (same order as ``field.labels``)."""
    probs: tuple[float, ...]
    """Softmax of ``scores``: the confidence of each label; sums to 1."""
    prior: tuple[float, ...] | None = None
    """Log prior subtracted from ``logprobs`` before the softmax (see ``calibrated``); None: uncalibrated."""

    @property
    def scores(self) -> tuple[float, ...]:
        """What ``probs`` is the softmax of: ``logprobs``, minus ``prior`` when calibrated."""
        if self.prior is None:
            return self.logprobs
        return tuple(lp - p for lp, p in zip(self.logprobs, self.prior, strict=True))

    def calibrated(self, prior: Sequence[float]) -> FieldScores:
        """These scores with a per-label log ``prior`` taken out: ``probs = softmax(logprobs - prior)``.

        ``logprobs`` stay the raw model scores, so a calibrated result still shows what the model said.
        """
        scores = tuple(lp - p for lp, p in zip(self.logprobs, prior, strict=True))
        return FieldScores(self.field, self.logprobs, softmax(scores), tuple(prior))

    @property
    def best_index(self) -> int:
        return max(range(len(self.probs)), key=lambda i: (self.probs[i], -i))

    def prediction(self) -> FieldPrediction:
        best = self.best_index
        return FieldPrediction(value=self.field.labels[best], confidence=min(max(self.probs[best], 0.0), 1.0))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.field.labels, self.probs, strict=True))


def softmax(scores: Sequence[float]) -> tuple[float, ...]:
    top = max(scores)
    weights = [math.exp(score - top) for score in scores]
    total = math.fsum(weights)
    return tuple(weight / total for weight in weights)


def log_softmax(scores: Sequence[float]) -> tuple[float, ...]:
    top = max(scores)
    log_total = top + math.log(math.fsum(math.exp(score - top) for score in scores))
    return tuple(score - log_total for score in scores)


def _log_mean_exp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(value - top) for value in values) / len(values))


def label_priors(content_free: Sequence[dict[str, FieldScores]]) -> dict[str, tuple[float, ...]]:
    """Per field, the log of the label distribution averaged over content-free prompts.

    Probabilities (normalised over the allowed labels) are averaged, as in Zhao et al. 2021; it is done
    in log space so that a label the model all but rules out still gets a finite prior.
    """
    if not content_free:
        raise ValueError("label priors need at least one content-free prompt")
    priors: dict[str, tuple[float, ...]] = {}
    for name in content_free[0]:
        per_prompt = [log_softmax(scores[name].logprobs) for scores in content_free]
        priors[name] = tuple(_log_mean_exp(column) for column in zip(*per_prompt, strict=True))
    return priors


def base_decoder(model: Any) -> Any:
    """The transformer without its vocabulary head (``model.model`` for Llama/Qwen-style models)."""
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        decoder = None
    return decoder if decoder is not None else model.base_model


def _label_logprobs(model: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for each row of ``hidden`` ([N, H]) through the model's output head."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-2-style models squash logits before the softmax
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _pad_right(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _chunks(lengths: Sequence[int], order: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Split ``order`` into consecutive groups whose padded size (rows x longest) fits ``max_tokens``.

    A single row longer than the budget still forms its own group: it has to run somehow.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = lengths[index]
        if current and max(longest, length) * (len(current) + 1) > max_tokens:
            groups.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class _Trie:
    """A request's continuations packed as a token trie, so shared prefixes are computed once.

    Node ``i`` holds ``tokens[i]`` at ``depths[i]`` tokens after the prompt; it may attend to the prompt
    and to its ancestors (``ancestors[i]``, itself included), which is exactly what it would see if
    its own path were run as a separate sequence. Leaves whose output predicts nothing that is scored
    are left out (a label's last token is a target, not an input).
    """

    tokens: list[int]
    depths: list[int]
    ancestors: torch.Tensor  # [N, N] bool
    picks: list[tuple[int, int, int]]  # (node predicting the token, target token, option)
    kept: int = 0
    """The ``keep`` path's length: its tokens are nodes ``0 .. kept - 1``, in order."""


def _build_trie(options: Sequence[tuple[Sequence[int], Sequence[int]]], keep: Sequence[int] = ()) -> _Trie:
    """The trie of ``options``; ``keep``, a path nothing is scored on, is kept whole and comes first."""
    tokens: list[int] = list(keep)
    parents: list[int] = list(range(-1, len(keep) - 1))
    depths: list[int] = list(range(len(keep)))
    children: dict[tuple[int, int], int] = {
        (parent, token): i for i, (parent, token) in enumerate(zip(parents, tokens, strict=True))
    }
    picks: list[tuple[int, int, int]] = []
    for option, (prefix, label) in enumerate(options):
        node = -1
        path = [*prefix, *label]
        for depth, token in enumerate(path):
            if depth >= len(prefix):
                picks.append((node, token, option))  # the previous node's output predicts this token
            child = children.get((node, token))
            if child is None:
                child = len(tokens)
                children[(node, token)] = child
                tokens.append(token)
                parents.append(node)
                depths.append(depth)
            node = child
    # A node whose output predicts no scored token (the last token of a label that no other label
    # extends) only needs to be a target, not an input: leave it out of the pass. Nodes that predict
    # something, and their ancestors, stay; they attend to exactly what they did with the leaves in.
    needed = [i < len(keep) for i in range(len(tokens))]
    for node, _, _ in picks:
        while node >= 0 and not needed[node]:
            needed[node] = True
            node = parents[node]
    kept = [node for node in range(len(tokens)) if needed[node]]
    index = {node: i for i, node in enumerate(kept)}
    ancestors = torch.zeros((len(kept), len(kept)), dtype=torch.bool)
    for i, node in enumerate(kept):  # parents always precede their children
        if parents[node] >= 0:
            ancestors[i] = ancestors[index[parents[node]]]
        ancestors[i, i] = True
    return _Trie(
        tokens=[tokens[node] for node in kept],
        depths=[depths[node] for node in kept],
        ancestors=ancestors,
        picks=[(index[node], token, option) for node, token, option in picks],
        kept=len(keep),
    )


def _mask_for(model: Any, allowed: torch.Tensor) -> torch.Tensor | None:
    """A 4D ``allowed`` mask in the form the model's attention implementation expects, or None."""
    if not supports_custom_masks(model):
        return None
    if model.config._attn_implementation == "eager":
        blocked = torch.finfo(model.dtype).min
        return torch.zeros(allowed.shape, dtype=model.dtype, device=allowed.device).masked_fill(
            ~allowed, blocked
        )
    return allowed


def supports_custom_masks(model: Any) -> bool:
    """Whether every layer is full attention under sdpa or eager, which take arbitrary masks.

    Prefix sharing (and the trie pass) relies on that; flash/flex kernels and sliding-window or
    linear-attention layers do not qualify.
    """
    layer_types = getattr(model.config, "layer_types", None) or ()
    if any(kind != "full_attention" for kind in layer_types):
        return False
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager")


# --- shared prompt prefixes ----------------------------------------------------------------------

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
            ids, segment_mask = _pad_right(segments, 0, self.device)
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
        rest_ids, rest_mask = _pad_right(
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


def _score_with_shared_prompt(
    model: Any, requests: Sequence[ScoreRequest], pad_id: int, max_tokens: int, reserve: int
) -> tuple[list[list[float]], list[DecodeStart]] | None:
    """Run each prompt once and all of its continuations together on top of its KV cache.

    Prefixes that several prompts share (the instructions) run once per call (``SharedPrefixes``);
    then each batch of prompts runs its own remainder, and every continuation is scored in one more
    pass, packed as a trie with a tree-shaped attention mask. A request's ``continuation`` runs in that
    pass too; the batch's cache up to it comes back as a ``DecodeStart`` (rows with a continuation
    only), and ``reserve`` tokens per row (the new tokens to come) count against ``max_tokens``.
    Returns None where the model's attention implementation cannot take such a mask, and the caller
    falls back to full sequences.
    """
    if not supports_custom_masks(model):
        return None
    decoder = base_decoder(model)
    device = model.device
    results: list[list[float]] = [[0.0] * len(request.options) for request in requests]
    starts: list[DecodeStart] = []
    prompts = [request.prompt_ids for request in requests]
    shared = SharedPrefixes(model, prompts, build_prefix_tree(prompts))
    tries = [_build_trie(request.options, request.continuation) for request in requests]
    width = max(len(trie.tokens) for trie in tries)
    longest = max(trie.kept for trie in tries)
    extra = max(width, longest + reserve) if longest else width

    for group in shared.chunks(range(len(requests)), max_tokens, extra=extra):
        batch = shared.prefill(group, pad_id)
        rows = len(group)
        prompt_mask = batch.mask
        prompt_width = prompt_mask.shape[1]
        group_tries = [tries[i] for i in group]
        tree_width = max(len(trie.tokens) for trie in group_tries)
        tree_ids = torch.full((rows, tree_width), pad_id, dtype=torch.long)
        tree_positions = torch.zeros((rows, tree_width), dtype=torch.long)
        allowed = torch.zeros((rows, 1, tree_width, prompt_width + tree_width), dtype=torch.bool)
        allowed[:, 0, :, :prompt_width] = prompt_mask.bool().cpu().unsqueeze(1)
        first_real = prompt_mask.argmax(dim=1).tolist()  # prefixes are left-padded
        for row, (trie, index) in enumerate(zip(group_tries, group, strict=True)):
            n = len(trie.tokens)
            tree_ids[row, :n] = torch.tensor(trie.tokens)
            tree_positions[row, :n] = len(prompts[index]) + torch.tensor(trie.depths)
            allowed[row, 0, :n, prompt_width : prompt_width + n] = trie.ancestors
            # Padding rows attend to one real prompt token only: a fully masked row would make NaNs.
            allowed[row, 0, n:, :] = False
            allowed[row, 0, n:, first_real[row]] = True
        mask = _mask_for(model, allowed.to(device))
        hidden = decoder(
            input_ids=tree_ids.to(device),
            attention_mask=mask,
            position_ids=tree_positions.to(device),
            past_key_values=batch.cache,
            use_cache=True,
        ).last_hidden_state

        picks = [
            _Pick(row, node, token, group[row], option)
            for row, trie in enumerate(group_tries)
            for node, token, option in trie.picks
        ]
        _accumulate(model, hidden, picks, results)
        continued = [row for row, trie in enumerate(group_tries) if trie.kept]
        if continued:
            starts.append(
                _continued(batch, hidden, continued, [group_tries[row] for row in continued], group, prompts)
            )
    return results, starts


def _continued(
    batch: Prefilled,
    hidden: torch.Tensor,
    continued: list[int],
    tries: list[_Trie],
    group: Sequence[int],
    prompts: Sequence[Sequence[int]],
) -> DecodeStart:
    """The rows ``continued`` of a batch after the trie pass, as prompts that end with their continuation.

    Continuations are the first nodes of their tries, so the cache up to the longest of them is all a
    draft needs; the mask hides the other rows' longer continuations and the label nodes after them.
    """
    device = hidden.device
    prompt_width = batch.mask.shape[1]
    lengths = [trie.kept for trie in tries]
    used = prompt_width + max(lengths)
    select = torch.tensor(continued, device=device)
    whole = len(continued) == len(batch.rows)
    kv = [
        (layer.keys[:, :, :used], layer.values[:, :, :used])
        if whole
        else (
            layer.keys[:, :, :used].index_select(0, select),
            layer.values[:, :, :used].index_select(0, select),
        )
        for layer in batch.cache.layers
    ]
    tail = torch.arange(max(lengths), device=device).unsqueeze(0) < torch.tensor(
        lengths, device=device
    ).unsqueeze(1)
    mask = torch.cat([batch.mask.index_select(0, select), tail.to(batch.mask.dtype)], 1)
    last = hidden[select, torch.tensor(lengths, device=device) - 1]
    indices = [group[row] for row in continued]
    positions = [len(prompts[index]) + length for index, length in zip(indices, lengths, strict=True)]
    return DecodeStart(rows=indices, kv=kv, mask=mask, last=last, positions=positions)


def _score_full_sequences(
    model: Any, requests: Sequence[ScoreRequest], pad_id: int, max_tokens: int
) -> list[list[float]]:
    """Reference path: every prompt + prefix + label as its own sequence."""
    decoder = base_decoder(model)
    device = model.device
    results: list[list[float]] = [[0.0] * len(request.options) for request in requests]
    rows = [(i, o) for i, request in enumerate(requests) for o in range(len(request.options))]
    sequences = [
        [*requests[i].prompt_ids, *requests[i].options[o][0], *requests[i].options[o][1]] for i, o in rows
    ]
    lengths = [len(s) for s in sequences]
    for chunk in _chunks(lengths, sorted(range(len(rows)), key=lambda r: -lengths[r]), max_tokens):
        ids, mask = _pad_right([sequences[r] for r in chunk], pad_id, device)
        positions = torch.arange(ids.shape[1], device=device).unsqueeze(0).expand(len(chunk), -1)
        hidden = decoder(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        picks: list[_Pick] = []
        for k, r in enumerate(chunk):
            i, o = rows[r]
            prefix, label = requests[i].options[o]
            start = len(requests[i].prompt_ids) + len(prefix) - 1
            picks += [_Pick(k, start + t, token, i, o) for t, token in enumerate(label)]
        _accumulate(model, hidden, picks, results)
    return results


class _Pick(NamedTuple):
    """A hidden state whose next-token prediction is a label token."""

    row: int
    """Row in the current forward batch."""
    position: int
    """Position whose output predicts ``target``."""
    target: int
    request: int
    option: int


def _accumulate(model: Any, hidden: torch.Tensor, picks: Sequence[_Pick], results: list[list[float]]) -> None:
    """Add log p(target) at each picked position to its (request, option) score."""
    if not picks:
        return
    device = hidden.device
    rows = torch.tensor([p.row for p in picks], device=device)
    positions = torch.tensor([p.position for p in picks], device=device)
    targets = torch.tensor([p.target for p in picks], device=device)
    logprobs = _label_logprobs(model, hidden[rows, positions], targets).double().cpu().tolist()
    for pick, value in zip(picks, logprobs, strict=True):
        results[pick.request][pick.option] += value


@torch.inference_mode()
def score_options(
    model: Any,
    requests: Sequence[ScoreRequest],
    *,
    pad_id: int,
    max_batch_tokens: int,
    share_prompt: bool = True,
) -> list[list[float]]:
    """Sum of label-token log-probs for every option of every request (``[request][option]``).

    ``max_batch_tokens`` caps rows x padded length of each forward pass.
    """
    return score_options_and_continue(
        model, requests, pad_id=pad_id, max_batch_tokens=max_batch_tokens, share_prompt=share_prompt
    )[0]


@torch.inference_mode()
def score_options_and_continue(
    model: Any,
    requests: Sequence[ScoreRequest],
    *,
    pad_id: int,
    max_batch_tokens: int,
    share_prompt: bool = True,
    reserve: int = 0,
) -> tuple[list[list[float]], list[DecodeStart]]:
    """``score_options``, and the batches of requests with a ``continuation``, ready to decode from.

    No batches come back from the full-sequence path (``share_prompt=False``, or a model that cannot
    take tree masks): the caller then runs the continued prompts itself.
    """
    for request in requests:
        if not request.prompt_ids:
            raise ValueError("a score request needs a non-empty prompt")
        for prefix, label in request.options:
            if not prefix or not label:
                raise ValueError("every option needs a non-empty prefix and label")
    if not requests:
        return [], []
    if share_prompt:
        shared = _score_with_shared_prompt(model, requests, pad_id, max_batch_tokens, reserve)
        if shared is not None:
            return shared
    return _score_full_sequences(model, requests, pad_id, max_batch_tokens), []


def encode_field_options(tokenizer: Any, field: LabelField) -> list[tuple[list[int], list[int]]]:
    """Token ids of ``(answer prefix, " " + label)`` for each label of ``field``.

    Prefix and label are tokenized separately so the label's tokens are exactly the ones scored,
    whatever the tokenizer would merge across the boundary.
    """
    prefix = tokenizer.encode(field.answer_prefix, add_special_tokens=False)
    return [(prefix, tokenizer.encode(" " + label, add_special_tokens=False)) for label in field.rendered]


def score_fields(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    fields: Sequence[LabelField],
    *,
    max_batch_tokens: int,
    share_prompt: bool = True,
    turns: Sequence[Sequence[int]] | None = None,
) -> list[dict[str, FieldScores]]:
    """Score every field of every prompt; one ``{field name: FieldScores}`` per prompt, in order.

    ``turns[i]``, if given, is read between prompt ``i`` and the answer prefixes (the question turn
    after a thread); the scores are those of the prompt ``prompts[i] + turns[i]``.
    """
    return score_fields_and_continue(
        model,
        tokenizer,
        prompts,
        fields,
        max_batch_tokens=max_batch_tokens,
        share_prompt=share_prompt,
        turns=turns,
    )[0]


def score_fields_and_continue(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    fields: Sequence[LabelField],
    *,
    max_batch_tokens: int,
    share_prompt: bool = True,
    turns: Sequence[Sequence[int]] | None = None,
    continuations: Sequence[Sequence[int]] | None = None,
    reserve: int = 0,
) -> tuple[list[dict[str, FieldScores]], list[DecodeStart]]:
    """``score_fields``, and prompt ``i`` continued by ``continuations[i]`` (empty: none) in the same pass.

    The continued prompts (e.g. a thread followed by its reply turn) come back as ``DecodeStart``
    batches for ``drafting.decode_drafts``, ``reserve`` tokens a row counted for their decoding.
    """
    options_per_field = [encode_field_options(tokenizer, field) for field in fields]
    flat_options = [option for options in options_per_field for option in options]
    requests = [
        ScoreRequest(
            prompt_ids=prompt,
            options=[([*turns[i], *prefix], label) for prefix, label in flat_options]
            if turns
            else flat_options,
            continuation=continuations[i] if continuations else (),
        )
        for i, prompt in enumerate(prompts)
    ]
    scores, starts = score_options_and_continue(
        model,
        requests,
        pad_id=int(tokenizer.pad_token_id),
        max_batch_tokens=max_batch_tokens,
        share_prompt=share_prompt,
        reserve=reserve,
    )
    out: list[dict[str, FieldScores]] = []
    for per_prompt in scores:
        by_field: dict[str, FieldScores] = {}
        start = 0
        for field in fields:
            logprobs = tuple(per_prompt[start : start + len(field.labels)])
            start += len(field.labels)
            by_field[field.name] = FieldScores(field=field, logprobs=logprobs, probs=softmax(logprobs))
        out.append(by_field)
    return out, starts
