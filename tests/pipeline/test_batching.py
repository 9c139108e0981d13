"""Batch formation on real PostgreSQL: a wake-up that arrives while its items are still locked."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from db.audit import AuditTrail
from db.ingest import ingest_tickets
from db.models import WorkItem
from db.session import transaction
from db.work import create_work_items, mark_queued
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.batching import claim_batch


def test_a_wakeup_racing_mark_queued_still_claims_its_items(clean_db: str, store_settings: Settings) -> None:
    """The producer sends the wake-up, then marks the items queued in a transaction of its own. A worker
    that claims while that transaction holds the row locks must wait for it, not return empty-handed
    (the items would then sit `queued` with no message left until the reaper came)."""
    with transaction(clean_db) as session:
        tickets = [InboundTicket(external_id=f"race-{i}", text=f"Where is parcel {i}?") for i in range(3)]
        result = ingest_tickets(session, tickets, default_source="race", source_kind="test")
        ids = create_work_items(session, result.new_customer_message_ids, "tickets", audit=AuditTrail("t"))

    locked = threading.Event()

    def mark_queued_slowly() -> None:
        with transaction(clean_db) as session:
            mark_queued(session, ids, audit=AuditTrail("dispatch"))
            # Hold the row locks past the worker's first claim, well within max_wait_ms.
            session.execute(select(WorkItem.id).where(WorkItem.id.in_(ids)).with_for_update())
            locked.set()
            time.sleep(0.3)

    producer = threading.Thread(target=mark_queued_slowly)
    producer.start()
    assert locked.wait(10)
    settings = store_settings.model_copy(update={"max_wait_ms": 5_000, "batch_size": 3})
    claimed = claim_batch(settings, clean_db, lane="tickets", hinted_ids=ids, worker="w")
    producer.join()
    assert sorted(i.id for i in claimed) == sorted(ids)
