"""Test-only maintenance of the audit log, run as the database owner (the tests connect as one).

Production has no way for the app to empty ``audit_events``: the app role lacks TRUNCATE/DELETE and
the ENABLE ALWAYS triggers refuse them for everyone else. The tests need a clean table between tests,
so the owner suspends the TRUNCATE trigger for the duration of ONE transaction: ALTER TABLE takes an
ACCESS EXCLUSIVE lock, so no other session ever runs while the trigger is off, and the re-enable
commits together with the truncate (or neither happens). This is exactly what an attacker holding
owner rights could do too, which is why `ticketfleet audit head` anchoring exists (docs/audit.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text


@contextmanager
def audit_triggers_suspended(conn: Connection, *triggers: str) -> Iterator[None]:
    """Disable the named audit_events triggers inside the caller's transaction; re-enable ALWAYS."""
    names = triggers or ("audit_events_no_truncate",)
    for name in names:
        conn.execute(text(f"ALTER TABLE audit_events DISABLE TRIGGER {name}"))
    yield
    for name in names:
        conn.execute(text(f"ALTER TABLE audit_events ENABLE ALWAYS TRIGGER {name}"))


def truncate_tables(conn: Connection, tables: Iterable[str]) -> None:
    """TRUNCATE the tables (audit_events and audit_chain_head included) in the caller's transaction."""
    with audit_triggers_suspended(conn):
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def insert_events(database_url: str, actor: str, count: int, batch: int) -> int:
    """Write ``count`` events in committed batches of ``batch``, as a worker process does. Runs in a
    child process (importable, picklable arguments); returns how many it wrote."""
    from db.audit import AuditTrail
    from db.session import dispose_engines, transaction

    written = 0
    while written < count:
        with transaction(database_url) as session:
            trail = AuditTrail(actor)
            for i in range(written, min(count, written + batch)):
                trail.state_change("item.done", i, "processing", "done")
            written += trail.write(session)
    dispose_engines()
    return written
