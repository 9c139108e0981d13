"""Audit events: an append-only record of state changes and model decisions.

Plain inserts here; the PII-and-audit work hardens this table (hash chain, triggers). Event data
holds ids, labels and versions only, never ticket text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from db.models import AuditEvent


def record_events(
    session: Session,
    *,
    actor: str,
    event_type: str,
    entity_type: str,
    entries: Sequence[tuple[int | None, dict[str, Any]]],
) -> None:
    """Insert one event per (entity id, data) entry, in one statement."""
    if entries:
        session.execute(
            insert(AuditEvent),
            [
                {
                    "actor": actor,
                    "event_type": event_type,
                    "entity_type": entity_type,
                    "entity_id": entity_id,
                    "data": data,
                }
                for entity_id, data in entries
            ],
        )
