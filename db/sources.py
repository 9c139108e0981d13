"""Per-source rows: the connector cursor and the source's health. All in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.ingest import ensure_source
from db.models import ConnectorCursor, Source, SourceHealth

# How many of the latest rejections the health row keeps (ids and reasons, never text).
KEEP_REJECTIONS = 20
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class HealthView:
    name: str
    kind: str
    cursor: str | None
    consecutive_failures: int
    failing: bool
    last_error: str | None
    last_success_at: datetime | None
    next_poll_at: datetime | None
    items_pulled: int
    items_rejected: int
    last_rejections: list[dict[str, Any]]


def source_row(session: Session, name: str, kind: str) -> int:
    """The source's id, with its health row created on first use."""
    source_id = ensure_source(session, name, kind)
    session.execute(insert(SourceHealth).values(source_id=source_id).on_conflict_do_nothing())
    return source_id


def load_cursor(session: Session, source_id: int) -> str | None:
    return session.execute(
        select(ConnectorCursor.cursor).where(ConnectorCursor.source_id == source_id)
    ).scalar_one_or_none()


def save_cursor(session: Session, source_id: int, cursor: str) -> None:
    stmt = insert(ConnectorCursor).values(source_id=source_id, cursor=cursor)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ConnectorCursor.source_id],
            set_={"cursor": stmt.excluded.cursor, "updated_at": func.now()},
        )
    )


def record_page(
    session: Session, source_id: int, *, pulled: int, rejected: Sequence[tuple[str, str]]
) -> None:
    values: dict[str, Any] = {
        "items_pulled": SourceHealth.items_pulled + pulled,
        "items_rejected": SourceHealth.items_rejected + len(rejected),
        "updated_at": func.now(),
    }
    if rejected:
        values["last_rejections"] = [
            {"id": str(ref)[:200], "reason": str(reason)[:MAX_ERROR_CHARS]}
            for ref, reason in list(rejected)[-KEEP_REJECTIONS:]
        ]
    session.execute(update(SourceHealth).where(SourceHealth.source_id == source_id).values(**values))


def record_success(session: Session, source_id: int) -> None:
    # next_poll_at cleared: a healthy source runs on its beat schedule, never held back.
    session.execute(
        update(SourceHealth)
        .where(SourceHealth.source_id == source_id)
        .values(
            consecutive_failures=0,
            failing=False,
            last_success_at=func.now(),
            next_poll_at=None,
            updated_at=func.now(),
        )
    )


def record_failure(
    session: Session,
    source_id: int,
    *,
    error: str,
    permanent: bool,
    retry_after: float | None,
    base_s: float,
    cap_s: float,
) -> timedelta:
    """Count the failure and back off: exponential for retryable errors (at least Retry-After),
    the cap straight away for permanent ones. Returns the back-off chosen."""
    failures = (
        session.execute(
            select(SourceHealth.consecutive_failures)
            .where(SourceHealth.source_id == source_id)
            .with_for_update()
        ).scalar_one()
        + 1
    )
    delay = backoff_seconds(
        failures, permanent=permanent, retry_after=retry_after, base_s=base_s, cap_s=cap_s
    )
    session.execute(
        update(SourceHealth)
        .where(SourceHealth.source_id == source_id)
        .values(
            consecutive_failures=failures,
            failing=permanent,
            last_error=error[:MAX_ERROR_CHARS],
            last_error_at=func.now(),
            next_poll_at=func.now() + timedelta(seconds=delay),
            updated_at=func.now(),
        )
    )
    return timedelta(seconds=delay)


def backoff_seconds(
    failures: int, *, permanent: bool, retry_after: float | None, base_s: float, cap_s: float
) -> float:
    if permanent:
        return cap_s
    delay = min(cap_s, base_s * 2 ** max(0, failures - 1))
    # The server's Retry-After wins even over the cap: polling earlier would only be refused again.
    return max(delay, retry_after) if retry_after is not None else delay


def due_in_seconds(session: Session, source_id: int) -> float:
    """Seconds until the source may be polled again (0 when due)."""
    value = session.execute(
        select(func.extract("epoch", SourceHealth.next_poll_at - func.now())).where(
            SourceHealth.source_id == source_id
        )
    ).scalar_one_or_none()
    return max(0.0, float(value)) if value is not None else 0.0


def health_by_name(session: Session, names: Sequence[str] | None = None) -> dict[str, HealthView]:
    stmt = (
        select(Source, SourceHealth, ConnectorCursor.cursor)
        .join(SourceHealth, SourceHealth.source_id == Source.id)
        .outerjoin(ConnectorCursor, ConnectorCursor.source_id == Source.id)
    )
    if names is not None:
        stmt = stmt.where(Source.name.in_(list(names)))
    out: dict[str, HealthView] = {}
    for source, health, cursor in session.execute(stmt).all():
        out[source.name] = HealthView(
            name=source.name,
            kind=source.kind,
            cursor=cursor,
            consecutive_failures=health.consecutive_failures,
            failing=health.failing,
            last_error=health.last_error,
            last_success_at=health.last_success_at,
            next_poll_at=health.next_poll_at,
            items_pulled=health.items_pulled,
            items_rejected=health.items_rejected,
            last_rejections=list(health.last_rejections or []),
        )
    return out
