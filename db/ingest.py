"""Idempotent ingest of normalised tickets: (source, external id) is the key, re-ingest adds nothing.

Everything happens in the caller's transaction, so a connector can advance its cursor in the same
commit. Returned message ids are only the messages that are new, which is what gets work items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import Message, Source, Ticket
from ticketfleet.inbound import InboundTicket


@dataclass
class IngestResult:
    tickets_seen: int = 0
    new_message_ids: list[int] = field(default_factory=list)
    new_customer_message_ids: list[int] = field(default_factory=list)


def ensure_source(session: Session, name: str, kind: str) -> int:
    # Look up first. An upsert with DO UPDATE would lock the source's row until commit, so every
    # concurrent ingest of one source (API requests, a poller, an import) would queue behind it.
    lookup = select(Source.id).where(Source.name == name)
    found = session.execute(lookup).scalar_one_or_none()
    if found is not None:
        return int(found)
    inserted = session.execute(
        insert(Source)
        .values(name=name, kind=kind)
        .on_conflict_do_nothing(index_elements=[Source.name])
        .returning(Source.id)
    ).scalar_one_or_none()
    # None: a concurrent transaction inserted it first; DO NOTHING waited for its commit, and this
    # next statement's snapshot sees the row.
    return int(inserted) if inserted is not None else int(session.execute(lookup).scalar_one())


def ingest_tickets(
    session: Session, tickets: Sequence[InboundTicket], *, default_source: str, source_kind: str
) -> IngestResult:
    result = IngestResult()
    if not tickets:
        return result
    # A later duplicate of the same ticket in one chunk wins: ON CONFLICT cannot touch a row twice
    # in one statement.
    by_key: dict[tuple[str, str], InboundTicket] = {}
    for ticket in tickets:
        by_key[(ticket.source or default_source, ticket.external_id)] = ticket
    # One upsert per distinct source name, not per ticket (a 500-ticket chunk names one source).
    source_ids = {name: ensure_source(session, name, source_kind) for name in {name for name, _ in by_key}}

    rows = [
        {
            "source_id": source_ids[source],
            "external_id": ext_id,
            "channel": t.channel,
            "subject": t.subject,
            "requester_name": t.requester.name if t.requester else None,
            "requester_email": t.requester.email if t.requester else None,
            "locale": t.locale,
            "country": t.country,
        }
        for (source, ext_id), t in by_key.items()
    ]
    # executemany (SQLAlchemy's "insertmanyvalues") rather than .values(rows): the statement is
    # compiled once and cached, where a 500-row VALUES list was compiled anew for every chunk.
    base_insert = insert(Ticket)
    upsert = base_insert.on_conflict_do_update(
        constraint="uq_tickets_source_external",
        set_={
            "subject": func.coalesce(base_insert.excluded.subject, Ticket.subject),
            "locale": func.coalesce(base_insert.excluded.locale, Ticket.locale),
            "country": func.coalesce(base_insert.excluded.country, Ticket.country),
            "updated_at": func.now(),
        },
    ).returning(Ticket.id, Ticket.source_id, Ticket.external_id)
    ticket_ids = {(sid, ext): tid for tid, sid, ext in session.connection().execute(upsert, rows)}
    result.tickets_seen = len(ticket_ids)

    # Positions continue after what is stored, so a follow-up appended to a known thread sorts last.
    next_position = dict(
        session.execute(
            select(Message.ticket_id, func.max(Message.position) + 1)
            .where(Message.ticket_id.in_(ticket_ids.values()))
            .group_by(Message.ticket_id)
        ).all()
    )
    message_rows = []
    for (source, ext_id), t in by_key.items():
        ticket_id = ticket_ids[(source_ids[source], ext_id)]
        base = next_position.get(ticket_id, 0)
        for offset, (msg, msg_ext_id) in enumerate(zip(t.messages, t.message_ids(), strict=True)):
            row = {
                "ticket_id": ticket_id,
                "external_id": msg_ext_id,
                "position": base + offset,
                "author_role": msg.role,
                "channel": t.channel,
                "body": msg.text,
            }
            if msg.created_at is not None:
                row["created_at"] = msg.created_at
            message_rows.append(row)
    # Rows with and without created_at must go in separate statements (executemany needs equal keys).
    for subset in (
        [r for r in message_rows if "created_at" in r],
        [r for r in message_rows if "created_at" not in r],
    ):
        if not subset:
            continue
        stmt = (
            insert(Message)
            .on_conflict_do_nothing(constraint="uq_messages_ticket_external")
            .returning(Message.id, Message.author_role)
        )
        for message_id, role in session.connection().execute(stmt, subset):
            result.new_message_ids.append(int(message_id))
            if role == "customer":
                result.new_customer_message_ids.append(int(message_id))
    return result
