"""The poller on real PostgreSQL: a page and its cursor commit together, failures back off, one
poller per source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from connectors.base import AuthError, Connector, PullPage, RateLimited, WriteBack, WriteBackReceipt
from connectors.files import FilesConnector
from connectors.sources_file import SourceConfig
from db.models import ConnectorCursor, Message, SourceHealth, Ticket, WorkItem
from db.session import get_engine, transaction
from db.sources import backoff_seconds
from ticketfleet.core.inbound import InboundMessage, InboundTicket
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.polling import poll_source, source_lock


def _source(tmp_path: Path, **overrides: object) -> SourceConfig:
    values: dict[str, object] = {
        "name": "inbox",
        "kind": "files",
        "lane": "backlog",
        "options": {"path": str(tmp_path / "*.jsonl"), "page_size": 2},
    }
    values.update(overrides)
    return SourceConfig.model_validate(values)


def _write(tmp_path: Path, ids: list[str]) -> None:
    with (tmp_path / "in.jsonl").open("a") as handle:
        for ext in ids:
            handle.write(json.dumps({"external_id": ext, "text": f"help with {ext}"}) + "\n")


@pytest.fixture
def poll_settings(store_settings: Settings, flushed_redis: str) -> Settings:
    from ticketfleet.broker import app, configure

    configure(app, store_settings, flushed_redis)
    return store_settings


class FailingAfter(Connector):
    """Serves the wrapped connector's pages, then raises on pull number ``fail_at``."""

    kind = "files"

    def __init__(self, inner: Connector, fail_at: int, error: Exception) -> None:
        super().__init__(inner.name)
        self.inner, self.fail_at, self.error, self.pulls = inner, fail_at, error, 0

    def pull(self, cursor: str | None) -> PullPage:
        self.pulls += 1
        if self.pulls == self.fail_at:
            raise self.error
        return self.inner.pull(cursor)

    def push(self, write_back: WriteBack) -> WriteBackReceipt:
        raise NotImplementedError

    def check(self) -> str:
        return "test"


def _counts(database_url: str) -> tuple[int, int, int, str | None]:
    with transaction(database_url) as session:
        tickets = session.execute(select(func.count()).select_from(Ticket)).scalar_one()
        messages = session.execute(select(func.count()).select_from(Message)).scalar_one()
        items = session.execute(select(func.count()).select_from(WorkItem)).scalar_one()
        cursor = session.execute(select(ConnectorCursor.cursor)).scalar_one_or_none()
    return tickets, messages, items, cursor


def test_pages_are_stored_with_their_cursor_and_queued(
    tmp_path: Path, clean_db: str, poll_settings: Settings
) -> None:
    _write(tmp_path, ["a", "b", "c", "d", "e"])
    report = poll_source(_source(tmp_path), settings=poll_settings, database_url=clean_db)
    assert (report.pages, report.items, report.queued, report.error) == (3, 5, 5, None)
    tickets, messages, items, cursor = _counts(clean_db)
    assert (tickets, messages, items) == (5, 5, 5)
    assert cursor is not None and json.loads(cursor)["files"]
    again = poll_source(_source(tmp_path), settings=poll_settings, database_url=clean_db)
    assert again.items == 0 and _counts(clean_db)[:3] == (5, 5, 5)


def test_a_failed_page_keeps_the_pages_before_it_and_their_cursor(
    tmp_path: Path, clean_db: str, poll_settings: Settings
) -> None:
    _write(tmp_path, ["a", "b", "c", "d", "e"])
    source = _source(tmp_path)
    inner = FilesConnector("inbox", path=str(tmp_path / "*.jsonl"), page_size=2)
    report = poll_source(
        source,
        settings=poll_settings,
        database_url=clean_db,
        connector_factory=lambda _: FailingAfter(inner, 2, RateLimited("slow down", retry_after=90)),
    )
    assert report.pages == 1 and report.error is not None and report.error.startswith("RateLimited")
    tickets, _, _, cursor = _counts(clean_db)
    assert tickets == 2, "the committed first page stays"
    # The stored cursor is exactly the first page's: a resumed pull starts right after it.
    assert cursor == FilesConnector("inbox", path=str(tmp_path / "*.jsonl"), page_size=2).pull(None).cursor
    with transaction(clean_db) as session:
        health = session.execute(select(SourceHealth)).scalar_one()
        wait = session.execute(
            select(func.extract("epoch", SourceHealth.next_poll_at - func.now()))
        ).scalar_one()
    assert health.consecutive_failures == 1 and not health.failing
    assert health.last_error is not None and health.last_error.startswith("RateLimited")
    assert 85 < float(wait) <= 90, "Retry-After (90 s) wins over the 30 s first back-off"
    skipped = poll_source(source, settings=poll_settings, database_url=clean_db)
    assert skipped.skipped is not None and "backing off" in skipped.skipped
    resumed = poll_source(source, settings=poll_settings, database_url=clean_db, force=True)
    assert resumed.error is None and resumed.items == 3
    assert _counts(clean_db)[:3] == (5, 5, 5)
    with transaction(clean_db) as session:
        health = session.execute(select(SourceHealth)).scalar_one()
    assert health.consecutive_failures == 0 and health.next_poll_at is None
    assert health.last_success_at is not None and health.items_pulled == 5


