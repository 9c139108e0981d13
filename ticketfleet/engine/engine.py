"""``TransformersEngine``: the :class:`~ticketfleet.schemas.Engine` backed by a Hugging Face causal LM."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

import torch

from ticketfleet.engine.drafting import Generated, generate_drafts, trim_thread, truncate_to_tokens
from ticketfleet.engine.injection import screen
from ticketfleet.engine.language import UNDETERMINED, detect_language
from ticketfleet.engine.loading import LoadedModel, load_model, resolve_model, select_device
from ticketfleet.engine.prompts import (
    SUPPORTED_PROMPT_VERSIONS,
    defuse,
    draft_messages,
    draft_system_prompt,
    language_name,
    triage_fields,
    triage_messages,
)
from ticketfleet.engine.scoring import FieldScores, label_priors, score_fields
from ticketfleet.schemas import Channel, EngineInput, EngineOutput, FieldPrediction, ThreadMessage, Triage
from ticketfleet.settings import Settings, get_settings
from ticketfleet.taxonomy import effective_prompt_version, load_taxonomy

log = logging.getLogger(__name__)

_MAX_SUBJECT_TOKENS = 64

CALIBRATED_FIELDS: tuple[str, ...] = ("intent", "priority")
"""Fields calibrated by default (contextual calibration, see ``TransformersEngine.label_priors``).

