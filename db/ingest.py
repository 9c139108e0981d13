"""Idempotent ingest of normalised tickets: (source, external id) is the key, re-ingest adds nothing.

Everything happens in the caller's transaction, so a connector can advance its cursor in the same
commit. Returned message ids are only the messages that are new, which is what gets work items.

Personal data is redacted here, before any row is written, so every ingest path (file import,
connectors) stores placeholders only: subject, messages and requester name/e-mail. The originals go
to the encrypted vault (db/pii_vault.py). A follow-up to a known thread reuses the thread's mapping,
so the same card number is the same ``<CARD_n>`` in every message. Without a vault key nothing is
ingested (ticketfleet/pii/vault.py says why and what to do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.bulk import in_ids, table_of, unnest_rows, unnest_select
from db.models import Message, Source, Ticket
from db.pii_vault import ThreadVault, load_threads, store_entries
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.settings import Settings, get_settings
from ticketfleet.pii import DetectContext, PiiKind, ThreadRedactor, regions_for
from ticketfleet.pii.vault import VaultCipher


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


@dataclass
class RedactedTicket:
    subject: str | None
    requester_name: str | None
    requester_email: str | None
    bodies: list[str]
    new_originals: dict[str, str]


def redact_thread(ticket: InboundTicket, vault: ThreadVault) -> RedactedTicket:
    """Subject, messages and requester of one inbound ticket, redacted with its thread's mapping."""
    known_names = [v for p, v in vault.mapping.items() if p.startswith(f"<{PiiKind.NAME.value}_")]
    if ticket.requester and ticket.requester.name:
        known_names.append(ticket.requester.name)
    context = DetectContext(
        regions=regions_for(ticket.locale, ticket.country), known_names=tuple(dict.fromkeys(known_names))
    )
    redactor = ThreadRedactor.from_mapping(vault.mapping, context=context, retired=vault.retired)
    name, email = redactor.redact_requester(
        ticket.requester.name if ticket.requester else None,
        ticket.requester.email if ticket.requester else None,
    )
    subject = redactor.redact(ticket.subject).text if ticket.subject else ticket.subject
    bodies = [redactor.redact(message.text).text for message in ticket.messages]
    new = {p: v for p, v in redactor.values.items() if p not in vault.mapping}
    return RedactedTicket(subject, name, email, bodies, new)


