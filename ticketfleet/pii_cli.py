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
