"""db/bulk.py: array-parameter statements whose SQL does not grow with the batch, and that carry
every column type the ingest path needs (enums, JSONB, NULLs) through real PostgreSQL."""

from __future__ import annotations

from sqlalchemy import BigInteger, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.bulk import any_of, table_of, unnest_select
from db.ingest import ensure_source
from db.models import AuditEvent, Message, Ticket

DIALECT = postgresql.psycopg.dialect()


def sql_of(statement: object) -> str:
    return str(statement.compile(dialect=DIALECT))  # type: ignore[attr-defined]


def test_statement_text_is_the_same_for_one_row_and_for_five_hundred() -> None:
    messages = table_of(Message)
    columns = [
        messages.c[k] for k in ("ticket_id", "external_id", "position", "author_role", "channel", "body")
    ]

    def insert_of(n: int) -> str:
        rows = [
            {
                "ticket_id": 1,
                "external_id": f"m{i}",
                "position": i,
                "author_role": "customer",
                "channel": "chat",
                "body": "x",
            }
            for i in range(n)
        ]
        return sql_of(insert(messages).from_select([c.key for c in columns], unnest_select(columns, rows)))

    assert insert_of(1) == insert_of(500)
    assert len(insert_of(500)) < 1000  # psycopg caches statements up to 4 KiB
    assert sql_of(select(Message.id).where(any_of(Message.id, [1], BigInteger()))) == sql_of(
        select(Message.id).where(any_of(Message.id, range(500), BigInteger()))
    )


def test_rows_round_trip_with_enums_nulls_and_jsonb(db_session: Session) -> None:
    source_id = ensure_source(db_session, "bulk-test", "test")
    tickets = table_of(Ticket)
    cols = [tickets.c[k] for k in ("source_id", "external_id", "channel", "locale", "country")]
    rows = [
        {"source_id": source_id, "external_id": "T-1", "channel": "chat", "locale": "de-DE", "country": None},
        {"source_id": source_id, "external_id": "T-2", "channel": "ticket", "locale": None, "country": "FR"},
    ]
    ids = (
        db_session.execute(
            insert(tickets)
            .from_select([c.key for c in cols], unnest_select(cols, rows))
            .returning(tickets.c.id)
        )
        .scalars()
        .all()
    )
    stored = db_session.execute(
        select(Ticket.external_id, Ticket.channel, Ticket.locale, Ticket.country)
        .where(any_of(Ticket.id, ids, BigInteger()))
        .order_by(Ticket.external_id)
    ).all()
    assert [tuple(map(str, r)) for r in stored] == [
        ("T-1", "chat", "de-DE", "None"),
        ("T-2", "ticket", "None", "FR"),
    ]

    events = table_of(AuditEvent)
    event_cols = [
        events.c[k] for k in ("actor", "event_type", "entity_type", "entity_id", "data", "before", "after")
    ]
    event_rows = [
        {
            "actor": "t",
            "event_type": "bulk.test",
            "entity_type": "x",
            "entity_id": i,
            "data": {"n": i, "text": 'ü "quoted"'},
            "before": None,
            "after": {"state": "done"},
        }
        for i in range(3)
    ]
    db_session.execute(
        insert(events).from_select([c.key for c in event_cols], unnest_select(event_cols, event_rows))
    )
    written = db_session.execute(
        select(AuditEvent.entity_id, AuditEvent.data, AuditEvent.before, AuditEvent.after, AuditEvent.seq)
        .where(AuditEvent.event_type == "bulk.test")
        .order_by(AuditEvent.seq)
    ).all()
    assert [(e, d, b, a) for e, d, b, a, _ in written] == [
        (i, {"n": i, "text": 'ü "quoted"'}, None, {"state": "done"}) for i in range(3)
    ]
    # One statement, chained in the order given: consecutive sequence numbers.
    seqs = [seq for *_, seq in written]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
