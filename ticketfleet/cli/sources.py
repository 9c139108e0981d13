"""`ticketfleet sources …`: list configured sources with their health, check one, poll one."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from connectors.sources_file import SourceConfig, SourcesFile, SourcesFileError, load_configured_sources
from ticketfleet.broker import SOURCES_QUEUE
from ticketfleet.cli.common import configure_broker, database_url
from ticketfleet.core.settings import Settings, get_settings

sources_app = typer.Typer(help="Configured ticket-system sources (the sources file).", no_args_is_help=True)
console = Console(stderr=True)


def _load(settings: Settings, *, require_secrets: bool = True) -> SourcesFile:
    try:
        return load_configured_sources(settings, require_secrets=require_secrets)
    except SourcesFileError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _source(settings: Settings, name: str) -> SourceConfig:
    try:
        return _load(settings).get(name)
    except SourcesFileError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    seconds = (datetime.now(UTC) - when).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def health_text(view: object | None) -> str:
    """One cell: ok / backing off / failing, with the last error class."""
    from db.sources import HealthView

    if not isinstance(view, HealthView):
        return "never polled"
    if view.consecutive_failures == 0:
        text = f"ok (last success {_ago(view.last_success_at)})" if view.last_success_at else "not yet polled"
    else:
        state = "FAILING" if view.failing else "backing off"
        wait = ""
        if view.next_poll_at is not None:
            seconds = max(0.0, (view.next_poll_at - datetime.now(UTC)).total_seconds())
            wait = f", next poll in {seconds:.0f} s"
        text = f"{state}: {view.consecutive_failures} failure(s){wait}; {view.last_error}"
    if view.items_rejected:
        text += f"; {view.items_rejected} rejected of {view.items_pulled + view.items_rejected}"
    return text


def health_views(settings: Settings) -> dict[str, object]:
    from db.session import transaction
    from db.sources import health_by_name

    database_url = settings.database_url_value()
    if not database_url:
        return {}
    with transaction(database_url) as session:
        return dict(health_by_name(session))


def sources_table(sources: list[SourceConfig], views: dict[str, object], *, title: str) -> Table:
    table = Table("name", "kind", "enabled", "lane", "interval", "cursor", "health", title=title)
    for source in sources:
        view = views.get(source.name)
        cursor = getattr(view, "cursor", None)
        shown = "none" if cursor is None else (cursor if len(cursor) <= 24 else cursor[:21] + "…")
        table.add_row(
            source.name,
            source.kind,
            "yes" if source.enabled else "no",
            source.lane,
            f"{source.poll_interval_seconds:g} s",
            shown,
            health_text(view),
        )
    return table


@sources_app.command("list")
def list_sources() -> None:
    """Configured sources: kind, lane, interval, stored cursor and health."""
    settings = get_settings()
    loaded = _load(settings, require_secrets=False)  # listing needs no credentials
    out = Console()
    if not loaded.sources:
        out.print(f"no sources configured in {loaded.path}")
        return
    out.print(sources_table(loaded.sources, health_views(settings), title=f"sources ({loaded.path})"))


@sources_app.command("check")
def check_source(name: str) -> None:
    """Build the connector and make one cheap authenticated call."""
    from connectors.registry import build_connector

    source = _source(get_settings(), name)
    try:
        connector = build_connector(source)
        try:
            description = connector.check()
        finally:
            connector.close()
    except Exception as exc:
        console.print(f"[bold red]{name}: {type(exc).__name__}:[/] {exc}")
        raise typer.Exit(1) from exc
    Console().print(f"{name} ({source.kind}): ok: {description}")


@sources_app.command("poll")
def poll_source(
    name: str,
    once: Annotated[
        bool, typer.Option(help="One poll (pages until the source has no more), then exit.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Poll even while the source is backing off.")] = False,
) -> None:
    """Poll a source now: store each page and its cursor in one transaction, queue new messages."""
    from ticketfleet.pipeline.polling import poll_named_source

    settings = get_settings()
    source = _source(settings, name)
    database_url(settings)
    while True:
        report = poll_named_source(name, settings, force=force)
        Console().print(report.as_dict())
        if once:
            raise typer.Exit(1 if report.error else 0)
        time.sleep(source.poll_interval_seconds)


@sources_app.command("worker")
def sources_worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Polls and write-backs run at once (threads).")] = 4,
    name: Annotated[str | None, typer.Option(help="Celery node name (default: sources@host).")] = None,
    loglevel: str = "INFO",
) -> None:
    """Run the worker that polls sources and pushes write-backs (the `sources` queue). It loads no
    model: run one or two per fleet, on a host that holds the ticket systems' credentials."""
    settings = get_settings()
    database_url(settings)
    _load(settings)  # a broken sources file or a missing secret stops it here, with the reason
    configure_broker(settings)
    from workers.app import app as celery_app  # registers the tasks

    # The thread pool: these tasks wait on the network, and no model is loaded in a thread pool
    # (workers/app.py loads the engine only for the solo pool and in prefork children).
    celery_app.worker_main(
        [
            "worker",
            f"--queues={SOURCES_QUEUE}",
            "--pool=threads",
            f"--concurrency={concurrency}",
            f"--hostname={name or 'sources@%h'}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def print_sources_status(out: Console, settings: Settings) -> None:
    """The "sources" section of `ticketfleet status`."""
    try:
        sources = load_configured_sources(settings, require_secrets=False).sources
    except SourcesFileError as exc:
        out.print(f"[red]sources file unusable:[/] {exc}")
        return
    if sources:
        out.print(sources_table(sources, health_views(settings), title="sources"))
