"""`ticketfleet` command line. Thin: every command calls a library function and prints its result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ticketfleet.broker import MAINTENANCE_QUEUE
from ticketfleet.cli.audit import audit_app
from ticketfleet.cli.common import configure_broker, database_url, fail, redis_url
from ticketfleet.cli.heads import heads_app
from ticketfleet.cli.pii import pii_app, redact_command
from ticketfleet.cli.serve import serve
from ticketfleet.cli.sources import sources_app
from ticketfleet.core.settings import LANES, Settings, get_settings

app = typer.Typer(
    help="Triage support tickets and draft replies on a Celery worker fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")

app.add_typer(sources_app, name="sources")

app.add_typer(pii_app, name="pii")
app.add_typer(heads_app, name="heads")
app.command("redact")(redact_command)
console = Console(stderr=True)


_fail = fail  # shared with the other command groups (ticketfleet/cli/common.py)
_database_url = database_url


_redis_url = redis_url


def _lanes(value: str) -> list[str]:
    lanes = [lane.strip() for lane in value.split(",") if lane.strip()]
    unknown = [lane for lane in lanes if lane not in LANES]
    if unknown or not lanes:
        raise typer.BadParameter(f"unknown lane(s) {unknown or value!r}; choose from {', '.join(LANES)}")
    return lanes


# --- db --------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from db.migrate import upgrade

    upgrade(_database_url(get_settings()), revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ("base" drops everything)."""
    from db.migrate import downgrade

    downgrade(_database_url(get_settings()), revision)
    console.print(f"database at {revision}")


# --- services ----------------------------------------------------------------------------------------


@app.command()
def services(
    data_dir: Annotated[Path | None, typer.Option(help="Where the servers keep their files.")] = None,
) -> None:
    """Start embedded PostgreSQL and Redis (from pip wheels) and keep them up until Ctrl-C."""
    from db.migrate import upgrade
    from ticketfleet.services import EmbeddedServices

    settings = get_settings()
    embedded = EmbeddedServices(data_dir or settings.data_dir)
    urls = embedded.start()
    upgrade(urls.database_url)
    for key, value in urls.as_env().items():
        print(f"export {key}='{value}'")
    console.print("embedded services up and migrated; Ctrl-C stops them")
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # sigwait only sees blocked signals
    try:
        signal.sigwait(stop_signals)
    finally:
        embedded.stop()


# --- import ------------------------------------------------------------------------------------------


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    source: Annotated[str, typer.Option(help="Source name for records that do not name one.")] = "import",
    lane: Annotated[
        str,
        typer.Option(
            help="none: store only (process later with `backlog`); backlog; live: chat/tickets lanes."
        ),
    ] = "none",
    errors: Annotated[Path | None, typer.Option(help="Write the per-line error report here (JSONL).")] = None,
) -> None:
    """Import a JSONL or CSV file. Idempotent on (source, external id); bad lines are reported, good
    lines are imported."""
    from connectors.import_format import FileFormatError
    from ticketfleet.pii.vault import PiiKeyError
    from ticketfleet.pipeline.importing import import_file

    if lane not in ("none", "backlog", "live"):
        raise typer.BadParameter("--lane must be none, backlog or live")
    settings = get_settings()
    database_url = _database_url(settings)
    if lane != "none":
        configure_broker(settings)
    try:
        with console.status("importing…") as status:
            report = import_file(
                path,
                settings=settings,
                database_url=database_url,
                source=source,
                lane=None if lane == "none" else lane,
                on_progress=lambda n: status.update(f"importing… {n} records"),
            )
    except (FileFormatError, PiiKeyError) as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"{report.lines_ok} records ok: {report.tickets} tickets, {report.new_messages} new messages, "
        f"{report.queued} queued; {len(report.errors)} rejected"
    )
    for unsent in report.unsent:
        console.print(
            f"[red]{unsent}[/]. The records are stored; the reaper or `ticketfleet backlog` will queue them."
        )
    if report.errors:
        table = Table("line", "external id", "error", title="rejected lines")
        for err in report.errors[:50]:
            table.add_row(str(err.line), err.external_id or "", err.error)
        console.print(table)
        if len(report.errors) > 50:
            console.print(f"… and {len(report.errors) - 50} more")
        if errors:
            errors.write_text("".join(json.dumps(e.as_dict()) + "\n" for e in report.errors))
            console.print(f"error report written to {errors}")
    if report.errors or report.unsent:
        raise typer.Exit(1)


