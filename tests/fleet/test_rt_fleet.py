"""End to end with a real Request Tracker: customers write in, the fleet pulls, triages and writes back,
and the test reads the result back from RT.

RT (tests/support/rt_server.py) → sources file → ``poll_source`` (lossless poller) → work items →
``process_lane_batch`` with the deterministic stub engine (tests/fakes/engine.py: every draft passes its
checks, so every ticket must get a note) → write-back rows planned after the results' commit →
``run_write_back`` through the registry's RT connector → custom fields and an internal comment in RT,
read back over REST as root. Skipped where no RT can be started (tests/support/rt_server.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from connectors import sources_file as sources
from db import models
from db.models import Draft, Message, Ticket, TriageResult, WorkItem
from db.session import transaction
from tests.fakes.engine import REPLIES, StubEngine
from tests.support.rt_harness import RtHarness
from tests.support.rt_server import CUSTOM_FIELDS, RtServer, rt_server  # noqa: F401
from ticketfleet.core.settings import GatePolicy, Settings
from ticketfleet.pipeline import polling, writeback
from ticketfleet.pipeline.processing import process_lane_batch

TOKEN_ENV = "TF_TEST_RT_TOKEN"
FIELDS = ("language", "sentiment", "intent", "priority")


@pytest.fixture
def harness(rt_server: RtServer) -> Iterator[RtHarness]:  # noqa: F811
    harness = RtHarness(rt_server)
    yield harness
    harness.close()


@pytest.fixture
def fleet_settings(
    store_settings: Settings,
    flushed_redis: str,
    tmp_path: Path,
    harness: RtHarness,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """Settings whose sources file has one RT source that writes back; every field at the auto gate,
    so whatever the engine says goes back to RT."""
    from ticketfleet.broker import app, configure

    settings = store_settings
    configure(app, settings, flushed_redis)
    assert harness.server.token is not None
    monkeypatch.setenv(TOKEN_ENV, harness.server.token)
    sources_file = tmp_path / "sources.toml"
    custom_fields = "".join(f'{label} = "{name}"\n' for label, name in CUSTOM_FIELDS.items())
    sources_file.write_text(
        f'[[sources]]\nname = "rt"\nkind = "rt"\nbase_url = "{harness.server.base_url}"\n'
        f'write_back = true\ntoken_env = "{TOKEN_ENV}"\n'
        f'[sources.options]\nqueues = ["{harness.queue}"]\npage_size = 2\n'
        f"[sources.options.custom_fields]\n{custom_fields}"
    )
    everything_auto = {field: GatePolicy(review_below=0.0, auto_at=0.0) for field in FIELDS}
    return settings.model_copy(update={"sources_file": sources_file, "gates": everything_auto})


def _rt_source(settings: Settings) -> Any:
    return sources.load_sources(Path(settings.sources_file)).get("rt")


def test_rt_tickets_are_pulled_triaged_and_written_back(
    harness: RtHarness,
    fleet_settings: Settings,
    clean_db: str,
    stub_engine: StubEngine,
) -> None:
    source = _rt_source(fleet_settings)
    customers = {
        harness.create_ticket(
            subject="Parcel", text=f"My parcel never arrived, order {uuid.uuid4().hex[:6]}."
        ): "en",
        harness.create_ticket(
            subject="Rechnung", text=f"Ich wurde doppelt belastet, Rechnung {uuid.uuid4().hex[:6]}."
        ): "de",
    }

    # 1. The fleet pulls: every ticket once, each customer message queued as a work item.
    polled = polling.poll_source(source, settings=fleet_settings, database_url=clean_db, force=True)
    assert polled.error is None, polled.error
    assert polled.new_messages == len(customers) and polled.rejected == 0
    with transaction(clean_db) as session:
        items = dict(
            session.execute(
                select(Ticket.external_id, WorkItem.id)
                .join(Message, Message.ticket_id == Ticket.id)
                .join(WorkItem, WorkItem.message_id == Message.id)
            ).all()
        )
    assert set(items) == set(customers)

    # 2. It triages them (stub engine); write-backs are planned after the commit.
    batch = process_lane_batch(
        "tickets",
        list(items.values()),
        engine=stub_engine,
        settings=fleet_settings,
        database_url=clean_db,
        worker="t",
    )
    assert batch.done == len(customers)

    # 3. It writes back through the RT connector the registry builds from the sources file.
    with transaction(clean_db) as session:
        rows = session.execute(select(models.WriteBackRow, Ticket.external_id).join(Ticket)).all()
    assert {external_id for _, external_id in rows} == set(customers)
    for row, _ in rows:
        pushed = writeback.run_write_back(row.id, fleet_settings)
        assert pushed.state == "done", pushed.error

    # 4. The test reads the result back from RT: the labels, and the checked draft as the one note.
    for row, ticket_id in rows:
        with transaction(clean_db) as session:
            result = session.get(TriageResult, row.triage_result_id)
            assert result is not None and row.draft_id is not None, "every stub draft passes its checks"
            draft = session.get(Draft, row.draft_id)
            assert draft is not None and draft.check_result == "passed"
            expected = {
                CUSTOM_FIELDS[field]: [str(getattr(result, field)).strip().lower().replace(" ", "_")]
                for field in FIELDS
            }
            marker = f"[ticketfleet:{row.idempotency_key}]"
        assert result.language == customers[ticket_id]
        assert draft.body == REPLIES[customers[ticket_id]]
        assert harness.custom_fields(ticket_id) == expected
        notes = harness.notes(ticket_id)
        assert len(notes) == 1 and notes[0].endswith(marker), notes
        assert _lf(draft.body.strip()[:40]) in _lf(notes[0])
        assert harness.public_replies(ticket_id) == [], "nothing may reach the customer"

    # 5. A write-back retried after it landed (say its worker died before recording it) adds nothing.
    row, ticket_id = rows[0]
    with transaction(clean_db) as session:
        session.execute(
            update(models.WriteBackRow)
            .where(models.WriteBackRow.id == row.id)
            .values(state=models.WriteBackState.pending)
        )
    before = harness.notes(ticket_id)
    again = writeback.run_write_back(row.id, fleet_settings)
    assert again.state == "done", again.error
    assert again.deduplicated, "the note's marker was found, so nothing was posted again"
    assert harness.notes(ticket_id) == before

    # 6. The write-back touched the tickets (LastUpdated), so the next poll reads them again — and
    #    finds nothing new: the comment is internal, not a customer message.
    repolled = polling.poll_source(source, settings=fleet_settings, database_url=clean_db, force=True)
    assert repolled.error is None, repolled.error
    assert repolled.new_messages == 0


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
