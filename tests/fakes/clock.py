"""A deterministic clock for the fakes: every change to the fake's data moves time by ``step``.

Real ticket systems stamp ``updated_at`` with wall time; tests need control over it instead — one
second apart to page through distinct timestamps, or ``step=0`` to pile many tickets onto one
timestamp (the tie case a cursor must neither skip nor loop on).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime | None = None, *, step: timedelta = timedelta(seconds=1)) -> None:
        self.now = start or datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)
        self.step = step
        self._lock = threading.Lock()

    def tick(self) -> datetime:
        with self._lock:
            self.now = self.now + self.step
            return self.now
