"""Group commit for single-record requests: records that arrive while one store is running are
stored together by the next, in one transaction.

A chat message on its own costs the API two transactions, a dozen statements and a broker send, about
10 ms of CPU; stored by the dozen they cost little more than one. So concurrent ``POST /v1/chat``
requests (and single-ticket ``POST /v1/tickets``) queue their record here and the first caller to find
no store running becomes the *leader*: it takes what is waiting, stores it, hands every caller its own
reply, and passes leadership to a caller still waiting. No extra thread, and a lone request is stored
at once (it is its own leader), so coalescing adds no latency when traffic is light.

Nothing is lost or mixed up:
- a batch holds at most one record per ticket (the store keeps one version of a ticket per
  statement); a second message of the same conversation waits for the next batch;
- if a batch of several fails, each of its records is retried on its own, so one bad record cannot
  fail the requests beside it; a lone record's error goes to its own caller unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ticketfleet.core.inbound import InboundTicket

# Records per coalesced store; more wait for the next. Large enough to absorb a burst, small enough
# that one transaction stays short.
MAX_BATCH = 256


@dataclass
class Pending:
    """One caller's record, and what the store made of it."""

    source: str
    lane: str
    ticket: InboundTicket
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # set with ``done`` when the caller must store the next batch instead
    outcome: object = None
    error: BaseException | None = None


# Stores a batch of one source and lane; returns one outcome per record, in order.
StoreBatch = Callable[[str, str, Sequence[InboundTicket]], Sequence[object]]


class Coalescer:
    def __init__(self, store: StoreBatch, *, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[Pending] = []
        self._storing = False

    def submit(self, source: str, lane: str, ticket: InboundTicket) -> object:
        """Store ``ticket`` (alone or with others); returns its outcome or raises its error."""
        mine = Pending(source, lane, ticket)
        with self._lock:
            self._waiting.append(mine)
            leader = not self._storing
            self._storing = True
        while not leader:
            mine.done.wait()
            if not mine.lead:
                break
            mine.done.clear()
            mine.lead = False
            leader = True
        if leader:
            self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.outcome

    def _lead(self) -> None:
        """Store one batch; then wake a waiting caller to store the next, or stand down."""
        with self._lock:
            batch, self._waiting = _take_batch(self._waiting, self._max_batch)
        try:
            self._store_batch(batch)
        finally:
            for item in batch:
                if item.outcome is None and item.error is None:  # interrupted before its store
                    item.error = RuntimeError("the record was not stored; send it again")
            with self._lock:
                if self._waiting:
                    successor = self._waiting[0]
                    successor.lead = True
                    successor.done.set()
                else:
                    self._storing = False
            for item in batch:
                item.done.set()

    def _store_batch(self, batch: list[Pending]) -> None:
        groups: dict[tuple[str, str], list[Pending]] = {}
        for item in batch:
            groups.setdefault((item.source, item.lane), []).append(item)
        for (source, lane), items in groups.items():
            try:
                outcomes = self._store(source, lane, [item.ticket for item in items])
            except Exception as exc:
                if len(items) == 1:
                    items[0].error = exc
                    continue
                # Find the culprit: each record alone, so the others are still stored.
                for item in items:
                    try:
                        item.outcome = self._store(source, lane, [item.ticket])[0]
                    except Exception as single_exc:
                        item.error = single_exc
                continue
            for item, outcome in zip(items, outcomes, strict=True):
                item.outcome = outcome


def _take_batch(waiting: list[Pending], limit: int) -> tuple[list[Pending], list[Pending]]:
    """Up to ``limit`` records, oldest first, at most one per ticket; the rest keep their order."""
    batch: list[Pending] = []
    rest: list[Pending] = []
    keys: set[tuple[str, str]] = set()
    for item in waiting:
        key = (item.ticket.source or item.source, item.ticket.external_id)
        if len(batch) < limit and key not in keys:
            keys.add(key)
            batch.append(item)
        else:
            rest.append(item)
    return batch, rest
