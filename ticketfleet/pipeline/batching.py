"""Forming dynamic batches on the worker side, from the database.

A wake-up message names a few item ids. The worker claims those, then tops the batch up with the
oldest queued items of the same lane until it holds ``batch_size`` items or ``batch_max_tokens``, or
``max_wait_ms`` has passed since the first claim, whichever comes first. See docs/architecture.md for
why batches are formed here rather than by the producer or by celery-batches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from db.audit import AuditTrail
from db.session import transaction
from db.work import ClaimedItem, claim
from ticketfleet.core.settings import Settings

POLL_SECONDS = 0.01


def claim_batch(
    settings: Settings, database_url: str, *, lane: str, hinted_ids: Sequence[int], worker: str
) -> list[ClaimedItem]:
    deadline = time.monotonic() + settings.max_wait_ms / 1000
    items = _claim(
        settings, database_url, lane, hinted_ids, settings.batch_size, settings.batch_max_tokens, worker
    )
    while not items and time.monotonic() < deadline:
        # The producer marks items `queued` right after sending their wake-up; a worker that claims in
        # that window finds the rows locked (SKIP LOCKED) and would leave them to the reaper. Look again
        # until the batch's wait is up; a duplicate or late wake-up costs at most max_wait_ms.
        time.sleep(POLL_SECONDS)
        items = _claim(
            settings, database_url, lane, hinted_ids, settings.batch_size, settings.batch_max_tokens, worker
        )
    if not items:
        return []  # everything named is done or taken: a duplicate or late wake-up
    used = sum(i.token_estimate for i in items)
    while len(items) < settings.batch_size and used < settings.batch_max_tokens:
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
        more = _claim(
            settings,
            database_url,
            lane,
            (),
            settings.batch_size - len(items),
            settings.batch_max_tokens - used,
            worker,
        )
        items.extend(more)
        used += sum(i.token_estimate for i in more)
    return items


def _claim(
    settings: Settings,
    database_url: str,
    lane: str,
    hinted_ids: Sequence[int],
    limit: int,
    budget: int,
    worker: str,
) -> list[ClaimedItem]:
    with transaction(database_url) as session:
        audit = AuditTrail(worker)
        items = claim(
            session,
            lane=lane,
            hinted_ids=hinted_ids,
            limit=limit,
            token_budget=budget,
            worker=worker,
            lease_seconds=settings.lease_seconds,
            audit=audit,
        )
        audit.write(session)  # last: see db/audit.py on lock order
        return items
