"""`ticketfleet import`: a backlog file into the store, chunk by chunk, idempotently.

Each chunk commits on its own, so a 1M-line file shows progress and a crash keeps what was committed;
re-running the same file adds nothing (idempotent on source + external id). With a lane, new customer
messages get work items in the same transaction and wake-ups are sent after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.files import LineError, ParsedLine, parse_file
from db.audit import AuditTrail
from db.ingest import ingest_tickets
from db.models import Channel, Message
from db.session import transaction
from db.work import create_work_items
from ticketfleet.dispatch import send_wakeups
from ticketfleet.inbound import InboundTicket
from ticketfleet.settings import Settings

CHUNK = 500

LaneChoice = str | None  # "backlog", "live" (chat→chat, ticket→tickets) or None (store only)


@dataclass
class ImportReport:
    lines_ok: int = 0
    tickets: int = 0
    new_messages: int = 0
    queued: int = 0
    errors: list[LineError] = field(default_factory=list)


def import_records(
    records: Iterable[ParsedLine],
    *,
    settings: Settings,
    database_url: str,
    source: str,
    lane: LaneChoice = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    chunk: list[InboundTicket] = []
    for parsed in records:
        if parsed.error is not None:
            report.errors.append(parsed.error)
        elif parsed.ticket is not None:
            chunk.append(parsed.ticket)
            report.lines_ok += 1
        if len(chunk) >= CHUNK:
            _commit_chunk(chunk, report, settings, database_url, source, lane)
            if on_progress:
                on_progress(report.lines_ok)
            chunk = []
    if chunk:
        _commit_chunk(chunk, report, settings, database_url, source, lane)
        if on_progress:
            on_progress(report.lines_ok)
    report.errors.sort(key=lambda e: e.line)
    return report


def _commit_chunk(
    chunk: list[InboundTicket],
    report: ImportReport,
    settings: Settings,
    database_url: str,
    source: str,
    lane: LaneChoice,
) -> None:
    with transaction(database_url) as session:
        audit = AuditTrail("import")
        result = ingest_tickets(session, chunk, default_source=source, source_kind="file", settings=settings)
        report.tickets += result.tickets_seen
        report.new_messages += len(result.new_message_ids)
        to_send = queue_new_messages(session, result.new_customer_message_ids, lane, audit=audit)
        audit.write(session)  # last statement of the transaction (db/audit.py: lock order)
    report.queued += send_queued(database_url, to_send, batch_size=settings.batch_size)


def queue_new_messages(
    session: Session, message_ids: list[int], lane: LaneChoice, *, audit: AuditTrail
) -> dict[str, list[int]]:
    """Work items for new customer messages, in the caller's transaction: lane → new item ids.

    Shared by import and the source poller. Call :func:`send_queued` only after the commit.
    """
    to_send: dict[str, list[int]] = {}
    if lane and message_ids:
        for lane_name, ids in _by_lane(session, message_ids, lane).items():
            to_send[lane_name] = create_work_items(session, ids, lane_name, audit=audit)
    return to_send


def send_queued(database_url: str, to_send: dict[str, list[int]], *, batch_size: int) -> int:
    """Wake-ups for committed items. Enqueue only after the commit: a worker must never receive an
    id it cannot see yet."""
    queued = 0
    for lane_name, item_ids in to_send.items():
        if item_ids:
            queued += send_wakeups(database_url, lane_name, item_ids, batch_size=batch_size)
    return queued


def _by_lane(session: Session, message_ids: list[int], choice: str) -> dict[str, list[int]]:
    """ "live" routes chat messages to the chat lane and tickets to the tickets lane."""
    if choice != "live":
        return {choice: message_ids}
    by_lane: dict[str, list[int]] = {}
    rows = session.execute(select(Message.id, Message.channel).where(Message.id.in_(message_ids)))
    for message_id, channel in rows:
        by_lane.setdefault("chat" if channel == Channel.chat else "tickets", []).append(message_id)
    return by_lane


def import_file(
    path: Path,
    *,
    settings: Settings,
    database_url: str,
    source: str,
    lane: LaneChoice = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    records = parse_file(path, max_body_chars=settings.max_body_chars)
    return import_records(
        records,
        settings=settings,
        database_url=database_url,
        source=source,
        lane=lane,
        on_progress=on_progress,
    )
