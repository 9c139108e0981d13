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
  more pass on top of its KV cache, packed as a token trie under a tree-shaped attention mask; the
  instructions every prompt of a batch starts with are run once per batch. ``share_prompt=False``
  runs every prompt + continuation as its own full sequence instead: slower, but the plain reference
  the tests compare against (both paths give the same scores).

Small models favour some labels whatever the text says (SmolLM2-135M answers "refund" for nearly every
ticket). ``label_priors`` and ``FieldScores.calibrated`` implement contextual calibration ("Calibrate
Before Use", Zhao et al. 2021): score the labels once for content-free prompts, and divide each item's
label probabilities by that prior (subtract it in log space) before normalising.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ticketfleet.engine.prompts import LabelField
from ticketfleet.schemas import FieldPrediction


@dataclass(frozen=True)
class ScoreRequest:
    """One prompt and the continuations to score after it: ``(prefix_ids, label_ids)`` pairs.

    The prefix (e.g. ``"Sentiment:"``) is conditioned on but not scored; the label tokens are scored.
    """

    prompt_ids: Sequence[int]
    options: Sequence[tuple[Sequence[int], Sequence[int]]]


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


def _decoder(model: Any) -> Any:
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
    its own path were run as a separate sequence.
    """

    tokens: list[int]
    depths: list[int]
    ancestors: torch.Tensor  # [N, N] bool
    picks: list[tuple[int, int, int]]  # (node predicting the token, target token, option)


def _build_trie(options: Sequence[tuple[Sequence[int], Sequence[int]]]) -> _Trie:
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    children: dict[tuple[int, int], int] = {}
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
    ancestors = torch.zeros((len(tokens), len(tokens)), dtype=torch.bool)
    for node, parent in enumerate(parents):  # parents always precede their children
        if parent >= 0:
            ancestors[node] = ancestors[parent]
        ancestors[node, node] = True
    return _Trie(tokens=tokens, depths=depths, ancestors=ancestors, picks=picks)


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


def _mask_for(model: Any, allowed: torch.Tensor) -> torch.Tensor | None:
    """A 4D ``allowed`` mask in the form the model's attention implementation expects, or None."""
    layer_types = getattr(model.config, "layer_types", None) or ()
    if any(kind != "full_attention" for kind in layer_types):
        return None  # a custom mask would bypass sliding-window/linear attention layers
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        blocked = torch.finfo(model.dtype).min
        return torch.zeros(allowed.shape, dtype=model.dtype, device=allowed.device).masked_fill(
            ~allowed, blocked
        )
    return None  # flash/flex kernels take no arbitrary 4D masks


def _score_with_shared_prompt(
    model: Any, requests: Sequence[ScoreRequest], pad_id: int, max_tokens: int
) -> list[list[float]] | None:
    """Run each prompt once and all of its continuations together on top of its KV cache.

    Three passes per group of prompts: the part every prompt in the group shares (the instructions)
    once for the whole group, then each prompt's own remainder, then every continuation packed as a
    trie with a tree-shaped attention mask. Returns None where the model's attention implementation
    cannot take such a mask, and the caller falls back to full sequences.
    """
    from transformers.cache_utils import DynamicCache

    if _mask_for(model, torch.ones((1, 1, 1, 1), dtype=torch.bool)) is None:
        return None
    decoder = _decoder(model)
    device = model.device
    results: list[list[float]] = [[0.0] * len(request.options) for request in requests]
    lengths = [len(request.prompt_ids) for request in requests]
    by_length = sorted(range(len(requests)), key=lambda i: -lengths[i])

    for group in _chunks(lengths, by_length, max_tokens):
        prompts = [requests[i].prompt_ids for i in group]
        rows = len(group)
        # Keep at least one token per prompt for the second pass, so it always has input.
        shared = min(_common_prefix_length(prompts), min(len(p) for p in prompts) - 1)

        cache = DynamicCache()
        if shared > 0:
            shared_ids = torch.tensor([list(prompts[0][:shared])], device=device)
            decoder(input_ids=shared_ids, past_key_values=cache, use_cache=True)
            # Broadcast the shared prefix to every row; DynamicCache copies it when it next appends.
            cache = DynamicCache(
                ddp_cache_data=[
                    (keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1))
                    for keys, values, *_ in cache
                ]
            )
        rest_ids, rest_mask = _pad_right([p[shared:] for p in prompts], pad_id, device)
        prompt_mask = torch.cat([torch.ones((rows, shared), dtype=torch.long, device=device), rest_mask], 1)
        positions = shared + torch.arange(rest_ids.shape[1], device=device).unsqueeze(0).expand(rows, -1)
        decoder(
            input_ids=rest_ids,
            attention_mask=prompt_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )

        tries = [_build_trie(requests[i].options) for i in group]
        width = max(len(trie.tokens) for trie in tries)
        prompt_width = prompt_mask.shape[1]
        tree_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        tree_positions = torch.zeros((rows, width), dtype=torch.long)
        allowed = torch.zeros((rows, 1, width, prompt_width + width), dtype=torch.bool)
        allowed[:, 0, :, :prompt_width] = prompt_mask.bool().cpu().unsqueeze(1)
        for row, (trie, prompt) in enumerate(zip(tries, prompts, strict=True)):
            n = len(trie.tokens)
            tree_ids[row, :n] = torch.tensor(trie.tokens)
            tree_positions[row, :n] = len(prompt) + torch.tensor(trie.depths)
            allowed[row, 0, :n, prompt_width : prompt_width + n] = trie.ancestors
            # Padding rows attend to the first prompt token only: a fully masked row would make NaNs.
            allowed[row, 0, n:, :] = False
            allowed[row, 0, n:, 0] = True
        mask = _mask_for(model, allowed.to(device))
        hidden = decoder(
            input_ids=tree_ids.to(device),
            attention_mask=mask,
            position_ids=tree_positions.to(device),
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state

        picks = [
            _Pick(row, node, token, group[row], option)
            for row, trie in enumerate(tries)
            for node, token, option in trie.picks
        ]
        _accumulate(model, hidden, picks, results)
    return results


def _score_full_sequences(
    model: Any, requests: Sequence[ScoreRequest], pad_id: int, max_tokens: int
) -> list[list[float]]:
    """Reference path: every prompt + prefix + label as its own sequence."""
    decoder = _decoder(model)
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
    for request in requests:
        if not request.prompt_ids:
            raise ValueError("a score request needs a non-empty prompt")
        for prefix, label in request.options:
            if not prefix or not label:
                raise ValueError("every option needs a non-empty prefix and label")
    if not requests:
        return []
    if share_prompt:
        shared = _score_with_shared_prompt(model, requests, pad_id, max_batch_tokens)
        if shared is not None:
            return shared
    return _score_full_sequences(model, requests, pad_id, max_batch_tokens)


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
) -> list[dict[str, FieldScores]]:
    """Score every field of every prompt; one ``{field name: FieldScores}`` per prompt, in order."""
    options_per_field = [encode_field_options(tokenizer, field) for field in fields]
    flat_options = [option for options in options_per_field for option in options]
    requests = [ScoreRequest(prompt_ids=prompt, options=flat_options) for prompt in prompts]
    scores = score_options(
        model,
        requests,
        pad_id=int(tokenizer.pad_token_id),
        max_batch_tokens=max_batch_tokens,
        share_prompt=share_prompt,
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
    return out
