"""Ingest throughput, connector → queued: the webhook API vs the JSONL import, same items, one run.

    python bench/ingest.py [--items 20000] [--chat 500] [--bulk-size 500] [--concurrency 8]
                           [--chat-concurrency 32] [--server-workers 1]

Generates ``--items`` single-message tickets (the first ``--chat`` of them chat conversations) and
pushes them, into two fresh databases, through

(a) the webhook path: a real ``ticketfleet serve`` (uvicorn) process on 127.0.0.1; an httpx client
    posts the tickets as signed bulk batches to ``POST /v1/tickets`` and the chat messages one by one
    to ``POST /v1/chat`` (``--concurrency`` bulk / ``--chat-concurrency`` chat requests in flight; the
    API stores concurrent chat messages together, api/coalesce.py). Every 2xx answer means stored, work
    items created and wake-ups on the Redis lanes (the API answers after sending them);
(b) the file path: the same items as a JSONL file through ``ticketfleet.pipeline.importing.import_file`` with
    ``lane="live"`` (chat → chat lane, tickets → tickets lane).

Prints items/s for each (the webhook path split into bulk and single chat messages), their ratio, and
checks that every item ended ``queued`` on the right lane. Server start-up is excluded. Uses
TICKETFLEET_DATABASE_URL / TICKETFLEET_REDIS_URL when set (the Redis is FLUSHED: never point it at
one you care about), else embedded PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from connectors.webhook_signatures import sign_ticketfleet  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.models import WorkItem  # noqa: E402
from db.session import dispose_engines, normalise_url, transaction  # noqa: E402
from ticketfleet.core.settings import Settings  # noqa: E402
from ticketfleet.pii.vault import generate_key  # noqa: E402
from ticketfleet.pipeline.importing import import_file  # noqa: E402
from ticketfleet.services import EmbeddedServices, redis_client, resolve  # noqa: E402

SOURCE = "bench"
SECRET = "bench-signing-secret-" + uuid.uuid4().hex
TEXTS = [
    "My parcel {n} never arrived, can you check the tracking?",
    "Ich wurde für Bestellung {n} doppelt belastet, bitte erstatten.",
    "No puedo acceder a mi cuenta desde ayer, pedido {n}.",
    "La facture {n} est incorrecte, merci de la corriger.",
    "The app crashes when I open order {n}. Please fix this!",
    "Thank you for the quick help with ticket {n}, great service.",
]


def generate(items: int, chat: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(items):
        text = rng.choice(TEXTS).format(n=rng.randint(1000, 99999))
        if i < chat:
            out.append(
                {
                    "external_id": f"chat-{i}",
                    "channel": "chat",
                    "locale": "en-GB",
                    "messages": [{"role": "customer", "text": text, "external_id": "m-1"}],
                }
            )
        else:
            out.append({"external_id": f"T-{i}", "subject": f"Order {i}", "text": text})
    return out


def fresh_database(admin_url: str) -> str:
    """A new migrated database on the same server; dropped by :func:`drop_database`."""
    name = f"tf_bench_{uuid.uuid4().hex[:10]}"
    plain = normalise_url(admin_url).replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = normalise_url(admin_url).partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    upgrade(url)
    return url


def drop_database(admin_url: str, url: str) -> None:
    dispose_engines()
    name = url.partition("?")[0].rsplit("/", 1)[1]
    plain = normalise_url(admin_url).replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def queued_by_lane(url: str) -> dict[str, int]:
    with transaction(url) as s:
        rows = s.execute(
            select(WorkItem.lane, func.count()).where(WorkItem.state == "queued").group_by(WorkItem.lane)
        ).all()
    return {lane: int(n) for lane, n in rows}


# --- (a) webhook ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(database_url: str, redis_url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TICKETFLEET_DATABASE_URL": database_url,
        "TICKETFLEET_REDIS_URL": redis_url,
        "TICKETFLEET_API_SOURCES": json.dumps({SOURCE: {"signing_secret": SECRET}}),
        "TICKETFLEET_API_MAX_BODY_BYTES": str(16 << 20),
    }
    cmd = [sys.executable, "-m", "ticketfleet.cli", "serve", f"--port={port}", f"--workers={workers}"]
    server = subprocess.Popen([*cmd, "--log-level=warning"], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"ticketfleet serve exited with {server.returncode}")
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("ticketfleet serve did not become healthy within 60 s")


async def post_all(base_url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> float:
    """POST every (path, body), ``concurrency`` at a time; returns seconds. Any non-2xx aborts."""
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                path, body = queue.get_nowait()
                headers = {
                    "Content-Type": "application/json",
                    "X-Ticketfleet-Source": SOURCE,
                    "X-Ticketfleet-Signature": sign_ticketfleet(SECRET, body),
                }
                response = await client.post(path, content=body, headers=headers)
                if response.status_code not in (200, 202):
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU so far of a process and its live children (uvicorn workers), from Linux
    /proc: the cost apart from how loaded the machine was."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def webhook_path(
    records: list[dict[str, Any]], args: argparse.Namespace, database_url: str, redis_url: str
) -> tuple[float, float, float, float]:
    """Seconds for the bulk and chat phases, and the server's CPU seconds for each."""
    chats = [
        json.dumps(
            {
                "conversation_id": r["external_id"],
                "message_id": r["messages"][0]["external_id"],
                "text": r["messages"][0]["text"],
                "locale": r["locale"],
            }
        ).encode()
        for r in records
        if r.get("channel") == "chat"
    ]
    tickets = [r for r in records if r.get("channel") != "chat"]
    batches = [
        json.dumps(tickets[i : i + args.bulk_size]).encode() for i in range(0, len(tickets), args.bulk_size)
    ]
    port = free_port()
    server = start_server(database_url, redis_url, port, args.server_workers)
    try:
        base = f"http://127.0.0.1:{port}"
        cpu0 = cpu_seconds(server.pid)
        bulk_s = asyncio.run(post_all(base, [("/v1/tickets", b) for b in batches], args.concurrency))
        cpu1 = cpu_seconds(server.pid)
        chat_s = asyncio.run(post_all(base, [("/v1/chat", b) for b in chats], args.chat_concurrency))
        cpu2 = cpu_seconds(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return bulk_s, chat_s, cpu1 - cpu0, cpu2 - cpu1


# --- (b) JSONL ------------------------------------------------------------------------------------


def file_path(records: list[dict[str, Any]], settings: Settings, workdir: Path) -> tuple[float, float]:
    """Seconds and this process's CPU seconds for the import."""
    path = workdir / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    database_url = settings.database_url_value()
    assert database_url
    from ticketfleet import broker

    broker.configure(broker.app, settings, settings.redis_url_value())
    started, cpu0 = time.perf_counter(), time.process_time()
    report = import_file(path, settings=settings, database_url=database_url, source=SOURCE, lane="live")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    if report.errors or report.queued != len(records):
        raise RuntimeError(f"import: {report.queued} queued of {len(records)}, errors {report.errors[:3]}")
    return elapsed, cpu


def main() -> None:
    # Ingest redacts PII into the vault: a throwaway key for this run (server and import alike).
    os.environ.setdefault("TICKETFLEET_PII_KEY", generate_key())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--chat", type=int, default=500, help="how many of the items are chat messages")
    parser.add_argument("--bulk-size", type=int, default=500, help="tickets per POST /v1/tickets")
    parser.add_argument("--concurrency", type=int, default=8, help="bulk requests in flight")
    parser.add_argument(
        "--chat-concurrency",
        type=int,
        default=32,
        help="chat requests in flight (a chat platform posts each message as it is sent, many at once)",
    )
    parser.add_argument("--server-workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()
    if not 0 <= args.chat <= args.items:
        parser.error("--chat must be between 0 and --items")

    records = generate(args.items, args.chat)
    with tempfile.TemporaryDirectory(prefix="tf-bench-ingest-") as tmp:
        workdir = Path(tmp)
        base = Settings(_env_file=None)  # type: ignore[call-arg]
        embedded = EmbeddedServices(workdir / "services")
        try:
            urls = resolve(base, embedded=embedded)
            redis_client(urls.redis_url).flushall()
            hook_db, file_db = fresh_database(urls.database_url), fresh_database(urls.database_url)
            try:
                bulk_s, chat_s, bulk_cpu, chat_cpu = webhook_path(records, args, hook_db, urls.redis_url)
                hook_queued = queued_by_lane(hook_db)
                redis_client(urls.redis_url).flushall()
                settings = Settings(database_url=file_db, redis_url=urls.redis_url, _env_file=None)  # type: ignore[call-arg]
                file_s, file_cpu = file_path(records, settings, workdir)
                file_queued = queued_by_lane(file_db)
            finally:
                drop_database(urls.database_url, hook_db)
                drop_database(urls.database_url, file_db)
                redis_client(urls.redis_url).flushall()
        finally:
            embedded.stop()

    n_chat, n_bulk = args.chat, args.items - args.chat
    expected = {lane: n for lane, n in (("chat", n_chat), ("tickets", n_bulk)) if n}
    for name, queued in (("webhook", hook_queued), ("jsonl", file_queued)):
        if queued != expected:
            raise SystemExit(f"{name}: queued by lane {queued}, expected {expected}")
    hook_s = bulk_s + chat_s
    hook_rate, file_rate = args.items / hook_s, args.items / file_s
    print(
        f"items: {args.items} ({n_bulk} tickets in bulk batches of {args.bulk_size}, {n_chat} chat messages)"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"concurrency {args.concurrency} (chat {args.chat_concurrency}), "
        f"server workers {args.server_workers}, {os.cpu_count()} CPUs, load average {load}"
    )
    # items per CPU-second of the producing process (server / importer; PostgreSQL and Redis not
    # counted): what one free core would do, apart from how busy the machine was.
    if n_bulk:
        print(
            f"webhook bulk  POST /v1/tickets : {n_bulk / bulk_s:8.0f} items/s  ({bulk_s:.2f} s; "
            f"{n_bulk / max(bulk_cpu, 1e-9):.0f} items per server CPU-s)"
        )
    if n_chat:
        print(
            f"webhook chat  POST /v1/chat    : {n_chat / chat_s:8.0f} items/s  ({chat_s:.2f} s; "
            f"{n_chat / max(chat_cpu, 1e-9):.0f} items per server CPU-s)"
        )
    print(f"webhook path, all items        : {hook_rate:8.0f} items/s  ({hook_s:.2f} s)")
    print(
        f"JSONL import --lane live       : {file_rate:8.0f} items/s  ({file_s:.2f} s; "
        f"{args.items / max(file_cpu, 1e-9):.0f} items per importer CPU-s)"
    )
    print(f"ratio webhook / JSONL          : {hook_rate / file_rate:8.2f}")
    if n_bulk:
        print(f"ratio webhook bulk / JSONL     : {(n_bulk / bulk_s) / file_rate:8.2f}")
    print(f"all {args.items} items queued on the right lane on both paths: {expected}")


if __name__ == "__main__":
    main()
