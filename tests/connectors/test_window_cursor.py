"""The shared "updated since" window cursor: ties, overlap, restarts and its stored form (pure logic)."""

from __future__ import annotations

import functools
import random
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import ConfigError
from connectors.window_cursor import Hit, WindowCursor, iso, parse_timestamp, read_page_with_lookback

T0 = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)


def _same(newest: datetime) -> datetime:
    return newest


def _hits(*pairs: tuple[str, int]) -> list[Hit[None]]:
    return [Hit(ident, T0 + timedelta(seconds=offset), None) for ident, offset in pairs]


def test_timestamp_formats_of_the_three_apis() -> None:
    assert parse_timestamp("2026-01-05T09:00:00Z") == T0
    assert parse_timestamp("2026-01-05T10:00:00.000+0100") == T0  # Jira
    assert parse_timestamp("2026-01-05T09:00:00.000Z") == T0  # Zammad
    assert parse_timestamp("2026-01-05T09:00:00") == T0  # naive → UTC
    assert iso(T0) == "2026-01-05T09:00:00Z"


def test_fresh_cursor_queries_from_the_configured_start() -> None:
    assert WindowCursor.decode(None, source="s").query(_same) == (None, None)


def test_seen_record_is_dropped_and_a_re_updated_one_emitted_again() -> None:
    cursor = WindowCursor(since=T0, seen={"1": iso(T0), "2": iso(T0)})
    fresh, after, more = cursor.advance(
        _hits(("1", 0), ("2", 5), ("3", 5)), None, window_start=_same, page_size=10
    )
    assert [h.id for h in fresh] == ["2", "3"]
    assert after.since == T0 + timedelta(seconds=5) and not more
    assert set(after.seen) == {"2", "3"}, "entries older than the window are pruned"


def test_restart_when_the_window_holds_less_than_a_page() -> None:
    fresh, after, more = WindowCursor().advance(
        _hits(("1", 0), ("2", 1), ("3", 2)), "2", window_start=_same, page_size=3
    )
    assert [h.id for h in fresh] == ["1", "2", "3"]
    assert more and after.token is None, "page 1 from the newer bound is guaranteed to hold new records"
    assert after.query(_same) == (T0 + timedelta(seconds=2), None)


def test_a_page_of_ties_follows_the_querys_own_next_page() -> None:
    cursor = WindowCursor(since=T0 - timedelta(seconds=1))
    _, after, more = cursor.advance(_hits(("1", 0), ("2", 0), ("3", 0)), "2", window_start=_same, page_size=3)
    assert more and after.token == "2"
    assert after.query(_same) == (T0 - timedelta(seconds=1), "2"), "same bound, next page"


def test_round_trip_and_corrupt_cursor() -> None:
    cursor = WindowCursor(since=T0, seen={"7": iso(T0)}, bound=T0, token="abc")
    assert WindowCursor.decode(cursor.encode(), source="s") == cursor
    with pytest.raises(ConfigError, match="s: stored cursor"):
        WindowCursor.decode('{"since": 12}', source="s")


class _ListApi:
    """A list endpoint: updated_at >= bound, ascending by (updated_at, id), numbered pages.

    ``churn`` tickets are updated while the client pages (one per request, at random), which moves
    them to the end of the listing and shifts every later row forwards, as a live helpdesk does.
    """

    def __init__(self, page_size: int, rng: random.Random, churn: int = 0) -> None:
        self.rows: dict[str, datetime] = {}
        self.page_size = page_size
        self.rng = rng
        self.churn = churn
        self.clock = T0 + timedelta(hours=1)

    def update(self, ident: str) -> None:
        self.clock += timedelta(seconds=1)
        self.rows[ident] = self.clock

    def fetch(self, bound: datetime | None, page: int) -> tuple[list[Hit[None]], bool]:
        if self.churn and self.rng.random() < 0.5:
            self.churn -= 1
            self.update(self.rng.choice(sorted(self.rows)))
        rows = sorted((when, ident) for ident, when in self.rows.items() if bound is None or when >= bound)
        chunk = rows[(page - 1) * self.page_size : page * self.page_size]
        return [Hit(ident, when, None) for when, ident in chunk], page * self.page_size < len(rows)


def _drain(
    api: _ListApi, stored: str | None, overlap: timedelta
) -> tuple[list[tuple[str, datetime]], str | None]:
    def window(newest: datetime) -> datetime:
        return newest - overlap

    emitted: list[tuple[str, datetime]] = []
    for _ in range(1000):
        cursor = WindowCursor.decode(stored, source="sim")
        bound, token = cursor.query(window)
        hits, next_token = read_page_with_lookback(functools.partial(api.fetch, bound), token)
        fresh, after, more = cursor.advance(hits, next_token, window_start=window, page_size=api.page_size)
        emitted += [(h.id, h.updated) for h in fresh]
        stored = after.encode()
        if not more:
            return emitted, stored
    raise AssertionError("the cursor never finished")


@pytest.mark.parametrize("seed", range(12))
def test_simulated_source_with_heavy_ties_loses_and_repeats_nothing(seed: int) -> None:
    rng = random.Random(seed)
    api = _ListApi(page_size=rng.choice([2, 3, 5]), rng=rng)
    overlap = timedelta(seconds=rng.choice([0, 1, 60]))
    for n in range(40):
        api.rows[str(n)] = T0 + timedelta(seconds=rng.choice([0, 0, 0, 1, 2, 2, 7]))
    emitted, stored = _drain(api, None, overlap)
    assert sorted(i for i, _ in emitted) == sorted(api.rows), "each record exactly once"
    updated = rng.sample(sorted(api.rows), 9)
    for ident in updated:
        api.rows[ident] = api.clock  # nine records updated in one second
    api.rows["new"] = api.clock
    emitted, _ = _drain(api, stored, overlap)
    assert sorted(i for i, _ in emitted) == sorted([*updated, "new"]), "only what changed since the cursor"


@pytest.mark.parametrize("seed", range(12))
def test_updates_while_paging_through_ties_lose_nothing(seed: int) -> None:
    rng = random.Random(seed)
    api = _ListApi(page_size=rng.choice([2, 3, 5]), rng=rng, churn=15)
    for n in range(40):
        api.rows[str(n)] = T0  # one big block of ties: the cursor must follow page numbers
    emitted, stored = _drain(api, None, timedelta(seconds=1))
    api.churn = 0
    # An update that lands while the last page is read belongs to the next poll.
    next_poll, _ = _drain(api, stored, timedelta(seconds=1))
    emitted += next_poll
    assert len(emitted) == len(set(emitted)), "no version of a ticket emitted twice"
    latest = set(api.rows.items())
    assert latest <= set(emitted), f"latest versions never emitted: {sorted(latest - set(emitted))}"
