"""A batch through the real engine (tiny Qwen2.5) and the real store, in-process."""

from __future__ import annotations

from sqlalchemy import func, select, update

from db.audit import AuditTrail
from db.audit_chain import verify_chain
from db.ingest import ingest_tickets
from db.models import AuditEvent, Draft, ItemState, TriageResult, WorkItem
from db.session import transaction
from db.work import create_work_items, mark_queued
from tests.support.engines import POISON_MARKER, FaultInjectingEngine
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.schemas import INTENTS, PRIORITIES, SENTIMENTS
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.processing import process_lane_batch


def _enqueue(url: str, texts: list[str], lane: str = "tickets") -> list[int]:
    with transaction(url) as s:
        tickets = [InboundTicket(external_id=f"T-{i}", text=t) for i, t in enumerate(texts)]
        result = ingest_tickets(s, tickets, default_source="test", source_kind="test")
        audit = AuditTrail("test")
        ids = create_work_items(s, result.new_customer_message_ids, lane, audit=audit)
        mark_queued(s, ids, audit=audit)
        audit.write(s)
    return ids


def _run(url: str, settings: Settings, engine, hinted: list[int]):  # type: ignore[no-untyped-def]
    return process_lane_batch(
        "tickets", hinted, engine=engine, settings=settings, database_url=url, worker="t"
    )


def test_batch_stores_triage_and_drafts_once(clean_db: str, settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    ids = _enqueue(
        clean_db, ["My parcel never arrived", "Ich wurde doppelt belastet", "Merci pour votre aide"]
    )
    report = _run(clean_db, settings, engine, ids[:1])
    assert report.claimed == 3 and report.done == 3  # the message named one, the batch topped up
    with transaction(clean_db) as s:
        results = s.execute(select(TriageResult)).scalars().all()
        assert len(results) == 3
        for r in results:
            assert r.sentiment in SENTIMENTS and r.intent in INTENTS and r.priority in PRIORITIES
            assert 0 < r.sentiment_confidence <= 1 and r.model_id == engine.model_id
            assert set(r.gates) == {"language", "sentiment", "intent", "priority"}
            assert r.needs_review == any(g["gate"] == "review" for g in r.gates.values())
            assert r.gates["intent"]["confidence"] == round(r.intent_confidence, 4)
        drafts = s.execute(select(Draft)).scalars().all()
        assert len(drafts) == 3
        # Random weights write gibberish: whatever the verdict, it is recorded with the draft.
        assert all(
            d.check_result == "passed" or d.check_result.split(":")[0] in {"empty", "echo", "wrong_language"}
            for d in drafts
        )
        # Redelivery after a crash: the same items run again, nothing is stored twice.
        s.execute(update(WorkItem).values(state=ItemState.queued))
    again = _run(clean_db, settings, engine, ids)
    assert again.done == 3 and again.new_results == 0
    with transaction(clean_db) as s:
        assert s.execute(select(func.count()).select_from(TriageResult)).scalar_one() == 3
        assert s.execute(select(func.count()).select_from(Draft)).scalar_one() == 3
        decided = s.execute(
            select(func.count()).where(AuditEvent.event_type == "triage.decided")
        ).scalar_one()
        assert decided == 3
        # Audit: each item claimed and done twice (two runs), one draft created each; chain intact.
        counts = dict(
            s.execute(select(AuditEvent.event_type, func.count()).group_by(AuditEvent.event_type)).all()
        )
        assert counts["item.claimed"] == counts["item.done"] == 6 and counts["draft.status_changed"] == 3
        assert verify_chain(s.connection()).ok


def test_poison_item_fails_alone(clean_db: str, settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    faulty = FaultInjectingEngine(engine, delay_s=0)
    ids = _enqueue(clean_db, ["Refund please", f"{POISON_MARKER} crash me", "Where is my order?"])
    report = _run(clean_db, settings, faulty, ids)
    assert (report.done, report.failed, report.dead) == (2, 1, 0)
    with transaction(clean_db) as s:
        states = dict(s.execute(select(WorkItem.id, WorkItem.state)).all())
        error = s.execute(select(WorkItem.last_error).where(WorkItem.id == ids[1])).scalar_one()
    assert [states[i] for i in ids] == [ItemState.done, ItemState.failed, ItemState.done]
    assert "PoisonError" in error


def test_a_duplicate_wakeup_is_a_no_op(clean_db: str, settings: Settings, engine) -> None:  # type: ignore[no-untyped-def]
    ids = _enqueue(clean_db, ["Hello"])
    assert _run(clean_db, settings, engine, ids).done == 1
    assert _run(clean_db, settings, engine, ids).claimed == 0
