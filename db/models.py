"""The ticket store: typed SQLAlchemy 2 models. PostgreSQL only.

Alembic (``migrations/``) is the only way this schema is created; ``alembic check`` in the tests keeps
these models and the migrations in step.

Row life cycle::

    sources ─< tickets ─< messages ─┬─ work_items      (one per customer message: pending → … → done)
                                    ├─< triage_results (one per message × model × prompt version)
                                    └─< drafts         (idem; status proposed/accepted/edited/rejected)
    connector_cursors (one per source) · audit_events (append-only, hash-chained) · audit_chain_head
    tickets ─< pii_vault  (placeholder → AES-GCM ciphertext of the redacted original; docs/privacy.md)
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ticketfleet.core.vocabulary import Channel, Role

__all__ = ["Channel", "Role"]  # re-exported: the columns' enums are the fleet's vocabulary

# Deterministic constraint names, so autogenerate and `alembic check` never see spurious diffs.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ItemState(enum.StrEnum):
    pending = "pending"  # committed, wake-up message not yet confirmed sent
    queued = "queued"  # a message naming it is (or was) on a lane
    processing = "processing"  # claimed by a worker under a lease
    done = "done"
    failed = "failed"  # last attempt raised; will be retried after next_attempt_at
    dead = "dead"  # failed max_attempts times; needs a human


class DraftStatus(enum.StrEnum):
    proposed = "proposed"
    accepted = "accepted"
    edited = "edited"
    rejected = "rejected"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=True, values_callable=lambda e: [m.value for m in e])


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (UniqueConstraint("source_id", "external_id", name="uq_tickets_source_external"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="RESTRICT"))
    external_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    subject: Mapped[str | None] = mapped_column(Text)
    requester_name: Mapped[str | None] = mapped_column(String(200))
    requester_email: Mapped[str | None] = mapped_column(String(320))
    locale: Mapped[str | None] = mapped_column(String(35))
    country: Mapped[str | None] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

    messages: Mapped[list[Message]] = relationship(back_populates="ticket", order_by="Message.position")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("ticket_id", "external_id", name="uq_messages_ticket_external"),
        CheckConstraint("length(body) > 0", name="body_not_empty"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer)
    author_role: Mapped[Role] = mapped_column(_enum(Role, "author_role"))
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

    ticket: Mapped[Ticket] = relationship(back_populates="messages")


class WorkItem(Base):
    """Processing state of one customer message. The database, not Redis, is the source of truth."""

    __tablename__ = "work_items"
    __table_args__ = (
        # The claim query: oldest queued items of one lane.
        Index("ix_work_items_lane_state_queued_at", "lane", "state", "queued_at"),
        CheckConstraint("lane IN ('chat', 'tickets', 'backlog')", name="lane_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), unique=True)
    lane: Mapped[str] = mapped_column(String(16))
    state: Mapped[ItemState] = mapped_column(_enum(ItemState, "item_state"), index=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    want_draft: Mapped[bool] = mapped_column(server_default=text("true"))
    token_estimate: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class TriageResult(Base):
    __tablename__ = "triage_results"
    __table_args__ = (
        Index("ix_triage_results_needs_review", "needs_review", postgresql_where=text("needs_review")),
        # Idempotency key: a re-run batch (at-least-once delivery) inserts nothing new.
        UniqueConstraint(
            "message_id", "model_id", "model_revision", "prompt_version", name="uq_triage_results_run"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    language: Mapped[str] = mapped_column(String(16))
    language_confidence: Mapped[float] = mapped_column(Float)
    sentiment: Mapped[str] = mapped_column(String(32))
    sentiment_confidence: Mapped[float] = mapped_column(Float)
    intent: Mapped[str] = mapped_column(String(64))
    intent_confidence: Mapped[float] = mapped_column(Float)
    priority: Mapped[str] = mapped_column(String(16))
    priority_confidence: Mapped[float] = mapped_column(Float)
    model_id: Mapped[str] = mapped_column(String(300))
    model_revision: Mapped[str] = mapped_column(String(100))
    prompt_version: Mapped[str] = mapped_column(String(50))
    latency_ms: Mapped[float] = mapped_column(Float)
    truncated: Mapped[bool] = mapped_column(server_default=text("false"))
    # Per field: the confidence gate that applied (review / suggest / auto) and the thresholds in force.
    gates: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    needs_review: Mapped[bool] = mapped_column(server_default=text("false"))
    # Sentences addressed to the AI were removed from the ticket before the model read it.
    injection_suspected: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class Draft(Base):
    """A proposed reply. Never sent to a customer automatically: an agent accepts, edits or rejects it."""

    __tablename__ = "drafts"
    __table_args__ = (
        UniqueConstraint("message_id", "model_id", "model_revision", "prompt_version", name="uq_drafts_run"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[DraftStatus] = mapped_column(
        _enum(DraftStatus, "draft_status"), server_default=DraftStatus.proposed.value
    )
    model_id: Mapped[str] = mapped_column(String(300))
    model_revision: Mapped[str] = mapped_column(String(100))
    prompt_version: Mapped[str] = mapped_column(String(50))
    output_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # "passed", or why the draft is held back: empty, echo, wrong_language:<code>.
    check_result: Mapped[str] = mapped_column(String(64), server_default="passed")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class ConnectorCursor(Base):
    __tablename__ = "connector_cursors"

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class AuditEvent(Base):
    """Append-only, hash-chained record of every state change and model decision.

    ``seq``, ``prev_hash``, ``row_hash`` and ``occurred_at`` are set by a trigger inside PostgreSQL
    (see docs/audit.md); whatever a client sends for them is overwritten. ``before``/``after`` hold
    ids, labels, states and versions only, never ticket text.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    actor: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary)
    row_hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditChainHead(Base):
    """The one row holding the chain's last (seq, hash): the lock that serialises chaining."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id", name="single_row"),)

    id: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    seq: Mapped[int] = mapped_column(BigInteger)
    row_hash: Mapped[bytes] = mapped_column(LargeBinary)
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SourceHealth(Base):
    """How polling one source goes: failures, back-off, and what was pulled or rejected (no PII)."""

    __tablename__ = "source_health"

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # A PermanentError (auth, not found, bad config): a human must act; polled again only at the cap.
    failing: Mapped[bool] = mapped_column(server_default=text("false"))
    last_error: Mapped[str | None] = mapped_column(Text)  # "ErrorClass: message", never ticket text
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_poll_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    items_pulled: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    items_rejected: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The latest rejections: [{"id": source's id or position, "reason": validation message}].
    last_rejections: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class WriteBackState(enum.StrEnum):
    pending = "pending"  # to push (again after next_attempt_at when attempts > 0)
    done = "done"
    failed = "failed"  # permanent error or max attempts: a human must look


class WriteBackRow(Base):
    """One push of a triage result (tags, fields, draft note) to its source. The note text is not
    stored here: it is built from the draft at push time."""

    __tablename__ = "write_backs"
    __table_args__ = (Index("ix_write_backs_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Stable per (source, ticket, result): the connector embeds it in the note to recognise its own post.
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    triage_result_id: Mapped[int] = mapped_column(ForeignKey("triage_results.id", ondelete="CASCADE"))
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("drafts.id", ondelete="SET NULL"))
    state: Mapped[WriteBackState] = mapped_column(_enum(WriteBackState, "write_back_state"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    receipt: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class PiiVaultEntry(Base):
    """One redacted original of a ticket thread, encrypted (ticketfleet/pii/vault.py).

    Purging clears ``nonce``/``ciphertext`` and keeps the row, so the placeholder number is never
    reused for another value in the same thread.
    """

    __tablename__ = "pii_vault"
    __table_args__ = (
        UniqueConstraint("ticket_id", "placeholder", name="uq_pii_vault_ticket_placeholder"),
        CheckConstraint("(nonce IS NULL) = (ciphertext IS NULL)", name="sealed_or_purged"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    placeholder: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(16))
    nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    purge_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
