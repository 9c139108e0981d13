"""``TransformersEngine``: the :class:`~ticketfleet.core.schemas.Engine` of a Hugging Face causal LM.

Over ~400 lines because it is the one place where the engine's parts meet (prompts, trimming, prefix
cache, scoring, drafting, heads); each part lives in its own module and this one only orders them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticketfleet.core.schemas import (
    Channel,
    EngineInput,
    EngineOutput,
    FieldPrediction,
    ThreadMessage,
    Triage,
)
from ticketfleet.core.settings import Settings, get_settings
from ticketfleet.core.taxonomy import effective_prompt_version, load_taxonomy
from ticketfleet.core.vocabulary import (
    STORED_LABEL_LENGTH,
    SUPPORTED_PROMPT_VERSIONS,
    TRIAGE_FIELD_NAMES,
    Role,
    reserved_head_name,
)
from ticketfleet.engine.calibration import FieldScores, label_priors
from ticketfleet.engine.drafting import Generated, decode_drafts, fast_decoding, generate_drafts
from ticketfleet.engine.features import check_recipe, pooled_hidden_states, shared_length
from ticketfleet.engine.heads import HeadsArtifact, HeadsError
from ticketfleet.engine.injection import screen
from ticketfleet.engine.loading import LoadedModel, load_model, resolve_model, select_device
from ticketfleet.engine.prefix_cache import DecodeStart
from ticketfleet.engine.prompts import (
    LabelField,
    defuse,
    draft_system_prompt,
    draft_turn,
    language_name,
    system_prompt,
    thread_messages,
    triage_fields,
    triage_turn,
)
from ticketfleet.engine.scoring import score_fields, score_fields_and_continue
from ticketfleet.engine.trimming import trim_thread, truncate_to_tokens
from ticketfleet.language import UNDETERMINED, detect_language

log = logging.getLogger(__name__)

_MAX_SUBJECT_TOKENS = 64

CALIBRATED_FIELDS: tuple[str, ...] = ("intent",)
"""Fields calibrated by default (contextual calibration, see ``TransformersEngine.label_priors``).

Chosen by measurement on the 40 hand-labelled sample tickets in bench/label_calibration.py with
SmolLM2-135M. Prompt v2: intent 4/40 raw -> 13/40 calibrated, priority 11/40 -> 7/40, sentiment 8/40
either way, so only intent is calibrated. (Prompt v1 had calibrated intent and priority: intent 3 -> 9,
priority 5 -> 17, sentiment 12 -> 6.) A 135M model's labels swing by several items with any change of
wording (docs/benchmarks.md), so re-measure this with the model you deploy.
Pass ``calibrated_fields=()`` to turn calibration off.
"""
CONTENT_FREE_TEXTS: tuple[str, ...] = ("N/A", "", "[MASK]")
"""Stand-ins for the customer message when measuring the label priors (Zhao et al. 2021 use these)."""


@dataclass(frozen=True)
class _Prepared:
    """What the engine derives from one input before running the model."""

    language: FieldPrediction
    messages: list[dict[str, str]]
    """Chat messages of the shared part: system prompt, then the (defused, trimmed) thread."""
    rendered: str
    """``messages`` through the chat template: the text of ``thread_ids``."""
    thread_ids: list[int]
    """The shared part's token ids: what triage and draft prompts of this item both start with."""
    triage_ids: list[int]
    """The turn asking for the labels, after ``thread_ids``."""
    truncated: bool


