"""What every lane task shares: the task base, the worker's name, and loading the engine once per
process. Each lane module (``workers/chat.py``, …) is one call to :func:`register_lane`."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Task
from celery.signals import worker_init, worker_process_init

from db.session import dispose_engines
from ticketfleet.broker import LANE_TASKS, app
from ticketfleet.core.settings import get_settings
from ticketfleet.pipeline import runtime
from ticketfleet.pipeline.processing import process_lane_batch

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LaneTask(Task):
    """Base of every lane task: run one dynamically formed batch through this process's engine."""

    abstract = True
    lane: str = ""
    acks_late = True

    def run_batch(self, item_ids: list[int]) -> dict[str, Any]:
        settings = get_settings()
        report = process_lane_batch(
            self.lane,
            [int(i) for i in item_ids],
            engine=runtime.get_engine(settings),
            settings=settings,
            database_url=settings.require_database_url(),
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
