"""The shared "updated since" window cursor: ties, overlap, restarts and its stored form (pure logic)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import ConfigError
from connectors.window_cursor import Hit, WindowCursor, iso, parse_timestamp

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
    """A list endpoint: updated_at >= bound, ascending by (updated_at, id), page numbers."""

    def __init__(self, page_size: int) -> None:
        self.rows: dict[str, datetime] = {}
        self.page_size = page_size

    def fetch(self, bound: datetime | None, token: str | None) -> tuple[list[Hit[None]], str | None]:
        page = int(token or 1)
        rows = sorted((when, ident) for ident, when in self.rows.items() if bound is None or when >= bound)
        chunk = rows[(page - 1) * self.page_size : page * self.page_size]
        more = page * self.page_size < len(rows)
        return [Hit(ident, when, None) for when, ident in chunk], (str(page + 1) if more else None)


def _drain(api: _ListApi, stored: str | None, overlap: timedelta) -> tuple[list[str], str | None]:
    def window(newest: datetime) -> datetime:
        return newest - overlap

    emitted: list[str] = []
    for _ in range(1000):
        cursor = WindowCursor.decode(stored, source="sim")
        hits, token = api.fetch(*cursor.query(window))
        fresh, after, more = cursor.advance(hits, token, window_start=window, page_size=api.page_size)
        emitted += [h.id for h in fresh]
        stored = after.encode()
        if not more:
            return emitted, stored
    raise AssertionError("the cursor never finished")


@pytest.mark.parametrize("seed", range(12))
def test_simulated_source_with_heavy_ties_loses_and_repeats_nothing(seed: int) -> None:
    rng = random.Random(seed)
    api = _ListApi(page_size=rng.choice([2, 3, 5]))
    overlap = timedelta(seconds=rng.choice([0, 1, 60]))
    for n in range(40):
        api.rows[str(n)] = T0 + timedelta(seconds=rng.choice([0, 0, 0, 1, 2, 2, 7]))
    emitted, stored = _drain(api, None, overlap)
    assert sorted(emitted, key=int) == sorted(api.rows, key=int), "each record exactly once"
    later = T0 + timedelta(minutes=5)
    updated = rng.sample(sorted(api.rows), 9)
    for ident in updated:
        api.rows[ident] = later  # nine records updated in one second
    api.rows["new"] = later
    emitted, _ = _drain(api, stored, overlap)
    assert sorted(emitted) == sorted([*updated, "new"]), "only what changed since the cursor"