class TransformersEngine:
    """Triage by constrained label scoring and reply drafts by greedy generation, on one loaded model.

    Create it once per worker process (``from_settings``); loading is the expensive part.
    """

    def __init__(
        self, loaded: LoadedModel, settings: Settings, *, calibrated_fields: Iterable[str] = CALIBRATED_FIELDS
    ) -> None:
        if settings.prompt_version not in SUPPORTED_PROMPT_VERSIONS:
            # Results are stored with their prompt version; running v1 prompts under another label
            # would make that record lie.
            raise ValueError(
                f"prompt_version {settings.prompt_version!r} is not implemented by this engine "
                f"(supported: {', '.join(SUPPORTED_PROMPT_VERSIONS)})"
            )
        self.model: Any = loaded.model
        self.tokenizer: Any = loaded.tokenizer
        self.device = loaded.device
        self.settings = settings
        self.model_id: str = loaded.resolved.model_id
        self.model_revision: str = loaded.resolved.model_revision
        # The intent taxonomy shapes the prompt, so a custom one is part of the recorded prompt version.
        self.taxonomy = load_taxonomy(settings.intent_taxonomy)
        self.fields = triage_fields(self.taxonomy.labels)
        self._system = system_prompt(self.taxonomy.labels, self.taxonomy.descriptions)
        self.prompt_version: str = effective_prompt_version(settings)
        # Strings that must never reach the tokenizer verbatim from customer text (see prompts.defuse).
        self._forbidden = [str(token) for token in self.tokenizer.get_added_vocab()]
        self.calibrated_fields: tuple[str, ...] = tuple(calibrated_fields)
        unknown = set(self.calibrated_fields) - {field.name for field in self.fields}
        if unknown:
            raise ValueError(f"cannot calibrate unknown triage fields: {sorted(unknown)}")
        self._priors: dict[str, tuple[float, ...]] | None = None
        self.heads: HeadsArtifact | None = None
        if settings.heads is not None:
            self.heads = self._load_heads(settings.heads)
        headed = set(self.heads.fields) if self.heads is not None else set()
        self._prompted: tuple[LabelField, ...] = tuple(f for f in self.fields if f.name not in headed)
        """The fields scored by their labels: those without a trained head."""
        self._system_ids: list[int] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, calibrated_fields: Iterable[str] = CALIBRATED_FIELDS
    ) -> TransformersEngine:
        """Resolve and load the configured model (raises ``ModelLoadError`` when it is not available)."""
        settings = settings or get_settings()
        resolved = resolve_model(settings)
        loaded = load_model(resolved, select_device(settings.device))
        log.info(
            "loaded model %s (%s) from %s on %s",
            resolved.model_id,
            resolved.model_revision,
            resolved.path,
            loaded.device,
        )
        return cls(loaded, settings, calibrated_fields=calibrated_fields)

    # --- Engine protocol -----------------------------------------------------------------------

    @torch.inference_mode()
    def classify(self, items: list[EngineInput]) -> list[Triage]:
        """Triage only: language, sentiment, intent, priority per item, in order (and the heads' own
        fields in ``Triage.extra``). With heads for every prompted field no label is scored: one
        forward pass over each thread."""
        items, _ = self._screen(items)
        prepared = [self._prepare(item) for item in items]
        scores, _ = self._score(prepared)
        headed = self._head_predictions(items, prepared)
        return [self._triage(p, s, h) for p, s, h in zip(prepared, scores, headed, strict=True)]

    @torch.inference_mode()
    def process(self, items: list[EngineInput]) -> list[EngineOutput]:
        """Triage every item and draft a reply where ``want_draft``; one output per input, in order.

        Triage and draft prompts of an item share the system prompt and the thread: the thread is run
        once, and the label turn (with its answers) and the reply turn branch off its cache in one pass.
        """
        if not items:
            return []
        started = time.perf_counter()
        items, suspected = self._screen(items)
        prepared = [self._prepare(item) for item in items]
        want = [i for i, item in enumerate(items) if item.want_draft]
        draft_languages = {i: self._draft_language(items[i], prepared[i].language) for i in want}
        reply_turns = {i: self._reply_turn(prepared[i], draft_languages[i]) for i in want}
        # With no field left to score there is no label pass to continue from: drafts prefill themselves.
        continued = fast_decoding(self.model) and bool(self._prompted)
        scores, starts = self._score(
            prepared,
            continuations=[reply_turns.get(i, []) for i in range(len(items))] if continued else None,
        )
        headed = self._head_predictions(items, prepared)
        triage_share = (time.perf_counter() - started) / len(items)

        draft_prompts = {i: prepared[i].thread_ids + reply_turns[i] for i in want}
        generated = self._drafts(draft_prompts, starts if continued else None)

        outputs: list[EngineOutput] = []
        for i, item in enumerate(items):
            draft = generated.get(i)
            outputs.append(
                EngineOutput(
                    item_id=item.item_id,
                    triage=self._triage(prepared[i], scores[i], headed[i]),
                    draft=draft.text if draft is not None else None,
                    draft_language=draft_languages.get(i),
                    input_tokens=len(prepared[i].thread_ids)
                    + len(prepared[i].triage_ids)
                    + len(reply_turns.get(i, [])),
                    output_tokens=draft.tokens if draft is not None else 0,
                    truncated=prepared[i].truncated,
                    latency_ms=1000.0 * (triage_share + (draft.seconds if draft is not None else 0.0)),
                    injection_suspected=suspected[i],
                )
            )
        return outputs

    def draft_instructions(self, language: str) -> str:
        """Every instruction a draft in ``language`` (ISO 639-1) is written under: system prompt and
        reply turn. The draft checks compare a draft against it to catch an echoed prompt."""
        return draft_system_prompt(language_name(language))

    def draft_prompt(self, item: EngineInput) -> list[int]:
        """Token ids of the draft prompt ``process`` decodes from for ``item`` (after screening)."""
        [item], _ = self._screen([item])
        prepared = self._prepare(item)
        language = self._draft_language(item, prepared.language)
        return prepared.thread_ids + self._reply_turn(prepared, language)

    # --- trained heads -------------------------------------------------------------------------

    @torch.inference_mode()
    def thread_features(self, items: list[EngineInput], *, layer: int, pooling: str = "mean") -> np.ndarray:
        """One float32 row per item: hidden state ``layer`` (``output_hidden_states`` index: 0 the
        embeddings, -1 the last layer) pooled (``"mean"`` | ``"last"``) over the tokens of the item's
        thread as the triage prompt encodes it (screened, defused, trimmed; the system prompt before
        it is left out). What trained heads read; see features.py for the cost."""
        items, _ = self._screen(items)
        return self._thread_features([self._prepare(item) for item in items], layer=layer, pooling=pooling)

    @staticmethod
    def head_texts(items: list[EngineInput]) -> list[str]:
        """The texts the heads' lexical features are computed from, per item: the last (screened)
        customer message. Training must use the same (``HeadsArtifact.predict(hidden, texts)``)."""
        screened, _ = TransformersEngine._screen(items)
        return [item.text for item in screened]

    # --- also public: full label distributions -------------------------------------------------

    @torch.inference_mode()
    def score_fields(self, items: list[EngineInput]) -> list[dict[str, FieldScores]]:
        """Every allowed label's confidence per field, per item (``classify`` keeps only the best);
        fields with a trained head are not scored, so they are absent here.

        Fields in ``calibrated_fields`` carry their prior and calibrated confidences; ``logprobs`` stay raw.
        """
        return self._score([self._prepare(item) for item in items])[0]

    @torch.inference_mode()
    def label_priors(self) -> dict[str, tuple[float, ...]]:
        """Log prior of each calibrated field's labels, subtracted from every item's label scores.

        Measured once per engine, on first use: the triage prompt of each channel with the customer
        message replaced by each of ``CONTENT_FREE_TEXTS``, label distributions averaged. It depends
        only on the model and the prompt, never on a batch, so batched and single results agree.
        (Two threads racing here would both compute the same value; harmless.)
        """
        if self._priors is not None:
            return self._priors
        priors: dict[str, tuple[float, ...]] = {}
        fields = [field for field in self._prompted if field.name in self.calibrated_fields]
        if fields:
            # Both channels: their prompts differ by one word, and a prior per engine keeps it simple.
            prompts = [
                self._prepare(
                    EngineInput(
                        item_id=0, channel=channel, thread=[ThreadMessage(role=Role.customer, text=text)]
                    )
                )
                for channel in Channel
                for text in CONTENT_FREE_TEXTS
            ]
            content_free = score_fields(
                self.model,
                self.tokenizer,
                [p.thread_ids for p in prompts],
                fields,
                max_batch_tokens=self.settings.batch_max_tokens,
                turns=[p.triage_ids for p in prompts],
            )
            priors = label_priors(content_free)
        self._priors = priors
        return priors

    # --- internals -----------------------------------------------------------------------------

    @staticmethod
    def _screen(items: list[EngineInput]) -> tuple[list[EngineInput], list[bool]]:
        """Customer messages without sentences addressed to the AI (see injection.py), and flags."""
        screened: list[EngineInput] = []
        flags: list[bool] = []
        for item in items:
            thread, found = [], False
            for message in item.thread:
                text, hit = screen(message.text) if message.role == "customer" else (message.text, False)
                thread.append(ThreadMessage(role=message.role, text=text))
                found = found or hit
            screened.append(item.model_copy(update={"thread": thread}) if found else item)
            flags.append(found)
        return screened, flags

    def _prepare(self, item: EngineInput) -> _Prepared:
        """The shared part of the prompts (customer strings defused, thread fitted) and the label turn."""
        trimmed = trim_thread(
            item.thread,
            self.tokenizer,
            self.settings.max_input_tokens,
            texts=[defuse(message.text, self._forbidden) for message in item.thread],
        )
        subject = item.subject
        if subject:
            subject, _ = truncate_to_tokens(
                self.tokenizer, defuse(subject, self._forbidden), _MAX_SUBJECT_TOKENS
            )
        messages = thread_messages(self._system, trimmed.messages, subject=subject)
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False)
        return _Prepared(
            language=detect_language(item.text, locale_hint=item.locale_hint),
            messages=messages,
            rendered=rendered,
            thread_ids=self._encode(rendered),
            triage_ids=self._turn_ids(messages, rendered, triage_turn(item.channel)),
            truncated=trimmed.truncated,
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _turn_ids(self, messages: list[dict[str, str]], rendered: str, turn: dict[str, str]) -> list[int]:
        """Token ids of ``turn`` and the assistant's opening after the thread ``messages`` (rendered as
        ``rendered``): what the template adds after it."""
        whole = self.tokenizer.apply_chat_template(
            [*messages, turn], tokenize=False, add_generation_prompt=True
        )
        if not whole.startswith(rendered):
            raise ValueError("the chat template renders a thread differently once a turn follows it")
        return self._encode(whole[len(rendered) :])

    def _reply_turn(self, prepared: _Prepared, language: str) -> list[int]:
        return self._turn_ids(prepared.messages, prepared.rendered, draft_turn(language_name(language)))

    def _load_heads(self, directory: Path) -> HeadsArtifact:
        """The heads of ``settings.heads``, checked against this engine's model and fields."""
        heads = HeadsArtifact.load(directory)
        heads.check_model(self.model_id, self.model_revision)
        if f"+heads.{heads.digest}" not in self.prompt_version:
            raise HeadsError(f"heads {directory}: the files changed while the engine loaded them")
        for name, head in heads.heads.items():
            if reserved_head_name(name):
                raise HeadsError(
                    f"heads {directory}: a head may not be named {name!r} (language comes from the "
                    "detector; names must not clash with the keys of a classify record)"
                )
            width = STORED_LABEL_LENGTH.get(name)
            long = [label for label in head.labels if width is not None and len(label) > width]
            if long:
                raise HeadsError(
                    f"heads {directory}: {name} labels longer than the {width} characters a result "
                    f"stores: {long[:3]}"
                )
        recipe = heads.manifest.features.hidden
        if recipe is not None:
            try:
                check_recipe(self.model, recipe.layer, recipe.pooling)
            except ValueError as exc:
                raise HeadsError(f"heads {directory}: {exc}") from exc
        log.info("loaded heads %s (%s) for %s", directory, heads.digest, ", ".join(heads.fields))
        return heads

    def _thread_features(self, prepared: list[_Prepared], *, layer: int, pooling: str) -> np.ndarray:
        if self._system_ids is None:
            system = self.tokenizer.apply_chat_template(self._system_messages(), tokenize=False)
            self._system_ids = self._encode(system)
        return pooled_hidden_states(
            self.model,
            [p.thread_ids for p in prepared],
            [shared_length(p.thread_ids, self._system_ids) for p in prepared],
            layer=layer,
            pooling=pooling,
            max_batch_tokens=self.settings.batch_max_tokens,
            pad_id=int(self.tokenizer.pad_token_id),
        )

    def _system_messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self._system}]

    def _head_predictions(
        self, items: list[EngineInput], prepared: list[_Prepared]
    ) -> list[dict[str, FieldPrediction]]:
        """Per item, every head's prediction: the most probable label and its calibrated probability."""
        if self.heads is None or not items:
            return [{} for _ in items]
        recipe = self.heads.manifest.features.hidden
        hidden = (
            self._thread_features(prepared, layer=recipe.layer, pooling=recipe.pooling)
            if recipe is not None
            else None
        )
        probabilities = self.heads.predict(hidden, [item.text for item in items])
        out: list[dict[str, FieldPrediction]] = [{} for _ in items]
        for name, probs in probabilities.items():
            labels = self.heads.heads[name].labels
            best = probs.argmax(axis=1)
            for i, index in enumerate(best.tolist()):
                confidence = min(1.0, max(0.0, float(probs[i, index])))
                out[i][name] = FieldPrediction(value=labels[index], confidence=confidence)
        return out

    def _score(
        self, prepared: list[_Prepared], continuations: list[list[int]] | None = None
    ) -> tuple[list[dict[str, FieldScores]], list[DecodeStart]]:
        if not prepared:
            return [], []
        if not self._prompted:  # every field has a head
            return [{} for _ in prepared], []
        priors = self.label_priors()
        scores, starts = score_fields_and_continue(
            self.model,
            self.tokenizer,
            [p.thread_ids for p in prepared],
            self._prompted,
            max_batch_tokens=self.settings.batch_max_tokens,
            turns=[p.triage_ids for p in prepared],
            continuations=continuations,
            reserve=self.settings.max_new_tokens,
        )
        # Contextual calibration: divide out what the model says for no content at all, so a label wins
        # by fitting this ticket rather than by being the model's favourite answer.
        calibrated = [
            {name: s.calibrated(priors[name]) if name in priors else s for name, s in item.items()}
            for item in scores
        ]
        return calibrated, starts

    def _drafts(
        self, prompts: dict[int, list[int]], starts: list[DecodeStart] | None
    ) -> dict[int, Generated]:
        """Drafts for ``prompts`` (by item index): decoded from ``starts``, else generated from scratch."""
        if not prompts:
            return {}
        budget = self.settings.batch_max_tokens
        if starts is not None:
            return decode_drafts(
                self.model,
                self.tokenizer,
                starts,
                prompts,
                max_new_tokens=self.settings.max_new_tokens,
                max_batch_tokens=budget,
            )
        order = list(prompts)
        generated = generate_drafts(
            self.model,
            self.tokenizer,
            [prompts[i] for i in order],
            max_new_tokens=self.settings.max_new_tokens,
            max_batch_tokens=budget,
        )
        return dict(zip(order, generated, strict=True))

    @staticmethod
    def _triage(
        prepared: _Prepared, scores: dict[str, FieldScores], headed: dict[str, FieldPrediction]
    ) -> Triage:
        """A head's prediction where the field has one, else the best scored label."""

        def pick(name: str) -> FieldPrediction:
            return headed[name] if name in headed else scores[name].prediction()

        return Triage(
            language=prepared.language,
            sentiment=pick("sentiment"),
            intent=pick("intent"),
            priority=pick("priority"),
            extra={name: p for name, p in headed.items() if name not in TRIAGE_FIELD_NAMES},
        )

    @staticmethod
    def _draft_language(item: EngineInput, detected: FieldPrediction) -> str:
        """Reply in the detected language; fall back to the locale hint, then English."""
        if detected.value != UNDETERMINED:
            return detected.value
        if item.locale_hint:
            return item.locale_hint.replace("_", "-").split("-")[0].lower()
        return "en"
