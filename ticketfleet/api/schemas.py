"""Request and response bodies of the HTTP API (pydantic; the boundary is typed both ways)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ticketfleet.core.errors import validation_problems
from ticketfleet.core.inbound import MAX_ID_LENGTH, InboundMessage, InboundTicket, Requester
from ticketfleet.core.vocabulary import Channel, Role


def _id_as_text(value: object) -> object:
    # Chat platforms hand out numeric ids; they are identifiers, not numbers.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ChatMessageIn(BaseModel):
    """One chat message. The conversation is the ticket; re-sending a message id adds nothing."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    conversation_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    message_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    text: str = Field(min_length=1)
    requester: Requester | None = None
    locale: str | None = Field(default=None, max_length=35)
    country: str | None = Field(default=None, min_length=2, max_length=2)
    sent_at: datetime | None = None

    _ids = field_validator("conversation_id", "message_id", mode="before")(_id_as_text)

    def to_inbound(self) -> InboundTicket:
        return InboundTicket(
            external_id=self.conversation_id,
            channel=Channel.chat,
            requester=self.requester,
            locale=self.locale,
            country=self.country,
            messages=[
                InboundMessage(
                    role=Role.customer, text=self.text, external_id=self.message_id, created_at=self.sent_at
                )
            ],
        )


class FieldError(BaseModel):
    field: str
    message: str


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic's errors as (dotted field path, plain reason); record-level rules name ``record``."""
    return [FieldError(field=where, message=message) for where, message in validation_problems(exc)]


class StoredMessage(BaseModel):
    external_id: str
    message_id: int
    new: bool


class StoredRecord(BaseModel):
    index: int
    external_id: str
    ticket_id: int
    messages: list[StoredMessage]


class RejectedRecord(BaseModel):
    index: int
    external_id: str | None = None
    errors: list[FieldError]


class IngestReply(BaseModel):
    """What a POST stored. 202: something new; 200: everything already known; 207: some rejected."""

    source: str
    stored: list[StoredRecord] = Field(default_factory=list)
    rejected: list[RejectedRecord] = Field(default_factory=list)
    new_messages: int = 0
    known_messages: int = 0
    work_item_ids: list[int] = Field(default_factory=list)
    queued: int = 0
    warnings: list[str] = Field(default_factory=list)

    def status_code(self) -> int:
        if self.rejected:
            return 207 if self.stored else 422
        return 202 if self.new_messages else 200


class DraftDecisionIn(BaseModel):
    """An agent's decision on a proposed draft. The agent's final text is not sent here: it may carry
    personal data, and the ticket system already has it."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["accepted", "edited", "rejected"]
    agent: str = Field(min_length=1, max_length=200, description="the agent's login, recorded as actor")


class DraftDecisionReply(BaseModel):
    draft_id: int
    before: str
    after: str


class HookReply(BaseModel):
    source: str
    vendor: str
    poll: str  # "nudged" or "coalesced" (a poll was nudged moments ago)


class ResultView(BaseModel):
    labels: dict[str, str]
    confidences: dict[str, float]
    gates: dict[str, Any]
    needs_review: bool
    injection_suspected: bool
    model_id: str
    model_revision: str
    prompt_version: str
    created_at: datetime


class DraftView(BaseModel):
    status: str
    check_result: str
    text: str
    # False: placeholders (<EMAIL_1>…) as stored; True: the agent view, originals from the PII vault.
    rehydrated: bool = False
    language: str | None
    created_at: datetime


class MessageView(BaseModel):
    external_id: str
    position: int
    state: str | None  # work-item state: pending, queued, processing, done, failed, dead
    result: ResultView | None
    draft: DraftView | None


class TicketView(BaseModel):
    source: str
    external_id: str
    channel: str
    subject: str | None
    locale: str | None
    country: str | None
    messages: list[MessageView]
