"""Waking the lanes: committed work items → Celery messages of up to ``batch_size`` ids each.

A message names work-item ids and nothing else: no ticket text, no PII ever reaches Redis. Messages
go out through :func:`ticketfleet.broker.send_after_commit`, so a worker never receives an id it
cannot see. Items are marked ``queued`` only once their message is on the lane; if the broker refuses
they stay ``pending`` and the reaper sends them later (the broker's one failure policy).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from db.audit import AuditTrail
from db.session import transaction
from db.work import mark_queued
from ticketfleet.broker import LANE_TASKS, SendReport, TaskMessage, send_after_commit


@dataclass(frozen=True)
class LaneUnsent:
    """Items of one lane whose wake-up the broker refused. They are stored and stay pending."""

    lane: str
    unsent: int
    cause: str

    def __str__(self) -> str:
        return f"could not queue {self.unsent} item(s) on lane {self.lane!r}: {self.cause}"


@dataclass
class Wakeups:
    """The outcome of waking lanes, known once the transaction has committed."""

    reports: dict[str, SendReport] = field(default_factory=dict)

    @property
    def queued(self) -> int:
        return sum(_ids(report.sent) for report in self.reports.values())

    @property
    def unsent(self) -> list[LaneUnsent]:
        return [
            LaneUnsent(lane, _ids(report.unsent), report.error)
            for lane, report in self.reports.items()
            if report.error is not None
        ]


def chunked(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def wakeup_messages(lane: str, item_ids: Sequence[int], *, batch_size: int) -> list[TaskMessage]:
    return [TaskMessage(LANE_TASKS[lane], args=(chunk,)) for chunk in chunked(item_ids, batch_size)]


def wake_after_commit(
    session: Session, database_url: str, items_by_lane: Mapping[str, Sequence[int]], *, batch_size: int
) -> Wakeups:
    """Send the lanes' wake-ups when ``session`` commits, then mark the sent items ``queued``.

    Every lane is tried on its own: a lane the broker refused stays pending for the reaper.
    """
    wakeups = Wakeups()
    for lane, item_ids in items_by_lane.items():
        if item_ids:
            wakeups.reports[lane] = send_after_commit(
                session,
                wakeup_messages(lane, item_ids, batch_size=batch_size),
                on_sent=lambda report: _mark_sent_queued(database_url, report),
            )
    return wakeups


def _mark_sent_queued(database_url: str, report: SendReport) -> None:
    sent = [item_id for message in report.sent for item_id in message.args[0]]
    if not sent:
        return
    with transaction(database_url) as session:
        audit = AuditTrail("dispatch")
        mark_queued(session, sent, audit=audit)
        audit.write(session)


def _ids(messages: Sequence[TaskMessage]) -> int:
    return sum(len(message.args[0]) for message in messages)
