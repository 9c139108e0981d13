"""A batch through the pipeline and the real store, in-process, with the deterministic stub engine
(tests/fakes/engine.py): what is claimed, stored, gated, checked and audited, without torch. What the
real model does is tests/engine/; workers running it end to end are tests/fleet/."""

from __future__ import annotations

from sqlalchemy import func, select, update

from db.audit import AuditTrail
from db.audit_chain import verify_chain
from db.ingest import ingest_tickets
from db.models import AuditEvent, Draft, ItemState, TriageResult, WorkItem
from db.session import transaction
from db.work import create_work_items, mark_queued
from tests.fakes.engine import POISON_MARKER, REPLIES, StubEngine
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.schemas import INTENTS, PRIORITIES, SENTIMENTS, EngineInput, EngineOutput
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.draft_checks import PASSED
from ticketfleet.pipeline.processing import BatchReport, process_lane_batch


def _enqueue(url: str, texts: list[str], lane: str = "tickets") -> list[int]:
    with transaction(url) as s:
        tickets = [InboundTicket(external_id=f"T-{i}", text=t) for i, t in enumerate(texts)]
        result = ingest_tickets(s, tickets, default_source="test", source_kind="test")
        audit = AuditTrail("test")
        ids = create_work_items(s, result.new_customer_message_ids, lane, audit=audit)
        mark_queued(s, ids, audit=audit)
        audit.write(s)
    return ids


def _run(url: str, settings: Settings, engine: StubEngine, hinted: list[int]) -> BatchReport:
    return process_lane_batch(
        "tickets", hinted, engine=engine, settings=settings, database_url=url, worker="t"
    )


def test_batch_stores_triage_and_drafts_once(
    clean_db: str, store_settings: Settings, stub_engine: StubEngine
) -> None:
    settings, engine = store_settings, stub_engine
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
            assert (r.model_revision, r.prompt_version) == (engine.model_revision, engine.prompt_version)
            assert set(r.gates) == {"language", "sentiment", "intent", "priority"}
            assert r.needs_review == any(g["gate"] == "review" for g in r.gates.values())
            assert r.gates["intent"]["confidence"] == round(r.intent_confidence, 4)
        drafts = s.execute(select(Draft)).scalars().all()
        assert len(drafts) == 3
        assert sorted(r.language for r in results) == ["de", "en", "fr"]
        # Each draft is the stub's reply in its customer's language, checked and passed.
        assert sorted((d.language, d.body, d.check_result) for d in drafts) == [
            (lang, REPLIES[lang], PASSED) for lang in ("de", "en", "fr")
        ]
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


def test_poison_item_fails_alone(clean_db: str, store_settings: Settings, stub_engine: StubEngine) -> None:
    ids = _enqueue(clean_db, ["Refund please", f"{POISON_MARKER} crash me", "Where is my order?"])
    report = _run(clean_db, store_settings, stub_engine, ids)
    assert (report.done, report.failed, report.dead) == (2, 1, 0)
    # The batch raised, so each item ran alone: only the poison one failed.
    assert stub_engine.calls == [ids, [ids[0]], [ids[1]], [ids[2]]]
    with transaction(clean_db) as s:
        states = dict(s.execute(select(WorkItem.id, WorkItem.state)).all())
        error = s.execute(select(WorkItem.last_error).where(WorkItem.id == ids[1])).scalar_one()
    assert [states[i] for i in ids] == [ItemState.done, ItemState.failed, ItemState.done]
    assert "PoisonError" in error


def test_a_duplicate_wakeup_is_a_no_op(
    clean_db: str, store_settings: Settings, stub_engine: StubEngine
) -> None:
    ids = _enqueue(clean_db, ["Hello"])
    assert _run(clean_db, store_settings, stub_engine, ids).done == 1
    assert _run(clean_db, store_settings, stub_engine, ids).claimed == 0
    assert stub_engine.calls == [ids], "the second wake-up never reached the engine"


class LeakingEngine(StubEngine):
    """Drafts its own system instructions back, as a model that ignores them might."""

    def process(self, items: list[EngineInput]) -> list[EngineOutput]:
        return [
            o.model_copy(update={"draft": self.draft_instructions(o.draft_language or "en")})
            for o in super().process(items)
        ]


def test_a_draft_is_checked_against_the_instructions_of_the_engine_that_wrote_it(
    clean_db: str, store_settings: Settings
) -> None:
    """The draft checks judge a leak against ``engine.draft_instructions``, not a fixed prompt."""
    ids = _enqueue(clean_db, ["Where is my order? It has been two weeks."])
    assert _run(clean_db, store_settings, LeakingEngine(), ids).done == 1
    with transaction(clean_db) as s:
        draft = s.execute(select(Draft)).scalar_one()
    assert draft.body.startswith("You are the stub support engine") and draft.check_result == "echo"
