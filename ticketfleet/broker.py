"""The broker: one Celery app, its queues and task names, and the one way to send a message.

Every producer (the import, the HTTP API, the workers planning write-backs, the reaper) sends through
here; the workers (``workers/``) register the tasks on :data:`app`. Nothing here does I/O at import:
:func:`configure` is called by whoever is about to send or consume, with the settings it runs under.

Messages carry ids only, never ticket text or personal data: the database holds those.

Failure policy (one for every producer): a message is sent only after the transaction that made its
rows visible has committed (:func:`send_after_commit`), so a worker never receives an id it cannot
see. If the broker refuses, nothing is raised: the failure is logged and returned in a
:class:`SendReport`, the rows stay ``pending`` in PostgreSQL, and the reaper (work items) or the next
poll of the source (write-backs) sends them again. Callers surface ``report.error`` to their users
(the CLI prints it, the API adds a warning) but never lose or roll back the stored data for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery
from celery.schedules import crontab
from kombu import Queue
from sqlalchemy import event
from sqlalchemy.orm import Session

from ticketfleet.core.settings import Settings
from ticketfleet.core.vocabulary import LANES

log = logging.getLogger(__name__)

# --- queues and task names ----------------------------------------------------------------------------

MAINTENANCE_QUEUE = "maintenance"
# Polls and write-backs talk to ticket systems: network waits, rate-limit sleeps and credentials. They
# get their own queue, consumed by `ticketfleet sources worker` (a thread pool without a model), so a
# GPU worker never holds a batch slot while a source's Retry-After runs out, nor needs its secrets.
SOURCES_QUEUE = "sources"
QUEUES: tuple[str, ...] = (*LANES, MAINTENANCE_QUEUE, SOURCES_QUEUE)

LANE_TASKS: dict[str, str] = {lane: f"ticketfleet.lane.{lane}" for lane in LANES}
REAP_TASK = "ticketfleet.maintenance.reap"
NIGHTLY_BACKLOG_TASK = "ticketfleet.maintenance.nightly_backlog"
PII_PURGE_TASK = "ticketfleet.maintenance.pii_purge"
SOURCE_POLL_TASK = "ticketfleet.sources.poll"
SOURCE_WRITE_BACK_TASK = "ticketfleet.sources.write_back"

TASK_QUEUES: dict[str, str] = {
    **{task: lane for lane, task in LANE_TASKS.items()},
    REAP_TASK: MAINTENANCE_QUEUE,
    NIGHTLY_BACKLOG_TASK: MAINTENANCE_QUEUE,
    PII_PURGE_TASK: MAINTENANCE_QUEUE,
    SOURCE_POLL_TASK: SOURCES_QUEUE,
    SOURCE_WRITE_BACK_TASK: SOURCES_QUEUE,
}

app = Celery("ticketfleet")
_configured: set[int] = set()  # ids of the Celery apps configure() has seen


def is_configured(celery_app: Celery | None = None) -> bool:
    return id(celery_app or app) in _configured


def configure(celery_app: Celery, settings: Settings, broker_url: str | None = None) -> None:
    """Broker URL, queues, routes, delivery guarantees and the fixed beat schedule.

    Per-source poll entries are added by beat itself when it starts (workers/app.py), so configuring
    the app never reads the sources file.
    """
    _configured.add(id(celery_app))
    minute, hour, day_of_month, month, day_of_week = settings.nightly_backlog_cron.split()
    celery_app.conf.update(
        broker_url=broker_url or settings.redis_url_value() or "redis://127.0.0.1:6379/0",
        broker_connection_retry_on_startup=True,
        # Results live in PostgreSQL; a Celery result backend would only duplicate them.
        task_ignore_result=True,
        # At-least-once: ack after the batch is stored; a killed worker's message is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="tickets",
        task_routes={task: {"queue": queue} for task, queue in TASK_QUEUES.items()},
        # The reaper, not Redis' visibility timeout, recovers lost work; keep redelivery rare.
        broker_transport_options={"visibility_timeout": 6 * 3600},
        # Loading a model in a prefork child takes longer than Celery's 4 s default.
        worker_proc_alive_timeout=300,
        worker_hijack_root_logger=False,
        beat_schedule={
            "reap": {"task": REAP_TASK, "schedule": settings.reaper_interval_seconds},
            "pii-purge": {"task": PII_PURGE_TASK, "schedule": 3600.0},  # vault retention, hourly
            "nightly-backlog": {
                "task": NIGHTLY_BACKLOG_TASK,
                "schedule": crontab(
                    minute=minute,
                    hour=hour,
                    day_of_month=day_of_month,
                    month_of_year=month,
                    day_of_week=day_of_week,
                ),
            },
        },
    )


# --- sending --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskMessage:
    """One Celery message: a task name and its arguments, which are ids, never text."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    countdown: float | None = None

    @property
    def queue(self) -> str:
        return TASK_QUEUES[self.task]


@dataclass
class SendReport:
    """What a send achieved: the messages that reached the broker and, if it refused, why."""

    sent: list[TaskMessage] = field(default_factory=list)
    unsent: list[TaskMessage] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def send_now(messages: Sequence[TaskMessage], *, celery_app: Celery | None = None) -> SendReport:
    """Send ``messages`` on one producer connection, in order. Never raises for the broker: a refusal
    stops the send and is reported (see the module's failure policy)."""
    celery_app = celery_app or app
    report = SendReport()
    if not messages:
        return report
    try:
        with celery_app.producer_or_acquire() as producer:
            for message in messages:
                celery_app.send_task(
                    message.task,
                    args=list(message.args),
                    kwargs=dict(message.kwargs),
                    queue=message.queue,
                    countdown=message.countdown,
                    producer=producer,
                )
                report.sent.append(message)
    except Exception as exc:  # kombu raises transport-specific types
        report.unsent = list(messages[len(report.sent) :])
        report.error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "broker refused %d of %d message(s) (%s); the rows stay pending and are resent later",
            len(report.unsent),
            len(messages),
            report.error,
        )
    return report


def send_after_commit(
    session: Session,
    messages: Sequence[TaskMessage],
    *,
    on_sent: Callable[[SendReport], None] | None = None,
) -> SendReport:
    """Send ``messages`` once ``session``'s transaction has committed; nothing if it rolls back.

    Returns the report, filled in at commit (empty until then). ``on_sent`` runs right after the send,
    outside the committed transaction, e.g. to mark the sent items ``queued`` in a transaction of its
    own.
    """
    report = SendReport()

    def _send(_session: Session) -> None:
        sent = send_now(messages)
        report.sent, report.unsent, report.error = sent.sent, sent.unsent, sent.error
        if on_sent is None:
            return
        try:
            on_sent(report)
        except Exception:
            # The commit stands and the messages are out; rows left pending are only sent twice.
            log.exception("after-send bookkeeping failed; the reaper reconciles it")

    if messages:
        event.listen(session, "after_commit", _send, once=True)
    return report


# --- queue depths -------------------------------------------------------------------------------------


def lane_depths(client: redis.Redis, lanes: Sequence[str]) -> dict[str, int]:
    """Messages waiting per queue (kombu keeps one Redis list per queue, plus one per priority step)."""
    pipe = client.pipeline()
    keys = {lane: [lane, *(f"{lane}\x06\x16{p}" for p in (1, 2, 3, 4, 5, 6, 7, 8, 9))] for lane in lanes}
    for lane in lanes:
        for key in keys[lane]:
            pipe.llen(key)
    counts = iter(pipe.execute())
    return {lane: sum(next(counts) for _ in keys[lane]) for lane in lanes}
