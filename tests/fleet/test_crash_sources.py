"""Crash test with real processes: `ticketfleet sources poll` is killed with SIGKILL between pages
(while the next export page is in flight), restarted, and must have stored every ticket exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from db.models import ConnectorCursor, Message, Ticket, WorkItem
from db.session import transaction
from tests.fakes.zendesk import FakeZendesk

REPO_ROOT = Path(__file__).resolve().parents[2]
TICKETS = 11
PAGE_SIZE = 3


def _poller(tmp_path: Path, base_url: str, database_url: str, redis_url: str) -> subprocess.Popen[bytes]:
    sources = tmp_path / "sources.toml"
    sources.write_text(
        f'[[sources]]\nname = "zd"\nkind = "zendesk"\nbase_url = "{base_url}"\nlane = "live"\n'
        f'token_env = "TF_TEST_ZD_TOKEN"\ntimeout_seconds = 30\n'
        f'[sources.options]\nemail = "bot@example.com"\npage_size = {PAGE_SIZE}\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TICKETFLEET_DATABASE_URL": database_url,
        "TICKETFLEET_REDIS_URL": redis_url,
        "TICKETFLEET_SOURCES_FILE": str(sources),
        "TF_TEST_ZD_TOKEN": "zd-token",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ticketfleet.cli", "sources", "poll", "zd", "--once", "--force"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stored(database_url: str) -> tuple[list[str], int, int, str | None]:
    with transaction(database_url) as session:
        ids = sorted(session.execute(select(Ticket.external_id)).scalars())
        messages = session.execute(select(func.count()).select_from(Message)).scalar_one()
        items = session.execute(select(func.count()).select_from(WorkItem)).scalar_one()
        cursor = session.execute(select(ConnectorCursor.cursor)).scalar_one_or_none()
    return ids, messages, items, cursor


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_poller_killed_between_pages_resumes_without_gaps_or_duplicates(
    zendesk: tuple[FakeZendesk, str], clean_db: str, flushed_redis: str, tmp_path: Path
) -> None:
    api, base_url = zendesk
    created = sorted(
        str(api.create_ticket(subject=f"t{i}", text=f"ticket number {i}")) for i in range(TICKETS)
    )
    api.advance(61)
    api.export_delay = 10.0  # every export page after the first hangs: the kill lands between pages

    first = _poller(tmp_path, base_url, clean_db, flushed_redis)
    try:
        _wait_for(lambda: _stored(clean_db)[3] is not None, 60, "the first page's commit")
        exports = lambda: sum(r.path.endswith("/cursor.json") for r in api.requests)  # noqa: E731
        _wait_for(lambda: exports() >= 2, 30, "the second export request")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    ids, messages, items, cursor = _stored(clean_db)
    assert first.returncode == -signal.SIGKILL
    assert ids == created[:PAGE_SIZE], "exactly the first page was committed before the kill"
    assert (messages, items) == (PAGE_SIZE, PAGE_SIZE)
    assert cursor is not None

    api.export_delay = 0.0
    second = _poller(tmp_path, base_url, clean_db, flushed_redis)
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output.decode()
    ids, messages, items, _ = _stored(clean_db)
    assert ids == created, "every ticket stored, none skipped, none twice"
    assert (messages, items) == (TICKETS, TICKETS), "one message and one work item per ticket"
    resumed_from = [r.arg("cursor") for r in api.requests if r.path.endswith("/cursor.json")][2]
    assert resumed_from == cursor, "the restarted poller resumed from the committed cursor"
