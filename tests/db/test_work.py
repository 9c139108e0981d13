"""The work-item state machine on real PostgreSQL: claiming, leases, failure, reaping, backlog."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.audit import AuditTrail
from db.ingest import ingest_tickets
from db.models import ItemState, TriageResult, WorkItem
from db.session import transaction
from db.work import (
    claim,
    create_work_items,
    mark_done,
    mark_failed,
    mark_queued,
    reap,
    requeue_for_backlog,
    select_backlog,
)
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.vocabulary import RunIdentity


def _items(session: Session, n: int, lane: str = "tickets", *, body: str = "My parcel is late") -> list[int]:
    tickets = [InboundTicket(external_id=f"T-{i}", text=f"{body} #{i}") for i in range(n)]
    result = ingest_tickets(session, tickets, default_source="test", source_kind="test")
    ids = create_work_items(session, result.new_customer_message_ids, lane, audit=AuditTrail("test"))
    mark_queued(session, ids, audit=AuditTrail("test"))
    return ids


def _claim(session: Session, lane: str = "tickets", hinted: list[int] | None = None, **kw: int) -> list[int]:
    items = claim(
        session,
        lane=lane,
        hinted_ids=hinted or [],
        limit=kw.get("limit", 10),
        token_budget=kw.get("budget", 10_000),
        worker="w",
        lease_seconds=kw.get("lease", 60),
        audit=AuditTrail("w"),
    )
    return [i.id for i in items]


def test_claim_takes_hinted_first_then_oldest_of_the_lane(db_session: Session) -> None:
    ids = _items(db_session, 5)
    _items(db_session, 2, lane="chat")
    assert _claim(db_session, hinted=[ids[3]], limit=3) == [ids[3], ids[0], ids[1]]
    states = dict(db_session.execute(select(WorkItem.id, WorkItem.state).where(WorkItem.id.in_(ids))).all())
    assert [states[i] for i in ids] == [
        ItemState.processing,
        ItemState.processing,
        ItemState.queued,
        ItemState.processing,
        ItemState.queued,
    ]


def test_token_budget_caps_a_batch_but_never_below_one(db_session: Session) -> None:
    _items(db_session, 3, body="x" * 900)  # ~396 estimated tokens each
    assert len(_claim(db_session, budget=800)) == 2
    assert len(_claim(db_session, budget=10)) == 1


def test_concurrent_claims_never_share_an_item(clean_db: str) -> None:
    with transaction(clean_db) as s:
        ids = _items(s, 40)
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        got: list[int] = []
        while True:
            with transaction(clean_db) as s:
                batch = _claim(s, limit=3)
            if not batch:
                break
            got.extend(batch)
        claimed.append(got)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for got in claimed for i in got]
    assert sorted(flat) == sorted(ids)  # every item exactly once


def test_done_items_are_not_claimed_again(db_session: Session) -> None:
    ids = _items(db_session, 2)
    mark_done(db_session, _claim(db_session), audit=AuditTrail("test"))
    assert _claim(db_session, hinted=ids) == []


def test_failures_back_off_then_die(db_session: Session) -> None:
    [item] = _items(db_session, 1)
    for attempt in (1, 2):
        assert _claim(db_session, hinted=[item]) == [item]
        state = mark_failed(db_session, item, "boom", max_attempts=2, backoff_s=0, audit=AuditTrail("test"))
        assert state == (ItemState.failed if attempt == 1 else ItemState.dead)
    row = db_session.execute(select(WorkItem).where(WorkItem.id == item)).scalar_one()
    assert row.state == ItemState.dead and row.attempts == 2 and row.last_error == "boom"
    assert _claim(db_session, hinted=[item]) == []


def test_failed_item_waits_for_its_backoff(db_session: Session) -> None:
    [item] = _items(db_session, 1)
    _claim(db_session, hinted=[item])
    mark_failed(db_session, item, "boom", max_attempts=5, backoff_s=3600, audit=AuditTrail("test"))
    assert _claim(db_session, hinted=[item]) == []
    assert reap(db_session, stuck_after_seconds=60, idle_lanes=["tickets"], audit=AuditTrail("reaper")) == {}


def test_reaper_recovers_expired_leases_and_lost_messages(db_session: Session) -> None:
    ids = _items(db_session, 4)
    expired = _claim(db_session, limit=1, lease=60)
    db_session.execute(
        update(WorkItem)
        .where(WorkItem.id.in_(expired))
        .values(lease_expires_at=WorkItem.claimed_at - _hour())
    )
    # Queued items go stale only if their lane's broker queue is empty.
    db_session.execute(update(WorkItem).values(updated_at=WorkItem.updated_at - _hour()))
    assert reap(db_session, stuck_after_seconds=60, idle_lanes=[], audit=AuditTrail("reaper")) == {
        "tickets": expired
    }
    recovered = reap(db_session, stuck_after_seconds=60, idle_lanes=["tickets"], audit=AuditTrail("reaper"))
    assert sorted(recovered["tickets"]) == sorted(set(ids) - set(expired))


def _hour() -> timedelta:
    return timedelta(hours=1)


def test_backlog_selects_unprocessed_and_stale(db_session: Session) -> None:
    ids = _items(db_session, 3)
    done = _claim(db_session, limit=2)
    mark_done(db_session, done, audit=AuditTrail("test"))
    message_of = dict(db_session.execute(select(WorkItem.id, WorkItem.message_id)).all())
    for item in done:
        db_session.add(
            TriageResult(
                message_id=message_of[item],
                language="en",
                language_confidence=1,
                sentiment="neutral",
                sentiment_confidence=1,
                intent="shipping",
                intent_confidence=1,
                priority="normal",
                priority_confidence=1,
                model_id="m",
                model_revision="r",
                prompt_version="v1" if item == done[0] else "v0",
                latency_ms=1,
            )
        )
    db_session.flush()
    [pending] = set(ids) - set(done)
    current = RunIdentity(model_id="m", model_revision="r", prompt_version="v1")
    assert select_backlog(db_session) == [message_of[pending]]
    stale = select_backlog(db_session, stale_against=current)
    assert sorted(stale) == sorted([message_of[pending], message_of[done[1]]])
    requeued = requeue_for_backlog(db_session, stale, "backlog", audit=AuditTrail("test"))
    lanes = dict(
        db_session.execute(select(WorkItem.id, WorkItem.lane).where(WorkItem.id.in_(requeued))).all()
    )
    assert set(lanes.values()) == {"backlog"} and len(lanes) == 2
