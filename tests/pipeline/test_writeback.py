"""Write-back on real PostgreSQL against the fake Zendesk: gates decide what goes back, one note per
result even when a timed-out PUT did land, an audit event without text, Celery messages with ids only."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from connectors.sources_file import SourceConfig
from db.models import AuditEvent, Draft, Message, TriageResult, WorkItem, WriteBackRow, WriteBackState
from db.session import transaction
from tests.fakes.engine import REPLIES, StubEngine
from tests.fakes.zendesk import FakeZendesk
from ticketfleet.core.settings import Settings
from ticketfleet.core.vocabulary import RunIdentity
from ticketfleet.pipeline.polling import poll_source
from ticketfleet.pipeline.writeback import after_results, plan_write_backs, run_write_back
from ticketfleet.services import redis_client

RUN = RunIdentity("test/model", "rev1", "v1")
GATES = {
    "language": {"gate": "auto"},
    "sentiment": {"gate": "suggest"},
    "intent": {"gate": "auto"},
    "priority": {"gate": "review"},
}


@pytest.fixture
def zendesk() -> Iterator[tuple[FakeZendesk, str]]:
    api = FakeZendesk()
    api.slow_seconds = 1.5
    with api.running() as base_url:
        yield api, base_url


@pytest.fixture
def wb_settings(store_settings: Settings, flushed_redis: str) -> Settings:
    from ticketfleet.broker import app, configure

    configure(app, store_settings, flushed_redis)
    return store_settings


def _source(api: FakeZendesk, base_url: str, *, write_back: bool = True) -> SourceConfig:
    return SourceConfig(
        name="zd",
        kind="zendesk",
        base_url=base_url,
        write_back=write_back,
        timeout_seconds=0.5,
        secrets={"token": SecretStr(api.token)},
        options={"email": api.email, "page_size": 10},
    )


def _pulled_ticket(
    api: FakeZendesk, source: SourceConfig, settings: Settings, database_url: str
) -> tuple[int, int]:
    """A Zendesk ticket polled into the store; returns (zendesk id, work item id)."""
    zendesk_id = api.create_ticket(subject="Refund", text=f"I want my money back {uuid.uuid4().hex[:6]}")
    api.advance(61)
    report = poll_source(source, settings=settings, database_url=database_url, force=True)
    assert report.error is None, report.error
    with transaction(database_url) as session:
        item_id = session.execute(select(WorkItem.id).order_by(WorkItem.id.desc()).limit(1)).scalar_one()
    return zendesk_id, item_id


def _store_result(database_url: str, item_id: int, *, draft: str | None, check: str = "passed") -> None:
    with transaction(database_url) as session:
        message_id = session.execute(select(WorkItem.message_id).where(WorkItem.id == item_id)).scalar_one()
        versions = {
            "model_id": RUN.model_id,
            "model_revision": RUN.model_revision,
            "prompt_version": RUN.prompt_version,
        }
        session.add(
            TriageResult(
                message_id=message_id,
                language="en",
                language_confidence=0.97,
                sentiment="negative",
                sentiment_confidence=0.6,
                intent="refund",
                intent_confidence=0.91,
                priority="high",
                priority_confidence=0.2,
                latency_ms=5.0,
                gates=GATES,
                **versions,
            )
        )
        if draft is not None:
            session.add(
                Draft(message_id=message_id, body=draft, language="en", check_result=check, **versions)
            )


def _planned_write_back(
    api: FakeZendesk, source: SourceConfig, settings: Settings, database_url: str, *, draft: str
) -> tuple[int, int]:
    """A polled ticket with a stored result and a checked draft, planned once: (zendesk id, write-back id)."""
    zendesk_id, item_id = _pulled_ticket(api, source, settings, database_url)
    _store_result(database_url, item_id, draft=draft)
    with transaction(database_url) as session:
        (write_back_id,) = plan_write_backs(session, [item_id], RUN, frozenset({"zd"}))
    return zendesk_id, write_back_id


def test_gated_labels_and_checked_draft_go_back_once_with_an_audit_event(
    zendesk: tuple[FakeZendesk, str], wb_settings: Settings, clean_db: str
) -> None:
    api, base_url = zendesk
    source = _source(api, base_url)
    zendesk_id, item_id = _pulled_ticket(api, source, wb_settings, clean_db)
    draft = "We are sorry. Your refund is on its way."
    _store_result(clean_db, item_id, draft=draft)
    with transaction(clean_db) as session:
        ids = plan_write_backs(session, [item_id], RUN, frozenset({"zd"}))
        again = plan_write_backs(session, [item_id], RUN, frozenset({"zd"}))
    assert len(ids) == 1 and again == [], "one write-back per (source, ticket, result)"
    report = run_write_back(ids[0], wb_settings, sources=[source])
    assert report.state == "done" and not report.deduplicated
    # Only the fields at the auto gate: language and intent; sentiment (suggest) and priority (review) stay.
    assert set(api.tickets[zendesk_id]["tags"]) == {"tf-lang-en", "tf-intent-refund"}
    notes = [c["body"] for c in api.comments[zendesk_id] if not c["public"]]
    assert len(notes) == 1 and notes[0].startswith(draft + "\n\n[ticketfleet:")
    assert not [c for c in api.comments[zendesk_id] if c["public"] and c["author_id"] == 1]
    assert run_write_back(ids[0], wb_settings, sources=[source]).skipped is not None, "done is final"
    with transaction(clean_db) as session:
        row = session.get(WriteBackRow, ids[0])
        events = (
            session.execute(select(AuditEvent).where(AuditEvent.entity_type == "write_back")).scalars().all()
        )
    assert row is not None and row.state == WriteBackState.done and row.receipt is not None
    assert row.receipt["note_id"] is not None
    assert len(events) == 1 and events[0].event_type == "writeback.done"
    data = events[0].data
    assert data["note_length"] == len(draft) and data["tags"] == ["tf-lang-en", "tf-intent-refund"]
    assert draft not in json.dumps(data), "the audit trail holds no ticket or draft text"


def test_a_timed_out_put_that_landed_leaves_exactly_one_note(
    zendesk: tuple[FakeZendesk, str], wb_settings: Settings, clean_db: str
) -> None:
    api, base_url = zendesk
    source = _source(api, base_url)
    zendesk_id, write_back_id = _planned_write_back(
        api, source, wb_settings, clean_db, draft="Refund approved."
    )
    api.slow_puts = 1  # the PUT is applied, then answered after the client's 0.5 s timeout
    first = run_write_back(write_back_id, wb_settings, sources=[source])
    assert first.state == "pending" and first.error is not None and first.error.startswith("SourceTimeout")
    assert len([c for c in api.comments[zendesk_id] if not c["public"]]) == 1, "the PUT did land"
    with transaction(clean_db) as session:
        row = session.get(WriteBackRow, write_back_id)
        assert row is not None and row.attempts == 1 and row.next_attempt_at is not None
        assert run_write_back(write_back_id, wb_settings, sources=[source]).skipped, (
            "not due before its back-off"
        )
        session.execute(update(WriteBackRow).values(next_attempt_at=None))
    time.sleep(1.2)  # let the slow answer finish so the fake is idle
    retry = run_write_back(write_back_id, wb_settings, sources=[source])
    assert retry.state == "done" and retry.deduplicated
    notes = [c["body"] for c in api.comments[zendesk_id] if not c["public"]]
    assert len(notes) == 1, notes
    puts_with_note = [r for r in api.requests if r.method == "PUT" and "comment" in r.json()["ticket"]]
    assert len(puts_with_note) == 1, "the retry found the marker and did not post again"


def test_permanent_error_fails_the_write_back_without_retrying(
    zendesk: tuple[FakeZendesk, str], wb_settings: Settings, clean_db: str
) -> None:
    api, base_url = zendesk
    source = _source(api, base_url)
    zendesk_id, write_back_id = _planned_write_back(
        api, source, wb_settings, clean_db, draft="Refund approved."
    )
    del api.tickets[zendesk_id], api.comments[zendesk_id]  # deleted in Zendesk meanwhile
    report = run_write_back(write_back_id, wb_settings, sources=[source])
    assert report.state == "failed" and report.error is not None and report.error.startswith("NotFound")
    with transaction(clean_db) as session:
        event = session.execute(select(AuditEvent).where(AuditEvent.entity_type == "write_back")).scalar_one()
    assert event.event_type == "writeback.failed" and event.data["error_class"] == "NotFound"


def test_held_back_draft_and_unconfident_labels_write_nothing(
    zendesk: tuple[FakeZendesk, str], wb_settings: Settings, clean_db: str
) -> None:
    api, base_url = zendesk
    source = _source(api, base_url)
    _, item_id = _pulled_ticket(api, source, wb_settings, clean_db)
    _store_result(clean_db, item_id, draft="echo of the customer", check="echo")
    with transaction(clean_db) as session:
        session.execute(update(TriageResult).values(gates={f: {"gate": "suggest"} for f in GATES}))
        assert plan_write_backs(session, [item_id], RUN, frozenset({"zd"})) == []
        # With confident labels the row is planned, but without the held-back draft.
        session.execute(update(TriageResult).values(gates=GATES))
        (write_back_id,) = plan_write_backs(session, [item_id], RUN, frozenset({"zd"}))
        assert session.get(WriteBackRow, write_back_id).draft_id is None  # type: ignore[union-attr]


def test_after_results_plans_only_for_write_back_sources_and_queues_ids_only(
    zendesk: tuple[FakeZendesk, str], wb_settings: Settings, clean_db: str, tmp_path: Path
) -> None:
    api, base_url = zendesk
    source = _source(api, base_url)
    _, item_id = _pulled_ticket(api, source, wb_settings, clean_db)
    _store_result(clean_db, item_id, draft="A private draft with a name: Ana Pérez")
    sources_file = tmp_path / "sources.toml"
    sources_file.write_text(
        f'[[sources]]\nname = "zd"\nkind = "zendesk"\nbase_url = "{base_url}"\nwrite_back = false\n'
        f'token_env = "HOME"\n[sources.options]\nemail = "{api.email}"\n'
    )
    off = wb_settings.model_copy(update={"sources_file": sources_file})
    assert after_results(off, clean_db, [item_id], RUN) == 0
    sources_file.write_text(sources_file.read_text().replace("write_back = false", "write_back = true"))
    on = wb_settings.model_copy(update={"sources_file": sources_file})
    assert after_results(on, clean_db, [item_id], RUN) == 1
    raw = redis_client(wb_settings.redis_url_value() or "").lrange("sources", 0, -1)
    assert len(raw) == 1
    message = json.loads(raw[0])
    assert message["headers"]["task"] == "ticketfleet.sources.write_back"
    assert "Ana" not in raw[0].decode(), "the message names the row, never the text"
    with transaction(clean_db) as session:
        row = session.execute(select(WriteBackRow)).scalar_one()
        assert row.state == WriteBackState.pending
        assert session.execute(select(Message.id)).first() is not None


def test_a_processed_batch_writes_back_end_to_end(
    zendesk: tuple[FakeZendesk, str],
    wb_settings: Settings,
    clean_db: str,
    tmp_path: Path,
    stub_engine: StubEngine,
) -> None:
    """Poll → engine batch (the deterministic stub) → write-back planned after the commit → pushed to
    Zendesk: the labels as tags and the checked draft as the one private note."""
    from ticketfleet.core.settings import GatePolicy
    from ticketfleet.pipeline.processing import process_lane_batch

    api, base_url = zendesk
    source = _source(api, base_url)
    zendesk_id, item_id = _pulled_ticket(api, source, wb_settings, clean_db)
    sources_file = tmp_path / "sources.toml"
    sources_file.write_text(
        f'[[sources]]\nname = "zd"\nkind = "zendesk"\nbase_url = "{base_url}"\nwrite_back = true\n'
        f'token_env = "TF_TEST_ZD_TOKEN"\n[sources.options]\nemail = "{api.email}"\n'
    )
    # Every field at the auto gate, so all four labels are written back.
    everything_auto = {f: GatePolicy(review_below=0.0, auto_at=0.0) for f in GATES}
    settings = wb_settings.model_copy(update={"sources_file": sources_file, "gates": everything_auto})
    report = process_lane_batch(
        "tickets", [item_id], engine=stub_engine, settings=settings, database_url=clean_db, worker="t"
    )
    assert report.done == 1
    with transaction(clean_db) as session:
        row = session.execute(select(WriteBackRow)).scalar_one()
        result = session.get(TriageResult, row.triage_result_id)
        draft = session.get(Draft, row.draft_id) if row.draft_id is not None else None
    assert row.state == WriteBackState.pending and result is not None
    assert draft is not None and draft.check_result == "passed", "the stub's draft passes its checks"
    assert (result.language, result.intent) == ("en", "refund")
    pushed = run_write_back(row.id, settings, sources=[source])
    assert pushed.state == "done", pushed.error
    assert set(api.tickets[zendesk_id]["tags"]) >= {
        f"tf-lang-{result.language}",
        f"tf-intent-{result.intent}",
        f"tf-sentiment-{result.sentiment}",
        f"tf-priority-{result.priority}",
    }
    notes = [c["body"] for c in api.comments[zendesk_id] if not c["public"]]
    assert len(notes) == 1 and notes[0].startswith(REPLIES["en"] + "\n\n[ticketfleet:"), notes


def test_a_write_back_whose_message_was_lost_is_resent_by_the_poll_sweep(
    zendesk: tuple[FakeZendesk, str], wb_settings: Settings, clean_db: str
) -> None:
    from ticketfleet.pipeline.writeback import resend_due

    api, base_url = zendesk
    source = _source(api, base_url)
    _, item_id = _pulled_ticket(api, source, wb_settings, clean_db)
    _store_result(clean_db, item_id, draft="Refund approved.")
    with transaction(clean_db) as session:
        (write_back_id,) = plan_write_backs(session, [item_id], RUN, frozenset({"zd"}))
    assert resend_due(wb_settings, source="zd") == 0, "a fresh row is being sent by after_results"
    with transaction(clean_db) as session:  # planned a minute ago; its Celery message never arrived
        session.execute(
            update(WriteBackRow).values(created_at=WriteBackRow.created_at - timedelta(minutes=1))
        )
    assert resend_due(wb_settings, source="zd") == 1
    assert resend_due(wb_settings, source="other") == 0
    raw = redis_client(wb_settings.redis_url_value() or "").lrange("sources", 0, -1)
    assert [json.loads(m)["headers"]["kwargsrepr"] for m in raw] == [repr({"write_back_id": write_back_id})]


def test_the_note_is_rehydrated_for_the_agent_but_stored_redacted(
    zendesk: tuple[FakeZendesk, str], wb_settings: Settings, clean_db: str
) -> None:
    api, base_url = zendesk
    source = _source(api, base_url)
    zendesk_id = api.create_ticket(subject="Refund", text="Please refund, write to ana.lopez@example.org")
    api.advance(61)
    assert poll_source(source, settings=wb_settings, database_url=clean_db, force=True).error is None
    with transaction(clean_db) as session:
        item_id, body = session.execute(
            select(WorkItem.id, Message.body).join(Message, Message.id == WorkItem.message_id)
        ).one()
    placeholder = body.rsplit(" ", 1)[-1]
    assert "ana.lopez" not in body and re.fullmatch(r"<EMAIL_\d+>", placeholder), body
    _store_result(clean_db, item_id, draft=f"We will write to {placeholder} once the refund is sent.")
    with transaction(clean_db) as session:
        ids = plan_write_backs(session, [item_id], RUN, frozenset({"zd"}))
    assert run_write_back(ids[0], wb_settings, sources=[source]).state == "done"
    notes = [c["body"] for c in api.comments[zendesk_id] if not c["public"]]
    assert len(notes) == 1 and notes[0].startswith("We will write to ana.lopez@example.org once")
    with transaction(clean_db) as session:
        stored = session.execute(select(Draft.body)).scalar_one()
    assert placeholder in stored and "ana.lopez" not in stored
