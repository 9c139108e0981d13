"""The tamper-evident audit log on real PostgreSQL: enforcement, chain, verify, anchoring, concurrency."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from db.audit import AuditTrail, record_events
from db.audit_chain import GENESIS_HASH, ChainHead, check_anchor, read_head, row_hash, verify_chain
from db.ingest import ingest_tickets
from db.migrate import upgrade
from db.models import AuditEvent, ItemState, WorkItem
from db.session import get_engine, transaction
from db.work import claim, create_work_items, mark_done, mark_failed, mark_queued, reap
from tests.support.audit import audit_triggers_suspended, insert_events
from ticketfleet.cli.main import app
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.settings import get_settings

APP_ROLE = "ticketfleet_app"
KEY = "test-key-0123456789abcdef"


@pytest.fixture
def conn(database_url: str) -> Iterator[Connection]:
    """A connection (as the superuser/owner) inside a transaction that is rolled back: tampering in
    a test never leaves the transaction."""
    connection = get_engine(database_url).connect()
    outer = connection.begin()
    try:
        yield connection
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture
def cli_env(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI pointed at the test database; settings re-read after each environment change."""
    monkeypatch.setenv("TICKETFLEET_DATABASE_URL", clean_db)
    monkeypatch.delenv("TICKETFLEET_AUDIT_HMAC_KEY", raising=False)
    get_settings.cache_clear()
    yield clean_db
    get_settings.cache_clear()


def _set_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("TICKETFLEET_AUDIT_HMAC_KEY", key)
    get_settings.cache_clear()


def _seed(conn: Connection, n: int) -> list[int]:
    """n events (ids returned in seq order), written like the fleet writes them."""
    with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
        record_events(
            session,
            actor="worker-1",
            event_type="item.done",
            entity_type="work_item",
            entries=[
                (i, {"n": i, "label": 'å€ "quoted" \\ ok', "nested": {"b": 1, "a": [1.5, None]}})
                for i in range(n)
            ],
            before={i: {"state": "processing"} for i in range(n)},
            after={i: {"state": "done"} for i in range(n)},
        )
        session.commit()  # releases the savepoint into the test's transaction
    return list(conn.execute(text("SELECT id FROM audit_events ORDER BY seq")).scalars())


def _seqs(conn: Connection) -> list[int]:
    return list(conn.execute(text("SELECT seq FROM audit_events ORDER BY seq")).scalars())


def _tamper(conn: Connection, *statements: str) -> None:
    """What an attacker holding owner rights does: switch the guard off, edit, switch it back on."""
    with audit_triggers_suspended(conn, "audit_events_no_update_delete", "audit_events_chain"):
        for statement in statements:
            conn.execute(text(statement))


def _problems(conn: Connection) -> list[tuple[int | None, str]]:
    return [(f.seq, f.problem) for f in verify_chain(conn, chunk_size=100).findings]


# --- migration ---------------------------------------------------------------------------------------


def test_migration_chains_rows_written_before_it(fresh_database) -> None:  # type: ignore[no-untyped-def]
    url = fresh_database()
    upgrade(url, "ee58a9b51894")
    with get_engine(url).begin() as c:
        c.execute(
            text(
                "INSERT INTO audit_events (actor, event_type, entity_type, entity_id, data)"
                " SELECT 'old', 'item.failed', 'work_item', g, jsonb_build_object('n', g)"
                " FROM generate_series(1, 5) AS g"
            )
        )
    upgrade(url)
    with get_engine(url).begin() as c:
        _seed(c, 2)  # new rows continue the back-filled chain
        report = verify_chain(c)
        assert report.ok and report.rows == 7 and _seqs(c) == list(range(1, 8))


# --- enforcement -----------------------------------------------------------------------------------


@pytest.mark.parametrize("replication_role", ["origin", "replica"])
@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events", "TRUNCATE audit_events"],
)
def test_triggers_refuse_rewrites_even_as_replica(
    conn: Connection, statement: str, replication_role: str
) -> None:
    _seed(conn, 2)
    conn.execute(text(f"SET LOCAL session_replication_role = {replication_role}"))
    with pytest.raises(ProgrammingError, match="append-only"), conn.begin_nested():
        conn.execute(text(statement))
    assert len(_seqs(conn)) == 2


