"""The TicketSQL an RT cursor turns into, without a server (the real-RT tests check what RT does with it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors.base import WriteBack
from connectors.http import SourceHttp
from connectors.rt import RtConnector


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(base_url="http://rt.invalid/REST/2.0") as client:
        yield client


def _connector(client: httpx.Client, **options: Any) -> RtConnector:
    return RtConnector("rt", SourceHttp(client, source="rt"), **options)


def _cursor(connector: RtConnector, raw: str | None) -> Any:
    return connector._read_cursor(raw)


def test_first_pull_without_start_asks_for_everything_in_the_queues(client: httpx.Client) -> None:
    connector = _connector(client, queues=["Support", "O'Brien's"])

    query = connector.search_query(_cursor(connector, None))

    assert query == "(Queue = 'Support' OR Queue = 'O\\'Brien\\'s')"


def test_window_and_seen_versions_in_the_users_timezone(client: httpx.Client) -> None:
    connector = _connector(client, queues=["Support"], timezone="Europe/Berlin", overlap_seconds=5)
    raw = (
        '{"v": 1, "t": "2026-07-01T10:00:05Z", "seen": {"12": "2026-07-01T10:00:04Z",'
        ' "7": "2026-07-01T10:00:05Z"}, "fresh": []}'
    )

    query = connector.search_query(_cursor(connector, raw))

    # Berlin is UTC+2 in July: RT reads the dates as the API user's wall time.
    assert query == (
        "(Queue = 'Support') AND LastUpdated >= '2026-07-01 12:00:00'"
        " AND (id != 7 OR LastUpdated > '2026-07-01 12:00:05')"
        " AND (id != 12 OR LastUpdated > '2026-07-01 12:00:04')"
    )


def test_start_option_and_extra_query(client: httpx.Client) -> None:
    connector = _connector(
        client, start=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), query="Status != 'rejected'"
    )

    query = connector.search_query(_cursor(connector, None))

    assert query == "(Status != 'rejected') AND LastUpdated >= '2026-01-02 03:04:00'"


def test_labels_map_tags_and_fields_onto_configured_custom_fields(client: httpx.Client) -> None:
    connector = _connector(client, custom_fields={"language": "TF Language", "priority": "TF Priority"})
    write_back = WriteBack(
        ticket_external_id="1",
        tags=["tf-lang-pt", "tf-intent-refund", "tf-priority-low", "vip"],
        fields={"priority": "urgent"},
        idempotency_key="k",
    )

    assert connector.labels_for(write_back) == {"TF Language": "pt", "TF Priority": "urgent"}


def test_floor_is_a_keyset_on_lastupdated_and_id(client: httpx.Client) -> None:
    connector = _connector(client, overlap_seconds=2)
    raw = (
        '{"v": 1, "t": "2026-07-01T10:00:05Z", "seen": {}, "fresh": [],'
        ' "floor_t": "2026-07-01T10:00:04Z", "floor_id": 41}'
    )

    query = connector.search_query(_cursor(connector, raw))

    assert query == (
        "LastUpdated >= '2026-07-01 10:00:03'"
        " AND (LastUpdated > '2026-07-01 10:00:04' OR (LastUpdated >= '2026-07-01 10:00:04' AND id > 41))"
    )


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://rt.example.com/REST/2.0", "https://rt.example.com/REST/2.0/tickets"),
        ("https://rt.example.com/REST/2.0/", "https://rt.example.com/REST/2.0/tickets"),
        ("https://example.com/rt", "https://example.com/rt/REST/2.0/tickets"),
        ("https://rt.example.com", "https://rt.example.com/REST/2.0/tickets"),
    ],
)
def test_paths_work_from_the_web_root_or_the_api_root(base_url: str, expected: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        connector = _connector(client)
        assert str(client.build_request("GET", connector._url("tickets")).url) == expected
