"""The normalised inbound item every connector produces and the store ingests.

One schema for files, webhooks and ticket-system APIs: a connector's only job is to turn its source's
shape into :class:`InboundTicket`; validation errors here are what the per-line import report shows.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ticketfleet.core.schemas import Channel, Role

MAX_ID_LENGTH = 200


class InboundMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    role: Role = Role.customer
    text: str = Field(min_length=1, description="Message body; must not be empty after trimming.")
    external_id: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    created_at: datetime | None = None


class Requester(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)


class InboundTicket(BaseModel):
    """A ticket or chat conversation. ``text`` is shorthand for a single customer message."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    source: str | None = Field(default=None, min_length=1, max_length=100)
    channel: Channel = Channel.ticket
    subject: str | None = None
    requester: Requester | None = None
    locale: str | None = Field(default=None, max_length=35)
    country: str | None = Field(default=None, min_length=2, max_length=2)
    messages: list[InboundMessage] = Field(default_factory=list)
    text: str | None = Field(default=None, exclude=True)

    @field_validator("external_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        # Ticket systems hand out numeric ids; they are identifiers, not numbers.
        return str(value) if isinstance(value, int) else value

    @field_validator("country")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    @model_validator(mode="after")
    def _one_thread(self) -> InboundTicket:
        if self.text is not None:
            if self.messages:
                raise ValueError("give either 'text' or 'messages', not both")
            if not self.text:
                raise ValueError("text: must not be empty")
            self.messages = [InboundMessage(role=Role.customer, text=self.text)]
            self.text = None
        if not self.messages:
            raise ValueError("a ticket needs 'text' or at least one message in 'messages'")
        if not any(m.role == "customer" for m in self.messages):
            raise ValueError("messages: at least one message must come from the customer")
        seen: set[str] = set()
        for message in self.messages:
            if message.external_id is not None:
                if message.external_id in seen:
                    raise ValueError(f"messages: duplicate external_id {message.external_id!r}")
                seen.add(message.external_id)
        return self

    def message_ids(self) -> list[str]:
        """Stable per-message ids: the source's own, else the position in the thread."""
        return [m.external_id or f"#{i}" for i, m in enumerate(self.messages)]
