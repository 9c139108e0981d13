"""The privacy guarantee end to end: after a real fleet run over PII-laden tickets, no raw value from the
corpus is anywhere: not in any text/jsonb/bytea column of any table, not in any Redis key or value
(Celery envelopes decoded), not in the worker logs or this process's log records."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from db.session import get_engine
from tests.support.fleet import Fleet, states, wait_until, worker_env
from ticketfleet.core.settings import Settings
from ticketfleet.pipeline.importing import import_file
from ticketfleet.services import redis_client

pytestmark = pytest.mark.integration

# Every value is valid for its validator (the redactor only removes what validates).
PII = {
    "name": "Annegret Vogelsang",
    "email": "annegret.vogelsang@example.org",
    "email2": "k.nowak@poczta.example.pl",
    "card": "4111 1111 1111 1111",
    "card_jcb15": "180090736625859",
    "iban": "DE89 3704 0044 0532 0130 00",
    "iban_nl": "NL91ABNA0417164300",
    "phone_de": "+49 30 901820",
    "phone_gb": "+44 20 7946 0958",
    "dni": "55858725M",
    "pesel": "83120241586",
    "ssn": "138-73-1034",
    "cpf": "916.727.895-75",
    "vat": "DE270669072",
    "ipv4": "203.0.113.42",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
    "token_url": "https://shop.example/cb?token=abc123def456ghi",
    "api_key": "sk-proj-abcdEFGH1234ijklMNOP5678qrst",
    "aws": "AKIAIOSFODNN7EXAMPLE",
}


def _tickets() -> list[dict[str, object]]:
    p = PII
    return [
        {
            "external_id": "P-1",
            "subject": f"Charged twice on card {p['card']}",
            "requester": {"name": p["name"], "email": p["email"]},
            "locale": "de-DE",
            "messages": [
                {
                    "role": "customer",
                    "text": f"Hallo, {p['name']} hier. Karte {p['card']}, IBAN {p['iban']}.",
                },
                {"role": "agent", "text": f"Danke {p['name']}, wir prüfen {p['iban']}."},
                {"role": "customer", "text": f"Bitte Rückruf unter {p['phone_de']} oder an {p['email']}."},
            ],
        },
        {
            "external_id": "P-2",
            "channel": "chat",
            "locale": "es-ES",
            "text": f"Mi DNI es {p['dni']} y mi tarjeta JCB {p['card_jcb15']}, pedido 4500123456",
        },
        {
            "external_id": "P-3",
            "locale": "pl-PL",
            "requester": {"email": p["email2"]},
            "text": f"PESEL {p['pesel']}, proszę o zwrot na {p['iban_nl']}",
        },
        {
            "external_id": "P-4",
            "locale": "en-US",
            "subject": f"Account locked from {p['ipv4']}",
            "text": f"My SSN {p['ssn']}; logins from {p['ipv4']} and {p['ipv6']}. Call {p['phone_gb']}.",
        },
        {
            "external_id": "P-5",
            "locale": "pt-BR",
            "text": f"CPF {p['cpf']}, VAT {p['vat']}, callback {p['token_url']}",
        },
        {
            "external_id": "P-6",
            "text": f"I pasted my key {p['api_key']} and {p['aws']} by mistake, order #100234",
        },
    ]


def _forms(value: str) -> set[str]:
    """The value as written, and compact (digits and letters only) when that is still distinctive."""
    forms = {value, value.lower()}
    compact = re.sub(r"[^0-9A-Za-z]", "", value)
    if len(compact) >= 8:
        forms.add(compact.lower())
    return forms


def _leaks(haystack: str) -> list[str]:
    lowered = haystack.lower()
    joined = re.sub(r"(?<=[0-9a-z])[ .\-/:()+](?=[0-9a-z])", "", lowered)
    return sorted(
        name for name, value in PII.items() if any(f in lowered or f in joined for f in _forms(value))
    )


def _dump_database(url: str) -> str:
    with get_engine(url).connect() as conn:
        columns = conn.execute(
            text(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND data_type IN "
                "('text', 'character varying', 'jsonb', 'json', 'bytea', 'ARRAY', 'USER-DEFINED')"
            )
        ).all()
        chunks = []
        for table, column, data_type in columns:
            expr = f"encode(\"{column}\", 'escape')" if data_type == "bytea" else f'"{column}"::text'
            values = conn.execute(text(f'SELECT {expr} FROM "{table}"')).scalars().all()
            chunks.extend(f"{table}.{column}: {v}" for v in values if v is not None)
    return "\n".join(chunks)


def _decode_envelope(raw: bytes) -> str:
    """A Celery/kombu message with its base64 body decoded, so nothing hides in the encoding."""
    try:
        envelope = json.loads(raw)
        body = base64.b64decode(envelope["body"]).decode("utf-8", "replace")
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace") + "\n" + body


def _dump_redis(url: str) -> str:
    client = redis_client(url)
    chunks = []
    for key in client.scan_iter(count=1000):
        chunks.append(key.decode("utf-8", "replace"))
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        chunks.extend(_decode_envelope(v) for v in values)
    return "\n".join(chunks)


@pytest.fixture
def fleet(clean_db: str, flushed_redis: str, settings: Settings, tmp_path: Path) -> Iterator[Fleet]:
    env = worker_env(clean_db, flushed_redis, settings.model, tmp_path / "data", MAX_NEW_TOKENS="8")
    handle = Fleet(env=env, log_dir=tmp_path)
    yield handle
    handle.stop_all()


def test_no_raw_pii_anywhere_after_a_full_run(
    fleet: Fleet, clean_db: str, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    worker = fleet.start("chat,tickets,backlog", beat=True)
    path = tmp_path / "pii.jsonl"
    path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in _tickets()), encoding="utf-8")
    # The import file itself is the only place the raw values may be.
    assert _leaks(path.read_text(encoding="utf-8")) == sorted(PII)

    from ticketfleet.broker import app, configure

    configure(app, settings, settings.redis_url_value())
    report = import_file(path, settings=settings, database_url=clean_db, source="pii", lane="live")
    assert report.errors == [] and report.queued == 7  # every customer message (8 messages, 1 from the agent)
    wait_until(lambda: states(clean_db).get("done", 0) == 7, 180, "all 7 customer messages processed")
    fleet.stop_all()

    database = _dump_database(clean_db)
    assert "<CARD_1>" in database and "<NAME_1>" in database and "pii_vault.ciphertext" in database
    assert "drafts.body" in database and "triage_results.language" in database  # the fleet did run
    assert "order #100234" in database and "4500123456" in database  # look-alikes survived
    assert _leaks(database) == []
    assert _leaks(_dump_redis(settings.redis_url_value() or "")) == []
    logs = worker.log()
    assert "ready." in logs
    assert _leaks(logs) == []
    assert _leaks(caplog.text) == []