def test_app_role_can_insert_and_read_but_never_change(conn: Connection) -> None:
    conn.execute(text(f"SET LOCAL ROLE {APP_ROLE}"))
    ids = _seed(conn, 3)  # inserting works: the chaining trigger runs with its owner's rights
    assert len(ids) == 3
    for statement in (
        "UPDATE audit_events SET actor = 'mallory'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_chain_head SET seq = 0",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete",
    ):
        with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"), conn.begin_nested():
            conn.execute(text(statement))
    # …while the rest of the schema stays usable for the fleet.
    conn.execute(text("UPDATE work_items SET attempts = attempts WHERE false"))
    assert verify_chain(conn).ok


def test_database_numbers_and_hashes_whatever_the_client_sends(conn: Connection) -> None:
    _seed(conn, 1)
    conn.execute(
        text(
            "INSERT INTO audit_events (actor, event_type, entity_type, data, seq, prev_hash, row_hash,"
            " occurred_at) VALUES ('x', 'y', 'z', '{}', 999, '\\x00', '\\x00', '2000-01-01')"
        )
    )
    rows = conn.execute(
        text("SELECT seq, prev_hash, row_hash, occurred_at FROM audit_events ORDER BY seq")
    ).all()
    assert [r.seq - rows[0].seq for r in rows] == [0, 1]
    assert bytes(rows[1].prev_hash) == bytes(rows[0].row_hash)
    assert rows[1].occurred_at.year > 2000
    assert verify_chain(conn).ok


def test_python_hash_matches_the_trigger_for_unicode_and_nulls(conn: Connection) -> None:
    conn.execute(
        text(
            "INSERT INTO audit_events (actor, event_type, entity_type, entity_id, data, before, after)"
            " VALUES ('ägent ☃', 'x', 'y', NULL, '{\"z\": 1, \"a\": \"\\u00e9\\n\"}', NULL, '{\"s\": 1}')"
        )
    )
    row = conn.execute(
        text(
            "SELECT seq, occurred_at, actor, event_type, entity_type, entity_id, data::text AS data,"
            " before::text AS before, after::text AS after, prev_hash, row_hash"
            " FROM audit_events ORDER BY seq DESC LIMIT 1"
        )
    ).one()
    fields = row._asdict()
    stored = bytes(fields.pop("row_hash"))
    fields["prev_hash"] = bytes(fields["prev_hash"])
    assert row_hash(**fields) == stored


# --- verify names each kind of tampering -------------------------------------------------------------


def test_intact_chain_verifies(conn: Connection) -> None:
    _seed(conn, 25)
    report = verify_chain(conn, chunk_size=7)  # several chunks
    assert report.ok and report.rows == 25


def test_edited_row_is_named(conn: Connection) -> None:
    _seed(conn, 6)
    target = _seqs(conn)[3]
    _tamper(conn, f"UPDATE audit_events SET data = '{{\"n\": 42}}' WHERE seq = {target}")
    assert _problems(conn) == [(target, "edited")]


def test_edited_row_with_recomputed_hash_is_caught_at_the_next_link(conn: Connection) -> None:
    _seed(conn, 6)
    target = _seqs(conn)[2]
    _tamper(
        conn,
        f"UPDATE audit_events SET actor = 'mallory' WHERE seq = {target}",
        "UPDATE audit_events SET row_hash = sha256(audit_canonical(seq, occurred_at, actor, event_type,"
        f" entity_type, entity_id, data, before, after, prev_hash)) WHERE seq = {target}",
    )
    assert _problems(conn) == [(target + 1, "replaced")]


def test_deleted_row_is_named(conn: Connection) -> None:
    _seed(conn, 6)
    target = _seqs(conn)[2]
    _tamper(conn, f"DELETE FROM audit_events WHERE seq = {target}")
    findings = verify_chain(conn).findings
    assert [(f.seq, f.problem) for f in findings] == [(target + 1, "deleted")]
    assert f"seq {target} missing" in findings[0].detail


def test_deleted_tail_is_caught_by_the_head(conn: Connection) -> None:
    _seed(conn, 4)
    last = _seqs(conn)[-1]
    _tamper(conn, f"DELETE FROM audit_events WHERE seq = {last}")
    assert _problems(conn) == [(None, "tail")]


def test_reordered_rows_are_named(conn: Connection) -> None:
    _seed(conn, 6)
    a = _seqs(conn)[2]
    b = a + 1
    _tamper(
        conn,
        f"UPDATE audit_events SET seq = -1 WHERE seq = {a}",
        f"UPDATE audit_events SET seq = {a} WHERE seq = {b}",
        f"UPDATE audit_events SET seq = {b} WHERE seq = -1",
    )
    problems = _problems(conn)
    assert (a, "moved") in problems and (b, "moved") in problems  # each names the seq it was chained as
    assert (b, "reordered") in problems
    assert all(seq in (a, b, b + 1) for seq, _ in problems)


