"""Work-item state machine: pending → queued → processing → done | failed | dead.

The database is the queue of record; Redis only carries wake-up messages naming item ids. Workers
claim items here with ``FOR UPDATE SKIP LOCKED`` under a lease, so two workers never run one item at
once, a duplicate message is a no-op, and anything Redis forgets the reaper finds again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import (
    BigInteger,
    Float,
    Select,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.orm import Session, aliased

from db import audit as events
from db.audit import AuditTrail
from db.bulk import in_ids, table_of, unnest_select
from db.models import ItemState, Message, TriageResult, WorkItem
from ticketfleet.core.vocabulary import RunIdentity

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


def _new_item_facts() -> Select[int, str, bool]:
    """Per message id (bind ``message_ids``): its body, and whether it is its thread's newest."""
    msg, later = aliased(Message), aliased(Message)
    has_later = exists().where(later.ticket_id == msg.ticket_id, later.position > msg.position)
    return select(msg.id, msg.body, ~has_later).where(
        msg.id == any_(bindparam("message_ids", type_=ARRAY(BigInteger)))
    )


# Built once: aliased() constructs are costly to build, and ingest runs this for every batch.
_NEW_ITEM_FACTS = _new_item_facts()


def create_work_items(
    session: Session, message_ids: Sequence[int], lane: str, *, audit: AuditTrail
) -> list[int]:
    """Pending work items for customer messages; a message that already has one keeps it.

    Every function here that changes an item's state adds one event per item to ``audit`` (the
    caller writes the trail last in its transaction; see db/audit.py).

    A reply is due only for the newest message of its thread, so earlier turns are triaged but not
    drafted, and a thread whose last word is the agent's gets no draft.
    """
    if not message_ids:
        return []
    rows = session.execute(_NEW_ITEM_FACTS, {"message_ids": list(message_ids)}).all()
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
    items = table_of(WorkItem)
    columns = [items.c[k] for k in values[0]]
    stmt = (
        insert(items)
        .from_select([c.key for c in columns], unnest_select(columns, values))
        .on_conflict_do_nothing(index_elements=[items.c.message_id])
        .returning(items.c.id, items.c.message_id)
    )
    created = session.execute(stmt).all()
    for item_id, message_id in created:
        audit.state_change(
            events.ITEM_CREATED, item_id, None, ItemState.pending, lane=lane, message_id=message_id
        )
    return [int(i) for i, _ in created]


def mark_queued(session: Session, item_ids: Iterable[int], *, audit: AuditTrail) -> None:
    """After the wake-up message was sent: pending items become queued (others are left alone)."""
    ids = list(item_ids)
    if ids:
        queued = session.execute(
            update(WorkItem)
            .where(in_ids(WorkItem.id, ids), WorkItem.state == ItemState.pending)
            .values(state=ItemState.queued, queued_at=func.now(), updated_at=func.now())
            .returning(WorkItem.id)
        ).scalars()
        for item_id in queued:
            audit.state_change(events.ITEM_QUEUED, item_id, ItemState.pending, ItemState.queued)


