"""Draft decisions: an agent accepts, edits or rejects a proposed draft, once, audited.

Drafts are created with their triage result (``db/results.py``); this is the only place their status
changes afterwards.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.audit import AuditTrail, record_draft_status
from db.models import Draft, DraftStatus, Message, Source, Ticket
from ticketfleet.core.errors import PermanentError


class DraftNotFound(LookupError, PermanentError):
    """No such draft on a ticket of that source."""


class DraftAlreadyDecided(ValueError, PermanentError):
    """Only a ``proposed`` draft can be decided."""

    def __init__(self, draft_id: int, status: str) -> None:
        super().__init__(f"draft {draft_id} is already {status}")
        self.status = status


def decide(session: Session, draft_id: int, *, source: str, status: str, agent: str, via: str) -> str:
    """Move a proposed draft of ``source`` to ``status`` (row-locked, audited with the agent as actor).
    Returns the status it had."""
    row = session.execute(
        select(Draft)
        .join(Message, Message.id == Draft.message_id)
        .join(Ticket, Ticket.id == Message.ticket_id)
        .join(Source, Source.id == Ticket.source_id)
        .where(Draft.id == draft_id, Source.name == source)
        .with_for_update(of=Draft)
    ).scalar_one_or_none()
    if row is None:
        raise DraftNotFound(f"no draft {draft_id} on a ticket from source {source!r}")
    before = str(row.status)
    if before != DraftStatus.proposed:
        raise DraftAlreadyDecided(draft_id, before)
    row.status = DraftStatus(status)
    row.updated_at = func.now()
    audit = AuditTrail(f"agent:{agent}")
    record_draft_status(audit, row.id, before, status, via=via)
    session.flush()
    audit.write(session)
    return before
