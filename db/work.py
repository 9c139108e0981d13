"""Work-item state machine: pending → queued → processing → done | failed | dead.

The database is the queue of record; Redis only carries wake-up messages naming item ids. Workers
claim items here with ``FOR UPDATE SKIP LOCKED`` under a lease, so two workers never run one item at
once, a duplicate message is a no-op, and anything Redis forgets the reaper finds again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Float, and_, case, cast, exists, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased

from db.models import ItemState, Message, TriageResult, WorkItem
from db.results import RunIdentity

# Rough tokens-per-character for budgeting before tokenisation; generous on purpose so a batch
# rarely exceeds its real token budget.
CHARS_PER_TOKEN = 3
PROMPT_OVERHEAD_TOKENS = 96


def estimate_tokens(body: str) -> int:
    return len(body) // CHARS_PER_TOKEN + PROMPT_OVERHEAD_TOKENS


@dataclass(frozen=True)
class ClaimedItem:
    id: int
    message_id: int
    attempts: int
    want_draft: bool
    token_estimate: int


def create_work_items(session: Session, message_ids: Sequence[int], lane: str) -> list[int]:
    """Pending work items for customer messages; a message that already has one keeps it.

    A reply is due only for the newest message of its thread, so earlier turns are triaged but not
    drafted, and a thread whose last word is the agent's gets no draft.
    """
    if not message_ids:
        return []
    msg, later = aliased(Message), aliased(Message)
    has_later = exists().where(later.ticket_id == msg.ticket_id, later.position > msg.position)
    rows = session.execute(select(msg.id, msg.body, ~has_later).where(msg.id.in_(message_ids))).all()
    values = [
        {
            "message_id": mid,
            "lane": lane,
            "state": ItemState.pending,
            "want_draft": bool(is_last),
            "token_estimate": estimate_tokens(body),
        }
        for mid, body, is_last in rows
    ]
    if not values:
        return []
    # executemany: compiled once and cached (a multi-row VALUES list is compiled anew every call).
    stmt = (
        insert(WorkItem).on_conflict_do_nothing(index_elements=[WorkItem.message_id]).returning(WorkItem.id)
    )
    return [int(i) for i in session.connection().execute(stmt, values).scalars()]


def mark_queued(session: Session, item_ids: Iterable[int]) -> None:
    """After the wake-up message was sent: pending items become queued (others are left alone)."""
    ids = list(item_ids)
    if ids:
        session.execute(
            update(WorkItem)
            .where(WorkItem.id.in_(ids), WorkItem.state == ItemState.pending)
            .values(state=ItemState.queued, queued_at=func.now(), updated_at=func.now())
        )


def claim(
    session: Session,
    *,
    lane: str,
    hinted_ids: Sequence[int],
    limit: int,
    token_budget: int,
    worker: str,
    lease_seconds: int,
    top_up: bool = True,
) -> list[ClaimedItem]:
    """Claim up to ``limit`` items within ``token_budget``: the ids a message named first, then the
    oldest queued items of the lane. Always claims at least one item if any is claimable."""
    if limit <= 0:
        return []
    now = func.now()
    claimable_hint = and_(
        WorkItem.id.in_(list(hinted_ids) or [-1]),
        or_(
            WorkItem.state.in_([ItemState.pending, ItemState.queued]),
            and_(WorkItem.state == ItemState.failed, WorkItem.next_attempt_at <= now),
        ),
    )
    condition = claimable_hint
    if top_up:
        condition = or_(claimable_hint, and_(WorkItem.lane == lane, WorkItem.state == ItemState.queued))
    candidates = session.execute(
        select(WorkItem.id, WorkItem.token_estimate)
        .where(condition)
        .order_by(WorkItem.id.in_(list(hinted_ids) or [-1]).desc(), WorkItem.queued_at, WorkItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    chosen: list[int] = []
    used = 0
    for item_id, tokens in candidates:
        if chosen and used + tokens > token_budget:
            break
        chosen.append(item_id)
        used += tokens
    if not chosen:
        return []
    rows = session.execute(
        update(WorkItem)
        .where(WorkItem.id.in_(chosen))
        .values(
            state=ItemState.processing,
            attempts=WorkItem.attempts + 1,
            claimed_at=now,
            claimed_by=worker,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .returning(
            WorkItem.id, WorkItem.message_id, WorkItem.attempts, WorkItem.want_draft, WorkItem.token_estimate
        )
    ).all()
    by_id = {r[0]: ClaimedItem(int(r[0]), int(r[1]), int(r[2]), bool(r[3]), int(r[4])) for r in rows}
    return [by_id[i] for i in chosen]


def mark_done(session: Session, item_ids: Sequence[int]) -> None:
    if item_ids:
        session.execute(
            update(WorkItem)
            .where(WorkItem.id.in_(list(item_ids)))
            .values(
                state=ItemState.done,
                finished_at=func.now(),
                last_error=None,
                lease_expires_at=None,
                next_attempt_at=None,
                updated_at=func.now(),
            )
        )


def mark_failed(
    session: Session, item_id: int, error: str, *, max_attempts: int, backoff_s: float
) -> ItemState:
    """Record a failed attempt: ``failed`` with exponential backoff, or ``dead`` once attempts run out."""
    state_type = WorkItem.__table__.c.state.type
    new_state = case(
        (WorkItem.attempts >= max_attempts, cast(literal(ItemState.dead.value), state_type)),
        else_=cast(literal(ItemState.failed.value), state_type),
    )
    seconds = literal(float(backoff_s), Float) * func.power(2, WorkItem.attempts - 1)
    delay = func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    state = session.execute(
        update(WorkItem)
        .where(WorkItem.id == item_id, WorkItem.state == ItemState.processing)
        .values(
            state=new_state,
            last_error=error[:4000],
            lease_expires_at=None,
            next_attempt_at=func.now() + delay,
            finished_at=case((WorkItem.attempts >= max_attempts, func.now()), else_=None),
            updated_at=func.now(),
        )
        .returning(WorkItem.state)
    ).scalar_one_or_none()
    return ItemState(state) if state is not None else ItemState.done


def reap(
    session: Session, *, stuck_after_seconds: int, idle_lanes: Sequence[str], limit: int = 10_000
) -> dict[str, list[int]]:
    """Items whose wake-up was lost or whose worker died, reset to pending, grouped by lane.

    - processing past its lease (worker killed, host lost);
    - pending untouched for ``stuck_after_seconds`` (the send failed or the sender died);
    - queued untouched for ``stuck_after_seconds`` on a lane whose broker queue is empty (Redis
      restarted, FLUSHALL). On a lane that still has messages, every wake-up claims the oldest queued
      items anyway, so re-sending there would only pile up duplicates behind a long backlog;
    - failed whose backoff has elapsed.
    The caller re-sends wake-ups after commit. Duplicate wake-ups are harmless: claiming is idempotent.
    """
    now = func.now()
    stale = now - timedelta(seconds=stuck_after_seconds)
    condition = or_(
        and_(WorkItem.state == ItemState.processing, WorkItem.lease_expires_at < now),
        and_(WorkItem.state == ItemState.pending, WorkItem.updated_at < stale),
        and_(
            WorkItem.state == ItemState.queued,
            WorkItem.updated_at < stale,
            WorkItem.lane.in_(list(idle_lanes) or [""]),
        ),
        and_(WorkItem.state == ItemState.failed, WorkItem.next_attempt_at <= now),
    )
    ids = (
        select(WorkItem.id)
        .where(condition)
        .order_by(WorkItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = session.execute(
        update(WorkItem)
        .where(WorkItem.id.in_(ids))
        .values(state=ItemState.pending, claimed_by=None, lease_expires_at=None, updated_at=now)
        .returning(WorkItem.id, WorkItem.lane)
    ).all()
    by_lane: dict[str, list[int]] = {}
    for item_id, lane in rows:
        by_lane.setdefault(lane, []).append(int(item_id))
    return by_lane


def select_backlog(session: Session, *, stale_against: RunIdentity | None = None) -> list[int]:
    """Customer messages that still need processing: no done/dead/in-flight work item, and, with
    ``stale_against``, done ones with no result from that model and prompt version. Message ids."""
    not_done = ~exists().where(
        WorkItem.message_id == Message.id,
        WorkItem.state.in_([ItemState.done, ItemState.dead, ItemState.processing]),
    )
    condition = not_done
    if stale_against is not None:
        current = exists().where(
            TriageResult.message_id == Message.id,
            TriageResult.model_id == stale_against.model_id,
            TriageResult.model_revision == stale_against.model_revision,
            TriageResult.prompt_version == stale_against.prompt_version,
        )
        done = exists().where(WorkItem.message_id == Message.id, WorkItem.state == ItemState.done)
        condition = or_(not_done, and_(~current, done))
    return [
        int(i)
        for i in session.execute(
            select(Message.id).where(Message.author_role == "customer", condition).order_by(Message.id)
        ).scalars()
    ]


def requeue_for_backlog(session: Session, message_ids: Sequence[int], lane: str) -> list[int]:
    """Create missing work items and reset existing not-in-flight ones to pending on ``lane``."""
    created = set(create_work_items(session, message_ids, lane))
    reset = session.execute(
        update(WorkItem)
        .where(
            WorkItem.message_id.in_(list(message_ids)),
            WorkItem.state.in_([ItemState.pending, ItemState.queued, ItemState.failed, ItemState.done]),
        )
        .values(state=ItemState.pending, lane=lane, attempts=0, last_error=None, updated_at=func.now())
        .returning(WorkItem.id)
    ).scalars()
    return sorted(created | {int(i) for i in reset})
