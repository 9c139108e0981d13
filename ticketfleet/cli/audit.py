"""`ticketfleet audit …`: verify the hash chain, print and check signed chain heads (docs/audit.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from ticketfleet.cli.common import database_url, fail
from ticketfleet.core.settings import Settings, get_settings

audit_app = typer.Typer(
    help="Tamper-evident audit log: verify the chain, sign its head.", no_args_is_help=True
)
console = Console(stderr=True, soft_wrap=True)  # findings stay one line each, for grep and logs
MIN_KEY_CHARS = 16
SHOWN_FINDINGS = 50


def _fail(message: str, code: int = 2) -> typer.Exit:
    return fail(message, code, out=console)


def _database_url(settings: Settings) -> str:
    return database_url(settings, out=console)


def hmac_key(settings: Settings) -> bytes:
    if settings.audit_hmac_key is None:
        raise _fail(
            "TICKETFLEET_AUDIT_HMAC_KEY is not set: the chain head is signed with it. Set it to a random "
            f"secret of at least {MIN_KEY_CHARS} characters kept outside the database "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(32))").'
        )
    key = settings.audit_hmac_key.get_secret_value()
    if len(key) < MIN_KEY_CHARS:
        raise _fail(
            f"TICKETFLEET_AUDIT_HMAC_KEY is too short ({len(key)} characters; need ≥ {MIN_KEY_CHARS})."
        )
    return key.encode()


@audit_app.command("head")
def head() -> None:
    """Print the chain head (seq, hash, time) signed with HMAC-SHA256, as JSON on stdout.

    Store the output outside the database (ticket, e-mail, object store with retention lock): later,
    `ticketfleet audit verify --anchor FILE` proves the chain up to it was not rewritten."""
    from db.audit_chain import read_head
    from db.session import get_engine

    settings = get_settings()
    key = hmac_key(settings)
    with get_engine(_database_url(settings)).connect() as conn:
        current = read_head(conn)
    typer.echo(current.signed(key).model_dump_json(indent=2))


@audit_app.command("verify")
def verify(
    anchor: Annotated[
        Path | None, typer.Option(help="A head printed earlier by `audit head`: check it is still a prefix.")
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=100, help="Rows fetched per round trip.")] = 10_000,
) -> None:
    """Recompute the hash chain independently of the database; name every edited, deleted, moved or
    inserted row. Exit 0 when intact, 1 on tampering, 2 on a usage error."""
    from db.audit_chain import ChainHead, check_anchor, verify_chain
    from db.session import get_engine

    settings = get_settings()
    anchored: ChainHead | None = None
    if anchor is not None:
        key = hmac_key(settings)
        try:
            anchored = ChainHead.model_validate_json(anchor.read_text())
        except (OSError, ValidationError, json.JSONDecodeError) as exc:
            raise _fail(f"cannot read anchor {anchor}: {exc}") from exc
        if not anchored.signature_valid(key):
            console.print(
                f"[bold red]TAMPERED:[/] anchor {anchor}: signature does not verify with "
                "TICKETFLEET_AUDIT_HMAC_KEY (edited anchor, or a different key)"
            )
            raise typer.Exit(1)
    engine = get_engine(_database_url(settings))
    # One snapshot for rows and head, however long the scan takes while the fleet keeps writing.
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        with console.status("verifying…") as status:
            report = verify_chain(
                conn,
                chunk_size=chunk_size,
                on_progress=lambda n: status.update(f"verifying… {n:,} rows"),
            )
        findings = list(report.findings)
        if anchored is not None and (problem := check_anchor(conn, anchored)) is not None:
            findings.append(problem)
    for finding in findings[:SHOWN_FINDINGS]:
        console.print(f"[red]TAMPERED[/] {finding.describe()}")
    if len(findings) > SHOWN_FINDINGS:
        console.print(f"… and {len(findings) - SHOWN_FINDINGS} more")
    summary = {
        "rows": report.rows,
        "last_seq": report.last_seq,
        "last_hash": report.last_hash,
        "anchor_seq": anchored.seq if anchored else None,
        "findings": len(findings),
        "ok": not findings,
    }
    typer.echo(json.dumps(summary))
    raise typer.Exit(1 if findings else 0)
