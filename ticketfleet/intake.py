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

from db.ingest import IngestResult, ingest_tickets
from db.models import Channel, Message
from db.session import transaction
from db.work import create_work_items
from ticketfleet.dispatch import EnqueueError, send_wakeups
from ticketfleet.inbound import InboundTicket
from ticketfleet.settings import Settings

# "backlog"/"chat"/"tickets": that lane; "live": chat messages → chat, tickets → tickets; None: store only.
LaneChoice = str | None


@dataclass
class IntakeResult:
    ingest: IngestResult
    work_items: dict[str, list[int]] = field(default_factory=dict)  # lane → new work-item ids
    queued: int = 0
    # Lanes whose wake-ups could not be sent; those items stay pending until the reaper sends them.
    enqueue_errors: list[EnqueueError] = field(default_factory=list)


def store_and_queue(
    tickets: Sequence[InboundTicket],
    *,
    settings: Settings,
    database_url: str,
    source: str,
    source_kind: str,
    lane: LaneChoice,
    inspect: Callable[[Session, IngestResult], None] | None = None,
) -> IntakeResult:
    """Ingest ``tickets`` idempotently, create work items on ``lane``, commit, then send wake-ups.

    ``inspect`` runs inside the transaction after the ingest, for callers that report per record what
    was new (the API); it sees the same snapshot the commit makes visible.
    """
    with transaction(database_url) as session:
        ingest = ingest_tickets(session, tickets, default_source=source, source_kind=source_kind)
        result = IntakeResult(ingest=ingest)
        if lane and ingest.new_customer_message_ids:
            for lane_name, message_ids in by_lane(session, ingest.new_customer_message_ids, lane).items():
                result.work_items[lane_name] = create_work_items(session, message_ids, lane_name)
        if inspect is not None:
            inspect(session, ingest)
    # Enqueue only after the commit: a worker must never receive an id it cannot see yet.
    for lane_name, item_ids in result.work_items.items():
        try:
            result.queued += send_wakeups(database_url, lane_name, item_ids, batch_size=settings.batch_size)
        except EnqueueError as exc:
            result.enqueue_errors.append(exc)
    return result


def by_lane(session: Session, message_ids: list[int], choice: str) -> dict[str, list[int]]:
    """ "live" routes chat messages to the chat lane and tickets to the tickets lane."""
    if choice != "live":
        return {choice: message_ids}
    lanes: dict[str, list[int]] = {}
    rows = session.execute(select(Message.id, Message.channel).where(Message.id.in_(message_ids)))
    for message_id, channel in rows:
        lanes.setdefault("chat" if channel == Channel.chat else "tickets", []).append(message_id)
    return lanes
