"""Pure unit tests of the dispatch helpers (fakeredis: no server needed for list arithmetic)."""

from __future__ import annotations

import fakeredis

from ticketfleet.broker import lane_depths
from ticketfleet.pipeline.dispatch import chunked


def test_chunked_keeps_order_and_sizes() -> None:
    assert list(chunked([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(chunked([], 3)) == []


def test_lane_depth_counts_plain_and_priority_lists() -> None:
    client = fakeredis.FakeRedis()
    client.rpush("chat", b"a", b"b")
    client.rpush("chat\x06\x163", b"c")  # kombu's list for priority step 3
    client.rpush("backlog", b"d")
    assert lane_depths(client, ("chat", "tickets", "backlog")) == {"chat": 3, "tickets": 0, "backlog": 1}
