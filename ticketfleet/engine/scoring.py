"""Constrained label scoring: pick each triage label by how likely the model is to say it.

For a prompt and a field (``"Sentiment:"``), every allowed label is scored as the sum of the
log-probabilities of *all* its tokens, teacher-forced after the prompt and the answer prefix. A softmax
over those scores gives the confidences (calibration.py), so they sum to 1 and the answer can never
fall outside the allowed set (unlike parsing free text the model generated).

Three things keep this fast on a CPU:

* The vocabulary projection (``lm_head``, 151,936 x hidden for Qwen) is applied only at the few
  positions that predict label tokens, not at every position; on small models it otherwise costs more
  than the transformer itself.
* Each prompt is run once and all of its (answer prefix + label) continuations are scored in one
  more pass on top of its KV cache, packed as a token trie under a tree-shaped attention mask.
  ``share_prompt=False`` runs every prompt + continuation as its own full sequence instead: slower,
  but the plain reference the tests compare against (both paths give the same scores).
* Prefixes that several prompts share (the system prompt) are run once and kept across calls
  (prefix_cache.py); each prompt's own remainder runs on top of them. Drafting (drafting.py)
  prefills its prompts the same way.

A request's ``continuation`` (the reply turn after a thread) runs in the trie pass too, and
``score_options_and_continue`` hands its cache back (``DecodeStart``): drafts decode from there, so a
thread is read once for its labels and its reply.

Over 400 lines because it is one idea: the fast path (trie pass) and the full-sequence reference it
must agree with belong side by side, with the request types and field-level wrappers both share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ticketfleet.engine.calibration import FieldScores, softmax
from ticketfleet.engine.prefix_cache import (
    DecodeStart,
    Prefilled,
    SharedPrefixes,
    base_decoder,
    build_prefix_tree,
    pad_right,
    supports_custom_masks,
)
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


def _label_logprobs(model: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for each row of ``hidden`` ([N, H]) through the model's output head."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-2-style models squash logits before the softmax
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


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
        ids, mask = pad_right([sequences[r] for r in chunk], pad_id, device)
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
