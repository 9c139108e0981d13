"""The ``write_backs`` rows' life cycle: planned → claimed → done / retried / failed, each audited.

Every state change of a write-back row happens here; ``ticketfleet.pipeline.writeback`` decides what
to push and when, and calls these. Audit events name ids, tags, fields and the note's length — never
its text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.audit import record_events
from db.models import Source, WriteBackRow, WriteBackState

# Rows younger than this are being sent by the batch that planned them; a resend sweep skips them.
FRESH = timedelta(seconds=30)


def insert_planned(session: Session, values: Sequence[dict[str, Any]]) -> list[int]:
    """Insert planned rows; one already planned (same idempotency key) is kept. Returns new ids."""
    if not values:
        return []
    stmt = insert(WriteBackRow).values(list(values)).on_conflict_do_nothing().returning(WriteBackRow.id)
    return [int(i) for i in session.execute(stmt).scalars()]


def due_ids(session: Session, *, source: str | None = None, limit: int = 500) -> list[int]:
    """Pending rows whose retry is due (or whose message was lost), oldest first."""
    stmt = (
        select(WriteBackRow.id)
        .join(Source, Source.id == WriteBackRow.source_id)
        .where(
            WriteBackRow.state == WriteBackState.pending,
            or_(WriteBackRow.next_attempt_at.is_(None), WriteBackRow.next_attempt_at <= func.now()),
            WriteBackRow.created_at < func.now() - FRESH,
        )
        .order_by(WriteBackRow.id)
        .limit(limit)
    )
    if source is not None:
        stmt = stmt.where(Source.name == source)
    return [int(i) for i in session.execute(stmt).scalars()]


def claim(session: Session, write_back_id: int, *, lease: timedelta) -> WriteBackRow | None:
    """Take a due pending row for one push (counts the attempt; the lease hides it from others), or
    None when it is not pending, not due, or being pushed by someone else."""
    claimed = session.execute(
        update(WriteBackRow)
        .where(
            WriteBackRow.id == write_back_id,
            WriteBackRow.state == WriteBackState.pending,
            or_(WriteBackRow.next_attempt_at.is_(None), WriteBackRow.next_attempt_at <= func.now()),
        )
        .values(attempts=WriteBackRow.attempts + 1, next_attempt_at=func.now() + lease, updated_at=func.now())
        .returning(WriteBackRow.id)
    ).scalar_one_or_none()
    return None if claimed is None else session.get(WriteBackRow, write_back_id)


def schedule_retry(session: Session, row_id: int, *, error: str, delay_s: float) -> None:
    _update(session, row_id, last_error=error[:300], next_attempt_at=func.now() + timedelta(seconds=delay_s))


def mark_done(
    session: Session, row: WriteBackRow, pushed: Mapping[str, Any], receipt: dict[str, Any], *, actor: str
) -> None:
    """``pushed`` summarises what went out (tags, fields, note length: no text); ``receipt`` is the
    source's answer (note id, deduplicated)."""
    _update(
        session, row.id, state=WriteBackState.done, receipt=receipt, last_error=None, next_attempt_at=None
    )
    _audit(session, actor, "writeback.done", row, pushed, receipt)


def mark_failed(
    session: Session, row: WriteBackRow, pushed: Mapping[str, Any], error: str, *, actor: str
) -> None:
    _update(session, row.id, state=WriteBackState.failed, last_error=error[:300], next_attempt_at=None)
    _audit(session, actor, "writeback.failed", row, pushed, {"error_class": error.split(":", 1)[0]})


def _update(session: Session, row_id: int, **values: Any) -> None:
    session.execute(
        update(WriteBackRow).where(WriteBackRow.id == row_id).values(**values, updated_at=func.now())
    )


def _audit(
    session: Session,
    actor: str,
    event: str,
    row: WriteBackRow,
    pushed: Mapping[str, Any],
    extra: dict[str, Any],
) -> None:
    record_events(
        session,
        actor=actor,
        event_type=event,
        entity_type="write_back",
        entries=[
            (
                row.id,
                {
                    "ticket_id": row.ticket_id,
                    "triage_result_id": row.triage_result_id,
                    "draft_id": row.draft_id,
                    "tags": list(pushed.get("tags", ())),
                    "fields": dict(pushed.get("fields", {})),
                    "note_length": int(pushed.get("note_length", 0)),
                    "attempts": row.attempts,
                    **{k: v for k, v in extra.items() if k in ("note_id", "deduplicated", "error_class")},
                },
            )
        ],
        before={row.id: {"state": WriteBackState.pending.value}},
        after={row.id: {"state": event.removeprefix("writeback.")}},
    )