Sentiment is left out on purpose: on the 40 hand-labelled sample tickets in bench/label_calibration.py,
calibration cut SmolLM2-135M's sentiment accuracy from 12/40 to 6/40 (its favourite answer just moved from
"negative" to "positive"), while intent rose from 3/40 to 9/40 and priority from 5/40 to 17/40.
Pass ``calibrated_fields=()`` to turn calibration off.
"""
CONTENT_FREE_TEXTS: tuple[str, ...] = ("N/A", "", "[MASK]")
"""Stand-ins for the customer message when measuring the label priors (Zhao et al. 2021 use these)."""


@dataclass(frozen=True)
class _Prepared:
    """What the engine derives from one input before running the model."""

    language: FieldPrediction
    triage_ids: list[int]
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
        self.prompt_version: str = effective_prompt_version(settings)
        # Strings that must never reach the tokenizer verbatim from customer text (see prompts.defuse).
        self._forbidden = [str(token) for token in self.tokenizer.get_added_vocab()]
        self.calibrated_fields: tuple[str, ...] = tuple(calibrated_fields)
        unknown = set(self.calibrated_fields) - {field.name for field in self.fields}
        if unknown:
            raise ValueError(f"cannot calibrate unknown triage fields: {sorted(unknown)}")
        self._priors: dict[str, tuple[float, ...]] | None = None

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
        """Triage only: language, sentiment, intent, priority per item, in order."""
        items, _ = self._screen(items)
        prepared = [self._prepare(item) for item in items]
        scores = self._score(prepared)
        return [self._triage(p, s) for p, s in zip(prepared, scores, strict=True)]

    @torch.inference_mode()
    def process(self, items: list[EngineInput]) -> list[EngineOutput]:
        """Triage every item and draft a reply where ``want_draft``; one output per input, in order."""
        if not items:
            return []
        started = time.perf_counter()
        items, suspected = self._screen(items)
        prepared = [self._prepare(item) for item in items]
        scores = self._score(prepared)
        triage_share = (time.perf_counter() - started) / len(items)

        want = [i for i, item in enumerate(items) if item.want_draft]
        draft_languages = {i: self._draft_language(items[i], prepared[i].language) for i in want}
        draft_prompts: dict[int, tuple[list[int], bool]] = {
            i: self._draft_prompt(items[i], draft_languages[i]) for i in want
        }
        generated: dict[int, Generated] = dict(
            zip(
                want,
                generate_drafts(
                    self.model,
                    self.tokenizer,
                    [draft_prompts[i][0] for i in want],
                    max_new_tokens=self.settings.max_new_tokens,
                    max_batch_tokens=self.settings.batch_max_tokens,
                ),
                strict=True,
            )
        )

        outputs: list[EngineOutput] = []
        for i, item in enumerate(items):
            draft = generated.get(i)
            draft_ids, draft_cut = draft_prompts.get(i, ([], False))
            outputs.append(
                EngineOutput(
                    item_id=item.item_id,
                    triage=self._triage(prepared[i], scores[i]),
                    draft=draft.text if draft is not None else None,
                    draft_language=draft_languages.get(i),
                    input_tokens=len(prepared[i].triage_ids) + len(draft_ids),
                    output_tokens=draft.tokens if draft is not None else 0,
                    truncated=prepared[i].truncated or draft_cut,
                    latency_ms=1000.0 * (triage_share + (draft.seconds if draft is not None else 0.0)),
                    injection_suspected=suspected[i],
                )
            )
        return outputs

    # --- also public: full label distributions -------------------------------------------------

    @torch.inference_mode()
    def score_fields(self, items: list[EngineInput]) -> list[dict[str, FieldScores]]:
        """Every allowed label's confidence per field, per item (``classify`` keeps only the best).

        Fields in ``calibrated_fields`` carry their prior and calibrated confidences; ``logprobs`` stay raw.
        """
        return self._score([self._prepare(item) for item in items])

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
        fields = [field for field in self.fields if field.name in self.calibrated_fields]
        if fields:
            # Both channels: their prompts differ by one word, and a prior per engine keeps it simple.
            prompts = [
                self._triage_ids(text, subject=None, channel=channel)[0]
                for channel in get_args(Channel)
                for text in CONTENT_FREE_TEXTS
            ]
            content_free = score_fields(
                self.model, self.tokenizer, prompts, fields, max_batch_tokens=self.settings.batch_max_tokens
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

    def _encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _triage_ids(self, text: str, *, subject: str | None, channel: Channel) -> tuple[list[int], bool]:
        """Token ids of the triage prompt (customer strings defused and capped), and whether text was cut."""
        text, cut = truncate_to_tokens(
            self.tokenizer, defuse(text, self._forbidden), self.settings.max_input_tokens
        )
        if subject:
            subject, _ = truncate_to_tokens(
                self.tokenizer, defuse(subject, self._forbidden), _MAX_SUBJECT_TOKENS
            )
        messages = triage_messages(
            text,
            subject=subject,
            channel=channel,
            intents=self.taxonomy.labels,
            intent_descriptions=self.taxonomy.descriptions,
        )
        return self._encode_chat(messages), cut

    def _prepare(self, item: EngineInput) -> _Prepared:
        ids, cut = self._triage_ids(item.text, subject=item.subject, channel=item.channel)
        return _Prepared(
            language=detect_language(item.text, locale_hint=item.locale_hint), triage_ids=ids, truncated=cut
        )

    def _score(self, prepared: list[_Prepared]) -> list[dict[str, FieldScores]]:
        if not prepared:
            return []
        priors = self.label_priors()
        scores = score_fields(
            self.model,
            self.tokenizer,
            [p.triage_ids for p in prepared],
            self.fields,
            max_batch_tokens=self.settings.batch_max_tokens,
        )
        # Contextual calibration: divide out what the model says for no content at all, so a label wins
        # by fitting this ticket rather than by being the model's favourite answer.
        return [
            {name: s.calibrated(priors[name]) if name in priors else s for name, s in item.items()}
            for item in scores
        ]

    @staticmethod
    def _triage(prepared: _Prepared, scores: dict[str, FieldScores]) -> Triage:
        return Triage(
            language=prepared.language,
            sentiment=scores["sentiment"].prediction(),
            intent=scores["intent"].prediction(),
            priority=scores["priority"].prediction(),
        )

    @staticmethod
    def _draft_language(item: EngineInput, detected: FieldPrediction) -> str:
        """Reply in the detected language; fall back to the locale hint, then English."""
        if detected.value != UNDETERMINED:
            return detected.value
        if item.locale_hint:
            return item.locale_hint.replace("_", "-").split("-")[0].lower()
        return "en"

    def _draft_prompt(self, item: EngineInput, language: str) -> tuple[list[int], bool]:
        """Chat-templated draft prompt ids, and whether the thread had to be trimmed."""
        trimmed = trim_thread(
            item.thread,
            self.tokenizer,
            self.settings.max_input_tokens,
            texts=[defuse(message.text, self._forbidden) for message in item.thread],
        )
        system = draft_system_prompt(language_name(language))
        return self._encode_chat(draft_messages(system, trimmed.messages)), trimmed.truncated