def test_permanent_error_marks_the_source_failing_at_the_cap(
    tmp_path: Path, clean_db: str, poll_settings: Settings
) -> None:
    _write(tmp_path, ["a"])
    inner = FilesConnector("inbox", path=str(tmp_path / "*.jsonl"))
    report = poll_source(
        _source(tmp_path),
        settings=poll_settings,
        database_url=clean_db,
        connector_factory=lambda _: FailingAfter(inner, 1, AuthError("401 on GET /x", status=401)),
    )
    assert report.error is not None and report.error.startswith("AuthError")
    with transaction(clean_db) as session:
        health = session.execute(select(SourceHealth)).scalar_one()
        wait = session.execute(
            select(func.extract("epoch", SourceHealth.next_poll_at - func.now()))
        ).scalar_one()
    assert health.failing and float(wait) > poll_settings.source_backoff_cap_s - 10


def test_backoff_doubles_to_the_cap_and_honours_retry_after() -> None:
    delays = [
        backoff_seconds(n, permanent=False, retry_after=None, base_s=30, cap_s=1800) for n in range(1, 9)
    ]
    assert delays == [30, 60, 120, 240, 480, 960, 1800, 1800]
    assert backoff_seconds(1, permanent=False, retry_after=300, base_s=30, cap_s=1800) == 300
    assert backoff_seconds(1, permanent=True, retry_after=None, base_s=30, cap_s=1800) == 1800


def test_rejected_records_are_counted_without_blocking_good_ones(
    tmp_path: Path, clean_db: str, poll_settings: Settings
) -> None:
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"external_id": "ok", "text": "fine"}) + "\n" + json.dumps({"external_id": "bad"}) + "\n"
    )
    report = poll_source(_source(tmp_path), settings=poll_settings, database_url=clean_db)
    assert (report.items, report.rejected) == (1, 1)
    with transaction(clean_db) as session:
        health = session.execute(select(SourceHealth)).scalar_one()
    assert health.items_rejected == 1
    assert health.last_rejections == [{"id": "in.jsonl:2", "reason": health.last_rejections[0]["reason"]}]
    assert "needs 'text'" in health.last_rejections[0]["reason"]


def test_a_second_poller_of_the_same_source_is_turned_away(
    tmp_path: Path, clean_db: str, poll_settings: Settings
) -> None:
    _write(tmp_path, ["a"])
    with source_lock(clean_db, "inbox") as held:
        assert held
        report = poll_source(_source(tmp_path), settings=poll_settings, database_url=clean_db)
        assert report.skipped == "another poller holds this source" and report.items == 0
    assert poll_source(_source(tmp_path), settings=poll_settings, database_url=clean_db).items == 1


def test_cursor_never_commits_without_its_items(
    tmp_path: Path, clean_db: str, poll_settings: Settings
) -> None:
    """A page whose items cannot be stored (the database refuses) leaves the cursor where it was."""

    class Poisoned(FilesConnector):
        def pull(self, cursor: str | None) -> PullPage:
            page = super().pull(cursor)
            # An empty body, built bypassing validation, that the database's CHECK refuses: the
            # page's insert fails after its good items were written in the same transaction.
            empty = InboundMessage.model_construct(
                role="customer", text="", external_id=None, created_at=None
            )
            poison = InboundTicket.model_construct(
                external_id="poison",
                source=None,
                channel="ticket",
                subject=None,
                requester=None,
                locale=None,
                country=None,
                messages=[empty],
                text=None,
            )
            return page.model_copy(update={"items": [*page.items, poison]})

    _write(tmp_path, ["a", "b"])
    with pytest.raises(Exception, match="body_not_empty"):
        poll_source(
            _source(tmp_path),
            settings=poll_settings,
            database_url=clean_db,
            connector_factory=lambda s: Poisoned("inbox", path=str(tmp_path / "*.jsonl"), page_size=2),
        )
    assert _counts(clean_db) == (0, 0, 0, None)
    with get_engine(clean_db).connect() as conn:  # the lock died with the failed poll
        assert (
            conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar_one() == 0
        )