def test_inserted_row_is_named(conn: Connection) -> None:
    """The attacker shifts the later rows up and forges a correctly linked row in the gap."""
    _seed(conn, 6)
    k = _seqs(conn)[3]
    _tamper(
        conn,
        f"UPDATE audit_events SET seq = -seq WHERE seq >= {k}",
        "UPDATE audit_events SET seq = -seq + 1 WHERE seq < 0",
        "INSERT INTO audit_events (actor, event_type, entity_type, data, seq, occurred_at, prev_hash,"
        f" row_hash) SELECT 'mallory', 'item.done', 'work_item', '{{}}', {k}, now(), row_hash, "
        f" sha256(audit_canonical({k}, now(), 'mallory', 'item.done', 'work_item', NULL, '{{}}', NULL, NULL,"
        f" row_hash)) FROM audit_events WHERE seq = {k - 1}",
    )
    findings = verify_chain(conn).findings
    inserted = [f for f in findings if f.problem == "inserted"]
    assert [(f.seq, f.detail.split(": ")[-1]) for f in inserted] == [
        (k + 1, f"seq {k} was inserted into the chain")
    ]
    assert not [
        f for f in findings if f.seq == k
    ]  # the forged row is self-consistent; its successor betrays it


def test_verify_cli_exits_1_and_names_the_row(cli_env: str) -> None:
    clean_db = cli_env
    with get_engine(clean_db).begin() as c:
        _seed(c, 5)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout.strip().splitlines()[-1])["rows"] == 5
    with get_engine(clean_db).begin() as c:
        _tamper(c, "UPDATE audit_events SET event_type = 'item.forged' WHERE seq = 3")
    bad = runner.invoke(app, ["audit", "verify", "--chunk-size", "100"])
    assert bad.exit_code == 1
    assert "seq 3" in bad.output and "edited" in bad.output


# --- head signing and anchors ----------------------------------------------------------------------


def test_head_signature_verifies_and_detects_another_key(conn: Connection) -> None:
    _seed(conn, 3)
    head = read_head(conn).signed(KEY.encode())
    assert head.seq == _seqs(conn)[-1]
    assert head.signature_valid(KEY.encode())
    assert not head.signature_valid(b"another-key-0123456789")
    forged = head.model_copy(update={"row_hash": GENESIS_HASH.hex()})
    assert not forged.signature_valid(KEY.encode())


def test_anchor_detects_a_rewritten_prefix(conn: Connection) -> None:
    _seed(conn, 5)
    anchor = read_head(conn).signed(KEY.encode())
    _seed(conn, 2)  # the chain grows: the anchor is still a prefix
    assert check_anchor(conn, anchor) is None
    # An owner rewrites an anchored row and recomputes every hash after it: verify alone is satisfied…
    _tamper(
        conn,
        f"UPDATE audit_events SET actor = 'mallory' WHERE seq = {anchor.seq - 1}",
        """
        DO $$
        DECLARE r record; prev bytea;
        BEGIN
            FOR r IN SELECT * FROM audit_events ORDER BY seq LOOP
                IF prev IS NOT NULL THEN
                    UPDATE audit_events SET prev_hash = prev WHERE id = r.id;
                    r.prev_hash := prev;
                END IF;
                prev := sha256(audit_canonical(r.seq, r.occurred_at, r.actor, r.event_type, r.entity_type,
                    r.entity_id, r.data, r.before, r.after, r.prev_hash));
                UPDATE audit_events SET row_hash = prev WHERE id = r.id;
            END LOOP;
            UPDATE audit_chain_head SET row_hash = prev;
        END $$;
        """,
    )
    assert verify_chain(conn).ok
    # …but not the anchor kept outside the database.
    finding = check_anchor(conn, anchor)
    assert finding is not None and finding.seq == anchor.seq and finding.problem == "anchor"


