"""`ticketfleet redact` and `ticketfleet pii …`: the redactor on the command line, vault maintenance."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

console = Console(stderr=True)
pii_app = typer.Typer(help="Personal data: the encrypted vault of redacted values.", no_args_is_help=True)


def redact_command() -> None:
    """Redact JSONL {"id","text"[,"locale"]} lines from stdin to JSONL {"id","text"} on stdout."""
    from ticketfleet.pii.jsonl import redact_jsonl

    errors = redact_jsonl(sys.stdin, sys.stdout)
    sys.stdout.flush()
    for err in errors:
        console.print(f"line {err.line}: {err.error}", markup=False, highlight=False)
    if errors:
        raise typer.Exit(1)


@pii_app.command("purge")
def purge_command() -> None:
    """Erase vault originals past their retention; placeholders stay, and no longer rehydrate."""
    from ticketfleet.core.settings import get_settings
    from ticketfleet.pipeline.maintenance import purge_pii_vault

    try:
        purged = purge_pii_vault(get_settings())
    except RuntimeError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"purged {purged} vault entr{'y' if purged == 1 else 'ies'}")


@pii_app.command("keygen")
def keygen_command() -> None:
    """Print a new random vault key (base64, 32 bytes) for TICKETFLEET_PII_KEY."""
    from ticketfleet.pii.vault import generate_key

    print(generate_key())
