"""What every ``ticketfleet`` command group needs: a clear error exit, the service URLs or that error,
and the broker configured for the URL in use."""

from __future__ import annotations

import typer
from rich.console import Console

from ticketfleet import broker
from ticketfleet.core.errors import ConfigurationError
from ticketfleet.core.settings import Settings

STDERR = Console(stderr=True)


def fail(message: str, code: int = 2, *, out: Console = STDERR) -> typer.Exit:
    """Print ``error: message`` on ``out`` and return the Exit for the caller to raise."""
    out.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def database_url(settings: Settings, *, out: Console = STDERR) -> str:
    """The configured PostgreSQL URL, or an exit that says how to get one."""
    try:
        return settings.require_database_url()
    except ConfigurationError as exc:
        raise fail(str(exc), out=out) from exc


def redis_url(settings: Settings, *, out: Console = STDERR) -> str:
    """The configured Redis URL, or an exit that says how to get one."""
    try:
        return settings.require_redis_url()
    except ConfigurationError as exc:
        raise fail(str(exc), out=out) from exc


def configure_broker(settings: Settings) -> None:
    """Point the Celery app at the configured Redis before sending or consuming."""
    broker.configure(broker.app, settings, redis_url(settings))
