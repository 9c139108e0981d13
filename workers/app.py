"""The Celery application: one app, three lanes, one task base.

Lanes are separate Redis lists consumed by separate workers, so a nightly backlog never delays live
chat. Messages carry work-item ids only; the database holds the text and the state.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery, Task
from celery.schedules import crontab
from celery.signals import worker_init, worker_process_init
from kombu import Queue

from db.session import dispose_engines
from ticketfleet import runtime
from ticketfleet.processing import process_lane_batch
from ticketfleet.settings import LANES, Settings, get_settings

log = logging.getLogger(__name__)

MAINTENANCE_QUEUE = "maintenance"
# Polls and write-backs talk to ticket systems: network waits, rate-limit sleeps and credentials. They
# get their own queue, consumed by `ticketfleet sources worker` (a thread pool without a model), so a
# GPU worker never holds a batch slot while a source's Retry-After runs out, nor needs its secrets.
SOURCES_QUEUE = "sources"
LANE_TASKS = {lane: f"ticketfleet.lane.{lane}" for lane in LANES}
REAP_TASK = "ticketfleet.maintenance.reap"
NIGHTLY_BACKLOG_TASK = "ticketfleet.maintenance.nightly_backlog"
SOURCE_POLL_TASK = "ticketfleet.sources.poll"
SOURCE_WRITE_BACK_TASK = "ticketfleet.sources.write_back"

PII_PURGE_TASK = "ticketfleet.maintenance.pii_purge"

app = Celery("ticketfleet")


def configure(celery_app: Celery, settings: Settings, broker_url: str | None = None) -> None:
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
        task_queues=[Queue(name) for name in (*LANES, MAINTENANCE_QUEUE, SOURCES_QUEUE)],
        task_default_queue="tickets",
        task_routes={
            **{name: {"queue": lane} for lane, name in LANE_TASKS.items()},
            REAP_TASK: {"queue": MAINTENANCE_QUEUE},
            NIGHTLY_BACKLOG_TASK: {"queue": MAINTENANCE_QUEUE},
            SOURCE_POLL_TASK: {"queue": SOURCES_QUEUE},
            SOURCE_WRITE_BACK_TASK: {"queue": SOURCES_QUEUE},
            PII_PURGE_TASK: {"queue": MAINTENANCE_QUEUE},
        },
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
            **source_poll_schedule(settings),
        },
    )


def source_poll_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """One beat entry per enabled source, at its poll interval. A broken sources file schedules no
    polls (and says why) rather than stopping the lanes' workers."""
    from ticketfleet.sources import SourcesFileError, load_configured_sources

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


configure(app, get_settings())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LaneTask(Task):
    """Base of every lane task: run one dynamically formed batch through this process's engine."""

    abstract = True
    lane: str = ""
    acks_late = True

    def run_batch(self, item_ids: list[int]) -> dict[str, Any]:
        settings = get_settings()
        database_url = settings.database_url_value()
        if not database_url:
            raise RuntimeError("TICKETFLEET_DATABASE_URL is not set in the worker environment")
        report = process_lane_batch(
            self.lane,
            [int(i) for i in item_ids],
            engine=runtime.get_engine(settings),
            settings=settings,
            database_url=database_url,
            worker=worker_name(),
        )
        return report.as_dict()


def _load_engine_or_exit() -> None:
    # Celery logs and swallows exceptions raised by signal receivers; SystemExit is not swallowed, so
    # a model that cannot be loaded stops the worker at start-up instead of failing every task.
    try:
        runtime.get_engine()
    except Exception as exc:
        log.critical("cannot load the model engine: %s", exc)
        raise SystemExit(f"ticketfleet worker: cannot load the model engine: {exc}") from exc


@worker_init.connect
def _load_engine_in_solo_worker(sender: Any = None, **_: Any) -> None:
    # Solo pool (one process per GPU): load here so a bad model stops the worker at start-up.
    if "solo" in str(getattr(sender, "pool_cls", "")).lower():
        _load_engine_or_exit()


@worker_process_init.connect
def _load_engine_in_child(**_: Any) -> None:
    # Prefork child: never reuse the parent's database sockets; load the model in the child so no
    # CUDA state is created before fork.
    dispose_engines()
    _load_engine_or_exit()


def register_lane(lane: str) -> Task:
    """The Celery task for one lane; each lane module is a one-line call to this."""

    def process(self: LaneTask, item_ids: list[int]) -> dict[str, Any]:
        return self.run_batch(item_ids)

    process.__name__ = f"process_{lane}"
    return app.task(base=LaneTask, bind=True, name=LANE_TASKS[lane], lane=lane)(process)


# Register the tasks (one thin module per queue) when `celery -A workers.app` imports the app.
import workers.backlog  # noqa: E402
import workers.chat  # noqa: E402
import workers.maintenance  # noqa: E402
import workers.sources  # noqa: E402
import workers.tickets  # noqa: E402,F401
