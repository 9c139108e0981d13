"""The Celery worker entry point: ``celery -A workers.app worker`` or ``ticketfleet worker``.

The app object, queues and task names live in :mod:`ticketfleet.broker` (producers send through it
without importing this package); importing this module registers the tasks on it, one thin module per
queue (``workers/chat.py``, ``workers/sources.py``, …). The work is in ``ticketfleet.pipeline``.
"""

from __future__ import annotations

from typing import Any

from celery.signals import beat_init

import workers.backlog
import workers.chat
import workers.maintenance
import workers.sources
import workers.tickets  # noqa: F401  (each registers its task on the app)
from ticketfleet import broker
from ticketfleet.broker import app
from ticketfleet.core.settings import get_settings
from ticketfleet.pipeline.polling import source_poll_schedule

__all__ = ["app"]

if not broker.is_configured(app):
    # `celery -A workers.app …`: nothing configured the app yet. `ticketfleet worker` configures it
    # first (with the URL it resolved), and that must not be overwritten here.
    broker.configure(app, get_settings())


@beat_init.connect
def _schedule_source_polls(sender: Any = None, **_: Any) -> None:
    # The sources file is read when beat starts, never when something imports the app.
    scheduler = getattr(sender, "scheduler", None)
    if scheduler is not None:
        scheduler.update_from_dict(source_poll_schedule(get_settings()))
