"""Source tasks on the ``maintenance`` queue: poll one source; push one write-back. Thin on purpose:
the work is in ticketfleet.pipeline.polling and ticketfleet.pipeline.writeback."""

from __future__ import annotations

from typing import Any

from ticketfleet.broker import SOURCE_POLL_TASK, SOURCE_WRITE_BACK_TASK, app
from ticketfleet.core.settings import get_settings
from ticketfleet.pipeline import polling, writeback


@app.task(name=SOURCE_POLL_TASK)
def poll(source: str) -> dict[str, Any]:
    settings = get_settings()
    report = polling.poll_named_source(source, settings).as_dict()
    # Write-backs whose message was lost (Redis down) or whose retry is due are swept here.
    report["write_backs_resent"] = writeback.resend_due(settings, source=source)
    return report


@app.task(name=SOURCE_WRITE_BACK_TASK)
def write_back(write_back_id: int) -> dict[str, Any]:
    return writeback.run_write_back(int(write_back_id), get_settings()).as_dict()