# --- worker / beat -----------------------------------------------------------------------------------


def _gpu_ids(value: str) -> list[str]:
    if value == "none":
        return []
    if value == "all":
        # nvidia-smi, not torch.cuda: no CUDA call may happen in the parent before the children start.
        if not shutil.which("nvidia-smi"):
            raise _fail("--gpus all: nvidia-smi not found; name GPUs explicitly or use --gpus none")
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
        ids = [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
        if not ids:
            raise _fail("--gpus all: nvidia-smi lists no GPU")
        return ids
    ids = [g.strip() for g in value.split(",") if g.strip()]
    if not all(g.isdigit() for g in ids):
        raise typer.BadParameter("--gpus takes all, none, or a list like 0,1")
    return ids


@app.command()
def worker(
    lanes: Annotated[str, typer.Option(help="Comma-separated lanes to consume.")] = "chat,tickets,backlog",
    gpus: Annotated[
        str, typer.Option(help="none (CPU), all, or ids like 0,1: one solo worker per GPU.")
    ] = "none",
    concurrency: Annotated[int, typer.Option(min=1, help="CPU worker processes (each loads the model).")] = 1,
    beat: Annotated[
        bool, typer.Option(help="Also run the beat scheduler (reaper, nightly backlog).")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Celery node name (default: lanes@host).")] = None,
    loglevel: str = "INFO",
) -> None:
    """Run a worker: consumes the given lanes plus the maintenance queue."""
    settings = get_settings()
    _database_url(settings)
    configure_broker(settings)
    lane_list = _lanes(lanes)
    gpu_ids = _gpu_ids(gpus)
    _preflight_model(settings)
    if len(gpu_ids) > 1:
        raise typer.Exit(_run_gpu_children(gpu_ids, lanes, beat, loglevel))
    if gpu_ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids[0]
        os.environ.setdefault("TICKETFLEET_DEVICE", "cuda")
    from workers.app import app as celery_app  # registers the tasks

    node = name or f"{'-'.join(lane_list)}{'-gpu' + gpu_ids[0] if gpu_ids else ''}@%h"
    pool = "solo" if gpu_ids or concurrency == 1 else "prefork"
    argv = [
        "worker",
        f"--queues={','.join([*lane_list, MAINTENANCE_QUEUE])}",
        f"--pool={pool}",
        f"--concurrency={1 if pool == 'solo' else concurrency}",
        f"--hostname={node}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat:
        schedule = settings.data_dir / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={schedule}"]
    celery_app.worker_main(argv)


def _preflight_model(settings: Settings) -> None:
    """Fail before Celery starts if the model cannot be found: a clear error, never a silent fallback."""
    if settings.engine_factory != Settings.model_fields["engine_factory"].default:
        return  # a custom engine validates itself when it loads
    from ticketfleet.engine import ModelLoadError, resolve_model

    try:
        resolve_model(settings)
    except ModelLoadError as exc:
        raise _fail(str(exc)) from exc


def gpu_child_command(gpu: str, lanes: str, loglevel: str, *, beat: bool) -> list[str]:
    """The worker for one GPU: it sets CUDA_VISIBLE_DEVICES to its own id before loading the model."""
    cmd = [sys.executable, "-m", "ticketfleet.cli", "worker", f"--lanes={lanes}", f"--gpus={gpu}"]
    cmd += [f"--loglevel={loglevel}", f"--name={lanes.replace(',', '-')}-gpu{gpu}@%h"]
    return [*cmd, "--beat"] if beat else cmd


def _run_gpu_children(gpu_ids: list[str], lanes: str, beat: bool, loglevel: str) -> int:
    """One solo-pool worker process per GPU, each seeing only its own device. The parent never
    touches CUDA, so nothing is initialised before the children start."""
    children = [
        subprocess.Popen(gpu_child_command(gpu, lanes, loglevel, beat=beat and index == 0))
        for index, gpu in enumerate(gpu_ids)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


@app.command("beat")
def beat_cmd(loglevel: str = "INFO") -> None:
    """Run Celery beat: the reaper every reaper_interval_seconds and the nightly backlog run."""
    settings = get_settings()
    configure_broker(settings)
    from workers.app import app as celery_app

    schedule = settings.data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    celery_app.start(["beat", f"--schedule={schedule}", f"--loglevel={loglevel}"])


@app.command()
def reap() -> None:
    """Re-queue items whose message was lost or whose worker died (what beat runs periodically)."""
    from ticketfleet.pipeline.maintenance import reap_and_resend

    settings = get_settings()
    _database_url(settings)
    configure_broker(settings)
    console.print(reap_and_resend(settings).as_dict())


# --- backlog / status --------------------------------------------------------------------------------


@app.command()
def backlog(
    stale: Annotated[
        bool, typer.Option(help="Also reprocess results of older model/prompt versions.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Show progress until the backlog is drained.")] = True,
    timeout: Annotated[float, typer.Option(help="Stop waiting after this many seconds (0: never).")] = 0,
) -> None:
    """Queue every unprocessed item on the backlog lane and follow it until drained."""
    from ticketfleet.pipeline.maintenance import enqueue_backlog
    from ticketfleet.pipeline.progress import follow_items

    settings = get_settings()
    database_url = _database_url(settings)
    configure_broker(settings)
    from ticketfleet.engine import ModelLoadError

    try:
        count = enqueue_backlog(settings, stale=stale)
    except ModelLoadError as exc:
        raise _fail(f"--stale needs the configured model's identity: {exc}") from exc
    console.print(f"{count} item(s) queued on the backlog lane")
    if wait and count:
        summary = follow_items(database_url, lane="backlog", timeout_s=timeout or None, console=console)
        console.print(summary)


@app.command()
def status() -> None:
    """Items by lane and state, queue depth per lane, recent throughput, dead items."""
    from db import stats
    from db.session import transaction
    from ticketfleet.broker import lane_depths
    from ticketfleet.services import redis_client

    settings = get_settings()
    database_url = _database_url(settings)
    with transaction(database_url) as session:
        counts = stats.items_by_lane_and_state(session)
        throughput = stats.recent_throughput(session)
        dead = stats.dead_items(session)
        review = stats.review_counts(session)
    try:
        depths: dict[str, int | str] = dict(lane_depths(redis_client(_redis_url(settings)), LANES))
    except Exception as exc:  # status must still show the database side
        depths = dict.fromkeys(LANES, f"unreachable ({type(exc).__name__})")
    states = ["pending", "queued", "processing", "done", "failed", "dead"]
    table = Table("lane", *states, "queue depth", title="work items")
    for lane in LANES:
        table.add_row(lane, *(str(counts.get((lane, s), 0)) for s in states), str(depths[lane]))
    out = Console()
    out.print(table)
    out.print(
        "throughput: "
        + ", ".join(
            f"{t.done} done in last {t.window_s // 60} min ({t.per_minute:.1f}/min)" for t in throughput
        )
    )
    out.print(
        f"{review['needs_review']} result(s) flagged for human review; "
        f"{review['drafts_held']} draft(s) held back by their checks"
    )
    for item_id, error in dead:
        out.print(f"[red]dead[/] item {item_id}: {error}")
    from ticketfleet.cli.sources import print_sources_status

    print_sources_status(out, settings)


# --- classify ----------------------------------------------------------------------------------------


@app.command()
def classify(
    batch_size: Annotated[int | None, typer.Option(min=1, help="Lines per engine batch.")] = None,
) -> None:
    """Read JSONL {"id","text"} on stdin, write JSONL triage with confidences on stdout (no queue)."""
    from ticketfleet.pipeline.classify import classify_stream
    from ticketfleet.pipeline.runtime import get_engine

    settings = get_settings()
    _preflight_model(settings)
    engine = get_engine(settings)
    errors = classify_stream(
        sys.stdin.buffer,
        sys.stdout,
        engine,
        batch_size=batch_size or settings.batch_size,
        policies=settings.gates,
    )
    for err in errors:
        console.print(f"line {err.line}: {err.error}")
    if errors:
        raise typer.Exit(1)


# --- demo --------------------------------------------------------------------------------------------


@app.command()
def demo(
    workers: Annotated[int, typer.Option(min=1, max=8, help="Worker processes to start.")] = 2,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N sample tickets.")] = None,
) -> None:
    """Start embedded services (unless configured), real workers, process the bundled sample, summarise."""
    from ticketfleet.cli.demo import run_demo

    started = time.perf_counter()
    ok = run_demo(get_settings(), workers=workers, limit=limit, console=console)
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
    raise typer.Exit(0 if ok else 1)


app.command("serve")(serve)  # the HTTP API (ticketfleet/cli/serve.py)
