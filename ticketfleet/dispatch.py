"""Sending wake-up messages, always after the commit that made the items visible.

A message names up to ``batch_size`` work-item ids and nothing else: no ticket text, no PII ever
reaches Redis. Items are marked ``queued`` only once their message is on the lane; if Redis is down
they stay ``pending`` and the reaper sends them later, so a failed send loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import redis

from db.audit import AuditTrail
from db.session import transaction
from db.work import mark_queued


class EnqueueError(RuntimeError):
    """The broker refused a send. The items are stored and stay pending; the reaper will retry."""

    def __init__(self, lane: str, unsent: int, cause: BaseException) -> None:
        super().__init__(f"could not queue {unsent} item(s) on lane {lane!r}: {cause}")
        self.lane = lane
        self.unsent = unsent


def chunked(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def send_wakeups(database_url: str, lane: str, item_ids: Sequence[int], *, batch_size: int) -> int:
    from workers.app import LANE_TASKS, app  # late: workers.app imports the processing library

    sent: list[int] = []
    try:
        with app.producer_or_acquire() as producer:
            for chunk in chunked(item_ids, batch_size):
                app.send_task(LANE_TASKS[lane], args=[chunk], queue=lane, producer=producer)
                sent.extend(chunk)
    except Exception as exc:  # kombu raises several transport-specific types
        raise EnqueueError(lane, len(item_ids) - len(sent), exc) from exc
    finally:
        if sent:
            with transaction(database_url) as session:
                audit = AuditTrail("dispatch")
                mark_queued(session, sent, audit=audit)
                audit.write(session)
    return len(sent)


def lane_depths(client: redis.Redis, lanes: Sequence[str]) -> dict[str, int]:
    """Messages waiting per lane (kombu keeps one Redis list per queue, plus one per priority step)."""
    pipe = client.pipeline()
    keys = {lane: [lane, *(f"{lane}\x06\x16{p}" for p in (1, 2, 3, 4, 5, 6, 7, 8, 9))] for lane in lanes}
    for lane in lanes:
        for key in keys[lane]:
            pipe.llen(key)
    counts = iter(pipe.execute())
    return {lane: sum(next(counts) for _ in keys[lane]) for lane in lanes}
