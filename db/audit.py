"""Audit events: an append-only, hash-chained record of state changes and model decisions.

PostgreSQL numbers, times and hashes every row (trigger ``audit_events_chain``, see
migrations/versions/*_a1e2d3c4b5f6_audit_hash_chain.py and docs/audit.md); this module only inserts.
Event payloads hold ids, labels, states and versions, never ticket text.

Lock order, and why events are written last: chaining takes a row lock on ``audit_chain_head`` that
is held until commit, so every transaction that audits runs its chaining step one at a time. Writing
a transaction's events as ONE batched INSERT as its LAST statement (collect them in an
:class:`AuditTrail`, then :meth:`AuditTrail.write`) keeps that lock for the INSERT and the commit only,
and a holder never waits on another lock afterwards, so no deadlock cycle can form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from db.bulk import table_of, unnest_select
from db.models import AuditEvent

Payload = Mapping[str, Any]

# Event types, by entity. Work items: one per state change (before/after hold {"state": …}).
ITEM_CREATED = "item.created"  # → pending
ITEM_QUEUED = "item.queued"  # pending → queued (wake-up sent)
ITEM_CLAIMED = "item.claimed"  # pending|queued|failed → processing
ITEM_DONE = "item.done"  # processing → done
ITEM_FAILED = "item.failed"  # processing → failed (retried after a backoff)
ITEM_DEAD = "item.dead"  # processing → dead (attempts exhausted)
ITEM_REQUEUED = "item.requeued"  # reaper: stuck/expired/failed → pending
ITEM_BACKLOG = "item.backlog_requeued"  # backlog run: → pending on the backlog lane
TRIAGE_DECIDED = "triage.decided"  # model decision: fields, confidences, gates, model + prompt version
DRAFT_STATUS = "draft.status_changed"  # none → proposed at creation; proposed → accepted|edited|rejected
# Write-backs (db/write_backs.py): "writeback.done" / "writeback.failed", pending → done or failed.


_EVENT_COLUMNS = ("actor", "event_type", "entity_type", "entity_id", "data", "before", "after")


@dataclass
class AuditTrail:
    """The audit events of one transaction, written together by :meth:`write` (one INSERT).

    ``actor`` is who acts (a worker id, "reaper", "import", an agent's login); one event may name
    another actor.
    """

    actor: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        event_type: str,
        entity_type: str,
        entity_id: int | None,
        *,
        before: Payload | None = None,
        after: Payload | None = None,
        data: Payload | None = None,
        actor: str | None = None,
    ) -> None:
        self.rows.append(
            {
                "actor": actor or self.actor,
                "event_type": event_type,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "data": dict(data or {}),
                "before": dict(before) if before is not None else None,
                "after": dict(after) if after is not None else None,
            }
        )

    def state_change(
        self, event_type: str, item_id: int, before: str | None, after: str, **data: Any
    ) -> None:
        """A work-item state change."""
        self.add(
            event_type,
            "work_item",
            item_id,
            before={"state": before} if before is not None else None,
            after={"state": after},
            data=data,
        )

    def write(self, session: Session) -> int:
        """Insert every collected event in one statement (make it the transaction's last); returns
        how many. The trail is empty afterwards."""
        rows, self.rows = self.rows, []
        if rows:
            # One INSERT … SELECT FROM unnest(arrays) (db/bulk.py): a short statement PostgreSQL can
            # reuse, and the chaining trigger's once-per-statement step runs once per trail.
            events_table = table_of(AuditEvent)
            columns = [events_table.c[k] for k in _EVENT_COLUMNS]
            session.execute(
                insert(events_table).from_select(list(_EVENT_COLUMNS), unnest_select(columns, rows))
            )
        return len(rows)


def record_events(
    session: Session,
    *,
    actor: str,
    event_type: str,
    entity_type: str,
    entries: Sequence[tuple[int | None, Payload]],
    before: Mapping[int | None, Payload] | None = None,
    after: Mapping[int | None, Payload] | None = None,
) -> None:
    """Insert one event per (entity id, data) entry, in one statement; ``before``/``after`` map an
    entity id to its state before and after the event."""
    trail = AuditTrail(actor)
    for entity_id, data in entries:
        trail.add(
            event_type,
            entity_type,
            entity_id,
            data=data,
            before=(before or {}).get(entity_id),
            after=(after or {}).get(entity_id),
        )
    trail.write(session)


def record_draft_status(
    trail: AuditTrail, draft_id: int, before: str | None, after: str, *, actor: str | None = None, **data: Any
) -> None:
    """A draft's status moved (``before`` None: the draft was created as ``after``)."""
    trail.add(
        DRAFT_STATUS,
        "draft",
        draft_id,
        before={"status": before} if before is not None else None,
        after={"status": after},
        data=data,
        actor=actor,
    )
