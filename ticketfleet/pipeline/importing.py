"""`ticketfleet import`: a backlog file into the store, chunk by chunk, idempotently.

Each chunk commits on its own, so a 1M-line file shows progress and a crash keeps what was committed;
re-running the same file adds nothing (idempotent on source + external id). With a lane, new customer
messages get work items in the same transaction and wake-ups are sent after the commit
(:func:`ticketfleet.pipeline.intake.store_and_queue`, shared with the HTTP API).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from connectors.import_format import ParsedLine, parse_file
from ticketfleet.core.errors import LineError
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.dispatch import LaneUnsent
from ticketfleet.pipeline.intake import LaneChoice, store_and_queue

CHUNK = 500


@dataclass
class ImportReport:
    lines_ok: int = 0
    tickets: int = 0
    new_messages: int = 0
    queued: int = 0
    errors: list[LineError] = field(default_factory=list)
    # Lanes the broker refused, per chunk: those items are stored and pending; the reaper queues them.
    unsent: list[LaneUnsent] = field(default_factory=list)


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

    def flush() -> None:
        _commit_chunk(chunk, report, settings, database_url, source, lane)
        if on_progress:
            on_progress(report.lines_ok)
        chunk.clear()

    for parsed in records:
        if parsed.error is not None:
            report.errors.append(parsed.error)
        elif parsed.ticket is not None:
            chunk.append(parsed.ticket)
            report.lines_ok += 1
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
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
    result = store_and_queue(
        chunk,
        settings=settings,
        database_url=database_url,
        source=source,
        source_kind="file",
        lane=lane,
        actor="import",
    )
    report.tickets += result.ingest.tickets_seen
    report.new_messages += len(result.ingest.new_message_ids)
    report.queued += result.queued
    report.unsent.extend(result.unsent)


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
