"""The ``maintenance`` queue: the reaper and the nightly backlog run, scheduled by Celery beat.

Every worker also consumes this queue, so maintenance runs wherever capacity is; both tasks are safe
to run concurrently (row locks with SKIP LOCKED) and idempotent.
"""

from __future__ import annotations

from typing import Any

from ticketfleet.broker import NIGHTLY_BACKLOG_TASK, PII_PURGE_TASK, REAP_TASK, app
from ticketfleet.core.settings import get_settings
from ticketfleet.pipeline import maintenance


@app.task(name=REAP_TASK)
def reap() -> dict[str, Any]:
    return maintenance.reap_and_resend(get_settings()).as_dict()


@app.task(name=NIGHTLY_BACKLOG_TASK)
def nightly_backlog() -> dict[str, Any]:
    return {"enqueued": maintenance.enqueue_backlog(get_settings(), stale=True)}


@app.task(name=PII_PURGE_TASK)
def pii_purge() -> dict[str, Any]:
    return {"purged": maintenance.purge_pii_vault(get_settings())}
