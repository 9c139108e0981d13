"""Read-only figures for `ticketfleet status` and the demo summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Draft, ItemState, TriageResult, WorkItem


@dataclass(frozen=True)
class Throughput:
    window_s: int
    done: int

    @property
    def per_minute(self) -> float:
        return self.done * 60 / self.window_s


def items_by_lane_and_state(session: Session) -> dict[tuple[str, str], int]:
    rows = session.execute(
        select(WorkItem.lane, WorkItem.state, func.count()).group_by(WorkItem.lane, WorkItem.state)
    ).all()
    return {(lane, ItemState(state).value): int(n) for lane, state, n in rows}


def recent_throughput(session: Session, windows_s: Sequence[int] = (60, 300, 900)) -> list[Throughput]:
    out = []
    for window in windows_s:
        done = session.execute(
            select(func.count()).where(
                WorkItem.state == ItemState.done,
                WorkItem.finished_at > func.now() - func.make_interval(0, 0, 0, 0, 0, 0, window),
            )
        ).scalar_one()
        out.append(Throughput(window, int(done)))
    return out


def dead_items(session: Session, limit: int = 5) -> list[tuple[int, str | None]]:
    return [
        (int(i), e)
        for i, e in session.execute(
            select(WorkItem.id, WorkItem.last_error)
            .where(WorkItem.state == ItemState.dead)
            .order_by(WorkItem.finished_at.desc())
            .limit(limit)
        ).all()
    ]


def review_counts(session: Session) -> dict[str, int]:
    """Results flagged for a human, and drafts held back by their checks."""
    flagged = session.execute(select(func.count()).where(TriageResult.needs_review)).scalar_one()
    held = session.execute(select(func.count()).where(Draft.check_result != "passed")).scalar_one()
    return {"needs_review": int(flagged), "drafts_held": int(held)}


def label_counts(session: Session, field: str, message_ids: Sequence[int] | None = None) -> dict[str, int]:
    column = getattr(TriageResult, field)
    stmt = select(column, func.count()).group_by(column).order_by(func.count().desc())
    if message_ids is not None:
        stmt = stmt.where(TriageResult.message_id.in_(list(message_ids)))
    return {str(value): int(n) for value, n in session.execute(stmt).all()}


def state_counts(session: Session, item_ids: Sequence[int]) -> dict[str, int]:
    rows = session.execute(
        select(WorkItem.state, func.count()).where(WorkItem.id.in_(list(item_ids))).group_by(WorkItem.state)
    ).all()
    return {ItemState(state).value: int(n) for state, n in rows}
