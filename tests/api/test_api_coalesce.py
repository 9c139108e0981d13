"""Group commit of single-record API requests (ticketfleet/api/coalesce.py), with a stand-in store:
who stores what, in which batches, and who gets which reply or error. The real store under real
concurrency is tested in test_api.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ticketfleet.api.coalesce import Coalescer
from ticketfleet.core.inbound import InboundTicket


def ticket(conversation: str, message: str = "m-1") -> InboundTicket:
    return InboundTicket.model_validate(
        {
            "external_id": conversation,
            "channel": "chat",
            "messages": [{"role": "customer", "text": "hello", "external_id": message}],
        }
    )


class RecordingStore:
    """Remembers every batch; slow enough that callers pile up behind a running store."""

    def __init__(self, delay: float = 0.02, fail_on: str | None = None) -> None:
        self.batches: list[list[tuple[str, str]]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, source: str, lane: str, tickets: Sequence[InboundTicket]) -> list[object]:
        keys = [(t.external_id, t.messages[0].external_id or "") for t in tickets]
        with self.lock:
            self.batches.append(keys)
        time.sleep(self.delay)
        if self.fail_on is not None and any(conv == self.fail_on for conv, _ in keys):
            raise ValueError(f"cannot store {self.fail_on}")
        return [f"{source}/{lane}/{conv}/{msg}" for conv, msg in keys]


def submit_all(coalescer: Coalescer, records: list[tuple[str, str]]) -> list[object]:
    def one(record: tuple[str, str]) -> object:
        try:
            return coalescer.submit("shop", "chat", ticket(*record))
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        return list(pool.map(one, records))


def test_a_lone_record_is_stored_at_once_on_its_own() -> None:
    store = RecordingStore(delay=0)
    assert Coalescer(store).submit("shop", "chat", ticket("c1")) == "shop/chat/c1/m-1"
    assert store.batches == [[("c1", "m-1")]]


def test_concurrent_records_share_batches_and_each_caller_gets_its_own_outcome() -> None:
    store = RecordingStore()
    records = [(f"c{i}", "m-1") for i in range(24)]
    outcomes = submit_all(Coalescer(store), records)
    assert outcomes == [f"shop/chat/{c}/{m}" for c, m in records]
    stored = sorted(key for batch in store.batches for key in batch)
    assert stored == sorted(records)  # every record stored exactly once
    assert len(store.batches) < len(records)  # and some were stored together
    assert max(len(batch) for batch in store.batches) > 1


def test_two_messages_of_one_conversation_never_share_a_batch() -> None:
    store = RecordingStore()
    records = [(f"c{i % 3}", f"m-{i}") for i in range(18)]
    outcomes = submit_all(Coalescer(store), records)
    assert outcomes == [f"shop/chat/{c}/{m}" for c, m in records]
    for batch in store.batches:
        conversations = [conv for conv, _ in batch]
        assert len(conversations) == len(set(conversations)), batch
    assert sorted(key for batch in store.batches for key in batch) == sorted(records)


def test_a_failing_record_fails_only_its_own_request() -> None:
    store = RecordingStore(fail_on="bad")
    records = [(f"c{i}", "m-1") for i in range(10)] + [("bad", "m-1")]
    outcomes = submit_all(Coalescer(store), records)
    assert isinstance(outcomes[-1], ValueError) and "bad" in str(outcomes[-1])
    assert outcomes[:-1] == [f"shop/chat/{c}/{m}" for c, m in records[:-1]]
    # Each good record was stored (alone, after its shared batch failed, or in a batch without "bad").
    succeeded = [b for b in store.batches if all(conv != "bad" for conv, _ in b)]
    assert sorted(key for batch in succeeded for key in batch) == sorted(records[:-1])


def test_max_batch_caps_a_store() -> None:
    store = RecordingStore()
    submit_all(Coalescer(store, max_batch=4), [(f"c{i}", "m-1") for i in range(20)])
    assert max(len(batch) for batch in store.batches) <= 4


def test_a_store_interrupted_mid_batch_hands_on_and_leaves_no_caller_waiting() -> None:
    calls: list[int] = []
    started = threading.Event()

    def store(source: str, lane: str, tickets: Sequence[InboundTicket]) -> list[object]:
        calls.append(len(tickets))
        if len(calls) == 1:  # the first store is cut short while the others queue behind it
            started.set()
            time.sleep(0.1)
            raise SystemExit("worker shutting down")
        return [t.external_id for t in tickets]

    coalescer = Coalescer(store)

    def one(conversation: str) -> object:
        try:
            return coalescer.submit("shop", "chat", ticket(conversation))
        except BaseException as exc:  # SystemExit is what this test is about
            return exc

    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(one, "c0")
        started.wait(5)
        rest = [pool.submit(one, f"c{i}") for i in range(1, 6)]
        assert isinstance(first.result(timeout=10), SystemExit)
        assert [f.result(timeout=10) for f in rest] == [f"c{i}" for i in range(1, 6)]
