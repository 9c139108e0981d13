"""Redaction at ingest and the encrypted vault, on real PostgreSQL."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.ingest import ingest_tickets
from db.models import Message, PiiVaultEntry, Ticket
from db.pii_vault import purge_expired, rehydrate
from ticketfleet.core.inbound import InboundTicket
from ticketfleet.core.settings import Settings
from ticketfleet.pii.vault import PiiKeyError, PiiKeyMissing, VaultCipher

CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"


def _settings(key: str | None = None, **extra: object) -> Settings:
    return Settings(
        pii_key=key if key is not None else base64.b64encode(os.urandom(32)).decode(),
        _env_file=None,  # type: ignore[call-arg]
        **extra,  # type: ignore[arg-type]
    )


def _ticket(*texts: str, ext: str = "T-1", **fields: object) -> InboundTicket:
    messages = [
        {"role": "customer", "text": t, "external_id": f"m{i}-{abs(hash(t))}"} for i, t in enumerate(texts)
    ]
    return InboundTicket.model_validate({"external_id": ext, "messages": messages, **fields})


def _ingest(session: Session, settings: Settings, *tickets: InboundTicket) -> None:
    ingest_tickets(session, list(tickets), default_source="s", source_kind="test", settings=settings)


def _bodies(session: Session) -> list[str]:
    return list(session.execute(select(Message.body).order_by(Message.position)).scalars())


def test_ingest_stores_placeholders_and_the_vault_rehydrates(db_session: Session) -> None:
    settings = _settings()
    ticket = _ticket(
        f"Hallo, hier ist Anna Schmidt. Karte {CARD}, IBAN {IBAN}, Mail anna.schmidt@example.org",
        subject=f"Doppelt belastet, Karte {CARD}",
        requester={"name": "Anna Schmidt", "email": "anna.schmidt@example.org"},
        locale="de-DE",
    )
    _ingest(db_session, settings, ticket)
    row = db_session.execute(select(Ticket)).scalar_one()
    assert (row.requester_name, row.requester_email) == ("<NAME_1>", "<EMAIL_1>")
    assert row.subject == "Doppelt belastet, Karte <CARD_1>"
    assert _bodies(db_session) == ["Hallo, hier ist <NAME_1>. Karte <CARD_1>, IBAN <IBAN_1>, Mail <EMAIL_1>"]

    entries = db_session.execute(select(PiiVaultEntry)).scalars().all()
    assert {e.placeholder for e in entries} == {"<NAME_1>", "<EMAIL_1>", "<CARD_1>", "<IBAN_1>"}
    for entry in entries:
        assert (
            entry.ciphertext is not None
            and b"Anna" not in entry.ciphertext
            and b"4111" not in entry.ciphertext
        )
    draft = "Liebe <NAME_1>, wir erstatten auf <IBAN_1>; Karte <CARD_1> bleibt aktiv. <PHONE_7>"
    assert rehydrate(db_session, row.id, draft, settings=settings) == (
        f"Liebe Anna Schmidt, wir erstatten auf {IBAN}; Karte {CARD} bleibt aktiv. <PHONE_7>"
    )


def test_a_follow_up_reuses_the_threads_placeholders(db_session: Session) -> None:
    settings = _settings()
    _ingest(db_session, settings, _ticket(f"card {CARD}", requester={"name": "Bob Marley"}))
    # Three days later, same thread, no requester metadata: the name is still known from the vault.
    follow_up = _ticket(
        f"Bob here again, card {CARD.replace(' ', '-')} still charged; new card 5555 5555 5555 4444",
        ext="T-1",
    )
    _ingest(db_session, settings, follow_up)
    assert _bodies(db_session) == [
        "card <CARD_1>",
        "<NAME_1> here again, card <CARD_1> still charged; new card <CARD_2>",
    ]
    assert db_session.execute(select(func.count()).select_from(PiiVaultEntry)).scalar_one() == 3


def test_wrong_key_fails_clearly_and_ingests_nothing(db_session: Session) -> None:
    right, wrong = _settings(), _settings()
    _ingest(db_session, right, _ticket(f"card {CARD}"))
    ticket_id = db_session.execute(select(Ticket.id)).scalar_one()
    with pytest.raises(PiiKeyError, match="wrong or rotated key"):
        rehydrate(db_session, ticket_id, "<CARD_1>", settings=wrong)
    savepoint = db_session.begin_nested()
    with pytest.raises(PiiKeyError):
        _ingest(db_session, wrong, _ticket("follow-up", ext="T-1"))
    savepoint.rollback()
    assert _bodies(db_session) == ["card <CARD_1>"]


def test_a_ciphertext_moved_to_another_placeholder_does_not_decrypt(db_session: Session) -> None:
    settings = _settings()
    _ingest(db_session, settings, _ticket(f"card {CARD}, mail x@example.org"))
    card = db_session.execute(
        select(PiiVaultEntry).where(PiiVaultEntry.placeholder == "<CARD_1>")
    ).scalar_one()
    db_session.execute(
        update(PiiVaultEntry)
        .where(PiiVaultEntry.placeholder == "<EMAIL_1>")
        .values(nonce=card.nonce, ciphertext=card.ciphertext)
    )
    with pytest.raises(PiiKeyError, match="does not decrypt"):
        rehydrate(db_session, card.ticket_id, "<EMAIL_1>", settings=settings)


def test_purge_erases_originals_and_keeps_numbers_reserved(db_session: Session) -> None:
    settings = _settings(pii_retention_days=30)
    _ingest(db_session, settings, _ticket(f"card {CARD}"))
    ticket_id = db_session.execute(select(Ticket.id)).scalar_one()
    purge_after = db_session.execute(select(PiiVaultEntry.purge_after)).scalar_one()
    assert timedelta(days=29) < purge_after - datetime.now(UTC) < timedelta(days=31)
    assert purge_expired(db_session) == 0
    assert purge_expired(db_session, now=datetime.now(UTC) + timedelta(days=31)) == 1
    entry = db_session.execute(select(PiiVaultEntry)).scalar_one()
    assert entry.ciphertext is None and entry.nonce is None and entry.purged_at is not None
    assert rehydrate(db_session, ticket_id, "card <CARD_1>", settings=settings) == "card <CARD_1>"
    # A new card in the thread must not become <CARD_1> again: old messages still say <CARD_1>.
    _ingest(db_session, settings, _ticket("new card 5555 5555 5555 4444", ext="T-1"))
    assert _bodies(db_session)[-1] == "new card <CARD_2>"


def test_without_a_key_nothing_is_ingested(db_session: Session) -> None:
    settings = Settings(pii_key=None, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(PiiKeyMissing, match="TICKETFLEET_PII_KEY is not set"):
        _ingest(db_session, settings, _ticket(f"card {CARD}"))
    assert db_session.execute(select(func.count()).select_from(Ticket)).scalar_one() == 0


def test_dev_key_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    settings = Settings(pii_key=None, pii_dev_key=True, data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    first = VaultCipher.from_settings(settings)
    assert VaultCipher.from_settings(settings).key_id == first.key_id
    key_file = tmp_path / "pii.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_malformed_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(PiiKeyError, match="must decode to 32 bytes"):
        VaultCipher.from_settings(_settings(base64.b64encode(b"short").decode()))
    with pytest.raises(PiiKeyError, match="not valid base64"):
        VaultCipher.from_settings(_settings("not base64 !!"))
