"""The fleet's shared words, defined once: lanes, channels, roles, triage fields, run identity.

Every layer speaks these (the database's enums, the engine's prompts, the API's schemas, the broker's
queues), so they live in the bottom layer and import nothing of ours.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol

# Redis lanes, one Celery queue each: a nightly backlog never delays live chat.
LANES: tuple[str, ...] = ("chat", "tickets", "backlog")
Lane = Literal["chat", "tickets", "backlog"]

# The triage fields every result has, in the order they are shown, gated and written back.
TRIAGE_FIELD_NAMES: tuple[str, ...] = ("language", "sentiment", "intent", "priority")

# The prompt wording the engine ships (ticketfleet/engine/prompts.py); recorded with every result, so
# changing the wording there means a new version here.
PROMPT_VERSION = "v2"
SUPPORTED_PROMPT_VERSIONS: tuple[str, ...] = (PROMPT_VERSION,)


# Trained heads (ticketfleet/engine/heads.py): what a head's field and labels must respect.
STORED_LABEL_LENGTH: dict[str, int] = {"sentiment": 32, "intent": 64, "priority": 16}
"""Longest value ``triage_results`` stores per built-in field (db/models.py): a head's labels must fit."""
RESERVED_HEAD_NAMES: frozenset[str] = frozenset({"language", "id", "needs_review"})
"""Not a head's field: language comes from the detector; the others are keys of a classify record."""
RESERVED_HEAD_SUFFIXES: tuple[str, ...] = ("_confidence", "_gate")


def reserved_head_name(name: str) -> bool:
    """True if ``name`` may not be a head's field (it would clash with a classify record's keys)."""
    return name in RESERVED_HEAD_NAMES or name.endswith(RESERVED_HEAD_SUFFIXES)


class Channel(enum.StrEnum):
    """Where a message came from: a live chat (latency first) or a ticket."""

    chat = "chat"
    ticket = "ticket"


class Role(enum.StrEnum):
    """Who wrote a message of a thread."""

    customer = "customer"
    agent = "agent"


class _Identified(Protocol):
    model_id: str
    model_revision: str
    prompt_version: str


@dataclass(frozen=True)
class RunIdentity:
    """What produced a result: model, revision and prompt version. Changing any part makes older
    results stale (the nightly backlog re-runs them)."""

    model_id: str
    model_revision: str
    prompt_version: str

    @classmethod
    def of(cls, producer: _Identified) -> RunIdentity:
        """The identity of a loaded engine (or of anything naming the same three parts)."""
        return cls(producer.model_id, producer.model_revision, producer.prompt_version)
