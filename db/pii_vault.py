"""The PII vault in the store: load a thread's mapping, add new originals, rehydrate, purge.

Only ciphertext is stored (ticketfleet/pii/vault.py). Callers are ingest (db/ingest.py), the agent
view / write-back path (:func:`rehydrate`) and the retention purge (``ticketfleet pii purge`` and the
beat task).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.bulk import in_ids, table_of, unnest_rows
from db.models import PiiVaultEntry
from ticketfleet.core.settings import Settings, get_settings
from ticketfleet.pii.redactor import rehydrate_text
from ticketfleet.pii.vault import VaultCipher


@dataclass
class ThreadVault:
    """What the vault knows of one thread: readable originals, and purged placeholders (numbers taken)."""

    mapping: dict[str, str] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)


def load_threads(session: Session, cipher: VaultCipher, ticket_ids: Iterable[int]) -> dict[int, ThreadVault]:
    ids = list(ticket_ids)
    threads: dict[int, ThreadVault] = {tid: ThreadVault() for tid in ids}
    if not ids:
        return threads
    rows = session.execute(
        select(
            PiiVaultEntry.ticket_id,
            PiiVaultEntry.placeholder,
            PiiVaultEntry.key_id,
            PiiVaultEntry.nonce,
            PiiVaultEntry.ciphertext,
        ).where(in_ids(PiiVaultEntry.ticket_id, ids))
    )
    for ticket_id, placeholder, key_id, nonce, ciphertext in rows:
        thread = threads[ticket_id]
        if nonce is None or ciphertext is None:
            thread.retired.append(placeholder)
        else:
            thread.mapping[placeholder] = cipher.decrypt(ticket_id, placeholder, nonce, ciphertext, key_id)
    return threads


def store_entries(
    session: Session,
    cipher: VaultCipher,
    entries: Mapping[int, Mapping[str, str]],
    retention: timedelta,
) -> None:
    """Seal new originals, and restart the retention clock of every thread that had activity."""
    rows = []
    for ticket_id, values in entries.items():
        for placeholder, value in values.items():
            nonce, ciphertext = cipher.encrypt(ticket_id, placeholder, value)
            rows.append(
                {
                    "ticket_id": ticket_id,
                    "placeholder": placeholder,
                    "key_id": cipher.key_id,
                    "nonce": nonce,
                    "ciphertext": ciphertext,
                }
            )
    vault = table_of(PiiVaultEntry)
    if rows:
        sealed = unnest_rows([vault.c[k] for k in rows[0]], rows)
        session.execute(
            insert(vault)
            .from_select([*rows[0], "purge_after"], select(*sealed.c, func.now() + retention))
            .on_conflict_do_nothing(constraint="uq_pii_vault_ticket_placeholder")
        )
    if entries:
        session.execute(
            update(vault)
            .where(in_ids(vault.c.ticket_id, entries), vault.c.purged_at.is_(None))
            .values(purge_after=func.now() + retention)
        )


def rehydrate(session: Session, ticket_id: int, text: str, *, settings: Settings | None = None) -> str:
    """``text`` (a draft) with the placeholders of ticket ``ticket_id`` restored.

    For an authorised agent view or a write-back only: the result holds personal data, so it must not
    be stored, logged or queued. Purged or unknown placeholders stay as they are.
    """
    cipher = VaultCipher.from_settings(settings or get_settings())
    thread = load_threads(session, cipher, [ticket_id])[ticket_id]
    return rehydrate_text(text, thread.mapping)


def purge_expired(session: Session, now: datetime | None = None) -> int:
    """Erase originals past their ``purge_after``; the placeholders stay reserved. Returns how many."""
    result = session.execute(
        update(PiiVaultEntry)
        .where(
            PiiVaultEntry.purge_after <= (now if now is not None else func.now()),
            PiiVaultEntry.purged_at.is_(None),
        )
        .values(nonce=None, ciphertext=None, purged_at=func.now())
        .returning(PiiVaultEntry.id)
    )
    return len(result.all())