def claim(
    session: Session,
    *,
    lane: str,
    hinted_ids: Sequence[int],
    limit: int,
    token_budget: int,
    worker: str,
    lease_seconds: int,
    audit: AuditTrail,
    top_up: bool = True,
) -> list[ClaimedItem]:
    """Claim up to ``limit`` items within ``token_budget``: the ids a message named first, then the
    oldest queued items of the lane. Always claims at least one item if any is claimable."""
    if limit <= 0:
        return []
    now = func.now()
    claimable_hint = and_(
        in_ids(WorkItem.id, hinted_ids),
        or_(
            WorkItem.state.in_([ItemState.pending, ItemState.queued]),
            and_(WorkItem.state == ItemState.failed, WorkItem.next_attempt_at <= now),
        ),
    )
    condition = claimable_hint
    if top_up:
        condition = or_(claimable_hint, and_(WorkItem.lane == lane, WorkItem.state == ItemState.queued))
    candidates = session.execute(
        select(WorkItem.id, WorkItem.token_estimate, WorkItem.state)
        .where(condition)
        .order_by(in_ids(WorkItem.id, hinted_ids).desc(), WorkItem.queued_at, WorkItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    chosen: list[int] = []
    was = {item_id: state for item_id, _, state in candidates}
    used = 0
    for item_id, tokens, _ in candidates:
        if chosen and used + tokens > token_budget:
            break
        chosen.append(item_id)
        used += tokens
    if not chosen:
        return []
    rows = session.execute(
        update(WorkItem)
        .where(in_ids(WorkItem.id, chosen))
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
    for item_id in chosen:
        audit.state_change(
            events.ITEM_CLAIMED, item_id, was[item_id], ItemState.processing, attempt=by_id[item_id].attempts
        )
    return [by_id[i] for i in chosen]


def mark_done(session: Session, item_ids: Sequence[int], *, audit: AuditTrail) -> None:
    if item_ids:
        was = _states_locked(session, item_ids)
        session.execute(
            update(WorkItem)
            .where(in_ids(WorkItem.id, item_ids))
            .values(
                state=ItemState.done,
                finished_at=func.now(),
                last_error=None,
                lease_expires_at=None,
                next_attempt_at=None,
                updated_at=func.now(),
            )
        )
        for item_id in item_ids:
            if was.get(item_id) not in (None, ItemState.done):
                audit.state_change(events.ITEM_DONE, item_id, was[item_id], ItemState.done)


def _states_locked(session: Session, item_ids: Iterable[int]) -> dict[int, ItemState]:
    """Current states, row-locked so they are still the states the following UPDATE changes."""
    rows = session.execute(
        select(WorkItem.id, WorkItem.state).where(in_ids(WorkItem.id, item_ids)).with_for_update()
    ).all()
    return {int(i): ItemState(state) for i, state in rows}


def error_kind(error: str) -> str:
    """The exception type of an error string ("ValueError: …" → "ValueError"). Audit rows keep only
    this: an error message may quote ticket text."""
    head = error.split(":", 1)[0].strip()
    return head if head.isidentifier() else "error"


def mark_failed(
    session: Session, item_id: int, error: str, *, max_attempts: int, backoff_s: float, audit: AuditTrail
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
        .returning(WorkItem.state, WorkItem.attempts)
    ).first()
    if state is None:
        return ItemState.done
    new = ItemState(state[0])
    audit.state_change(
        events.ITEM_DEAD if new == ItemState.dead else events.ITEM_FAILED,
        item_id,
        ItemState.processing,
        new,
        attempt=int(state[1]),
        error_kind=error_kind(error),
    )
    return new


def reap(
    session: Session,
    *,
    stuck_after_seconds: int,
    idle_lanes: Sequence[str],
    audit: AuditTrail,
    limit: int = 10_000,
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
    was = dict(
        session.execute(
            select(WorkItem.id, WorkItem.state)
            .where(condition)
            .order_by(WorkItem.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
    )
    if not was:
        return {}
    rows = session.execute(
        update(WorkItem)
        .where(in_ids(WorkItem.id, was))
        .values(state=ItemState.pending, claimed_by=None, lease_expires_at=None, updated_at=now)
        .returning(WorkItem.id, WorkItem.lane)
    ).all()
    by_lane: dict[str, list[int]] = {}
    for item_id, lane in sorted(rows):
        by_lane.setdefault(lane, []).append(int(item_id))
        audit.state_change(events.ITEM_REQUEUED, item_id, was[item_id], ItemState.pending, lane=lane)
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


def requeue_for_backlog(
    session: Session, message_ids: Sequence[int], lane: str, *, audit: AuditTrail
) -> list[int]:
    """Create missing work items and reset existing not-in-flight ones to pending on ``lane``."""
    created = set(create_work_items(session, message_ids, lane, audit=audit))
    resettable = [ItemState.pending, ItemState.queued, ItemState.failed, ItemState.done]
    was = dict(
        session.execute(
            select(WorkItem.id, WorkItem.state)
            .where(in_ids(WorkItem.message_id, message_ids), WorkItem.state.in_(resettable))
            .with_for_update()
        ).all()
    )
    reset = session.execute(
        update(WorkItem)
        .where(in_ids(WorkItem.id, was), WorkItem.state.in_(resettable))
        .values(state=ItemState.pending, lane=lane, attempts=0, last_error=None, updated_at=func.now())
        .returning(WorkItem.id)
    ).scalars()
    reset_ids = {int(i) for i in reset} - created
    for item_id in sorted(reset_ids):
        audit.state_change(events.ITEM_BACKLOG, item_id, was[item_id], ItemState.pending, lane=lane)
    return sorted(created | reset_ids)
