"""The lossless poller: pull a source page by page; store each page and its cursor in ONE transaction.

Per page, in one transaction: the items are ingested (idempotent on source + external id), work items
are created for new customer messages on the source's lane, the health counters move, and the cursor
is upserted. Only after the commit are wake-ups sent. So a crash (even ``kill -9``) between pages
re-reads at most the page in flight, which ingest absorbs; it never skips one, because the cursor
can only be stored together with the items it stands for.

A per-source PostgreSQL advisory lock (held on its own connection for the whole poll, released by the
server if the process dies) keeps two pollers off one source. A failing source backs off
exponentially (Retry-After honoured); a permanently failing one waits the cap; see db/sources.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from connectors.base import Connector, ConnectorError, PermanentError, PullPage, RateLimited
from connectors.registry import build_connector
from connectors.sources_file import SourceConfig, SourcesFileError, load_configured_sources
from db import sources as source_rows
from db.ingest import IngestResult
from db.session import get_engine, transaction
from ticketfleet.broker import SOURCE_POLL_TASK
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.intake import store_and_queue

log = logging.getLogger(__name__)

# Advisory lock namespace (first key) so the fleet's source locks never collide with other locks.
LOCK_NAMESPACE = 0x7466  # "tf"
MAX_PAGES_PER_POLL = 10_000


@dataclass
class PollReport:
    source: str
    pages: int = 0
    items: int = 0
    new_messages: int = 0
    queued: int = 0
    rejected: int = 0
    skipped: str | None = None  # why nothing was pulled (locked, backing off)
    error: str | None = None  # "ErrorClass: message" of the failure that ended the poll

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@contextmanager
def source_lock(database_url: str, name: str) -> Iterator[bool]:
    """Try the source's advisory lock; yields whether it was taken. Session-level, on a dedicated
    connection, so it spans the per-page transactions and dies with the process."""
    keys = {"ns": LOCK_NAMESPACE, "name": name}
    with get_engine(database_url).connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:ns, hashtext(:name))"), keys).scalar_one())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:ns, hashtext(:name))"), keys)
                conn.commit()


def poll_source(
    source: SourceConfig,
    *,
    settings: Settings,
    database_url: str,
    connector_factory: Callable[[SourceConfig], Connector] | None = None,
    force: bool = False,
    max_pages: int = MAX_PAGES_PER_POLL,
) -> PollReport:
    """Pull until the source says there is no more (or ``max_pages``). ``force`` ignores back-off."""
    report = PollReport(source=source.name)
    with source_lock(database_url, source.name) as locked:
        if not locked:
            report.skipped = "another poller holds this source"
            return report
        with transaction(database_url) as session:
            source_id = source_rows.source_row(session, source.name, source.kind)
            wait = 0.0 if force else source_rows.due_in_seconds(session, source_id)
            cursor = source_rows.load_cursor(session, source_id)
        if wait > 0:
            report.skipped = f"backing off for {wait:.0f} s after failures"
            return report
        try:
            connector = (connector_factory or build_connector)(source)
            try:
                for _ in range(max_pages):
                    page = connector.pull(cursor)
                    cursor = page.cursor if page.cursor is not None else cursor
                    _store_page(source, source_id, page, connector.kind, report, settings, database_url)
                    if not page.has_more:
                        break
            finally:
                connector.close()
        except ConnectorError as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            with transaction(database_url) as session:
                delay = source_rows.record_failure(
                    session,
                    source_id,
                    error=report.error,
                    permanent=isinstance(exc, PermanentError),
                    retry_after=exc.retry_after if isinstance(exc, RateLimited) else None,
                    base_s=settings.source_backoff_base_s,
                    cap_s=settings.source_backoff_cap_s,
                )
            log.warning("source %s failed (%s); next poll in %s", source.name, report.error, delay)
            return report
        with transaction(database_url) as session:
            source_rows.record_success(session, source_id)
    log.info("source poll %s", report.as_dict())
    return report


def _store_page(
    source: SourceConfig,
    source_id: int,
    page: PullPage,
    kind: str,
    report: PollReport,
    settings: Settings,
    database_url: str,
) -> None:
    # The configured name is the source of record, whatever a connector put in the item.
    items = [item.model_copy(update={"source": source.name}) for item in page.items]

    def advance_cursor(session: Session, _ingest: IngestResult) -> None:
        # Same transaction as the page's items: a crash before commit re-reads the page, never skips it.
        source_rows.record_page(session, source_id, pulled=len(items), rejected=page.rejected)
        if page.cursor is not None:
            source_rows.save_cursor(session, source_id, page.cursor)

    result = store_and_queue(
        items,
        settings=settings,
        database_url=database_url,
        source=source.name,
        source_kind=kind,
        lane=source.lane,
        actor=f"source:{source.name}",
        inspect=advance_cursor,
    )
    for ref, reason in page.rejected:
        log.warning("source %s rejected %s: %s", source.name, ref, reason)
    report.pages += 1
    report.items += len(items)
    report.new_messages += len(result.ingest.new_message_ids)
    report.rejected += len(page.rejected)
    report.queued += result.queued
    for exc in result.unsent:
        # Stored and pending: the reaper sends them. The cursor rightly stays advanced.
        log.warning("source %s: %s; the reaper will queue them", source.name, exc)


def poll_named_source(name: str, settings: Settings, *, force: bool = False) -> PollReport:
    database_url = settings.require_database_url()
    source = load_configured_sources(settings).get(name)
    return poll_source(source, settings=settings, database_url=database_url, force=force)


def source_poll_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery beat entries: one per enabled source, at its poll interval. A broken sources file
    schedules no polls (and says why) rather than stopping beat's other work."""
    try:
        sources = load_configured_sources(settings, require_secrets=False).enabled
    except SourcesFileError as exc:
        log.error("sources file unusable, no source is polled: %s", exc)
        return {}
    return {
        f"poll-source-{source.name}": {
            "task": SOURCE_POLL_TASK,
            "schedule": source.poll_interval_seconds,
            "kwargs": {"source": source.name},
            # A tick older than one interval is pointless: the next one pulls the same changes.
            "options": {"expires": source.poll_interval_seconds},
        }
        for source in sources
    }
