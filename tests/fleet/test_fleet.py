"""Real Celery worker processes on real Redis and PostgreSQL: the fault tests.

kill -9 mid-batch, Redis FLUSHALL mid-run and a poison item. Short leases and a 1 s reaper make the
recovery paths run in seconds; the code paths are the production ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import AuditEvent, Draft, ItemState, TriageResult, WorkItem
from db.session import transaction
from tests.support.engines import POISON_MARKER
from tests.support.fleet import Fleet, states, wait_until, worker_env
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.importing import import_file
from ticketfleet.services import redis_client

pytestmark = pytest.mark.integration

TEXTS = [
    "My parcel has not arrived after two weeks, order #A-{n}.",
    "I was charged twice for my subscription this month ({n}).",
    "Die App stürzt beim Start ab, Version 4.{n}.",
    "Je n'arrive plus à me connecter à mon compte ({n}).",
]


@pytest.fixture
def fleet(clean_db: str, flushed_redis: str, settings: Settings, tmp_path: Path) -> Iterator[Fleet]:
    env = worker_env(
        clean_db,
        flushed_redis,
        settings.model,
        tmp_path / "data",
        ENGINE_FACTORY="tests.support.engines:make",
        MAX_NEW_TOKENS="4",
        LEASE_SECONDS="4",
        STUCK_AFTER_SECONDS="2",
        MAX_ATTEMPTS="3",
        RETRY_BACKOFF_S="0.2",
    )
    handle = Fleet(env=env, log_dir=tmp_path)
    yield handle
    handle.stop_all()


def _import(tmp_path: Path, settings: Settings, url: str, texts: list[str], lane: str) -> int:
    path = tmp_path / "items.jsonl"
    path.write_text(
        "".join(json.dumps({"external_id": f"F-{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    from ticketfleet.broker import app, configure

    configure(app, settings, settings.redis_url_value())
    report = import_file(path, settings=settings, database_url=url, source="fleet", lane=lane)
    assert report.queued == len(texts)
    return report.queued


def _texts(n: int) -> list[str]:
    return [TEXTS[i % len(TEXTS)].format(n=i) for i in range(n)]


def _assert_each_result_once(url: str, expected: int) -> None:
    with transaction(url) as s:
        per_message = s.execute(
            select(TriageResult.message_id, func.count()).group_by(TriageResult.message_id)
        ).all()
        assert len(per_message) == expected
        assert {n for _, n in per_message} == {1}
        drafts = s.execute(select(func.count()).select_from(Draft)).scalar_one()
        assert drafts == expected  # single-message tickets: a reply is due for each
        decided = s.execute(
            select(func.count()).where(AuditEvent.event_type == "triage.decided")
        ).scalar_one()
        assert decided == expected


def test_kill9_mid_batch_then_restart_processes_everything_once(
    fleet: Fleet, clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    doomed = fleet.start("tickets", TICKETFLEET_TEST_BATCH_DELAY_S="30")
    n = _import(tmp_path, settings, clean_db, _texts(12), "live")

    def doomed_is_mid_batch() -> bool:
        return states(clean_db).get("processing", 0) > 0

    wait_until(doomed_is_mid_batch, 60, "the first worker to claim a batch")
    doomed.kill9()
    fleet.start("chat,tickets,backlog", beat=True)
    wait_until(lambda: states(clean_db).get("done", 0) == n, 120, f"all {n} items done")
    _assert_each_result_once(clean_db, n)
    with transaction(clean_db) as s:
        retried = s.execute(select(func.count()).where(WorkItem.attempts > 1)).scalar_one()
    assert retried >= 1  # the killed batch was claimed again after its lease expired


def test_redis_flushall_mid_run_loses_nothing(
    fleet: Fleet, clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    fleet.start("chat,tickets,backlog", beat=True, TICKETFLEET_TEST_BATCH_DELAY_S="0.5")
    n = _import(tmp_path, settings, clean_db, _texts(40), "backlog")
    wait_until(lambda: states(clean_db).get("done", 0) >= 4, 60, "the first batch")
    assert states(clean_db).get("queued", 0) > 0  # work is still waiting in Redis...
    redis_client(settings.redis_url_value() or "").flushall()  # ...and now it is gone
    wait_until(lambda: states(clean_db).get("done", 0) == n, 120, f"all {n} items done after FLUSHALL")
    _assert_each_result_once(clean_db, n)


def test_poison_item_goes_dead_and_the_lane_keeps_flowing(
    fleet: Fleet, clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    fleet.start("chat,tickets,backlog", beat=True)
    texts = _texts(11)
    texts.insert(5, f"{POISON_MARKER}: this ticket breaks the engine")
    n = _import(tmp_path, settings, clean_db, texts, "tickets")
    wait_until(lambda: states(clean_db).get("dead", 0) == 1, 120, "the poison item to die")
    wait_until(lambda: states(clean_db).get("done", 0) == n - 1, 60, "the other items")
    with transaction(clean_db) as s:
        dead = s.execute(select(WorkItem).where(WorkItem.state == ItemState.dead)).scalar_one()
    assert dead.attempts == 3 and "PoisonError" in (dead.last_error or "")
    _assert_each_result_once(clean_db, n - 1)
