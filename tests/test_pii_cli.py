"""`ticketfleet redact`: JSONL in, JSONL out, bad lines named on stderr without losing good ones."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from ticketfleet.cli import app


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
    assert errors[1] == "line 3: text: Field required"
    assert errors[2].startswith("line 6: colour: Extra inputs are not permitted")
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
