"""Store validated tickets and queue their new customer messages: the one path every producer takes.

``ticketfleet import`` (a file, chunk by chunk) and the HTTP API (a request) both call
:func:`store_and_queue`: tickets, messages and work items are written in ONE transaction; only after
it committed are wake-ups sent, so a worker never receives an id it cannot see. A failed send loses
nothing: the items stay ``pending`` and the reaper sends them later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.audit import AuditTrail
from db.bulk import in_ids
from db.ingest import IngestResult, ingest_tickets
from db.models import Channel, Message
from db.session import transaction
from db.work import create_work_items
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.dispatch import LaneUnsent, Wakeups, wake_after_commit

# "backlog"/"chat"/"tickets": that lane; "live": chat messages → chat, tickets → tickets; None: store only.
LaneChoice = str | None


@dataclass
class IntakeResult:
    ingest: IngestResult
    work_items: dict[str, list[int]] = field(default_factory=dict)  # lane → new work-item ids
    wakeups: Wakeups = field(default_factory=Wakeups)

    @property
    def queued(self) -> int:
        return self.wakeups.queued

    @property
    def unsent(self) -> list[LaneUnsent]:
        """Lanes whose wake-ups the broker refused; those items stay pending until the reaper sends them."""
        return self.wakeups.unsent


def store_and_queue(
    tickets: Sequence[InboundTicket],
    *,
    settings: Settings,
    database_url: str,
    source: str,
    source_kind: str,
    lane: LaneChoice,
    actor: str = "intake",
    inspect: Callable[[Session, IngestResult], None] | None = None,
) -> IntakeResult:
    """Ingest ``tickets`` idempotently (redacted on the way in), create work items on ``lane``, commit,
    then send wake-ups.

    ``inspect`` runs inside the transaction after the ingest: the API reports per record what was new;
    the source poller advances its cursor there, so the cursor commits together with its page.
    """
    with transaction(database_url) as session:
        audit = AuditTrail(actor)
        ingest = ingest_tickets(
            session, tickets, default_source=source, source_kind=source_kind, settings=settings
        )
        result = IntakeResult(ingest=ingest)
        result.work_items = queue_new_messages(session, ingest.new_customer_message_ids, lane, audit=audit)
        if inspect is not None:
            inspect(session, ingest)
        audit.write(session)  # last statement of the transaction (db/audit.py: lock order)
        result.wakeups = wake_after_commit(
            session, database_url, result.work_items, batch_size=settings.batch_size
        )
    return result


def queue_new_messages(
    session: Session, message_ids: list[int], lane: LaneChoice, *, audit: AuditTrail
) -> dict[str, list[int]]:
    """Work items for new customer messages, in the caller's transaction: lane → new item ids."""
    to_send: dict[str, list[int]] = {}
    if lane and message_ids:
        for lane_name, ids in by_lane(session, message_ids, lane).items():
            to_send[lane_name] = create_work_items(session, ids, lane_name, audit=audit)
    return to_send


def by_lane(session: Session, message_ids: list[int], choice: str) -> dict[str, list[int]]:
    """ "live" routes chat messages to the chat lane and tickets to the tickets lane."""
    if choice != "live":
        return {choice: message_ids}
    lanes: dict[str, list[int]] = {}
    rows = session.execute(select(Message.id, Message.channel).where(in_ids(Message.id, message_ids)))
    for message_id, channel in rows:
        lanes.setdefault("chat" if channel == Channel.chat else "tickets", []).append(message_id)
    return lanes
