"""Recovery and scheduled work: the reaper and the backlog run. Called by beat tasks and the CLI."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import func, select

from db.audit import AuditTrail
from db.results import RunIdentity
from db.session import transaction
from db.work import reap, requeue_for_backlog, select_backlog
from ticketfleet.dispatch import lane_depths, send_wakeups
from ticketfleet.services import redis_client
from ticketfleet.settings import LANES, Settings

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key: one reaper at a time across the fleet.
REAPER_LOCK_KEY = 0x7F1C_0001


@dataclass
class ReapReport:
    requeued: dict[str, int] = field(default_factory=dict)
    skipped: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"requeued": self.requeued, "skipped": self.skipped}


def _urls(settings: Settings) -> tuple[str, str]:
    database_url, redis_url = settings.database_url_value(), settings.redis_url_value()
    if not database_url or not redis_url:
        raise RuntimeError("TICKETFLEET_DATABASE_URL and TICKETFLEET_REDIS_URL must be set")
    return database_url, redis_url


def current_run(settings: Settings) -> RunIdentity:
    """The identity results get when produced now (what the engine will record); others are stale.

    Resolving reads no weights, only where the model lives: a .gguf file is identified by its file
    name, a local directory by its path, a hub id by id and revision.
    """
    from ticketfleet.engine import resolve_model
    from ticketfleet.taxonomy import effective_prompt_version

    resolved = resolve_model(settings)
    return RunIdentity(resolved.model_id, resolved.model_revision, effective_prompt_version(settings))


def reap_and_resend(settings: Settings) -> ReapReport:
    database_url, redis_url = _urls(settings)
    idle = [lane for lane, depth in lane_depths(redis_client(redis_url), LANES).items() if depth == 0]
    with transaction(database_url) as session:
        if not session.execute(select(func.pg_try_advisory_xact_lock(REAPER_LOCK_KEY))).scalar_one():
            return ReapReport(skipped=True)
        audit = AuditTrail("reaper")
        by_lane = reap(
            session, stuck_after_seconds=settings.stuck_after_seconds, idle_lanes=idle, audit=audit
        )
        audit.write(session)
    report = ReapReport()
    for lane, ids in by_lane.items():
        report.requeued[lane] = send_wakeups(database_url, lane, ids, batch_size=settings.batch_size)
    if report.requeued:
        log.warning("reaper re-queued %s", report.requeued)
    return report


def enqueue_backlog(settings: Settings, *, stale: bool, lane: str = "backlog") -> int:
    """Queue every unprocessed customer message (and, with ``stale``, those processed by an older
    model or prompt version) on ``lane``. Returns the number of items queued."""
    database_url, _ = _urls(settings)
    stale_against = current_run(settings) if stale else None
    with transaction(database_url) as session:
        message_ids = select_backlog(session, stale_against=stale_against)
        audit = AuditTrail("backlog")
        item_ids = requeue_for_backlog(session, message_ids, lane, audit=audit)
        audit.write(session)
    return send_wakeups(database_url, lane, item_ids, batch_size=settings.batch_size)


def purge_pii_vault(settings: Settings) -> int:
    """Erase vault originals past their retention (``pii_retention_days`` after last activity)."""
    from db.pii_vault import purge_expired

    database_url = settings.database_url_value()
    if not database_url:
        raise RuntimeError("TICKETFLEET_DATABASE_URL must be set")
    with transaction(database_url) as session:
        return purge_expired(session)
