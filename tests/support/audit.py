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
