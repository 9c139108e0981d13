"""Read side for the API: a ticket's customer messages with their latest triage result and draft.

"Latest" is by creation time: after a model or prompt upgrade a message can have several results,
and the newest is the one an agent should see.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from db.models import Draft, Message, Role, Source, Ticket, TriageResult, WorkItem


@dataclass(frozen=True)
class MessageRow:
    message: Message
    state: str | None
    result: TriageResult | None
    draft: Draft | None


@dataclass(frozen=True)
class TicketRows:
    source: str
    ticket: Ticket
    messages: list[MessageRow]


def _latest_results(session: Session, message_ids: list[int]) -> dict[int, TriageResult]:
    rows = session.execute(
        select(TriageResult)
        .where(TriageResult.message_id.in_(message_ids))
        .ext(distinct_on(TriageResult.message_id))
        .order_by(TriageResult.message_id, TriageResult.created_at.desc(), TriageResult.id.desc())
    ).scalars()
    return {row.message_id: row for row in rows}


def _latest_drafts(session: Session, message_ids: list[int]) -> dict[int, Draft]:
    rows = session.execute(
        select(Draft)
        .where(Draft.message_id.in_(message_ids))
        .ext(distinct_on(Draft.message_id))
        .order_by(Draft.message_id, Draft.created_at.desc(), Draft.id.desc())
    ).scalars()
    return {row.message_id: row for row in rows}


def ticket_with_results(session: Session, source: str, external_id: str) -> TicketRows | None:
    ticket = session.execute(
        select(Ticket).join(Source).where(Source.name == source, Ticket.external_id == external_id)
    ).scalar_one_or_none()
    if ticket is None:
        return None
    messages = (
        session.execute(
            select(Message)
            .where(Message.ticket_id == ticket.id, Message.author_role == Role.customer)
            .order_by(Message.position)
        )
        .scalars()
        .all()
    )
    ids = [m.id for m in messages]
    states = dict(
        session.execute(select(WorkItem.message_id, WorkItem.state).where(WorkItem.message_id.in_(ids))).all()
    )
    results = _latest_results(session, ids)
    drafts = _latest_drafts(session, ids)
    return TicketRows(
        source=source,
        ticket=ticket,
        messages=[
            MessageRow(
                message=m,
                state=str(states[m.id]) if m.id in states else None,
                result=results.get(m.id),
                draft=drafts.get(m.id),
            )
            for m in messages
        ],
    )
