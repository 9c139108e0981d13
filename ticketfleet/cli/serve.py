"""`ticketfleet serve`: the HTTP API under uvicorn (registered in cli.py)."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API: POST /v1/chat, /v1/tickets, /v1/hooks/{zendesk|zammad}/{source}; GET
    /v1/tickets/{source}/{id}, /healthz, /metrics. Credentials: TICKETFLEET_API_SOURCES."""
    import uvicorn

    from ticketfleet.core.settings import get_settings

    settings = get_settings()
    missing = [
        name
        for name, value in (("DATABASE_URL", settings.database_url), ("REDIS_URL", settings.redis_url))
        if value is None
    ]
    if missing:
        typer.echo(f"error: set {' and '.join('TICKETFLEET_' + m for m in missing)}", err=True)
        raise typer.Exit(2)
    from ticketfleet.pii.vault import PiiKeyError, VaultCipher

    try:
        VaultCipher.from_settings(settings)  # every stored ticket is redacted with the vault key
    except PiiKeyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not settings.api_sources:
        typer.echo("warning: TICKETFLEET_API_SOURCES is empty: every request will be refused (401)", err=True)
    uvicorn.run(
        "ticketfleet.api.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        # Our own limit is enforced while reading the body; this only bounds header parsing.
        h11_max_incomplete_event_size=64 * 1024,
    )
