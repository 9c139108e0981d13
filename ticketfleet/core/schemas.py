"""Typed boundary between the fleet and the model engine.

The worker turns database rows into ``EngineInput`` (already redacted text, never raw rows), the
engine returns one ``EngineOutput`` per input, in the same order. Nothing else crosses the boundary, so
any engine honouring :class:`Engine` can serve the fleet.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ticketfleet.core.vocabulary import Channel, Role

SENTIMENTS: tuple[str, ...] = ("very_negative", "negative", "neutral", "positive", "very_positive")
PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")
INTENTS: tuple[str, ...] = (
    "billing",
    "refund",
    "shipping",
    "account_access",
    "technical_problem",
    "bug_report",
    "feature_request",
    "cancellation",
    "complaint",
    "praise",
    "other",
)

__all__ = ["Channel", "Role"]  # re-exported from the vocabulary: schemas speak the same words


class ThreadMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role
    text: str


class EngineInput(BaseModel):
    """One customer message to triage, with the thread it belongs to (oldest first, it is last)."""

    model_config = ConfigDict(frozen=True)

    item_id: int
    channel: Channel = Channel.ticket
    subject: str | None = None
    thread: list[ThreadMessage] = Field(min_length=1)
    want_draft: bool = True
    locale_hint: str | None = None

    @property
    def text(self) -> str:
        return self.thread[-1].text


class FieldPrediction(BaseModel):
    value: str
    confidence: float = Field(ge=0.0, le=1.0)


class Triage(BaseModel):
    language: FieldPrediction
    sentiment: FieldPrediction
    intent: FieldPrediction
    priority: FieldPrediction
    extra: dict[str, FieldPrediction] = Field(default_factory=dict)
    """Fields of trained heads (``settings.heads``) beyond the four above, e.g. a team's ``queue``."""


class EngineOutput(BaseModel):
    item_id: int
    triage: Triage
    draft: str | None = None
    draft_language: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    truncated: bool = False
    latency_ms: float = 0.0
    injection_suspected: bool = False  # text addressed to the AI was removed before the model read it


@runtime_checkable
class Engine(Protocol):
    """What a worker needs from a model engine. Loaded once per worker process."""

    model_id: str
    model_revision: str
    prompt_version: str

    def process(self, items: list[EngineInput]) -> list[EngineOutput]:
        """Triage every item (and draft where ``want_draft``); one output per input, same order."""
        ...

    def classify(self, items: list[EngineInput]) -> list[Triage]:
        """Triage only, no drafts (the ``ticketfleet classify`` path)."""
        ...

    def draft_instructions(self, language: str) -> str:
        """The system instructions a draft in ``language`` (ISO 639-1) was generated under.

        The draft checks compare a draft against them to catch an echoed prompt.
        """
        ...