def test_head_and_anchor_cli(cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_db = cli_env
    with get_engine(clean_db).begin() as c:
        _seed(c, 3)
    runner = CliRunner()
    unset = runner.invoke(app, ["audit", "head"])
    assert unset.exit_code == 2 and "TICKETFLEET_AUDIT_HMAC_KEY is not set" in unset.output
    _set_key(monkeypatch, KEY)
    printed = runner.invoke(app, ["audit", "head"])
    assert printed.exit_code == 0, printed.output
    anchor_file = tmp_path / "head.json"
    anchor_file.write_text(printed.stdout)
    head = ChainHead.model_validate_json(printed.stdout)
    assert head.seq == 3 and head.signature_valid(KEY.encode())
    assert runner.invoke(app, ["audit", "verify", "--anchor", str(anchor_file)]).exit_code == 0
    _set_key(monkeypatch, KEY + "-rotated")
    wrong_key = runner.invoke(app, ["audit", "verify", "--anchor", str(anchor_file)])
    assert wrong_key.exit_code == 1 and "signature does not verify" in wrong_key.output


# --- events of the fleet -----------------------------------------------------------------------------


def test_every_work_item_state_change_is_audited(db_session: Session) -> None:
    tickets = [InboundTicket(external_id=f"A-{i}", text=f"Where is parcel {i}?") for i in range(2)]
    result = ingest_tickets(db_session, tickets, default_source="audit", source_kind="test")
    audit = AuditTrail("test")
    done_id, failing_id = create_work_items(
        db_session, result.new_customer_message_ids, "tickets", audit=audit
    )
    mark_queued(db_session, [done_id, failing_id], audit=audit)
    claim_kw = {"lane": "tickets", "limit": 10, "token_budget": 10_000, "lease_seconds": 60}
    claim(db_session, hinted_ids=[done_id, failing_id], worker="w1", audit=audit, **claim_kw)  # type: ignore[arg-type]
    mark_done(db_session, [done_id], audit=audit)
    mark_failed(
        db_session, failing_id, "ValueError: text of the ticket", max_attempts=2, backoff_s=0, audit=audit
    )
    reaper = AuditTrail("reaper")
    assert reap(db_session, stuck_after_seconds=60, idle_lanes=[], audit=reaper) == {"tickets": [failing_id]}
    claim(db_session, hinted_ids=[failing_id], worker="w2", audit=reaper, **claim_kw)  # type: ignore[arg-type]
    mark_failed(db_session, failing_id, "ValueError: again", max_attempts=2, backoff_s=0, audit=reaper)
    assert audit.write(db_session) + reaper.write(db_session) == 11
    rows = db_session.execute(
        select(
            AuditEvent.entity_id, AuditEvent.event_type, AuditEvent.before, AuditEvent.after, AuditEvent.data
        )
        .where(AuditEvent.entity_type == "work_item")
        .order_by(AuditEvent.seq)
    ).all()
    trail = {
        item: [
            (r.event_type, (r.before or {}).get("state"), r.after["state"])
            for r in rows
            if r.entity_id == item
        ]
        for item in (done_id, failing_id)
    }
    assert trail[done_id] == [
        ("item.created", None, "pending"),
        ("item.queued", "pending", "queued"),
        ("item.claimed", "queued", "processing"),
        ("item.done", "processing", "done"),
    ]
    assert trail[failing_id] == [
        ("item.created", None, "pending"),
        ("item.queued", "pending", "queued"),
        ("item.claimed", "queued", "processing"),
        ("item.failed", "processing", "failed"),
        ("item.requeued", "failed", "pending"),
        ("item.claimed", "pending", "processing"),
        ("item.dead", "processing", "dead"),
    ]
    # Error messages may quote the ticket: only the exception type is kept.
    assert all("text of the ticket" not in json.dumps(r.data) for r in rows)
    assert (
        db_session.execute(select(WorkItem.state).where(WorkItem.id == failing_id)).scalar_one()
        == ItemState.dead
    )
    assert verify_chain(db_session.connection()).ok


# --- concurrency -------------------------------------------------------------------------------------


def test_stale_repeatable_read_snapshot_fails_instead_of_forking(clean_db: str) -> None:
    engine = get_engine(clean_db)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as stale:
        stale.begin()
        _seed(stale, 0)  # takes the snapshot
        with engine.begin() as other:
            _seed(other, 2)  # commits, moving the head past the stale snapshot
        with pytest.raises(DBAPIError, match="could not serialize"):
            _seed(stale, 1)
        stale.rollback()
    with engine.connect() as c, c.begin():
        assert verify_chain(c).ok and _seqs(c) == [1, 2]


def test_concurrent_processes_keep_one_valid_chain(clean_db: str) -> None:
    processes, per_process, batch = 4, 200, 10
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        written = pool.starmap(
            insert_events, [(clean_db, f"proc-{p}", per_process, batch) for p in range(processes)]
        )
    assert written == [per_process] * processes
    with transaction(clean_db) as session:
        report = verify_chain(session.connection(), chunk_size=128)
        actors = session.execute(select(func.count(func.distinct(AuditEvent.actor)))).scalar_one()
        seqs = list(session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars())
    assert report.ok, [f.describe() for f in report.findings[:5]]
    assert report.rows == processes * per_process and actors == processes
    assert seqs == list(range(1, processes * per_process + 1))  # gap-free
