"""Backlog import: validation, the per-line error report, idempotency, lanes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from connectors.import_format import FileFormatError, parse_csv, parse_jsonl
from db.models import ItemState, Message, Ticket, WorkItem
from db.session import transaction
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.importing import import_file

SAMPLE = Path(__file__).resolve().parents[2] / "ticketfleet" / "data" / "sample_tickets.jsonl"


def _jsonl(*records: object) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def test_each_kind_of_bad_line_is_reported_and_good_lines_survive() -> None:
    data = _jsonl(
        {"external_id": "ok-1", "text": "Where is my parcel?"},
        b'{"external_id": "broken", "text": ',
        {"text": "no id here"},
        b'{"external_id": "bad-utf8", "text": "caf\xe9"}',
        {"external_id": "empty", "text": "   "},
        {"external_id": "too-long", "text": "x" * 101},
        {"external_id": "ok-2", "messages": [{"role": "customer", "text": "Refund please"}]},
        {"external_id": "agent-only", "messages": [{"role": "agent", "text": "Hello"}]},
        [1, 2, 3],
    )
    parsed = list(parse_jsonl(data, max_body_chars=100))
    good = [p.ticket.external_id for p in parsed if p.ticket]
    errors = {p.error.line: p.error.error for p in parsed if p.error}
    assert good == ["ok-1", "ok-2"]
    assert "malformed JSON" in errors[2]
    assert "external_id: field required" in errors[3]
    assert "invalid UTF-8" in errors[4]
    assert "text" in errors[5]
    assert "over the cap of 100" in errors[6]
    assert "customer" in errors[8]
    assert "expected a JSON object" in errors[9]


def test_csv_rows_with_one_id_form_a_thread() -> None:
    data = (
        b"external_id,role,text,channel,locale\n"
        b"T-1,customer,My order is late,ticket,en-GB\n"
        b"T-2,customer,Hallo,chat,de-DE\n"
        b"T-1,agent,Sorry! Checking.,ticket,en-GB\n"
        b"T-1,customer,Any news?,ticket,en-GB\n"
        b"T-3,customer,,ticket,en-GB\n"
    )
    parsed = list(parse_csv(data, max_body_chars=1000))
    tickets = {p.ticket.external_id: p.ticket for p in parsed if p.ticket}
    assert [m.role for m in tickets["T-1"].messages] == ["customer", "agent", "customer"]
    assert tickets["T-2"].channel == "chat"
    assert [p.error.line for p in parsed if p.error] == [6]


def test_csv_without_required_columns_is_a_file_error() -> None:
    with pytest.raises(FileFormatError, match="text"):
        list(parse_csv(b"external_id,body\n1,hi\n", max_body_chars=10))


def _counts(url: str) -> tuple[int, int, int]:
    with transaction(url) as s:
        return (
            s.execute(select(func.count()).select_from(Ticket)).scalar_one(),
            s.execute(select(func.count()).select_from(Message)).scalar_one(),
            s.execute(select(func.count()).select_from(WorkItem)).scalar_one(),
        )


def test_reimport_of_the_sample_adds_nothing(clean_db: str, settings: Settings) -> None:
    first = import_file(SAMPLE, settings=settings, database_url=clean_db, source="demo")
    assert not first.errors
    assert first.lines_ok >= 150
    before = _counts(clean_db)
    second = import_file(SAMPLE, settings=settings, database_url=clean_db, source="demo")
    assert second.new_messages == 0
    assert _counts(clean_db) == before
    assert before[0] == first.lines_ok


def test_follow_up_message_is_appended_to_the_thread(
    clean_db: str, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "t.jsonl"
    thread = [{"role": "customer", "text": "My invoice is wrong", "external_id": "m1"}]
    path.write_bytes(_jsonl({"external_id": "T-9", "messages": thread}))
    import_file(path, settings=settings, database_url=clean_db, source="s")
    thread.append({"role": "customer", "text": "Hello? Anyone?", "external_id": "m2"})
    path.write_bytes(_jsonl({"external_id": "T-9", "messages": thread}))
    report = import_file(path, settings=settings, database_url=clean_db, source="s")
    assert report.new_messages == 1
    with transaction(clean_db) as s:
        bodies = s.execute(select(Message.body).order_by(Message.position)).scalars().all()
    assert bodies == ["My invoice is wrong", "Hello? Anyone?"]


def test_live_lane_routes_by_channel_and_queues_after_commit(
    clean_db: str, settings: Settings, flushed_redis: str, tmp_path: Path
) -> None:
    from ticketfleet.broker import app, configure, lane_depths
    from ticketfleet.services import redis_client

    configure(app, settings, flushed_redis)
    path = tmp_path / "live.jsonl"
    path.write_bytes(
        _jsonl(
            {"external_id": "c1", "channel": "chat", "text": "hi where is my order"},
            {"external_id": "t1", "channel": "ticket", "subject": "Refund", "text": "Please refund order 12"},
            {
                "external_id": "t2",
                "messages": [
                    {"role": "customer", "text": "App crashes on start"},
                    {"role": "agent", "text": "Which version?"},
                ],
            },
        )
    )
    report = import_file(path, settings=settings, database_url=clean_db, source="s", lane="live")
    assert report.queued == 3
    with transaction(clean_db) as s:
        rows = s.execute(
            select(WorkItem.lane, WorkItem.state, WorkItem.want_draft).order_by(WorkItem.id)
        ).all()
    assert [(lane, state) for lane, state, _ in rows] == [
        ("chat", ItemState.queued),
        ("tickets", ItemState.queued),
        ("tickets", ItemState.queued),
    ]
    # The agent answered last in t2: triage it, but no reply is due.
    assert [want for _, _, want in rows] == [True, True, False]
    assert lane_depths(redis_client(flushed_redis), ("chat", "tickets", "backlog")) == {
        "chat": 1,
        "tickets": 1,
        "backlog": 0,
    }


def test_queue_messages_carry_ids_only(
    clean_db: str, settings: Settings, flushed_redis: str, tmp_path: Path
) -> None:
    import base64

    from ticketfleet.broker import app, configure
    from ticketfleet.services import redis_client

    configure(app, settings, flushed_redis)
    secret = "card 4111 1111 1111 1111, call me at +44 20 7946 0958"
    path = tmp_path / "pii.jsonl"
    path.write_bytes(_jsonl({"external_id": "p1", "subject": "Billing", "text": secret}))
    import_file(path, settings=settings, database_url=clean_db, source="s", lane="backlog")
    raw = redis_client(flushed_redis).lrange("backlog", 0, -1)
    assert len(raw) == 1
    envelope = json.loads(raw[0])
    body = json.loads(base64.b64decode(envelope["body"]))
    args, kwargs, _ = body
    with transaction(clean_db) as s:
        item_ids = list(s.execute(select(WorkItem.id)).scalars())
    assert args == [item_ids] and kwargs == {}
    assert b"4111" not in raw[0] and b"Billing" not in raw[0]
