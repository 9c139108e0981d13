"""What every ``ticketfleet`` command group needs: a clear error exit and the database URL or that error."""

from __future__ import annotations

import typer
from rich.console import Console

from ticketfleet.settings import Settings

STDERR = Console(stderr=True)


def fail(message: str, code: int = 2, *, out: Console = STDERR) -> typer.Exit:
    """Print ``error: message`` on ``out`` and return the Exit for the caller to raise."""
    out.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def database_url(settings: Settings, *, out: Console = STDERR) -> str:
    """The configured PostgreSQL URL, or an exit that says how to get one."""
    url = settings.database_url_value()
    if not url:
        raise fail(
            "TICKETFLEET_DATABASE_URL is not set. Point it at PostgreSQL, or run "
            "`ticketfleet services` to start embedded PostgreSQL and Redis and print the exports.",
            out=out,
        )
    return url
