"""Fault injection for the fleet tests: the real engine, plus a slow batch or a poison item on demand.

Workers load it through the ordinary ``engine_factory`` setting, so everything around the model
(claiming, storing, retrying, reaping) is the production code path.
"""

from __future__ import annotations

import os
import time

from ticketfleet.core.schemas import EngineInput, EngineOutput, Triage
from ticketfleet.core.settings import Settings
from ticketfleet.engine import TransformersEngine

POISON_MARKER = "POISON-PILL"


class PoisonError(RuntimeError):
    pass


class FaultInjectingEngine:
    """Sleeps ``TICKETFLEET_TEST_BATCH_DELAY_S`` per batch; raises on any item containing the marker."""

    def __init__(self, inner: TransformersEngine, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.model_id = inner.model_id
        self.model_revision = inner.model_revision
        self.prompt_version = inner.prompt_version

    def process(self, items: list[EngineInput]) -> list[EngineOutput]:
        self._check(items)
        time.sleep(self.delay_s)
        return self.inner.process(items)

    def classify(self, items: list[EngineInput]) -> list[Triage]:
        self._check(items)
        return self.inner.classify(items)

    def draft_instructions(self, language: str) -> str:
        return self.inner.draft_instructions(language)

    @staticmethod
    def _check(items: list[EngineInput]) -> None:
        for item in items:
            if POISON_MARKER in item.text:
                raise PoisonError(f"item {item.item_id} is poison")


def make(settings: Settings) -> FaultInjectingEngine:
    delay = float(os.environ.get("TICKETFLEET_TEST_BATCH_DELAY_S", "0"))
    return FaultInjectingEngine(TransformersEngine.from_settings(settings), delay)
