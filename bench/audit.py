"""Cost of the audit hash chain: chained inserts vs plain inserts, 1 and N processes, one run.

    .venv/bin/python bench/audit.py [--events 2000] [--batch 16] [--processes 4] [--repeats 3]

Each process writes ``--events`` events in committed transactions of ``--batch`` events, one INSERT
per transaction (how the fleet writes them: db.audit.AuditTrail). Two tables in one throwaway
database, identical columns:
(a) ``audit_events``: the real one: BEFORE INSERT trigger numbers, hashes and links every row under
    the chain-head row lock, ENABLE ALWAYS guards;
(b) ``audit_plain``: a copy without triggers (plain insert, the cost floor).
Prints events/s for both with 1 process and with ``--processes`` concurrent processes, the ratio,
median commit latency per batch, and how fast `audit verify` re-checks the chain. Uses
TICKETFLEET_DATABASE_URL's server if set, else an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import Connection, MetaData, Table, insert, text  # noqa: E402

from db.audit_chain import verify_chain  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.session import dispose_engines, get_engine, normalise_url  # noqa: E402

START_DELAY_S = 1.5  # children start together at a wall-clock instant, after their imports


def _events(actor: str, start: int, n: int) -> list[dict[str, object]]:
    """Rows shaped like the fleet's state-change events (ids, states, a version; no text)."""
    return [
        {
            "actor": actor,
            "event_type": "item.done",
            "entity_type": "work_item",
            "entity_id": i,
            "data": {"attempt": 1, "lane": "tickets"},
            "before": {"state": "processing"},
            "after": {"state": "done"},
        }
        for i in range(start, start + n)
    ]


def writer(url: str, table_name: str, actor: str, events: int, batch: int, start_at: float) -> list[float]:
    """One process: ``events`` events in transactions of ``batch``. Returns per-batch seconds."""
    engine = get_engine(url)
    table = Table(table_name, MetaData(), autoload_with=engine)
    time.sleep(max(0.0, start_at - time.time()))
    latencies = []
    for start in range(0, events, batch):
        began = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(table), _events(actor, start, min(batch, events - start)))
        latencies.append(time.perf_counter() - began)
    dispose_engines()
    return latencies


def run(url: str, table: str, processes: int, events: int, batch: int) -> tuple[float, float]:
    """(events/s over the wall time of all processes, median seconds per batch)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        start_at = time.time() + START_DELAY_S
        results = pool.starmap(
            writer, [(url, table, f"bench-{p}", events, batch, start_at) for p in range(processes)]
        )
        elapsed = time.time() - start_at
    latencies = [s for per_process in results for s in per_process]
    return processes * events / elapsed, statistics.median(latencies)


def per_row_cost(url: str, rows: int) -> tuple[float, float]:
    """Seconds for one INSERT … SELECT of ``rows`` events into each table: the trigger's own cost per
    row with no client round trips in the way (rolled back, so the chain is untouched)."""
    timings = []
    for table in ("audit_plain", "audit_events"):
        with get_engine(url).connect() as conn, conn.begin() as transaction:
            began = time.perf_counter()
            conn.execute(
                text(
                    f"INSERT INTO {table} (actor, event_type, entity_type, entity_id, data, before, after)"
                    " SELECT 'bench', 'item.done', 'work_item', g, '{\"attempt\": 1}',"
                    ' \'{"state": "processing"}\', \'{"state": "done"}\''
                    " FROM generate_series(1, :n) AS g"
                ),
                {"n": rows},
            )
            timings.append(time.perf_counter() - began)
            transaction.rollback()
    return timings[0], timings[1]


def make_plain_copy(conn: Connection) -> None:
    conn.execute(text("CREATE TABLE audit_plain (LIKE audit_events INCLUDING DEFAULTS)"))
    for column in ("seq", "prev_hash", "row_hash"):
        conn.execute(text(f"ALTER TABLE audit_plain ALTER COLUMN {column} DROP NOT NULL"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000, help="events per process")
    parser.add_argument("--batch", type=int, default=16, help="events per transaction (one INSERT)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians are printed")
    args = parser.parse_args()

    embedded = None
    server = os.environ.get("TICKETFLEET_DATABASE_URL")
    if not server:
        from ticketfleet.services import EmbeddedServices

        embedded = EmbeddedServices(Path(tempfile.mkdtemp(prefix="tf-bench-audit-")))
        server = embedded.start().database_url
    base, _, query = normalise_url(server).partition("?")
    admin = get_engine(server).execution_options(isolation_level="AUTOCOMMIT")
    name = f"tf_bench_audit_{uuid.uuid4().hex[:8]}"
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(url)
        with get_engine(url).begin() as conn:
            make_plain_copy(conn)
        rows = []
        for processes in (1, args.processes):
            # Alternate plain and chained rounds so drift in a shared machine's load hits both alike.
            rounds: dict[str, list[tuple[float, float]]] = {"audit_plain": [], "audit_events": []}
            for _ in range(args.repeats):
                for table, results in rounds.items():
                    results.append(run(url, table, processes, args.events, args.batch))
            plain, chained = (
                [statistics.median(r[i] for r in rounds[t]) for i in (0, 1)]
                for t in ("audit_plain", "audit_events")
            )
            rows.append((processes, plain[0], chained[0], plain[1], chained[1]))
        bulk = [per_row_cost(url, 5000) for _ in range(args.repeats)]
        bulk_plain, bulk_chained = (statistics.median(b[i] for b in bulk) for i in (0, 1))
        with get_engine(url).connect() as conn, conn.begin():
            began = time.perf_counter()
            report = verify_chain(conn)
            verify_rate = report.rows / (time.perf_counter() - began)
        print(
            f"audit inserts: {args.events} events/process, {args.batch} events per transaction (one INSERT), "
            f"median of {args.repeats} alternating rounds"
        )
        print(
            "| processes | plain events/s | hash-chained events/s | chained / plain "
            "| median ms/batch plain → chained |"
        )
        print("| --- | --- | --- | --- | --- |")
        for processes, plain, chained, plain_lat, chained_lat in rows:
            print(
                f"| {processes} | {plain:,.0f} | {chained:,.0f} | {chained / plain:.2f} "
                f"| {plain_lat * 1000:.1f} → {chained_lat * 1000:.1f} |"
            )
        print(
            f"one INSERT of 5,000 events: plain {bulk_plain * 1000:.0f} ms, "
            f"chained {bulk_chained * 1000:.0f} ms "
            f"→ the trigger adds {(bulk_chained - bulk_plain) / 5000 * 1e6:.0f} µs per event"
        )
        print(
            f"audit verify: {report.rows:,} rows re-hashed in Python at {verify_rate:,.0f} rows/s, "
            f"chain {'intact' if report.ok else 'BROKEN'}"
        )
    finally:
        dispose_engines()
        with get_engine(server).execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        dispose_engines()
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