def ingest_tickets(
    session: Session,
    tickets: Sequence[InboundTicket],
    *,
    default_source: str,
    source_kind: str,
    cipher: VaultCipher | None = None,
    settings: Settings | None = None,
) -> IngestResult:
    result = IngestResult()
    if not tickets:
        return result
    settings = settings or get_settings()
    # Resolved first: without a key, nothing at all is written.
    cipher = cipher or VaultCipher.from_settings(settings)
    # A later duplicate of the same ticket in one chunk wins: ON CONFLICT cannot touch a row twice
    # in one statement.
    by_key: dict[tuple[str, str], InboundTicket] = {}
    for ticket in tickets:
        by_key[(ticket.source or default_source, ticket.external_id)] = ticket
    # One upsert per distinct source name, not per ticket (a 500-ticket chunk names one source).
    source_ids = {name: ensure_source(session, name, source_kind) for name in {name for name, _ in by_key}}

    # The ticket rows go in without subject or requester: those are written below, redacted. The
    # upsert locks each ticket row, so two ingests of one thread take turns on its vault mapping.
    rows = [
        {
            "source_id": source_ids[source],
            "external_id": ext_id,
            "channel": t.channel,
            "locale": t.locale,
            "country": t.country,
        }
        for (source, ext_id), t in by_key.items()
    ]
    # INSERT … SELECT FROM unnest(arrays): one short statement whatever the chunk size (db/bulk.py).
    ticket_table = table_of(Ticket)
    ticket_cols = [ticket_table.c[k] for k in ("source_id", "external_id", "channel", "locale", "country")]
    base_insert = insert(ticket_table).from_select(
        [c.key for c in ticket_cols], unnest_select(ticket_cols, rows)
    )
    upsert = base_insert.on_conflict_do_update(
        constraint="uq_tickets_source_external",
        set_={
            "locale": func.coalesce(base_insert.excluded.locale, ticket_table.c.locale),
            "country": func.coalesce(base_insert.excluded.country, ticket_table.c.country),
            "updated_at": func.now(),
        },
    ).returning(ticket_table.c.id, ticket_table.c.source_id, ticket_table.c.external_id)
    ticket_ids = {(sid, ext): tid for tid, sid, ext in session.execute(upsert)}
    result.tickets_seen = len(ticket_ids)

    vaults = load_threads(session, cipher, ticket_ids.values())
    redacted: dict[int, RedactedTicket] = {}
    for (source, ext_id), t in by_key.items():
        ticket_id = ticket_ids[(source_ids[source], ext_id)]
        redacted[ticket_id] = redact_thread(t, vaults[ticket_id])
    store_entries(
        session,
        cipher,
        {tid: r.new_originals for tid, r in redacted.items()},
        timedelta(days=settings.pii_retention_days),
    )
    redacted_rows = unnest_rows(
        [
            ticket_table.c.id,
            ticket_table.c.subject,
            ticket_table.c.requester_name,
            ticket_table.c.requester_email,
        ],
        [
            {
                "id": tid,
                "subject": r.subject,
                "requester_name": r.requester_name,
                "requester_email": r.requester_email,
            }
            for tid, r in redacted.items()
        ],
    )
    session.execute(
        update(ticket_table)
        .where(ticket_table.c.id == redacted_rows.c.id)
        .values(
            subject=func.coalesce(redacted_rows.c.subject, ticket_table.c.subject),
            # The first requester seen stays (as before redaction: later duplicates do not rename it).
            requester_name=func.coalesce(ticket_table.c.requester_name, redacted_rows.c.requester_name),
            requester_email=func.coalesce(ticket_table.c.requester_email, redacted_rows.c.requester_email),
        )
    )

    # Positions continue after what is stored, so a follow-up appended to a known thread sorts last.
    next_position = dict(
        session.execute(
            select(Message.ticket_id, func.max(Message.position) + 1)
            .where(in_ids(Message.ticket_id, ticket_ids.values()))
            .group_by(Message.ticket_id)
        ).all()
    )
    message_rows = []
    for (source, ext_id), t in by_key.items():
        ticket_id = ticket_ids[(source_ids[source], ext_id)]
        base = next_position.get(ticket_id, 0)
        bodies = redacted[ticket_id].bodies
        for offset, (msg, msg_ext_id, body) in enumerate(
            zip(t.messages, t.message_ids(), bodies, strict=True)
        ):
            message_rows.append(
                {
                    "ticket_id": ticket_id,
                    "external_id": msg_ext_id,
                    "position": base + offset,
                    "author_role": msg.role,
                    "channel": t.channel,
                    "body": body,
                    "created_at": msg.created_at,
                }
            )
    message_table = table_of(Message)
    message_cols = [
        message_table.c[k]
        for k in ("ticket_id", "external_id", "position", "author_role", "channel", "body", "created_at")
    ]
    relation = unnest_rows(message_cols, message_rows)
    # A message without a time of its own is stamped now (the column's default, which an explicit NULL
    # would not get).
    chosen = [relation.c[c.key] for c in message_cols[:-1]] + [
        func.coalesce(relation.c.created_at, func.now())
    ]
    stmt = (
        insert(message_table)
        .from_select([c.key for c in message_cols], select(*chosen))
        .on_conflict_do_nothing(constraint="uq_messages_ticket_external")
        .returning(message_table.c.id, message_table.c.author_role)
    )
    for message_id, role in session.execute(stmt):
        result.new_message_ids.append(int(message_id))
        if role == "customer":
            result.new_customer_message_ids.append(int(message_id))
    return result
