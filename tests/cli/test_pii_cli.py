"""`ticketfleet redact`: JSONL in, JSONL out, bad lines named on stderr without losing good ones."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from db.models import PiiVaultEntry, Ticket
from db.session import transaction
from tests.conftest import REPO_ROOT
from ticketfleet.cli.main import app
from ticketfleet.core.settings import get_settings


def test_redact_streams_jsonl_and_reports_bad_lines() -> None:
    lines = [
        json.dumps({"id": "a", "text": "card 4111 1111 1111 1111, mail anna@example.org", "locale": "de-DE"}),
        "{not json",
        json.dumps({"id": "b"}),
        json.dumps({"id": 7, "text": "order #100234 shipped on 12.03.2024"}),
        "",
        json.dumps({"id": "c", "text": "x", "colour": "red"}),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "ticketfleet.cli", "redact"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out == [
        {"id": "a", "text": "card <CARD_1>, mail <EMAIL_1>"},
        {"id": 7, "text": "order #100234 shipped on 12.03.2024"},
    ]
    errors = result.stderr.splitlines()
    assert errors[0].startswith("line 2: ") and "Invalid JSON" in errors[0]
    assert errors[1] == "line 3: text: field required"
    assert errors[2] == "line 6: colour: unknown field"
    assert "4111" not in result.stderr


def test_redact_exits_zero_when_every_line_is_good() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["redact"], input=json.dumps({"id": "1", "text": "IP 203.0.113.9"}) + "\n")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"id": "1", "text": "IP <IP_1>"}


def test_keygen_prints_a_usable_key() -> None:
    import base64

    result = CliRunner().invoke(app, ["pii", "keygen"])
    assert result.exit_code == 0
    assert len(base64.b64decode(result.stdout.strip())) == 32


@pytest.fixture
def db_env(monkeypatch: pytest.MonkeyPatch, clean_db: str) -> Iterator[str]:
    monkeypatch.setenv("TICKETFLEET_DATABASE_URL", clean_db)
    get_settings.cache_clear()
    yield clean_db
    get_settings.cache_clear()


def test_import_without_a_vault_key_stops_before_writing(
    db_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TICKETFLEET_PII_KEY", "")
    monkeypatch.setenv("TICKETFLEET_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"external_id": "a", "text": "card 4111 1111 1111 1111"}) + "\n")
    result = CliRunner().invoke(app, ["import", str(path)])
    assert result.exit_code == 2
    assert "TICKETFLEET_PII_KEY is not set" in " ".join(result.output.split())
    with transaction(db_env) as session:
        assert session.execute(select(func.count()).select_from(Ticket)).scalar_one() == 0


def test_pii_purge_erases_expired_originals(db_env: str, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"external_id": "a", "text": "card 4111 1111 1111 1111, a@b.org"}) + "\n")
    assert CliRunner().invoke(app, ["import", str(path)]).exit_code == 0
    with transaction(db_env) as session:
        session.execute(
            update(PiiVaultEntry)
            .where(PiiVaultEntry.placeholder == "<CARD_1>")
            .values(purge_after=func.now() - timedelta(seconds=1))
        )
    result = CliRunner().invoke(app, ["pii", "purge"])
    assert result.exit_code == 0, result.output
    assert "purged 1 vault entry" in result.output
    with transaction(db_env) as session:
        sealed = dict(session.execute(select(PiiVaultEntry.placeholder, PiiVaultEntry.ciphertext)).all())
    assert sealed["<CARD_1>"] is None and sealed["<EMAIL_1>"] is not None
