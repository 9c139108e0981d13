"""Recovery and scheduled work: the reaper and the backlog run. Called by beat tasks and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select

from db.audit import AuditTrail
from db.pii_vault import purge_expired
from db.session import transaction
from db.work import reap, requeue_for_backlog, select_backlog
from ticketfleet.broker import lane_depths
from ticketfleet.core.settings import LANES, Settings
from ticketfleet.core.taxonomy import effective_prompt_version
from ticketfleet.core.vocabulary import RunIdentity
from ticketfleet.pipeline.dispatch import wake_after_commit
from ticketfleet.services import redis_client

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key: one reaper at a time across the fleet.
REAPER_LOCK_KEY = 0x7F1C_0001


@dataclass
class ReapReport:
    requeued: dict[str, int] = field(default_factory=dict)
    skipped: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"requeued": self.requeued, "skipped": self.skipped}


def current_run(settings: Settings) -> RunIdentity:
    """The identity results get when produced now (what the engine will record); others are stale.

    Resolving reads no weights, only where the model lives: a .gguf file is identified by its file
    name, a local directory by its path, a hub id by id and revision.
    """
    from ticketfleet.engine.loading import resolve_model  # lazy: only the backlog run needs it

    resolved = resolve_model(settings)
    return RunIdentity(resolved.model_id, resolved.model_revision, effective_prompt_version(settings))


def reap_and_resend(settings: Settings) -> ReapReport:
    database_url = settings.require_database_url()
    idle = [
        lane
        for lane, depth in lane_depths(redis_client(settings.require_redis_url()), LANES).items()
        if depth == 0
    ]
    with transaction(database_url) as session:
        if not session.execute(select(func.pg_try_advisory_xact_lock(REAPER_LOCK_KEY))).scalar_one():
            return ReapReport(skipped=True)
        audit = AuditTrail("reaper")
        by_lane = reap(
            session, stuck_after_seconds=settings.stuck_after_seconds, idle_lanes=idle, audit=audit
        )
        audit.write(session)
        wakeups = wake_after_commit(session, database_url, by_lane, batch_size=settings.batch_size)
    report = ReapReport()
    for lane, sent in wakeups.reports.items():
        report.requeued[lane] = sum(len(message.args[0]) for message in sent.sent)
    if report.requeued:
        log.warning("reaper re-queued %s", report.requeued)
    return report


def enqueue_backlog(settings: Settings, *, stale: bool, lane: str = "backlog") -> int:
    """Queue every unprocessed customer message (and, with ``stale``, those processed by an older
    model or prompt version) on ``lane``. Returns the number of items queued."""
    database_url = settings.require_database_url()
    stale_against = current_run(settings) if stale else None
    with transaction(database_url) as session:
        message_ids = select_backlog(session, stale_against=stale_against)
        audit = AuditTrail("backlog")
        item_ids = requeue_for_backlog(session, message_ids, lane, audit=audit)
        audit.write(session)
        wakeups = wake_after_commit(session, database_url, {lane: item_ids}, batch_size=settings.batch_size)
    for unsent in wakeups.unsent:
        log.warning("%s; the reaper will queue them", unsent)
    return wakeups.queued


def purge_pii_vault(settings: Settings) -> int:
    """Erase vault originals past their retention (``pii_retention_days`` after last activity)."""
    with transaction(settings.require_database_url()) as session:
        return purge_expired(session)
